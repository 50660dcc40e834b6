"""Units of deploy_tf_serving: the version-skew guard, pod diagnosis on recorded statuses, the smoke test's
comparisons and Prometheus parsing, patches and configuration. No cluster, no S3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfp_tabular.components.deploy_tf_serving.core import DeployConfig, PublishedModel
from kfp_tabular.components.deploy_tf_serving.guard import (
    check_version_skew,
    image_tag,
    op_registry,
    parse_version,
    savedmodel_tf_version,
    serving_version,
)
from kfp_tabular.components.deploy_tf_serving.rollout import (
    ANNOTATION_DIGEST,
    ANNOTATION_VERSION,
    Target,
    complete,
    diagnose_pod,
    rollout_patch,
    same_template,
    selector_string,
    serving_replicaset,
)
from kfp_tabular.components.deploy_tf_serving.smoke import Comparison, Golden, percentile, request_count
from kfp_tabular.errors import ConfigError, VersionSkewError
from kfp_tabular.serving.protowire import graph_ops

pytestmark = pytest.mark.deploy


# -- version skew (D3) -------------------------------------------------------------------------------------------


def test_image_tags_and_versions() -> None:
    assert image_tag("tensorflow/serving:2.21.0") == "2.21.0"
    assert image_tag("registry:5000/tensorflow/serving:2.21.0-gpu@sha256:" + "a" * 64) == "2.21.0-gpu"
    assert image_tag("tensorflow/serving@sha256:" + "a" * 64) is None and image_tag("tensorflow/serving") is None
    assert serving_version("tensorflow/serving:2.20.0") == (2, 20, 0) and serving_version("x:latest") is None
    assert parse_version("2.21.0-rc1") == (2, 21, 0) and parse_version("nightly") is None


def test_the_guard_compares_major_minor_and_refuses_unknown_versions() -> None:
    assert check_version_skew("2.21.3", "lineage", "tensorflow/serving:2.21.0").passed
    assert check_version_skew("2.20.0", "lineage", "tensorflow/serving:2.21.0").passed
    with pytest.raises(VersionSkewError, match="Op type not registered"):
        check_version_skew("2.21.0", "lineage", "tensorflow/serving:2.20.0")
    with pytest.raises(VersionSkewError, match="has no version tag"):
        check_version_skew("2.21.0", "lineage", "tensorflow/serving:latest")
    with pytest.raises(VersionSkewError, match="unknown"):
        check_version_skew(None, "lineage", "tensorflow/serving:2.21.0")
    allowed = check_version_skew("99.0.0", "lineage", "tensorflow/serving:2.21.0", allow=True)
    assert not allowed.passed and "check turned off" in allowed.note


def test_the_tensorflow_version_is_read_from_saved_model_pb_without_tensorflow(tiny_savedmodel, tmp_path) -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    data = (tiny_savedmodel / "saved_model.pb").read_bytes()
    assert savedmodel_tf_version(data) == tf.__version__
    saved = saved_model_pb2.SavedModel.FromString(data)
    saved.meta_graphs[0].meta_info_def.tensorflow_version = "99.0.0"
    assert savedmodel_tf_version(saved.SerializeToString()) == "99.0.0"


def _ops_by_tensorflow(data: bytes) -> dict[str, set[str]]:
    """The same listing as graph_ops, made with TensorFlow's own message classes."""
    from tensorflow.core.protobuf import saved_model_pb2

    ops: dict[str, set[str]] = {}
    functions: set[str] = set()
    for meta_graph in saved_model_pb2.SavedModel.FromString(data).meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            functions.add(function.signature.name)
            nodes += list(function.node_def)
        for node in nodes:
            ops.setdefault(node.op, set()).update(node.attr.keys())
    return {op: attrs for op, attrs in ops.items() if op not in functions}


def test_graph_ops_are_read_without_tensorflow_as_tensorflow_reads_them(tiny_savedmodel) -> None:
    data = (tiny_savedmodel / "saved_model.pb").read_bytes()
    ops = graph_ops(data)
    assert ops.ops == _ops_by_tensorflow(data)
    assert {"StatefulPartitionedCall", "ReadVariableOp", "Mul"} <= set(ops.ops)
    assert "T" in ops.ops["Mul"]


