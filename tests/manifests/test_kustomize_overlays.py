"""Every overlay renders, validates against the Kubernetes 1.33 schemas, and meets the D1/S1/S4/L1 rules.

RBAC (S3) is in test_rbac.py; disruption budget, autoscaler and network policy in test_availability.py;
Prometheus in test_monitoring.py; what the deploy step sets in test_model_rollout.py.
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml
from manifest_docs import (
    MANIFESTS,
    OVERLAY_PARAMS,
    OVERLAYS,
    SERVING,
    containers,
    cpu_cores,
    one,
    package_version,
    pod_specs,
    serving_config_files,
)

K8S_VERSION = "1.33"
# Custom resources: kubernetes-validate has no schema for them (it raises SchemaNotFoundError), so they
# are checked field by field where they are tested (PodMonitor: test_monitoring.py).
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor")}

# Pod Security Standards "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards).
PSS_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
S3_SECRET = "kfp-tabular-s3"


def _serving(docs: list[dict]) -> dict:
    return one(docs, "Deployment", SERVING)


def _container(pod_spec: dict, name: str) -> dict:
    (found,) = [c for c in containers(pod_spec) if c["name"] == name]
    return found


def _flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} given {len(values)} times in {args}"
    return values[0]


def test_expected_overlays_exist():
    assert {"dev", "gpu", "kubeflow", "autoscale", "prometheus-operator"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_every_document_validates_strictly_against_kubernetes_schemas(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment", "Service", "ConfigMap", "Role", "RoleBinding", "ServiceAccount", "NetworkPolicy",
    } <= kinds
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_only_custom_resources_skip_schema_validation(rendered_overlays):
    # Guards the skip above: it must cover the kinds kubernetes-validate cannot know, and nothing else.
    skipped = [d for docs in rendered_overlays.values() for d in docs
               if (d["apiVersion"], d["kind"]) in CUSTOM_RESOURCES]
    assert skipped, "no custom resource is rendered: drop CUSTOM_RESOURCES"
    for doc in skipped:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(rendered_overlays):
    # Guards the test above: a typo in a field name must fail, not pass silently.
    deployment = yaml.safe_load(yaml.safe_dump(_serving(rendered_overlays["dev"])))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_every_container_meets_pod_security_restricted(rendered_overlays, overlay):
    pods = list(pod_specs(rendered_overlays[overlay]))
    assert pods
    for workload, pod in pods:
        pod_ctx = pod.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), f"{workload}: {key}"
        for volume in pod.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= PSS_VOLUME_TYPES, f"{workload}: volume {volume['name']} is {kinds}"
        assert pod.get("initContainers"), f"{workload}: the init container is part of what must be checked"
        for c in containers(pod):
            where = f"{overlay}/{workload}/{c['name']}"
            ctx = c.get("securityContext", {})

            def effective(key, ctx=ctx, pod_ctx=pod_ctx):
                return ctx.get(key, pod_ctx.get(key))

            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert not ctx.get("privileged"), where
            assert effective("runAsNonRoot") is True, where
            # The TF Serving image has no USER: without an explicit non-zero UID it would run as root.
            assert effective("runAsUser") not in (None, 0), where
            assert (effective("seccompProfile") or {}).get("type") in {"RuntimeDefault", "Localhost"}, where
            caps = ctx.get("capabilities", {})
            assert "ALL" in caps.get("drop", []), where
            assert set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert all("hostPort" not in port for port in c.get("ports", [])), where


# Every overlay but kubeflow, whose profile namespace belongs to Kubeflow's Profile controller.
@pytest.mark.parametrize("overlay", [p for p in OVERLAY_PARAMS if p.values[0] != "kubeflow"])
def test_namespace_enforces_pod_security_restricted(rendered_overlays, overlay):
    (namespace,) = [d for d in rendered_overlays[overlay] if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [d for d in rendered_overlays[overlay] if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {namespace["metadata"]["name"]}


def test_kubeflow_overlay_leaves_the_profile_namespace_alone(rendered_overlays):
    docs = rendered_overlays["kubeflow"]
    assert not [d for d in docs if d["kind"] == "Namespace"]
    assert {d["metadata"]["namespace"] for d in docs} == {"kubeflow-user-example-com"}
    pod_labels = _serving(docs)["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["sidecar.istio.io/inject"] == "false", "an Istio sidecar would break Pod Security"


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_serving_pod_mounts_no_service_account_token(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    pod = _serving(docs)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    account = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_no_secret_is_rendered_and_credentials_come_from_secret_key_refs(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret (with data) would be committed"
    fetch = _container(_serving(docs)["spec"]["template"]["spec"], "fetch-model")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    required = {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    optional = {"S3_USE_HTTPS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"}
    assert set(refs) == required | optional
    assert all(ref["name"] == S3_SECRET and ref["key"] == name for name, ref in refs.items())
    # a Secret without the optional keys still starts the pod
    assert {name for name, ref in refs.items() if ref.get("optional")} == optional
    for _, pod in pod_specs(docs):
        for c in containers(pod):
            assert "envFrom" not in c or all("configMapRef" in src for src in c["envFrom"]), c["name"]
            for env in c.get("env", []):
                if CREDENTIAL_NAME.search(env["name"]):
                    assert "value" not in env, f"{c['name']}: {env['name']} has a literal value"


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_every_container_has_cpu_and_memory_requests_and_limits(rendered_overlays, overlay):
    for workload, pod in pod_specs(rendered_overlays[overlay]):
        for c in containers(pod):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{workload}/{c['name']} {kind}"


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_serving_deployment_rolls_out_safely(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    spec = _serving(docs)["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    # One new pod at a time, and no old one goes before a new one is Ready (model loaded).
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert 0 < spec["progressDeadlineSeconds"] <= 1800
    assert spec["revisionHistoryLimit"] >= 2
    serving = _container(spec["template"]["spec"], SERVING)
    model_name = re.search(r'name:\s*"([^"]+)"', serving_config_files(docs)["models.config"]).group(1)
    probe = serving["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{model_name}"
    assert probe["port"] in (8501, "http")
    assert serving["livenessProbe"]
    assert serving["startupProbe"]["httpGet"]["path"] == probe["path"]


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_service_exposes_grpc_and_rest_of_the_serving_pods(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    service = one(docs, "Service", SERVING)
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("grpc", 8500), ("http", 8501)}
    pod_labels = _serving(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    serving = _container(_serving(docs)["spec"]["template"]["spec"], SERVING)
    assert {(p["name"], p["containerPort"]) for p in serving["ports"]} == {("grpc", 8500), ("http", 8501)}


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_images_are_pinned_and_tf_serving_is_2_20(rendered_overlays, overlay):
    for _, pod in pod_specs(rendered_overlays[overlay]):
        for c in containers(pod):
            image = c["image"]
            assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest") and ":latest-" not in image, image
    serving = _container(_serving(rendered_overlays[overlay])["spec"]["template"]["spec"], SERVING)
    expected = "tensorflow/serving:2.20.0-gpu" if overlay == "gpu" else "tensorflow/serving:2.20.0"
    assert serving["image"] == expected


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_component_image_tag_is_the_package_version(rendered_overlays, overlay):
    fetch = _container(_serving(rendered_overlays[overlay])["spec"]["template"]["spec"], "fetch-model")
    name, tag = fetch["image"].rsplit(":", 1)
    assert tag == package_version()
    # Skaffold swaps in the image it built only where the name is its artifact's ("kfp-tabular").
    assert name == ("ghcr.io/kfp-tabular/kfp-tabular" if overlay == "kubeflow" else "kfp-tabular")


def test_base_kustomization_pins_the_component_image_to_the_package_version():
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    (entry,) = [i for i in base["images"] if i["name"] == "kfp-tabular"]
    assert entry["newTag"] == package_version()


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_init_container_fetches_the_model_into_the_volume_tf_serving_reads(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    pod = _serving(docs)["spec"]["template"]["spec"]
    fetch = _container(pod, "fetch-model")
    serving = _container(pod, SERVING)
    command = fetch["command"]
    assert command[:2] == ["kfp-tabular", "fetch-model"]
    assert command[command.index("--source-uri") + 1] == "$(MODEL_URI)"
    assert "MODEL_URI" in {e["name"] for e in fetch["env"]}
    dest = command[command.index("--dest") + 1]
    base_path = re.search(r'base_path:\s*"([^"]+)"', serving_config_files(docs)["models.config"]).group(1)
    assert dest == base_path
    mounts = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    serving_mounts = {m["name"]: m["mountPath"] for m in serving["volumeMounts"]}
    (volume,) = [n for n, path in mounts.items() if dest.startswith(path + "/")]
    assert serving_mounts[volume] == mounts[volume]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == volume)


def test_gpu_overlay_asks_for_one_gpu_and_tolerates_gpu_nodes(rendered_overlays):
    pod = _serving(rendered_overlays["gpu"])["spec"]["template"]["spec"]
    assert _container(pod, SERVING)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for overlay in set(OVERLAYS) - {"gpu"}:
        cpu_pod = _serving(rendered_overlays[overlay])["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in str(cpu_pod), overlay


def test_dev_overlay_runs_one_replica(rendered_overlays):
    assert _serving(rendered_overlays["dev"])["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_serving_flags_point_at_the_mounted_config_files(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    serving = _container(_serving(docs)["spec"]["template"]["spec"], SERVING)
    args = serving["args"]
    config_mount = next(m["mountPath"] for m in serving["volumeMounts"] if m["name"] == "config")
    for flag, file in [
        ("model_config_file", "models.config"),
        ("monitoring_config_file", "monitoring.config"),
        ("batching_parameters_file", "batching.config"),
    ]:
        assert _flag(args, flag) == f"{config_mount}/{file}"
        assert serving_config_files(docs)[file]
    assert _flag(args, "enable_batching") == "true"
    assert (_flag(args, "port"), _flag(args, "rest_api_port")) == ("8500", "8501")
    cpu_limit = cpu_cores(serving["resources"]["limits"]["cpu"])
    assert int(_flag(args, "tensorflow_intra_op_parallelism")) == cpu_limit
    assert int(_flag(args, "tensorflow_inter_op_parallelism")) <= cpu_limit
