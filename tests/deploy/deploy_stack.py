"""Helpers of the deploy tests: tiny export-shaped SavedModels and a namespace of the cluster TEST DOUBLE with
the real manifests applied (see conftest.py)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kfp-tabular"
BUCKET = "kfp-tabular"


def rendered_manifests(overlay: str = "dev") -> list[dict[str, Any]]:
    """``kubectl kustomize manifests/overlays/<overlay>``, parsed."""
    text = subprocess.run(["kubectl", "kustomize", str(REPO / "manifests" / "overlays" / overlay)], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__.split("-")[0]


def save_tiny(folder: Path, weight: float, classifier: bool) -> Path:
    """A real SavedModel with a signature file and TF Serving warmup requests, as export_savedmodel writes."""
    import pandas as pd
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.signature import (
        SIGNATURE_FILE,
        SIGNATURE_KEY,
        InputColumn,
        SignatureInfo,
    )
    from kfp_tabular.components.export_savedmodel.warmup import write_warmup

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="tiny")
            self.weight = tf.Variable(weight, dtype=tf.float64)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.float64, name="bill_length_mm"),
                                      tf.TensorSpec([None], tf.string, name="island")])
        def serve(self, bill_length_mm, island):
            value = self.weight * bill_length_mm + 1.0
            if not classifier:
                return {"prediction": tf.cast(value, tf.float32)}
            p = tf.sigmoid((value - 90.0) / 10.0 + tf.cast(tf.equal(island, "Biscoe"), tf.float64))
            probabilities = tf.cast(tf.stack([1.0 - p, p], axis=1), tf.float32)
            label = tf.where(p > 0.5, tf.constant("yes"), tf.constant("no"))
            return {"probabilities": probabilities, "label": label}

    module = Tiny()
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
    inputs = (InputColumn("bill_length_mm", "bill_length_mm", "float64", "float"),
              InputColumn("island", "island", "string", "object"))
    signature = SignatureInfo(
        inputs=inputs, problem_type="binary" if classifier else "regression",
        outputs=({"probabilities": "float32 [N, 2]", "label": "string [N]"} if classifier
                 else {"prediction": "float32 [N]"}),
        class_labels=("no", "yes") if classifier else (), decision_threshold=0.5 if classifier else None,
        label="big" if classifier else "body_mass_g", model_name=f"tiny-{'clf' if classifier else 'reg'}")
    (folder / SIGNATURE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / SIGNATURE_FILE).write_text(signature.to_json(), encoding="utf-8")
    frame = pd.DataFrame({"bill_length_mm": [39.1, 46.5, float("nan"), 50.2, 43.3, 45.5],
                          "island": ["Torgersen", "Biscoe", "Dream", "Biscoe", "Dream", ""]})
    write_warmup(folder, frame, signature, rows=6)
    return folder


def variant(base: Path, folder: Path, tag: str) -> Path:
    """A copy of ``base`` with another root digest (its signature file names another model)."""
    from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_FILE

    shutil.copytree(base, folder)
    path = folder / SIGNATURE_FILE
    data = json.loads(path.read_text())
    data["model_name"] = f"{data['model_name']}-{tag}"
    path.write_text(json.dumps(data))
    return folder


@dataclass
class Stack:
    """One namespace of the cluster double with the manifests applied, a model repository and the deployer."""

    cluster: Any
    namespace: str
    repository: str
    deployer_kubeconfig: Path
    tmp: Path
    golden_files: dict[str, Path]
    published: dict[str, dict[str, Any]] = field(default_factory=dict)

    def admin(self) -> Any:
        return self.cluster.client()

    def deployment(self) -> dict[str, Any]:
        return self.cluster.store.get("apps", "deployments", self.namespace, "tf-serving")

    def replicasets(self) -> list[dict[str, Any]]:
        return self.cluster.store.list("apps", "replicasets", self.namespace)

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.store.list("", "pods", self.namespace)

    def publish(self, folder: Path, version: int | None = None) -> dict[str, Any]:
        """publish_model's core, as the pipeline runs it; returns the ``published_model`` metadata."""
        from kfp_tabular.components.publish_model.core import PublishConfig, publish

        out = self.tmp / f"publish-{uuid.uuid4().hex[:6]}"
        out.mkdir()
        env = dict(os.environ)
        result = publish(folder, PublishConfig(self.repository, version),
                         {"tensorflow_version": _tf_version()}, out / "report.md", out / "pointer.json")
        assert dict(os.environ) == env
        self.published[str(result.metadata["version"])] = result.metadata
        return result.metadata

    def config(self, **overrides: Any) -> Any:
        from kfp_tabular.components.deploy_tf_serving.core import DeployConfig
        from kfp_tabular.components.deploy_tf_serving.kube import KubeAccess

        settings = {
            "namespace": self.namespace, "rest_url": "http://" + self.cluster.service_address(self.namespace,
                                                                                                  "tf-serving", "http"),
            "grpc_target": self.cluster.service_address(self.namespace, "tf-serving", "grpc"),
            "poll_s": 0.25, "rollout_timeout_s": 120.0, "rollback_timeout_s": 120.0, "smoke_timeout_s": 30.0,
            "smoke_requests": 20, "kube": KubeAccess(kubeconfig=str(self.deployer_kubeconfig)),
        }
        settings.update(overrides)
        return DeployConfig(**settings)

    def deploy(self, metadata: dict[str, Any], golden: Path | None = None, **overrides: Any) -> Any:
        """Run the deploy step's core as the deployer ServiceAccount (golden None: computed by the step)."""
        from kfp_tabular.components.deploy_tf_serving.core import deploy

        out = self.tmp / f"deploy-{uuid.uuid4().hex[:6]}"
        out.mkdir()
        return deploy(metadata, self.config(**overrides), out / "deployment.json", out / "report.md", golden)