def test_a_newer_model_passes_only_when_the_images_op_registry_knows_every_op_and_attribute(tiny_savedmodel) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    registry = op_registry(2, 20)
    assert registry["tensorflow"].startswith("2.20.") and len(registry["ops"]) > 1500
    data = (tiny_savedmodel / "saved_model.pb").read_bytes()
    loadable = check_version_skew("2.21.0", "saved_model.pb", "tensorflow/serving:2.20.0", ops=graph_ops(data))
    assert loadable.passed and "registered in TensorFlow 2.20.0" in loadable.note

    def changed(edit) -> bytes:
        saved = saved_model_pb2.SavedModel.FromString(data)
        edit(next(f for f in saved.meta_graphs[0].graph_def.library.function if f.node_def))
        return saved.SerializeToString()

    new_op = changed(lambda function: setattr(function.node_def[0], "op", "MulNoNaNWithRounding"))
    with pytest.raises(VersionSkewError, match=r"does not know op MulNoNaNWithRounding.*Nothing was changed"):
        check_version_skew("2.21.0", "saved_model.pb", "tensorflow/serving:2.20.0", ops=graph_ops(new_op))
    def add_attribute(function) -> None:
        function.node_def[0].attr["rounding_mode"].s = b"half_even"

    first = next(f for f in saved_model_pb2.SavedModel.FromString(data).meta_graphs[0].graph_def.library.function
                 if f.node_def).node_def[0].op
    with pytest.raises(VersionSkewError, match=rf"attribute 'rounding_mode' of {first}"):
        check_version_skew("2.21.0", "saved_model.pb", "tensorflow/serving:2.20.0",
                           ops=graph_ops(changed(add_attribute)))
    # No registry vendored for the image's TensorFlow: a newer model cannot be proven loadable.
    with pytest.raises(VersionSkewError, match=r"no op registry of TensorFlow 2\.19"):
        check_version_skew("2.21.0", "saved_model.pb", "tensorflow/serving:2.19.1", ops=graph_ops(data))


# -- pod diagnosis on recorded statuses (D4) ----------------------------------------------------------------------


def pod(**status) -> dict:
    return {"metadata": {"name": "tf-serving-abc-xyz"}, "status": {"phase": "Pending", **status}}


def cstatus(name: str, state: dict, last: dict | None = None, restarts: int = 0, ready: bool = False) -> dict:
    return {"name": name, "state": state, "lastState": last or {}, "restartCount": restarts, "ready": ready,
            "image": "x", "imageID": ""}


