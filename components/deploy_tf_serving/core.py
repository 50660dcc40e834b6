"""Roll a published model version out to TF Serving, prove it serves, and roll back on any failure.

``deploy`` takes the metadata of publish_model's ``published_model`` (``uri`` = ``<repository>/<version>``,
``version``, ``root_digest``, ``lineage``) and:

1. **checks before touching the cluster**: the version's ``manifest.json`` in the repository exists and has the
   published root digest; the golden requests (a file, or computed from the published SavedModel, fetched and
   verified like the init container does); the **version-skew guard** (:mod:`.guard`) against the TF Serving
   image of the Deployment;
2. **no-op** when the Deployment's template already has this ``MODEL_URI``, version and digest and its rollout
   is complete: nothing is patched, the smoke test still runs;
3. **rolls out** (:mod:`.rollout`: a strategic merge patch of ``MODEL_URI`` and the pod-template annotations,
   with a resourceVersion precondition) and **watches** it, failing fast on a known pod-level cause;
4. **smoke-tests** the pushed version through the Service (:mod:`.smoke`);
5. on any failure of 3 or 4, **rolls back** to the ReplicaSet that was serving before (as ``kubectl rollout
   undo``), waits until it is healthy, and raises :class:`~kfp_tabular.errors.RolloutFailed` naming the cause
   (with the Markdown report in its ``report`` attribute and in the log). When nothing was serving before, it
   rolls nothing back, deletes nothing, and says so;
6. writes the ``deployment`` pointer (JSON: endpoints, version, digest, revision) and the Markdown report, only on
   success.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kfp_tabular.components._shared.files import all_or_nothing, remove_path, write_text_atomic
from kfp_tabular.errors import (
    ClusterError,
    ConfigError,
    IntegrityError,
    NoPreviousRevisionError,
    RollbackFailed,
    RolloutFailed,
    SmokeTestFailed,
)
from kfp_tabular.serving.protowire import GraphOps, graph_ops

from .guard import SkewCheck, check_version_skew, savedmodel_tf_version
from .kube import Kube, KubeAccess, connect
from .report import ReportData, render
from .rollout import (
    PodFailure,
    Target,
    Timeline,
    complete,
    condition,
    container,
    model_of,
    owned_replicasets,
    replicaset_of,
    revision,
    rollback,
    rollout_patch,
    same_template,
    serving_replicaset,
    watch,
)
from .smoke import Golden, SmokeResult, failure_message, golden_from_savedmodel, smoke_test

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployConfig:
    """Where to deploy, how long to wait, and how to smoke-test.

    Attributes:
        namespace: Namespace of the TF Serving Deployment (manifests/: ``kfp-tabular``).
        deployment: The Deployment (``tf-serving``).
        service: The Service in front of it (``tf-serving``).
        model_name: The model name TF Serving serves (models.config: ``tabular``).
        init_container: The init container that runs ``kfp-tabular fetch-model`` (``fetch-model``).
        serving_container: The TF Serving container (``tf-serving``); its image tag gives the serving TensorFlow.
        rest_url: The Service's REST address; default ``http://<service>.<namespace>.svc:8501``.
        grpc_target: The Service's gRPC address; default ``<service>.<namespace>.svc:8500``.
        rollout_timeout_s: Longest wait for a rollout, beside the Deployment's own ``progressDeadlineSeconds``.
        rollback_timeout_s: Longest wait for the rolled-back revision to be healthy again.
        poll_s: Seconds between two looks at the Deployment and its pods.
        smoke_timeout_s: How long the pushed version may take to show AVAILABLE through the Service.
        smoke_requests: Single-row requests per protocol for the latency figures (bounded).
        request_timeout_s: Timeout of one smoke-test request.
        tolerance: Largest difference from the golden outputs, scaled by ``max(1, |expected|)``.
        log_lines: Log lines of a failing container shown in the error and the report.
        allow_version_skew: Record a version skew (or an unknown version) instead of refusing.
        require_metrics: Fail the smoke test when TF Serving's Prometheus request count cannot be read back.
        kube: How to reach the Kubernetes API (in-cluster, kubeconfig, or host).
    """

    namespace: str = "kfp-tabular"
    deployment: str = "tf-serving"
    service: str = "tf-serving"
    model_name: str = "tabular"
    init_container: str = "fetch-model"
    serving_container: str = "tf-serving"
    rest_url: str = ""
    grpc_target: str = ""
    rollout_timeout_s: float = 900.0
    rollback_timeout_s: float = 600.0
    poll_s: float = 2.0
    smoke_timeout_s: float = 60.0
    smoke_requests: int = 50
    request_timeout_s: float = 10.0
    tolerance: float = 1e-6
    log_lines: int = 20
    allow_version_skew: bool = False
    require_metrics: bool = True
    kube: KubeAccess = field(default_factory=KubeAccess)

    def __post_init__(self) -> None:
        for name in ("namespace", "deployment", "service", "model_name", "init_container", "serving_container"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")
        for name in ("rollout_timeout_s", "rollback_timeout_s", "poll_s", "smoke_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.smoke_requests <= 10_000:
            raise ConfigError(f"smoke_requests must be between 1 and 10000, got {self.smoke_requests}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.rest_url and not self.rest_url.startswith(("http://", "https://")):
            raise ConfigError(f"rest_url {self.rest_url!r} must start with http:// or https://")

    @property
    def target(self) -> Target:
        """The Deployment and containers to work on."""
        return Target(self.namespace, self.deployment, self.init_container, self.serving_container)

    @property
    def rest(self) -> str:
        """The Service's REST base URL."""
        return self.rest_url.rstrip("/") or f"http://{self.service}.{self.namespace}.svc:8501"

    @property
    def grpc(self) -> str:
        """The Service's gRPC target."""
        return self.grpc_target or f"{self.service}.{self.namespace}.svc:8500"


