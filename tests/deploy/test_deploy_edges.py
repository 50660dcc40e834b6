"""deploy_tf_serving edge cases over SeaweedFS and the Kubernetes cluster TEST DOUBLE: no previous revision, the
version-skew guard, rollback semantics (``kubectl rollout undo``), and a 2-replica rolling update (maxSurge 1,
maxUnavailable 0, as in manifests/)."""

from __future__ import annotations

import time

import pytest
from deploy_stack import make_stack, variant

from kfp_tabular.components.deploy_tf_serving.guard import check_version_skew, parse_version, serving_version
from kfp_tabular.components.deploy_tf_serving.kube import KubeAccess, connect
from kfp_tabular.components.deploy_tf_serving.rollout import rollback, without_hash
from kfp_tabular.errors import IntegrityError, NoPreviousRevisionError, RolloutFailed, VersionSkewError
from kfp_tabular.serving.protowire import graph_ops

pytestmark = [pytest.mark.s3, pytest.mark.deploy]
FAULT = "double.kfp-tabular.dev/fault"


def snapshot(stack) -> tuple[dict[str, int], dict[str, str]]:
    """ReplicaSets (name -> spec.replicas) and pods (name -> uid) of the namespace."""
    return ({rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in stack.replicasets()},
            {p["metadata"]["name"]: p["metadata"]["uid"] for p in stack.pods()})


def requests_of(stack, since: int, method: str) -> list[tuple]:
    return [r for r in stack.cluster.api.requests[since:] if r[0] == method and "deployer" in r[3]]