ERROR = {"terminated": {"exitCode": 2, "reason": "Error"}}
RECORDED = {
    "Init:Error": pod(initContainerStatuses=[cstatus("fetch-model", ERROR)]),
    "Init:CrashLoopBackOff": pod(initContainerStatuses=[cstatus(
        "fetch-model", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}, ERROR, 2)]),
    "CrashLoopBackOff": pod(phase="Running", containerStatuses=[cstatus(
        "tf-serving", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}, ERROR, 1)]),
    "OOMKilled": pod(phase="Running", containerStatuses=[cstatus(
        "tf-serving", {"running": {}}, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, 1)]),
    "ImagePullBackOff": pod(containerStatuses=[cstatus(
        "tf-serving", {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}})]),
    "CreateContainerConfigError": pod(initContainerStatuses=[cstatus("fetch-model", {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "kfp-tabular-s3" not found'}})]),
    "Unschedulable": pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": "0/3 nodes are available: 3 Insufficient memory."}]),
}


@pytest.mark.parametrize("reason", sorted(RECORDED))
def test_each_recorded_failure_yields_its_reason(reason: str) -> None:
    failure = diagnose_pod(RECORDED[reason])
    expected = {"CreateContainerConfigError": "Init:CreateContainerConfigError"}.get(reason, reason)
    assert failure is not None and failure.reason == expected
    assert failure.pod == "tf-serving-abc-xyz"


def test_a_healthy_or_starting_pod_has_no_failure() -> None:
    starting = pod(initContainerStatuses=[cstatus("fetch-model", {"running": {}})],
                   containerStatuses=[cstatus("tf-serving", {"waiting": {"reason": "PodInitializing"}})])
    running = pod(phase="Running", initContainerStatuses=[cstatus(
        "fetch-model", {"terminated": {"exitCode": 0, "reason": "Completed"}}, ready=True)],
        containerStatuses=[cstatus("tf-serving", {"running": {}}, ready=True)])
    assert diagnose_pod(starting) is None and diagnose_pod(running) is None


def test_rollout_status_semantics() -> None:
    def deployment(generation, **status):
        return {"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status}

    assert complete(deployment(3, observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=2), 3)
    assert not complete(deployment(3, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2), 3)
    assert not complete(deployment(3, observedGeneration=3, replicas=3, updatedReplicas=2, availableReplicas=3), 3)
    assert not complete(deployment(3, observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=1), 3)
    serving = serving_replicaset([{"metadata": {"name": "a", "annotations": {"deployment.kubernetes.io/revision": "1"}},
                                   "status": {"availableReplicas": 2}},
                                  {"metadata": {"name": "b", "annotations": {"deployment.kubernetes.io/revision": "2"}},
                                   "status": {}}])
    assert serving["metadata"]["name"] == "a"
    assert serving_replicaset([{"metadata": {"name": "b"}, "status": {"replicas": 1}}]) is None


# -- patches and templates ---------------------------------------------------------------------------------------


def test_the_rollout_patch_and_template_equality() -> None:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {
        "initContainers": [{"name": "fetch-model", "env": [{"name": "MODEL_URI", "value": "s3://b/m/1"}]}],
        "containers": [{"name": "tf-serving", "image": "tensorflow/serving:2.21.0"}]}}
    deployment = {"metadata": {"resourceVersion": "42"}, "spec": {"template": template}}
    patch = rollout_patch(deployment, Target("ns", "tf-serving"), "s3://b/m/2", 2, "d" * 64)
    assert patch["metadata"] == {"resourceVersion": "42"}
    assert patch["spec"]["template"]["metadata"]["annotations"] == {ANNOTATION_VERSION: "2", ANNOTATION_DIGEST: "d" * 64}
    assert patch["spec"]["template"]["spec"]["initContainers"] == [
        {"name": "fetch-model", "env": [{"name": "MODEL_URI", "value": "s3://b/m/2"}]}]
    from_secret = json.loads(json.dumps(deployment))
    from_secret["spec"]["template"]["spec"]["initContainers"][0]["env"] = [{"name": "MODEL_URI", "valueFrom": {}}]
    with pytest.raises(ConfigError, match="plain value"):
        rollout_patch(from_secret, Target("ns", "tf-serving"), "s3://b/m/2", 2, "d")
    hashed = json.loads(json.dumps(template))
    hashed["metadata"]["labels"]["pod-template-hash"] = "5d8f"
    assert same_template(template, hashed)
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "c", "operator": "In", "values": ["y", "x"]}, {"key": "d", "operator": "DoesNotExist"}]}) == \
        "a=1,b=2,c in (x,y),!d"


# -- smoke test helpers -----------------------------------------------------------------------------------------


def test_float32_answers_compare_exactly_and_nan_never_hides_a_difference() -> None:
    expected = np.array([4012.35, 0.1, np.nan], dtype=np.float32)
    written = [float(f"{v:.6g}") if np.isfinite(v) else v for v in expected.tolist()]  # TF Serving's JSON digits
    same = Comparison()
    same.add("prediction", written, expected, 1e-6, "REST")
    assert not same.problems and same.max_abs_diff == 0
    off = Comparison()
    off.add("prediction", [4012.35, 0.1 + 1e-3, np.nan], expected, 1e-6, "REST")
    assert off.problems and off.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    labels = Comparison()
    labels.add("label", ["yes", "no"], np.array([b"yes", b"yes"], dtype=object), 1e-6, "gRPC")
    assert "at row 1" in labels.problems[0]


def test_prometheus_request_count_and_percentiles() -> None:
    text = ('# TYPE :tensorflow:serving:request_count counter\n'
            ':tensorflow:serving:request_count{model_name="tabular",status="OK"} 41\n'
            ':tensorflow:serving:request_count{model_name="tabular",status="INVALID_ARGUMENT"} 2\n'
            ':tensorflow:serving:request_count{model_name="other",status="OK"} 7\n')
    assert request_count(text, "tabular") == 41 and request_count(text, "missing") is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0 and percentile(list(range(1, 101)), 99) == 99


