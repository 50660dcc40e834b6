"""deploy_tf_serving end to end: real SeaweedFS, the Kubernetes cluster TEST DOUBLE, real fetch-model and serving.

One namespace with the real manifests; the deploy step runs as the ``kfp-tabular-deployer`` ServiceAccount (the
double authorizes it with the real Role). Each test first makes sure its starting version is live (a no-op
when it already is), so the tests also pass one by one. Measured times are printed (``-s``) with the prefix
``MEASURED``.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
import uuid

import pytest
from deploy_stack import NAMESPACE, make_stack, variant

from kfp_tabular.errors import ModelError, RolloutFailed

pytestmark = [pytest.mark.s3, pytest.mark.deploy]


@pytest.fixture(scope="module")
def stack(cluster, s3_settings, golden_files, tmp_path_factory):
    return make_stack(cluster, tmp_path_factory.mktemp("stack"), NAMESPACE, s3_settings, golden_files)


@pytest.fixture(scope="module")
def models(stack, tiny_models, s3_settings):
    """Version 1: the regression model; version 2: the classifier (another answer shape)."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_settings.items():
            env.setenv(key, value)
        return {"1": stack.publish(tiny_models["regression"]), "2": stack.publish(tiny_models["classifier"])}


def measured(what: str, seconds: float) -> None:
    print(f"MEASURED {what}: {seconds:.2f} s")


def live(stack, models, version: str):
    """Make ``version`` the live one (nothing happens when it is already)."""
    golden = stack.golden_files["classifier" if version == "2" else "regression"]
    return stack.deploy(models[version], golden)


def template(stack) -> dict:
    return stack.deployment()["spec"]["template"]


def pods_of(stack, version: str) -> dict[str, str]:
    """Live pods (name -> uid) whose template carries model version ``version``."""
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in stack.pods()
            if (p["metadata"].get("annotations") or {}).get("kfp-tabular.dev/model-version") == version
            and not p["metadata"].get("deletionTimestamp")}


def deployer_patches(stack, since: int) -> list[tuple]:
    """The deployer's PATCHes the API server accepted (a 409 is a resourceVersion conflict, retried; it changed
    nothing); any other refusal fails the test."""
    patches = [r for r in stack.cluster.api.requests[since:] if r[0] == "PATCH" and "deployer" in r[3]]
    assert all(r[2] in (200, 409) for r in patches), patches
    return [r for r in patches if r[2] == 200]


def ready_of_version_never_dropped(stack, version: str, since: float) -> bool:
    """In every snapshot of the double since ``since``, a pod of ``version`` was Ready."""
    names = {rs["metadata"]["name"] for rs in stack.replicasets()
             if (rs["spec"]["template"]["metadata"].get("annotations") or {}).get("kfp-tabular.dev/model-version")
             == version}
    snapshots = [s for s in stack.cluster.history if s["t"] >= since]
    return bool(snapshots) and all(sum(s["by_rs"].get(n, {}).get("ready", 0) for n in names) >= 1 for s in snapshots)


def test_v1_deploys(stack, models, s3_env) -> None:
    started = time.monotonic()
    result = stack.deploy(models["1"])  # golden rows computed by the step from the published SavedModel
    measured("first deploy of v1 (step total)", time.monotonic() - started)
    measured("rollout of v1 (patch -> complete)", result.metrics["rollout_s"])
    assert result.status == "deployed"
    uri = models["1"]["uri"]
    fetch = next(c for c in template(stack)["spec"]["initContainers"] if c["name"] == "fetch-model")
    assert {"name": "MODEL_URI", "value": uri} in fetch["env"]
    annotations = template(stack)["metadata"]["annotations"]
    assert annotations["kfp-tabular.dev/model-version"] == "1"
    assert annotations["kfp-tabular.dev/model-digest"] == models["1"]["root_digest"]
    assert annotations["prometheus.io/scrape"] == "true"  # the rest of the template is untouched
    deployment = stack.deployment()
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert len(pods_of(stack, "1")) == 1
    smoke = result.smoke
    assert smoke.passed and smoke.state == "AVAILABLE" and smoke.grpc_state == "AVAILABLE"
    assert smoke.rows == 6 and smoke.rest.max_abs_diff == 0 and smoke.grpc.max_abs_diff == 0
    assert smoke.count_after - smoke.count_before >= smoke.requests
    assert "warmup rows" in result.report_markdown
    assert result.metadata["rest_predict_url"].endswith("/v1/models/tabular/versions/1:predict")
    assert result.metadata["version"] == 1 and result.metadata["root_digest"] == models["1"]["root_digest"]
    stats = smoke.stats()
    print(f"MEASURED smoke latency v1: REST p50 {stats['rest_p50_ms']:.2f} ms p99 {stats['rest_p99_ms']:.2f} ms, "
          f"gRPC p50 {stats['grpc_p50_ms']:.2f} ms p99 {stats['grpc_p99_ms']:.2f} ms over {smoke.requests} requests")