def make_stack(cluster: Any, tmp: Path, namespace: str, s3_settings: dict[str, str], golden: dict[str, Path], *,
               replicas: int = 1, serving_image: str | None = None, initial_uri: str | None = None,
               progress_deadline_s: int | None = None) -> Stack:
    """Apply the rendered manifests into ``namespace`` (an overlay's changes given as arguments)."""
    repository = f"s3://{BUCKET}/{namespace}-{uuid.uuid4().hex[:6]}/tabular"
    documents = copy.deepcopy(rendered_manifests())
    for doc in documents:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        doc.get("metadata", {}).pop("namespace", None)
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = replicas
            if progress_deadline_s is not None:
                doc["spec"]["progressDeadlineSeconds"] = progress_deadline_s
            pod = doc["spec"]["template"]["spec"]
            serving = next(c for c in pod["containers"] if c["name"] == "tf-serving")
            if serving_image:  # else the manifests' pinned TF Serving image, as a cluster would run it
                serving["image"] = serving_image
            fetch = next(c for c in pod["initContainers"] if c["name"] == "fetch-model")
            uri_env = next(e for e in fetch["env"] if e["name"] == "MODEL_URI")
            uri_env["value"] = initial_uri or f"{repository}/1"
    namespace_docs = [d for d in documents if d["kind"] == "Namespace"]
    cluster.apply(namespace_docs, namespace)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kfp-tabular-s3"}, "type": "Opaque",
              "stringData": dict(s3_settings)}
    cluster.apply([secret, *[d for d in documents if d["kind"] != "Namespace"]], namespace)
    token = cluster.token_for(namespace, "kfp-tabular-deployer")
    kubeconfig = cluster.kubeconfig(token, f"deployer-{namespace}", namespace)
    folder = tmp / namespace
    folder.mkdir(parents=True, exist_ok=True)
    stack = Stack(cluster, namespace, repository, kubeconfig, folder, golden)
    # The controller reconciles asynchronously: a patch sent before it has seen the applied Deployment would be
    # folded into revision 1 (as on a real cluster), so hand the stack over only once revision 1 exists.
    cluster.wait_for(lambda: _observed(stack.deployment()) and stack.replicasets(), 30,
                     f"the first ReplicaSet in {namespace}")
    return stack


def _observed(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)