def test_golden_files_round_trip(tmp_path) -> None:
    golden = Golden({"x": [1.0, float("nan")], "s": ["a", "b"]}, {"x": "float64", "s": "object"},
                    {"y": [0.5, 0.25]}, {"y": "float32"}, "test")
    back = Golden.read(golden.write(tmp_path / "golden.json"))
    assert back.rows == 2 and back.instances()[1]["s"] == "b" and back.input_arrays()["s"].tolist() == [b"a", b"b"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a golden requests file"):
        Golden.read(tmp_path / "bad.json")


def test_configuration_and_metadata_are_checked() -> None:
    assert DeployConfig().rest == "http://tf-serving.kfp-tabular.svc:8501"
    assert DeployConfig().grpc == "tf-serving.kfp-tabular.svc:8500"
    with pytest.raises(ConfigError):
        DeployConfig(poll_s=0)
    with pytest.raises(ConfigError):
        DeployConfig(smoke_requests=0)
    model = PublishedModel.from_metadata({"uri": "s3://b/models/tabular/3", "version": 3, "root_digest": "d",
                                          "lineage": {"tensorflow_version": "2.21.0"}})
    assert model.repository_uri == "s3://b/models/tabular" and model.lineage_tensorflow == "2.21.0"
    with pytest.raises(ConfigError, match="does not end in its version"):
        PublishedModel.from_metadata({"uri": "s3://b/models/tabular/3", "version": 4, "root_digest": "d"})
    with pytest.raises(ConfigError, match="lacks"):
        PublishedModel.from_metadata({"uri": "s3://b/models/tabular/3"})


def test_the_component_compiles_with_its_inputs_and_outputs(tmp_path) -> None:
    import yaml
    from kfp import compiler

    from kfp_tabular.components.deploy_tf_serving.component import deploy_tf_serving

    compiler.Compiler().compile(deploy_tf_serving, str(tmp_path / "deploy.yaml"))
    spec = yaml.safe_load((tmp_path / "deploy.yaml").read_text())["components"]["comp-deploy-tf-serving"]
    assert set(spec["inputDefinitions"]["artifacts"]) == {"published_model", "golden_requests"}
    assert spec["inputDefinitions"]["artifacts"]["golden_requests"].get("isOptional")
    assert set(spec["outputDefinitions"]["artifacts"]) == {"deployment", "report", "metrics"}
    assert spec["inputDefinitions"]["parameters"]["namespace"]["defaultValue"] == "kfp-tabular"


def test_a_conflict_is_retried_only_while_the_template_is_unchanged() -> None:
    from kfp_tabular.components.deploy_tf_serving.core import _patch_on_current
    from kfp_tabular.errors import ClusterError

    template = {"metadata": {}, "spec": {
        "initContainers": [{"name": "fetch-model", "env": [{"name": "MODEL_URI", "value": "s3://b/m/1"}]}],
        "containers": [{"name": "tf-serving", "image": "tensorflow/serving:2.21.0"}]}}

    class Api:  # stands in for our own Kube wrapper: the first PATCH meets a status write of the controller
        def __init__(self, changed_template: bool) -> None:
            self.versions, self.changed, self.sent = iter(["2", "3"]), changed_template, []

        def patch_deployment(self, namespace, name, body):
            self.sent.append(body["metadata"]["resourceVersion"])
            if len(self.sent) == 1:
                raise ClusterError("conflict", status=409)
            return {"metadata": {"generation": 2}}

        def deployment(self, namespace, name):
            changed = json.loads(json.dumps(template))
            if self.changed:
                changed["spec"]["containers"][0]["image"] = "tensorflow/serving:2.22.0"
            return {"metadata": {"resourceVersion": next(self.versions)}, "spec": {"template": changed}}

    model = PublishedModel("s3://b/m/2", 2, "d", "s3://b/m", "2.21.0")
    read = {"metadata": {"resourceVersion": "1"}, "spec": {"template": template}}
    api = Api(changed_template=False)
    assert _patch_on_current(api, Target("ns", "tf-serving"), read, model)["metadata"]["generation"] == 2
    assert api.sent == ["1", "2"]
    with pytest.raises(ClusterError, match="changed while this step"):
        _patch_on_current(Api(changed_template=True), Target("ns", "tf-serving"), read, model)
