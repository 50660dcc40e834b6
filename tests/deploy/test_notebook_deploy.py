"""The deploy notebook, top to bottom, with a cluster to deploy to: the Kubernetes cluster TEST DOUBLE with the real
manifests applied, and SeaweedFS as the S3 repository its pods fetch from."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from deploy_stack import make_stack
from nbclient import NotebookClient

from kfp_tabular.components.deploy_tf_serving.rollout import ANNOTATION_VERSION

pytestmark = [pytest.mark.s3, pytest.mark.deploy, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_deploy_and_query.ipynb"


def test_the_notebook_publishes_serves_queries_and_deploys(cluster, s3_settings, golden_files, s3_env, tmp_path,
                                                           tmp_path_factory, monkeypatch) -> None:
    stack = make_stack(cluster, tmp_path_factory.mktemp("notebook"), "notebook", s3_settings, golden_files)
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.setenv("KFP_TABULAR_CLUSTER_REPOSITORY", stack.repository)
    monkeypatch.setenv("KUBECONFIG", str(stack.deployer_kubeconfig))
    monkeypatch.setenv("KFP_TABULAR_SERVING_NAMESPACE", stack.namespace)
    monkeypatch.setenv("KFP_TABULAR_SERVING_REST",
                       "http://" + cluster.service_address(stack.namespace, "tf-serving", "http"))
    monkeypatch.setenv("KFP_TABULAR_SERVING_GRPC", cluster.service_address(stack.namespace, "tf-serving", "grpc"))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    for expected in ("published", "gRPC labels:", "[('2', 'AVAILABLE'), ('1', 'END')]",
                     ':tensorflow:serving:request_count{model_name="penguins"', "deploy: deployed, version 1"):
        assert expected in text, expected
    report = (tmp_path / "deploy" / "deploy_report.md").read_text()
    assert "| result | passed |" in report and "vendored op registry" in report, report
    for relpath in ("models/penguins/1/manifest.json", "models/penguins/2/manifest.json", "deploy/deployment.json"):
        assert (tmp_path / relpath).is_file(), relpath
    # What the cluster serves now is the notebook's model, rolled out by the step.
    annotations = stack.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ANNOTATION_VERSION] == "1"
