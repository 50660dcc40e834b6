"""The KFP shell of deploy_tf_serving through kfp.local (the real KFP executor in a subprocess), after publish_model,
against SeaweedFS and the Kubernetes cluster TEST DOUBLE. The step reaches the double with a kubeconfig
(``KUBECONFIG``, as outside a cluster) for the deployer ServiceAccount, and the Service at its forwarded ports.

No ``from __future__ import annotations`` here: KFP reads the pipeline's annotations as types."""

import json
from pathlib import Path

import pytest
from deploy_stack import make_stack

pytestmark = [pytest.mark.s3, pytest.mark.deploy]


def test_publish_then_deploy_through_kfp_local(cluster, s3_settings, golden_files, tiny_models, s3_env,
                                               monkeypatch, tmp_path) -> None:
    from kfp import dsl, local

    from kfp_tabular.components.deploy_tf_serving.component import deploy_tf_serving
    from kfp_tabular.components.publish_model.component import publish_model

    stack = make_stack(cluster, tmp_path / "stack", "local-run", s3_settings, golden_files)
    monkeypatch.setenv("KUBECONFIG", str(stack.deployer_kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    rest = "http://" + cluster.service_address("local-run", "tf-serving", "http")
    grpc = cluster.service_address("local-run", "tf-serving", "grpc")

    @dsl.pipeline(name="publish-and-deploy")
    def publish_and_deploy(savedmodel_path: str, repository_uri: str):
        savedmodel = dsl.importer(artifact_uri=savedmodel_path, artifact_class=dsl.Model, reimport=False)
        publish = publish_model(savedmodel=savedmodel.output, repository_uri=repository_uri)
        deploy_tf_serving(published_model=publish.outputs["published_model"], namespace="local-run", rest_url=rest,
                          grpc_target=grpc, rollout_timeout_s=120.0, smoke_requests=10)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    publish_and_deploy(savedmodel_path=str(tiny_models["regression"]), repository_uri=stack.repository)

    pointers = list((tmp_path / "root").rglob("deploy-tf-serving/deployment"))
    assert len(pointers) == 1
    deployed = json.loads(Path(pointers[0]).read_text())
    assert deployed["status"] == "deployed" and deployed["version"] == 1
    assert deployed["rest_predict_url"] == f"{rest}/v1/models/tabular/versions/1:predict"
    report = next((tmp_path / "root").rglob("deploy-tf-serving/report")).read_text()
    assert "smoke test passed" in report and "## Timeline" in report
    template = stack.deployment()["spec"]["template"]
    assert template["metadata"]["annotations"]["kfp-tabular.dev/model-version"] == "1"