def test_v2_replaces_v1(stack, models, s3_env) -> None:
    live(stack, models, "1")
    v1_pods = pods_of(stack, "1")
    result = live(stack, models, "2")
    measured("rollout v1 -> v2", result.metrics["rollout_s"])
    assert result.status == "deployed" and result.smoke.passed
    assert template(stack)["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "2"
    assert not set(pods_of(stack, "1").values()) & set(v1_pods.values())  # v1's pods are gone
    rest = result.metadata["rest_url"]
    with urllib.request.urlopen(f"{rest}/v1/models/tabular/versions/2", timeout=10) as answer:
        assert json.load(answer)["model_version_status"][0]["state"] == "AVAILABLE"
    request = urllib.request.Request(f"{rest}/v1/models/tabular/versions/2:predict", json.dumps(
        {"instances": [{"bill_length_mm": 50.0, "island": "Biscoe"}]}).encode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        prediction = json.load(answer)["predictions"][0]
    assert set(prediction) == {"probabilities", "label"} and prediction["label"] == "yes"
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(f"{rest}/v1/models/tabular/versions/1", timeout=10)
    assert gone.value.code == 404


def test_half_published_v3_is_rolled_back_and_v2_keeps_serving(stack, models, tiny_models, s3_server, s3_env,
                                                               tmp_path) -> None:
    live(stack, models, "2")
    v2_pods = pods_of(stack, "2")
    published = stack.publish(variant(tiny_models["regression"], tmp_path / "v3", "v3"))
    # Half of the version's files vanish after the publish (the manifest stays): a REAL fetch failure.
    bucket, _, prefix = published["uri"].removeprefix("s3://").partition("/")
    client = s3_server.client()
    names = sorted(o.object_name for o in client.list_objects(bucket, prefix=prefix + "/", recursive=True)
                   if not o.object_name.endswith("manifest.json"))
    for name in names[::2]:
        client.remove_object(bucket, name)
    started, since = time.monotonic(), len(stack.cluster.api.requests)
    with pytest.raises(RolloutFailed) as failed:
        stack.deploy(published, stack.golden_files["regression"])
    elapsed = time.monotonic() - started
    error = failed.value
    measured("failed rollout of half-published v3 until rolled back (step total)", elapsed)
    measured("rollback to v2", error.rollback_s)
    message = str(error)
    print(message)
    assert "Init:" in message and "fetch-model" in message and "kfp-tabular: error:" in message
    assert error.rolled_back and "rolled back" in message and "model version 2" in message
    assert elapsed < 60  # failed fast: the Deployment's progressDeadlineSeconds is 600
    assert template(stack)["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "2"
    assert pods_of(stack, "2") == v2_pods  # v2's pods were never removed
    assert ready_of_version_never_dropped(stack, "2", started)
    assert not pods_of(stack, str(published["version"]))  # the failing pods are gone
    assert len(deployer_patches(stack, since)) == 2  # the rollout and the rollback, nothing else
    assert "## Rollback" in error.report and "Last log lines" in error.report
    assert live(stack, models, "2").status == "unchanged"  # v2 serves and passes its smoke test


def test_an_interrupted_publish_is_refused_before_any_rollout(stack, models, tiny_models, s3_env, tmp_path) -> None:
    from kfp_tabular.serving.repository import publish_savedmodel
    from kfp_tabular.serving.verify import build_manifest

    live(stack, models, "2")
    folder = variant(tiny_models["regression"], tmp_path / "cut", "cut")

    def cut(relpath: str) -> None:
        raise KeyboardInterrupt("killed midway")

    number = max(int(v) for v in stack.published) + 10
    with pytest.raises(KeyboardInterrupt):
        publish_savedmodel(folder, stack.repository, version=number, on_file_uploaded=cut)
    metadata = {"uri": f"{stack.repository}/{number}", "version": number,
                "root_digest": build_manifest(folder)["root_digest"]}
    generation, since = stack.deployment()["metadata"]["generation"], len(stack.cluster.api.requests)
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        stack.deploy(metadata, stack.golden_files["regression"])
    assert stack.deployment()["metadata"]["generation"] == generation
    assert not deployer_patches(stack, since)


def test_redeploying_the_live_version_is_a_noop(stack, models, s3_env) -> None:
    live(stack, models, "2")
    before = stack.deployment()
    pods, since = pods_of(stack, "2"), len(stack.cluster.api.requests)
    result = live(stack, models, "2")
    assert result.status == "unchanged" and result.smoke.passed and result.metrics["unchanged"] == 1.0
    after = stack.deployment()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert pods_of(stack, "2") == pods and not deployer_patches(stack, since)
    assert "was live already" in result.report_markdown


def test_a_model_that_answers_wrong_is_rolled_back(stack, models, tiny_models, s3_env, tmp_path) -> None:
    live(stack, models, "2")
    published = stack.publish(variant(tiny_models["classifier"], tmp_path / "wrong", "wrong"))
    stack.cluster.inject("wrong-answer", **{"kfp-tabular.dev/model-version": str(published["version"])})
    started = time.monotonic()
    with pytest.raises(RolloutFailed, match="smoke test failed") as failed:
        stack.deploy(published, stack.golden_files["classifier"])
    measured("rollout + failed smoke test + rollback of a wrong-answer model (step total)", time.monotonic() - started)
    measured("rollback to v2 after the smoke test", failed.value.rollback_s)
    assert "differs by 0.001" in str(failed.value) and failed.value.rolled_back
    assert template(stack)["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "2"
    assert "## Smoke test" in failed.value.report and "FAILED" in failed.value.report
    assert live(stack, models, "2").status == "unchanged"


def test_the_progress_deadline_is_reported_and_rolled_back(stack, models, tiny_models, s3_env, tmp_path) -> None:
    live(stack, models, "2")
    v2_pods = pods_of(stack, "2")
    apps = __import__("kubernetes").client.AppsV1Api(stack.admin())
    apps.patch_namespaced_deployment("tf-serving", NAMESPACE, {"spec": {"progressDeadlineSeconds": 6}})
    try:
        published = stack.publish(variant(tiny_models["regression"], tmp_path / "slow", "never-ready"))
        stack.cluster.inject("never-ready", **{"kfp-tabular.dev/model-version": str(published["version"])})
        started = time.monotonic()
        with pytest.raises(RolloutFailed, match="ProgressDeadlineExceeded") as failed:
            stack.deploy(published, stack.golden_files["regression"])
        elapsed = time.monotonic() - started
        measured("rollout until ProgressDeadlineExceeded (deadline 6 s) + rollback (step total)", elapsed)
        assert 6 <= elapsed < 40
        assert "not Ready" in str(failed.value) and failed.value.rolled_back
        assert pods_of(stack, "2") == v2_pods
        assert template(stack)["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "2"
    finally:
        apps.patch_namespaced_deployment("tf-serving", NAMESPACE, {"spec": {"progressDeadlineSeconds": 600}})


@pytest.mark.parametrize(("fault", "reasons", "evidence"), [
    ("crash-loop", ("Error", "CrashLoopBackOff"), "poll_seconds must be positive"),
    ("image-pull", ("ErrImagePull", "ImagePullBackOff"), "not found"),
    ("oom", ("OOMKilled",), "more memory than its limit"),
    ("unschedulable", ("Unschedulable",), "Insufficient memory"),
])
def test_pod_failures_fail_fast_with_the_reason_and_roll_back(stack, models, tiny_models, s3_env, tmp_path, fault,
                                                             reasons, evidence) -> None:
    live(stack, models, "2")
    v2_pods = pods_of(stack, "2")
    published = stack.publish(variant(tiny_models["regression"], tmp_path / fault, f"{fault}-{uuid.uuid4().hex[:4]}"))
    stack.cluster.inject(fault, **{"kfp-tabular.dev/model-version": str(published["version"])})
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        stack.deploy(published, stack.golden_files["regression"])
    elapsed = time.monotonic() - started
    measured(f"failure detection + rollback, fault {fault} (step total)", elapsed)
    message = str(failed.value)
    print(message)
    assert any(f"{reason} (pod tf-serving-" in message for reason in reasons), message
    assert evidence in message + failed.value.report
    assert elapsed < 45 and failed.value.rolled_back
    assert pods_of(stack, "2") == v2_pods
    assert template(stack)["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "2"


def test_logs_and_events_come_from_the_real_processes(stack, models, s3_env) -> None:
    """The double's pod logs are the real output of fetch-model and the serving stand-in."""
    from kubernetes import client

    live(stack, models, "2")
    core = client.CoreV1Api(stack.cluster.client(stack.cluster.token_for(NAMESPACE, "kfp-tabular-deployer")))
    pod = next(iter(pods_of(stack, "2")))
    fetch_log = core.read_namespaced_pod_log(pod, NAMESPACE, container="fetch-model", tail_lines=5)
    assert "Model version 2 is ready" in fetch_log
    serve_log = core.read_namespaced_pod_log(pod, NAMESPACE, container="tf-serving")
    assert "successfully loaded servable version {name: tabular version: 2}" in serve_log
    events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={pod}").items
    assert {"Scheduled", "Pulled", "Created", "Started"} <= {e.reason for e in events}
    with pytest.raises(client.ApiException) as forbidden:
        core.read_namespaced_secret("kfp-tabular-s3", NAMESPACE)
    assert forbidden.value.status == 403
    assert json.load(io.StringIO(forbidden.value.body))["reason"] == "Forbidden"
