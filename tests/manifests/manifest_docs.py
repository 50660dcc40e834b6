"""Helpers for the manifest tests: render overlays and walk the rendered documents.

Rendering uses the real ``kubectl kustomize`` (kustomize is built into kubectl); there is no Python
fallback, so without kubectl these tests skip and say why.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
# Test ids name overlays "<name>-overlay": a bare "gpu" id would become a keyword that tests/conftest.py
# mistakes for the gpu marker, skipping the GPU overlay's offline checks.
OVERLAY_PARAMS = [pytest.param(name, id=f"{name}-overlay") for name in OVERLAYS]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}

# The names the pipeline's deploy step (deploy_tf_serving) relies on; the tests check that every overlay
# renders them.
SERVING = "tf-serving"  # the Deployment, its Service and its main container
FETCH = "fetch-model"  # the init container whose MODEL_URI the deploy step sets
MODEL_URI_ENV = "MODEL_URI"
MODEL_VERSION_ANNOTATION = "kfp-tabular.dev/model-version"
MODEL_DIGEST_ANNOTATION = "kfp-tabular.dev/model-digest"
DEPLOYER = "kfp-tabular-deployer"  # ServiceAccount, Role and RoleBinding of the deploy step


def package_version() -> str:
    """The version in pyproject.toml: the single source the image tags must follow."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def render(path: Path) -> list[dict]:
    """Build one kustomization with ``kubectl kustomize`` and return its documents."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: install it to render manifests/ with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    """(workload name, pod spec) of every workload in ``docs``."""
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


def containers(pod_spec: dict) -> list[dict]:
    """All containers of a pod spec: init, regular and ephemeral."""
    return [
        *pod_spec.get("initContainers", []),
        *pod_spec.get("containers", []),
        *pod_spec.get("ephemeralContainers", []),
    ]


def one(docs: list[dict], kind: str, name: str) -> dict:
    """The single document of ``kind`` named ``name``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def cpu_cores(quantity: str | int) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def serving_config_files(docs: list[dict]) -> dict[str, str]:
    """Files of the ConfigMap the tf-serving pod mounts, found through its volume (so the name resolves)."""
    pod = one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    return one(docs, "ConfigMap", volume["configMap"]["name"])["data"]


def serving_deployment(docs: list[dict]) -> dict:
    """The TF Serving Deployment."""
    return one(docs, "Deployment", SERVING)


def container(pod_spec: dict, name: str) -> dict:
    """The one container (init, regular or ephemeral) called ``name``."""
    found = [c for c in containers(pod_spec) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}, found {len(found)}"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels only: these manifests use no expressions) matches ``labels``."""
    assert set(selector) <= {"matchLabels"}, f"unexpected selector fields {set(selector) - {'matchLabels'}}"
    match = selector.get("matchLabels", {})
    assert match, "an empty selector selects every pod of the namespace"
    return match.items() <= labels.items()


def serving_pod_labels(docs: list[dict]) -> dict:
    """Labels of the TF Serving pods, as rendered into the Deployment's pod template."""
    return serving_deployment(docs)["spec"]["template"]["metadata"]["labels"]


def min_serving_replicas(docs: list[dict]) -> int:
    """The fewest serving pods the overlay runs: the HPA's minimum where one scales the Deployment."""
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"
            and d["spec"]["scaleTargetRef"]["name"] == SERVING]
    if hpas:
        (hpa,) = hpas
        return hpa["spec"].get("minReplicas", 1)
    return serving_deployment(docs)["spec"].get("replicas", 1)