def flip_byte(s3_server, uri: str, relpath: str) -> None:
    import io

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = s3_server.client()
    data = bytearray(client.get_object(bucket, f"{prefix}/{relpath}").read())
    data[len(data) // 2] ^= 0x01
    client.put_object(bucket, f"{prefix}/{relpath}", io.BytesIO(bytes(data)), len(data))


def test_no_previous_revision_rolls_nothing_back_and_deletes_nothing(cluster, s3_settings, golden_files,
                                                                      tiny_models, s3_server, s3_env,
                                                                      tmp_path_factory) -> None:
    # A fresh cluster: the manifests point MODEL_URI at a version nobody published yet, so revision 1 never
    # served. The first deploy brings a corrupt model (one flipped byte, a REAL integrity failure of fetch-model).
    stack = make_stack(cluster, tmp_path_factory.mktemp("fresh"), "fresh", s3_settings, golden_files,
                       initial_uri="s3://kfp-tabular/nothing-here/tabular/1")
    cluster.wait_for(lambda: any((p.get("status") or {}).get("initContainerStatuses") for p in stack.pods()), 30,
                     "the first pod to try its fetch")
    published = stack.publish(tiny_models["regression"])
    # A corrupt saved_model.pb is caught by the step itself (it reads the graph for the skew guard): no patch.
    flip_byte(s3_server, published["uri"], "saved_model.pb")
    since = len(cluster.api.requests)
    with pytest.raises(IntegrityError, match=r"1/saved_model\.pb does not match its manifest entry"):
        stack.deploy(published, golden_files["regression"])
    assert not requests_of(stack, since, "PATCH")
    flip_byte(s3_server, published["uri"], "saved_model.pb")  # the same bit again: whole once more
    # A corrupt variables shard is found by the pods' fetch-model: a failed rollout.
    flip_byte(s3_server, published["uri"], "variables/variables.data-00000-of-00001")
    before, since = snapshot(stack), len(cluster.api.requests)
    with pytest.raises(RolloutFailed, match="nothing to roll back to") as failed:
        stack.deploy(published, golden_files["regression"])
    error = failed.value
    assert "does not match manifest.json" in str(error) and "Init:" in str(error)
    assert error.rolled_back is False and "nothing was deleted" in str(error)
    rs_after, pods_after = snapshot(stack)
    assert set(before[0]) <= set(rs_after) and len(rs_after) == 2  # revision 1 kept, the failed revision 2 added
    assert before[1].items() <= pods_after.items()  # revision 1's pod was not touched
    # One accepted PATCH; a 409 before it (the controller's status write bumped resourceVersion) is the retried
    # conflict of rollout.py, which changed nothing.
    patches = requests_of(stack, since, "PATCH")
    assert [r[2] for r in patches if r[2] != 409] == [200] and not requests_of(stack, since, "DELETE")
    assert "nothing to roll back to" in error.report


def test_version_skew_is_refused_before_anything_changes(cluster, s3_settings, golden_files, tiny_models,
                                                         s3_env, tmp_path, tmp_path_factory) -> None:
    import deploy_stack
    from tensorflow.core.protobuf import saved_model_pb2

    stack = make_stack(cluster, tmp_path_factory.mktemp("skew"), "skew", s3_settings, golden_files,
                       replicas=0)
    # D3: a SavedModel whose meta graph says it was written by TensorFlow 99.0.0.
    future = variant(tiny_models["regression"], tmp_path / "future", "future")
    saved = saved_model_pb2.SavedModel.FromString((future / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        graph.meta_info_def.tensorflow_version = "99.0.0"
    (future / "saved_model.pb").write_bytes(saved.SerializeToString())
    published = stack.publish(future)
    generation, since = stack.deployment()["metadata"]["generation"], len(cluster.api.requests)
    with pytest.raises(VersionSkewError, match=r"TensorFlow 99\.0\.0 \(saved_model\.pb"):
        stack.deploy(published)  # golden rows computed from the fetched model: its saved_model.pb is read
    assert stack.deployment()["metadata"]["generation"] == generation
    assert not requests_of(stack, since, "PATCH")

    # The manifests' own TF Serving image (tensorflow/serving:2.20.0) against a model of this machine's TensorFlow
    # (2.21): older, but its vendored op registry knows every op the graphs use, so the guard lets it through
    # (every other deploy test here runs with that image).
    image = next(c["image"] for d in deploy_stack.rendered_manifests() if d["kind"] == "Deployment"
                 for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "tf-serving")
    data = (tiny_models["regression"] / "saved_model.pb").read_bytes()
    check = check_version_skew(deploy_stack._tf_version(), "saved_model.pb", image, ops=graph_ops(data))
    assert check.passed, check.note
    if serving_version(image)[:2] < parse_version(deploy_stack._tf_version())[:2]:
        assert "vendored op registry" in check.note


def test_rollback_is_kubectl_rollout_undo_idempotent_and_refuses_without_history(cluster, s3_settings,
                                                                                 golden_files,
                                                                                 tmp_path_factory) -> None:
    # Pods that cannot be scheduled run no process: this is about the Deployment and its ReplicaSets only.
    stack = make_stack(cluster, tmp_path_factory.mktemp("undo"), "undo", s3_settings, golden_files,
                       progress_deadline_s=600)
    apps = __import__("kubernetes").client.AppsV1Api(stack.admin())
    apps.patch_namespaced_deployment("tf-serving", "undo", {"spec": {"template": {"metadata": {"annotations": {
        FAULT: "unschedulable"}}}}})
    kube = connect(KubeAccess(kubeconfig=str(stack.deployer_kubeconfig)))

    def revisions() -> dict[str, str]:
        return {rs["metadata"]["name"]: rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                for rs in stack.replicasets()}

    cluster.wait_for(lambda: len(revisions()) == 2, 10, "the second revision")
    before, since = snapshot(stack), len(cluster.api.requests)
    only = stack.deployment()
    # One revision left in its history? Build that case first: a Deployment whose only ReplicaSet is revision 1.
    single = make_stack(cluster, tmp_path_factory.mktemp("single"), "single", s3_settings, golden_files)
    cluster.wait_for(lambda: len(single.replicasets()) == 1, 10, "the first ReplicaSet")
    single_kube = connect(KubeAccess(kubeconfig=str(single.deployer_kubeconfig)))
    single_before = snapshot(single)
    with pytest.raises(NoPreviousRevisionError, match="no rollout history found"):
        rollback(single_kube, "single", "tf-serving")
    assert snapshot(single) == single_before

    # Revision 3: another MODEL_URI.
    apps.patch_namespaced_deployment("tf-serving", "undo", {"spec": {"template": {"spec": {"initContainers": [
        {"name": "fetch-model", "env": [{"name": "MODEL_URI", "value": "s3://kfp-tabular/undo/tabular/3"}]}]}}}})
    cluster.wait_for(lambda: len(revisions()) == 3, 10, "the third revision")
    by_revision = {number: name for name, number in revisions().items()}
    previous = cluster.store.get("apps", "replicasets", "undo", by_revision["2"])
    deployment_before = stack.deployment()
    outcome = rollback(kube, "undo", "tf-serving")
    assert outcome.applied and outcome.revision == 2 and outcome.replicaset == by_revision["2"]
    after = stack.deployment()
    assert after["spec"]["template"] == without_hash(previous["spec"]["template"])  # D4: the previous template
    assert deployment_before["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    cluster.wait_for(lambda: revisions()[by_revision["2"]] == "4", 10, "the reused ReplicaSet to become revision 4")
    cluster.wait_for(lambda: stack.deployment()["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4",
                     10, "the Deployment to carry revision 4")
    reused = cluster.store.get("apps", "replicasets", "undo", by_revision["2"])
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    settled, since_first = stack.deployment(), len(cluster.api.requests)
    again = rollback(kube, "undo", "tf-serving", to_replicaset=by_revision["2"])  # D6: twice = once
    assert not again.applied and "skipped rollback" in again.message
    assert not requests_of(stack, since_first, "PATCH")
    assert stack.deployment()["spec"] == settled["spec"]
    assert stack.deployment()["metadata"]["generation"] == settled["metadata"]["generation"]
    with pytest.raises(NoPreviousRevisionError, match="has no revision 99"):
        rollback(kube, "undo", "tf-serving", to_revision=99)
    assert not requests_of(stack, since, "DELETE") and only["metadata"]["uid"] == after["metadata"]["uid"]
    assert set(before[0]) <= set(revisions())


def test_two_replicas_roll_with_max_surge_one_and_never_drop_below_two_ready(cluster, s3_settings, golden_files,
                                                                             tiny_models, s3_env,
                                                                             tmp_path_factory) -> None:
    stack = make_stack(cluster, tmp_path_factory.mktemp("surge"), "surge", s3_settings, golden_files, replicas=2)
    v1 = stack.publish(tiny_models["regression"])
    v2 = stack.publish(tiny_models["classifier"])
    first = stack.deploy(v1, golden_files["regression"])
    assert first.status == "deployed"
    started = time.monotonic()
    second = stack.deploy(v2, golden_files["classifier"])
    print(f"MEASURED rollout v1 -> v2 with 2 replicas (maxSurge 1, maxUnavailable 0): {second.metrics['rollout_s']:.2f} s")
    assert second.status == "deployed" and second.smoke.passed
    during = [s for s in cluster.history if s["t"] >= started and s["t"] <= started + second.metrics["rollout_s"]]
    in_namespace = [{k: v for k, v in s["by_rs"].items() if k.startswith("tf-serving-") and
                     any(k == rs["metadata"]["name"] for rs in stack.replicasets())} for s in during]
    totals = [sum(v["pods"] for v in s.values()) for s in in_namespace]
    ready = [sum(v["ready"] for v in s.values()) for s in in_namespace]
    assert max(totals) == 3  # replicas + maxSurge, and the surge was used
    assert min(ready) >= 2  # maxUnavailable 0: two Ready pods at every moment
    new = {p["metadata"]["name"] for p in stack.pods()
           if p["metadata"]["annotations"].get("kfp-tabular.dev/model-version") == str(v2["version"])}
    assert len(new) == 2