@dataclass(frozen=True)
class PublishedModel:
    """What deploy needs from publish_model's ``published_model`` metadata."""

    uri: str
    version: int
    root_digest: str
    repository_uri: str
    lineage_tensorflow: str | None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> PublishedModel:
        """Read and check the metadata.

        Raises:
            ConfigError: a missing field, or a URI that does not end in the version.
        """
        missing = [k for k in ("uri", "version", "root_digest") if not metadata.get(k)]
        if missing:
            raise ConfigError(f"the published_model metadata lacks {missing}; pass publish_model's published_model "
                              f"output (got keys {sorted(metadata)})")
        uri, version = str(metadata["uri"]).rstrip("/"), int(metadata["version"])
        if PurePosixPath(uri).name != str(version):
            raise ConfigError(f"published model URI {uri!r} does not end in its version {version}")
        repository = str(metadata.get("repository_uri") or uri[: -len(str(version))].rstrip("/"))
        lineage = metadata.get("lineage") or {}
        return cls(uri, version, str(metadata["root_digest"]), repository, (lineage or {}).get("tensorflow_version"))


@dataclass(frozen=True)
class DeployResult:
    """What deploy did.

    Attributes:
        status: ``deployed`` (rolled out now) or ``unchanged`` (the version was live already).
        metadata: For the ``deployment`` artifact (endpoints, version, digest, revision, ReplicaSet...).
        metrics: Rollout time, smoke-test latencies and differences.
        report_markdown: The Markdown report.
        smoke: What the smoke test saw.
        skew: The version-skew check.
    """

    status: str
    metadata: dict[str, Any]
    metrics: dict[str, float]
    report_markdown: str
    smoke: SmokeResult
    skew: SkewCheck


def _manifest_check(model: PublishedModel) -> tuple[str | None, str]:
    """The repository's manifest of the version must exist and carry the published root digest.

    Returns:
        (TensorFlow version of the lineage, a line for the report).
    """
    from kfp_tabular.serving.repository import version_manifest

    manifest = version_manifest(model.repository_uri, model.version)
    if manifest["root_digest"] != model.root_digest:
        raise IntegrityError(
            f"{model.uri}/manifest.json has root digest {manifest['root_digest']}, but the published model says "
            f"{model.root_digest}: this is not the model that was published (and blessed). Nothing was changed")
    lineage = manifest.get("lineage") or {}
    return lineage.get("tensorflow_version"), (f"{model.uri}/manifest.json found, root digest "
                                               f"{model.root_digest[:12]}... matches the published model")


