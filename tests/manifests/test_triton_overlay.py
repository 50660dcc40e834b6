"""The gpu overlay's Triton Deployment: strict schema, Pod Security "restricted", one GPU, a toleration, readiness."""

from __future__ import annotations

import kubernetes_validate
from manifest_docs import MANIFESTS, containers, one, render

MODEL = "tabular"  # optimize_tensorrt's default Triton model name (OptimizeConfig.model_name)


def _triton() -> tuple[list[dict], dict]:
    docs = render(MANIFESTS / "overlays" / "gpu")
    return docs, one(docs, "Deployment", "triton")


def test_triton_renders_and_validates_strictly() -> None:
    docs, deployment = _triton()
    for doc in (deployment, one(docs, "Service", "triton")):
        kubernetes_validate.validate(doc, "1.33", strict=True)


def test_triton_meets_pod_security_restricted() -> None:
    _, deployment = _triton()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, volume
    every = containers(pod)
    assert {c["name"] for c in every} == {"fetch-model", "triton"}
    for container in every:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"]
        assert context["runAsNonRoot"] is True and context.get("runAsUser", 1000) != 0
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert "privileged" not in context
        for port in container.get("ports", []):
            assert "hostPort" not in port


def test_triton_gets_one_gpu_a_toleration_and_model_readiness() -> None:
    docs, deployment = _triton()
    pod = deployment["spec"]["template"]["spec"]
    (triton,) = [c for c in pod["containers"] if c["name"] == "triton"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    probe = triton["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v2/models/{MODEL}/ready" and probe["port"] == "http"
    assert {p["name"]: p["containerPort"] for p in triton["ports"]}["http"] == 8000
    assert "--model-repository=/models" in triton["args"] and "--strict-readiness=true" in triton["args"]
    # The same init container pattern as TF Serving: the component image fills the emptyDir Triton reads.
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model" and fetch["image"].split("/")[-1].startswith("kfp-tabular")
    assert {"name": "models", "mountPath": "/models"} in fetch["volumeMounts"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in triton["volumeMounts"]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["MODEL_URI"]["value"].startswith("unset://")
    assert all("valueFrom" in env[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    service = one(docs, "Service", "triton")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
