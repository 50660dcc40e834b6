"""End-to-end deploy tests: the real SeaweedFS S3 server, the Kubernetes cluster TEST DOUBLE and real processes.

- ``s3_server`` is the session's SeaweedFS server (``tests/seaweedfs.py``, registered in ``tests/conftest.py``).
- ``tiny_models`` are real SavedModels shaped like exports (signature file, TF Serving warmup rows): a regression
  (``2 * bill_length_mm + 1``, one output) and a binary classifier (``probabilities`` and ``label``), so the
  smoke test sees both REST answer shapes; ``variant`` makes a model with another root digest.
- ``Stack`` is one namespace of the cluster double with the REAL manifests applied (``kubectl kustomize
  manifests/overlays/dev``: Namespace, ServiceAccounts, the deployer Role and RoleBinding, ConfigMap, Service,
  Deployment, NetworkPolicy) plus the ``kfp-tabular-s3`` Secret pointing at SeaweedFS, changed as an overlay
  would. The TF Serving image is the manifests' own pin (2.20.0): the version-skew guard passes this machine's
  2.21 models through its vendored 2.20 op registry. The deploy step runs as the ``kfp-tabular-deployer``
  ServiceAccount, so every call it makes is authorized by the real Role.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_stack import BUCKET, save_tiny


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"regression": folder, "classifier": folder}``."""
    folder = tmp_path_factory.mktemp("deploy-models")
    return {"regression": save_tiny(folder / "regression", 2.0, False),
            "classifier": save_tiny(folder / "classifier", 3.0, True)}


@pytest.fixture(scope="session")
def golden_files(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict[str, Path]:
    """Golden requests of each tiny model, as an export would hand them to the deploy step."""
    from kfp_tabular.components.deploy_tf_serving.smoke import golden_from_savedmodel

    folder = tmp_path_factory.mktemp("golden")
    return {kind: golden_from_savedmodel(path, f"the {kind} export").write(folder / f"{kind}.json")
            for kind, path in tiny_models.items()}


@pytest.fixture(scope="session")
def s3_settings(s3_server) -> dict[str, str]:
    """The S3 variables of the pipeline's Secret, with the bucket the manifests name created."""
    client = s3_server.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    return {"S3_ENDPOINT": f"http://{s3_server.endpoint}", "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}


@pytest.fixture
def s3_env(s3_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The deploy step's own environment (the pipeline gives it the same Secret)."""
    for key, value in s3_settings.items():
        monkeypatch.setenv(key, value)
    for name in ("S3_USE_HTTPS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Kubernetes cluster double (one per test module); fails the test on faults inside it."""
    from doubles.k8s_cluster import ClusterDouble

    double = ClusterDouble(tmp_path_factory.mktemp("k8s-double"))
    with double:
        yield double
    assert not double.errors, "\n".join(double.errors)