def _golden(model: PublishedModel, golden_path: Path | None,
            workdir: Path) -> tuple[Golden, str | None, GraphOps, str]:
    """Golden requests, and the TensorFlow version and ops of the published ``saved_model.pb``.

    Without a golden file the version is fetched (verified against its manifest) and its warmup rows are run;
    with one, only ``saved_model.pb`` is read, checked against its manifest entry.
    """
    from kfp_tabular.serving.fetch import fetch_model
    from kfp_tabular.serving.repository import version_file

    if golden_path is not None:
        golden = Golden.read(Path(golden_path))
        saved_model_pb = version_file(model.repository_uri, model.version, "saved_model.pb")
    else:
        folder = fetch_model(model.uri, workdir / "model", model.version)  # verified against the manifest
        golden = golden_from_savedmodel(folder, model.uri)
        saved_model_pb = (folder / "saved_model.pb").read_bytes()
    return golden, savedmodel_tf_version(saved_model_pb), graph_ops(saved_model_pb), f"saved_model.pb of {model.uri}"


def deploy(published: Mapping[str, Any], config: DeployConfig, deployment_path: Path, report_path: Path,
           golden_path: Path | None = None, kube: Kube | None = None) -> DeployResult:
    """Deploy the published version (see the module docstring).

    Args:
        published: Metadata of publish_model's ``published_model``.
        config: Target, timeouts, smoke test.
        deployment_path: Output JSON pointer to the deployment.
        report_path: Output Markdown report.
        golden_path: Golden requests (:class:`~.smoke.Golden` JSON); None computes them from the published model.
        kube: An API client (tests); None connects as ``config.kube`` says.

    Raises:
        ConfigError: bad metadata or settings, or the Deployment does not have the expected containers.
        IntegrityError / ModelError / DataSourceError: the published version is missing, incomplete or not the
            one the metadata names; nothing was changed.
        VersionSkewError: the model needs a newer TensorFlow than the serving image; nothing was changed.
        ClusterError: the Kubernetes API refused or could not be reached.
        RolloutFailed: the rollout or the smoke test failed (rolled back, or nothing to roll back to);
            SmokeTestFailed for a live version that fails its smoke test; RollbackFailed when the rollback did
            not become healthy.
    """
    deployment_path, report_path = Path(deployment_path), Path(report_path)
    model = PublishedModel.from_metadata(published)
    target = config.target
    timeline = Timeline()
    kube = kube or connect(config.kube)
    data = ReportData(config.namespace, config.deployment, config.service, config.model_name, model.version,
                      model.root_digest, model.uri, config.rest, config.grpc, timeline)
    workdir = Path(tempfile.mkdtemp(prefix="kfp-tabular-deploy-"))
    try:
        with all_or_nothing(deployment_path, report_path):
            return _deploy(model, config, target, kube, data, golden_path, workdir, deployment_path, report_path)
    finally:
        remove_path(workdir)


