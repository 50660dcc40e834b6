"""KFP shell of ``deploy_tf_serving``."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_tf_serving(
    published_model: Input[Model],
    deployment: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
    golden_requests: Optional[Input[Artifact]] = None,  # noqa: UP045 - KFP reads Optional[...] as "optional input"
    namespace: str = "kfp-tabular",
    deployment_name: str = "tf-serving",
    service_name: str = "tf-serving",
    model_name: str = "tabular",
    rest_url: str = "",
    grpc_target: str = "",
    rollout_timeout_s: float = 900.0,
    rollback_timeout_s: float = 600.0,
    smoke_requests: int = 50,
    allow_version_skew: bool = False,
):
    """Roll the published model version out to TF Serving, smoke-test it through the Service, roll back on failure.

    Refuses a SavedModel written by a newer TensorFlow than the TF Serving image's tag. Patches ``MODEL_URI`` of
    the Deployment's ``fetch-model`` init container and records the version and root digest as pod-template
    annotations; watches the rollout and fails fast on a known pod failure (fetch or integrity error, crash
    loop, image pull, OOM, unschedulable) or ``ProgressDeadlineExceeded``; then checks through the Service that
    the pushed version is AVAILABLE and answers the golden rows over REST and gRPC (within 1e-6), measuring
    latency and reading TF Serving's Prometheus request count. On any failure it re-applies the previous
    revision's pod template (as ``kubectl rollout undo``), waits until it is healthy, and fails with the cause.
    Deploying the live version changes nothing. Runs with in-cluster credentials: give the task the
    ``kfp-tabular-deployer`` ServiceAccount (manifests/base/rbac.yaml) and the S3 Secret (to read the manifest).

    Args:
        published_model: ``published_model`` of publish_model (metadata: uri, version, root_digest, lineage).
        deployment: JSON pointer: REST and gRPC endpoints, version, digest, revision, ReplicaSet.
        report: Markdown: checks, rollout timeline, smoke test, latency (on failure: in the step's log).
        metrics: Rollout seconds, smoke-test p50/p99 latency and differences, Prometheus request count.
        golden_requests: Optional golden rows with expected outputs (``Golden`` JSON); default: the warmup rows
            of the published SavedModel run through it in this step.
        namespace: Namespace of the TF Serving Deployment.
        deployment_name: The TF Serving Deployment.
        service_name: The Service in front of it.
        model_name: The model name TF Serving serves.
        rest_url: REST address of the Service; default ``http://<service>.<namespace>.svc:8501``.
        grpc_target: gRPC address of the Service; default ``<service>.<namespace>.svc:8500``.
        rollout_timeout_s: Longest wait for the rollout (the Deployment's progressDeadlineSeconds also applies).
        rollback_timeout_s: Longest wait for the rolled-back revision to be healthy.
        smoke_requests: Single-row requests per protocol for the latency figures.
        allow_version_skew: Record instead of refusing a model newer than the serving TensorFlow.
    """
    from pathlib import Path

    from kfp_tabular.components.deploy_tf_serving.core import DeployConfig, deploy

    config = DeployConfig(namespace=namespace, deployment=deployment_name, service=service_name,
                          model_name=model_name, rest_url=rest_url, grpc_target=grpc_target,
                          rollout_timeout_s=rollout_timeout_s, rollback_timeout_s=rollback_timeout_s,
                          smoke_requests=smoke_requests, allow_version_skew=allow_version_skew)
    result = deploy(dict(published_model.metadata), config, Path(deployment.path), Path(report.path),
                    Path(golden_requests.path) if golden_requests else None)
    deployment.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