def _deploy(model: PublishedModel, config: DeployConfig, target: Target, kube: Kube, data: ReportData,
            golden_path: Path | None, workdir: Path, deployment_path: Path, report_path: Path) -> DeployResult:
    timeline = data.timeline
    current = kube.deployment(target.namespace, target.deployment)
    template = current["spec"]["template"]
    image = container(template, target.serving_container, init=False).get("image", "")
    lineage_tf, data.manifest_note = _manifest_check(model)
    golden, written_by, ops, source = _golden(model, golden_path, workdir)
    data.golden_source = golden.source
    model_tf = written_by or lineage_tf or model.lineage_tensorflow
    if not written_by:
        source = "the lineage in manifest.json" if lineage_tf else "the published model's lineage"
    data.skew = check_version_skew(model_tf, source, image, config.allow_version_skew, ops)
    timeline.add(f"checked: manifest digest, {golden.rows} golden rows, {data.skew.note}")

    live = model_of(template, target)
    wanted = {"uri": model.uri, "version": str(model.version), "digest": model.root_digest}
    replicasets = owned_replicasets(kube, current)
    generation = int(current["metadata"].get("generation") or 1)
    if live == wanted and complete(current, generation):
        rs = replicaset_of(current, replicasets)
        data.revision, data.replicaset = revision(current), rs["metadata"]["name"] if rs else ""
        timeline.add(f"version {model.version} is live already (revision {data.revision}): nothing patched")
        smoke = _smoke(config, model, golden)
        data.smoke = smoke
        if not smoke.passed:
            data.outcome = f"Version {model.version} was live already, and FAILS its smoke test; nothing was changed"
            raise _failed(SmokeTestFailed, f"version {model.version} is live in {target.namespace}/"
                          f"{target.deployment} but fails its smoke test: {failure_message(smoke)}. Nothing was "
                          "changed (it was live before this step)", data)
        data.outcome = f"Version {model.version} was live already: nothing was changed; the smoke test passed"
        return _finish("unchanged", config, model, data, smoke, 0.0, deployment_path, report_path)

    previous = serving_replicaset(replicasets)
    if live == wanted:
        timeline.add(f"the template already names version {model.version}; its rollout is not complete: watching it")
        result = watch(kube, target, generation, timeline, timeout_s=config.rollout_timeout_s, poll_s=config.poll_s,
                       log_lines=config.log_lines, stale_timeout=None)
    else:
        stale = condition(current, "Progressing")
        if previous is not None:
            timeline.add(f"serving before: ReplicaSet {previous['metadata']['name']} (revision {revision(previous)}, "
                         f"model version {model_of(previous['spec']['template'], target)['version'] or 'unknown'})")
        patched = _patch_on_current(kube, target, current, model)
        generation = int(patched["metadata"]["generation"])
        timeline.add(f"patched {target.namespace}/{target.deployment} (generation {generation}): MODEL_URI={model.uri}, "
                     f"version {model.version}, digest {model.root_digest[:12]}...")
        result = watch(kube, target, generation, timeline, timeout_s=config.rollout_timeout_s, poll_s=config.poll_s,
                       log_lines=config.log_lines, stale_timeout=stale)
    if not result.ok:
        assert result.failure is not None
        _roll_back(kube, config, target, model, data, previous, result.failure.describe(), result.failure)
    data.revision = revision(result.replicaset or {}) or revision(result.deployment)
    data.replicaset = (result.replicaset or {}).get("metadata", {}).get("name", "")
    smoke = _smoke(config, model, golden)
    data.smoke = smoke
    timeline.add(f"smoke test {'passed' if smoke.passed else 'FAILED'} in {smoke.seconds:.1f} s")
    if not smoke.passed:
        _roll_back(kube, config, target, model, data, previous, f"smoke test failed: {failure_message(smoke)}", None)
    data.outcome = (f"Version {model.version} is serving: rolled out in {result.seconds:.1f} s, smoke test passed")
    return _finish("deployed", config, model, data, smoke, result.seconds, deployment_path, report_path)


def _patch_on_current(kube: Kube, target: Target, read: Mapping[str, Any], model: PublishedModel,
                      attempts: int = 5) -> dict[str, Any]:
    """PATCH the rollout; on 409 (a newer resourceVersion) read again and retry while the template is unchanged."""
    current = read
    for attempt in range(attempts):
        try:
            return kube.patch_deployment(target.namespace, target.deployment,
                                         rollout_patch(current, target, model.uri, model.version, model.root_digest))
        except ClusterError as error:
            if error.status != 409 or attempt == attempts - 1:
                raise
        current = kube.deployment(target.namespace, target.deployment)
        if not same_template(current["spec"]["template"], read["spec"]["template"]):
            raise ClusterError(f"the pod template of {target.namespace}/{target.deployment} changed while this step "
                               "was deciding what to do (another deploy or a kubectl edit?); nothing was patched. "
                               "Run the step again")
    raise AssertionError("unreachable")


def _smoke(config: DeployConfig, model: PublishedModel, golden: Golden) -> SmokeResult:
    return smoke_test(config.rest, config.grpc, config.model_name, model.version, golden,
                      requests=config.smoke_requests, timeout_s=config.smoke_timeout_s,
                      request_timeout_s=config.request_timeout_s, tolerance=config.tolerance,
                      require_metrics=config.require_metrics)


def _failed(kind: type[RolloutFailed], message: str, data: ReportData, **details: Any) -> RolloutFailed:
    """The step's error, carrying the report (also logged: a failed step uploads no outputs)."""
    data.cause = data.cause or message
    error = kind(message)
    error.report = render(data)  # type: ignore[attr-defined]
    for key, value in details.items():
        setattr(error, key, value)
    log.error("deploy_tf_serving failed; report:\n%s", error.report)  # type: ignore[attr-defined]
    return error


def _roll_back(kube: Kube, config: DeployConfig, target: Target, model: PublishedModel, data: ReportData,
               previous: Mapping[str, Any] | None, cause: str, failure: PodFailure | None) -> None:
    """Roll back to ``previous`` and raise; without ``previous``, change nothing and raise."""
    timeline = data.timeline
    data.failure, data.cause = failure, cause
    head = f"deploy of version {model.version} to {target.namespace}/{target.deployment} failed: {cause}"
    if failure is not None and failure.log:
        head += "\nlast log lines of " + f"{failure.container} in {failure.pod}:\n{failure.log}"
    if previous is None:
        note = ("no previous revision was serving before this deploy (no ReplicaSet had an available pod), so "
                "there is nothing to roll back to: nothing was rolled back and nothing was deleted; the Deployment "
                f"stays at the new revision (version {model.version})")
        timeline.add(note)
        data.rollback = note
        data.outcome = f"Deploy of version {model.version} FAILED; nothing to roll back to"
        raise _failed(RolloutFailed, f"{head}\n{note}", data, rollback_s=None, rolled_back=False)
    started = time.monotonic()
    try:
        outcome = rollback(kube, target.namespace, target.deployment, to_replicaset=previous["metadata"]["name"])
    except NoPreviousRevisionError as error:
        data.rollback = str(error)
        data.outcome = f"Deploy of version {model.version} FAILED; nothing to roll back to"
        raise _failed(RolloutFailed, f"{head}\n{error}", data, rollback_s=None, rolled_back=False) from None
    back_to = model_of(previous["spec"]["template"], target)["version"] or "unknown"
    timeline.add(f"rollback: {outcome.message} (ReplicaSet {outcome.replicaset}, model version {back_to})")
    result = watch(kube, target, outcome.generation, timeline, timeout_s=config.rollback_timeout_s,
                   poll_s=config.poll_s, log_lines=config.log_lines, stale_timeout=outcome.stale_timeout,
                   label="rollback")
    seconds = time.monotonic() - started
    if not result.ok:
        assert result.failure is not None
        data.rollback = (f"rolled back to ReplicaSet {outcome.replicaset} (model version {back_to}), which did NOT "
                         f"become healthy within {config.rollback_timeout_s:g} s: {result.failure.describe()}")
        data.outcome = f"Deploy of version {model.version} FAILED, and so did the rollback"
        raise _failed(RollbackFailed, f"{head}\nthe rollback to ReplicaSet {outcome.replicaset} (model version "
                      f"{back_to}) did not become healthy: {result.failure.describe()}", data, rollback_s=seconds,
                      rolled_back=True)
    data.rollback = (f"{outcome.message}: ReplicaSet {outcome.replicaset}, model version {back_to}, healthy again "
                     f"after {seconds:.1f} s")
    data.outcome = f"Deploy of version {model.version} FAILED and was rolled back to model version {back_to}"
    raise _failed(RolloutFailed, f"{head}\nrolled back to ReplicaSet {outcome.replicaset} (model version {back_to}); "
                  f"it is healthy again after {seconds:.1f} s", data, rollback_s=seconds, rolled_back=True)


def _finish(status: str, config: DeployConfig, model: PublishedModel, data: ReportData, smoke: SmokeResult,
            rollout_s: float, deployment_path: Path, report_path: Path) -> DeployResult:
    stats = smoke.stats()
    metadata = {
        "status": status, "namespace": config.namespace, "deployment": config.deployment,
        "service": config.service, "model_name": config.model_name, "version": model.version,
        "root_digest": model.root_digest, "model_uri": model.uri, "revision": data.revision,
        "replicaset": data.replicaset, "rest_url": config.rest,
        "rest_predict_url": f"{config.rest}/v1/models/{config.model_name}/versions/{model.version}:predict",
        "grpc_target": config.grpc,
    }
    metrics = {"rollout_s": round(rollout_s, 3), "smoke_s": round(smoke.seconds, 3),
               "smoke_rest_max_abs_diff": smoke.rest.max_abs_diff, "smoke_grpc_max_abs_diff": smoke.grpc.max_abs_diff,
               "smoke_requests": float(smoke.requests), **{f"smoke_{k}": round(v, 3) for k, v in stats.items()},
               "prometheus_request_count": float(smoke.count_after or 0), "unchanged": float(status == "unchanged")}
    markdown = render(data)
    write_text_atomic(report_path, markdown)
    write_text_atomic(deployment_path, json.dumps(metadata, indent=2) + "\n")
    return DeployResult(status, metadata, metrics, markdown, smoke, data.skew)  # type: ignore[arg-type]
