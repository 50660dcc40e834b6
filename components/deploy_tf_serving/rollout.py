"""Roll a model version out to the TF Serving Deployment, watch it, diagnose it, and roll it back.

**Roll out.** A strategic merge patch (what ``kubectl set env`` sends) sets ``MODEL_URI`` of the
``fetch-model`` init container and the pod-template annotations ``kfp-tabular.dev/model-version`` and
``kfp-tabular.dev/model-digest``; it carries the Deployment's ``metadata.resourceVersion``, so a concurrent
change makes it fail with 409 instead of being overwritten. The controller's status writes also bump the
resourceVersion, so a 409 is retried after reading the Deployment again, as long as its pod template is still
the one the decision was made on (client-go's ``RetryOnConflict``).

**Watch** (the checks of ``kubectl rollout status``, plus the pods): once ``status.observedGeneration`` reaches the
patch's generation, the rollout is complete when ``updatedReplicas == replicas == availableReplicas ==
spec.replicas``. It has failed when the ``Progressing`` condition turns ``ProgressDeadlineExceeded`` (a
condition left over from before is ignored: the controller keeps it until the next rollout completes), or, at
once, when a pod of the new ReplicaSet shows a known cause: an init container that exited non-zero (the fetch
or integrity error of ``fetch-model``), ``CrashLoopBackOff``, ``ErrImagePull`` / ``ImagePullBackOff``,
``CreateContainerConfigError`` (a missing Secret key), ``OOMKilled``, or ``PodScheduled=False`` ``Unschedulable``
(unless the cluster autoscaler reports ``TriggeredScaleUp`` for the pod). The failure names the pod and the
container, with its last log lines and the pod's warning events.

**Roll back** as ``kubectl rollout undo`` does (kubectl ``polymorphichelpers/rollback.go``): take the ReplicaSet
of the revision to go back to, copy its pod template without the ``pod-template-hash`` label, keep the
Deployment's own ``deployment.kubernetes.io/*`` annotations and ``last-applied-configuration`` and take the
ReplicaSet's other annotations, and send a JSON patch replacing ``/spec/template`` and
``/metadata/annotations`` (with a ``test`` that the template is still the one read: a concurrent change of it
makes the patch fail with 422 instead of being overwritten). If the template already matches,
nothing is sent ("skipped rollback"), so rolling back twice is the same as once. Without a previous revision it
raises :class:`~kfp_tabular.errors.NoPreviousRevisionError` and changes nothing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kfp_tabular.errors import ClusterError, ConfigError, NoPreviousRevisionError, RollbackFailed

from .kube import Kube

ANNOTATION_VERSION = "kfp-tabular.dev/model-version"
ANNOTATION_DIGEST = "kfp-tabular.dev/model-digest"
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# kubectl rollback.go annotationsToSkip: kept from the Deployment, never copied from the ReplicaSet.
ANNOTATIONS_TO_SKIP = ("kubectl.kubernetes.io/last-applied-configuration", REVISION,
                       "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
                       "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to")
FATAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError", "CrashLoopBackOff", "PreCreateHookError",
                 "PostStartHookError")


@dataclass(frozen=True)
class Target:
    """Which Deployment and containers the step works on."""

    namespace: str
    deployment: str
    init_container: str = "fetch-model"
    serving_container: str = "tf-serving"
    model_uri_env: str = "MODEL_URI"


class Timeline:
    """Timestamped lines of what happened, for the report."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []

    def add(self, message: str) -> None:
        """Record ``message`` at the current time."""
        self.lines.append((time.monotonic() - self.start, message))

    def elapsed(self) -> float:
        """Seconds since the timeline began."""
        return time.monotonic() - self.start


@dataclass
class PodFailure:
    """A known cause that stops the rollout."""

    reason: str
    pod: str
    container: str | None
    message: str
    log: str = ""
    events: list[str] = field(default_factory=list)
    previous: bool = False  # the failing run is the container's previous instance (it was restarted since)

    def describe(self) -> str:
        """One line: reason, pod, container, message."""
        where = f"pod {self.pod}" + (f", container {self.container}" if self.container else "")
        return f"{self.reason} ({where}): {self.message}"


@dataclass
class WatchResult:
    """How a rollout ended."""

    ok: bool
    seconds: float
    deployment: dict[str, Any]
    replicaset: dict[str, Any] | None
    failure: PodFailure | None = None


# -- templates and ReplicaSets ------------------------------------------------------------------------------------


def without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the ``pod-template-hash`` label (kubectl ``equalIgnoreHash``)."""
    copied = copy.deepcopy(dict(template))
    labels = (copied.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return copied


def same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two pod templates are equal, ignoring ``pod-template-hash`` and nil-vs-empty label/annotation maps."""
    def normal(template: Mapping[str, Any]) -> dict[str, Any]:
        t = without_hash(template)
        meta = t.setdefault("metadata", {})
        for key in ("labels", "annotations"):  # nil and empty maps are equal (Semantic.DeepEqual)
            if not meta.get(key):
                meta.pop(key, None)
        meta.pop("creationTimestamp", None)
        return t

    return normal(a) == normal(b)


def selector_string(selector: Mapping[str, Any]) -> str:
    """A ``LabelSelector`` as the ``labelSelector`` query parameter (``metav1.FormatLabelSelector``)."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        terms.append({"In": f"{key} in ({','.join(sorted(values))})", "NotIn": f"{key} notin ({','.join(sorted(values))})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[operator])
    return ",".join(terms)


def revision(obj: Mapping[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` of a Deployment or ReplicaSet (0 when absent)."""
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def owned_replicasets(kube: Kube, deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets (controller owner reference), oldest revision first."""
    meta = deployment["metadata"]
    items = kube.replicasets(meta["namespace"], selector_string(deployment["spec"]["selector"]))
    owned = [rs for rs in items if any(ref.get("uid") == meta["uid"] and ref.get("controller")
                                       for ref in rs["metadata"].get("ownerReferences") or [])]
    return sorted(owned, key=revision)


def replicaset_of(deployment: Mapping[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet whose template is the Deployment's (the controller's "new" ReplicaSet)."""
    return next((rs for rs in replicasets if same_template(rs["spec"]["template"], deployment["spec"]["template"])),
                None)


def container(template: Mapping[str, Any], name: str, init: bool) -> dict[str, Any]:
    """A container of a pod template by name.

    Raises:
        ConfigError: no container of that name (the manifests and the step's settings disagree).
    """
    field_name = "initContainers" if init else "containers"
    items = (template.get("spec") or {}).get(field_name) or []
    found = next((c for c in items if c.get("name") == name), None)
    if found is None:
        raise ConfigError(f"the pod template has no {'init ' if init else ''}container {name!r} (it has "
                          f"{[c.get('name') for c in items]}); set the container names to match manifests/")
    return found


def model_of(template: Mapping[str, Any], target: Target) -> dict[str, str | None]:
    """``{"uri", "version", "digest"}`` of a pod template (``MODEL_URI`` and the kfp-tabular annotations)."""
    init = container(template, target.init_container, init=True)
    env = next((e for e in init.get("env") or [] if e.get("name") == target.model_uri_env), None)
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return {"uri": (env or {}).get("value"), "version": annotations.get(ANNOTATION_VERSION),
            "digest": annotations.get(ANNOTATION_DIGEST)}


def rollout_patch(deployment: Mapping[str, Any], target: Target, uri: str, version: int,
                  digest: str) -> dict[str, Any]:
    """The strategic merge patch of a rollout (see the module docstring).

    Raises:
        ConfigError: ``MODEL_URI`` is missing from the init container or set from a Secret / ConfigMap.
    """
    init = container(deployment["spec"]["template"], target.init_container, init=True)
    env = next((e for e in init.get("env") or [] if e.get("name") == target.model_uri_env), None)
    if env is None or "valueFrom" in env:
        raise ConfigError(f"the init container {target.init_container!r} must set {target.model_uri_env} with a "
                          "plain value (the deploy step patches it); see manifests/base/tf-serving/deployment.yaml")
    return {
        "metadata": {"resourceVersion": deployment["metadata"]["resourceVersion"]},
        "spec": {"template": {
            "metadata": {"annotations": {ANNOTATION_VERSION: str(version), ANNOTATION_DIGEST: digest}},
            "spec": {"initContainers": [{"name": target.init_container,
                                         "env": [{"name": target.model_uri_env, "value": uri}]}]},
        }},
    }


# -- status -----------------------------------------------------------------------------------------------------


def condition(deployment: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The Deployment's condition of ``kind`` (``Progressing``, ``Available``), or None."""
    return next((c for c in (deployment.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def counts(deployment: Mapping[str, Any]) -> dict[str, int]:
    """Desired, total, updated, ready and available replicas (absent status fields are 0)."""
    status = deployment.get("status") or {}
    return {"desired": int(deployment["spec"].get("replicas", 1)),
            **{key: int(status.get(key) or 0) for key in ("replicas", "updatedReplicas", "readyReplicas",
                                                          "availableReplicas")}}


def complete(deployment: Mapping[str, Any], generation: int) -> bool:
    """``kubectl rollout status`` success: observed, updated, old pods gone, all available."""
    status = deployment.get("status") or {}
    n = counts(deployment)
    return (int(status.get("observedGeneration") or 0) >= generation and n["updatedReplicas"] == n["desired"]
            and n["replicas"] == n["updatedReplicas"] and n["availableReplicas"] == n["updatedReplicas"])


def serving_replicaset(replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet serving now: the one with most available pods (ties: the newest revision); None if none."""
    serving = [rs for rs in replicasets if int((rs.get("status") or {}).get("availableReplicas") or 0) > 0]
    return max(serving, key=lambda rs: (int(rs["status"]["availableReplicas"]), revision(rs)), default=None)


# -- pods ---------------------------------------------------------------------------------------------------------


def diagnose_pod(pod: Mapping[str, Any]) -> PodFailure | None:
    """A known cause that keeps this pod from ever becoming Ready, or None (see the module docstring)."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return PodFailure(status.get("reason") or "PodFailed", name, None, status.get("message") or "the pod failed")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return PodFailure("Unschedulable", name, None, cond.get("message") or "no node can run the pod")
    for kind, statuses in (("init container", status.get("initContainerStatuses") or []),
                           ("container", status.get("containerStatuses") or [])):
        init = kind == "init container"
        for item in statuses:
            state, last = item.get("state") or {}, item.get("lastState") or {}
            terminated, previous, waiting = state.get("terminated"), last.get("terminated"), state.get("waiting")
            for ended in (terminated, previous):
                if ended and ended.get("reason") == "OOMKilled":
                    return PodFailure("OOMKilled", name, item["name"],
                                      f"{kind} {item['name']} was killed for using more memory than its limit (exit "
                                      f"code {ended.get('exitCode', 137)}); raise resources.limits.memory")
            if waiting and waiting.get("reason") in FATAL_WAITING:
                reason = waiting["reason"]
                message = waiting.get("message") or reason
                if reason == "CrashLoopBackOff" and previous:
                    message = (f"{kind} {item['name']} exited with code {previous.get('exitCode')} "
                               f"({previous.get('reason')}) {item.get('restartCount', 0)} time(s) and is in back-off")
                return PodFailure(f"Init:{reason}" if init else reason, name, item["name"], message)
            if terminated and terminated.get("exitCode") not in (0, None) and not item.get("ready"):
                return PodFailure("Init:Error" if init else "Error", name, item["name"],
                                  f"{kind} {item['name']} exited with code {terminated['exitCode']} "
                                  f"({terminated.get('reason') or 'Error'})")
            if previous and previous.get("exitCode") not in (0, None) and item.get("restartCount", 0) > 0:
                return PodFailure("Init:Error" if init else "Error", name, item["name"],
                                  f"{kind} {item['name']} exited with code {previous['exitCode']} "
                                  f"({previous.get('reason') or 'Error'}) and was restarted", previous="running" in state)
    return None


def _tail(kube: Kube, namespace: str, failure: PodFailure, lines: int) -> str:
    if not failure.container:
        return ""
    for previous in ((True, False) if failure.previous else (False, True)):
        try:
            text = kube.log(namespace, failure.pod, failure.container, lines, previous=previous)
        except ClusterError:
            continue
        if text.strip():
            return text.rstrip()
    return ""


def _warnings(kube: Kube, namespace: str, pod: str, limit: int = 5) -> list[str]:
    try:
        events = kube.events(namespace, pod)
    except ClusterError:
        return []
    warnings = [e for e in events if e.get("type") == "Warning"]
    warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [f"{e.get('reason')}: {e.get('message')}" + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else "")
            for e in warnings[-limit:]]


def _cause_line(log: str) -> str:
    """The error a kfp-tabular command printed last (``kfp-tabular: error: ...``), if any."""
    lines = [line for line in log.splitlines() if "error" in line.lower()]
    return lines[-1].strip() if lines else ""


# -- watch --------------------------------------------------------------------------------------------------------


def watch(kube: Kube, target: Target, generation: int, timeline: Timeline, *, timeout_s: float, poll_s: float,
          log_lines: int, stale_timeout: Mapping[str, Any] | None, label: str = "rollout",
          sleep: Callable[[float], None] = time.sleep) -> WatchResult:
    """Follow a rollout of ``generation`` until it completes or fails (see the module docstring).

    Args:
        kube: The API client.
        target: The Deployment and its containers.
        generation: The Deployment generation the rollout is for (the patch's).
        timeline: Where to record what happens.
        timeout_s: Longest wait, beside the Deployment's ``progressDeadlineSeconds``.
        poll_s: Seconds between two looks.
        log_lines: Log lines of a failing container to keep.
        stale_timeout: The ``Progressing`` condition before the patch; the same condition seen again is old news.
        label: ``rollout`` or ``rollback``, for the timeline.
        sleep: How to wait between looks (tests may speed it up).
    """
    started = time.monotonic()
    seen_rs, last_counts = None, None
    deployment: dict[str, Any] = {}
    new_rs: dict[str, Any] | None = None
    while True:
        deployment = kube.deployment(target.namespace, target.deployment)
        status = deployment.get("status") or {}
        if int(status.get("observedGeneration") or 0) >= generation:
            replicasets = owned_replicasets(kube, deployment)
            new_rs = replicaset_of(deployment, replicasets)
            if new_rs is not None and new_rs["metadata"]["name"] != seen_rs:
                seen_rs = new_rs["metadata"]["name"]
                timeline.add(f"{label}: ReplicaSet {seen_rs} (revision {revision(new_rs)}) is the new one")
            n = counts(deployment)
            if n != last_counts:
                last_counts = n
                timeline.add(f"{label}: {n['updatedReplicas']} updated, {n['readyReplicas']} ready, "
                             f"{n['availableReplicas']} available of {n['desired']} ({n['replicas']} pods)")
            progressing = condition(deployment, "Progressing")
            if complete(deployment, generation):
                timeline.add(f"{label}: complete in {time.monotonic() - started:.1f} s")
                return WatchResult(True, time.monotonic() - started, deployment, new_rs)
            failure = _pod_failure(kube, target, new_rs) if new_rs is not None else None
            if failure is None and progressing and progressing.get("reason") == "ProgressDeadlineExceeded" \
                    and dict(progressing) != dict(stale_timeout or {}):
                pending = _pod_failure(kube, target, new_rs, pending_too=True) if new_rs is not None else None
                failure = PodFailure("ProgressDeadlineExceeded", pending.pod if pending else deployment["metadata"]["name"],
                                     pending.container if pending else None,
                                     f"{progressing.get('message')} (progressDeadlineSeconds "
                                     f"{deployment['spec'].get('progressDeadlineSeconds')})"
                                     + (f"; {pending.message}" if pending else ""), pending.log if pending else "",
                                     pending.events if pending else [])
            if failure is not None:
                if not failure.log:
                    failure.log = _tail(kube, target.namespace, failure, log_lines)
                if not failure.events and failure.pod != deployment["metadata"]["name"]:
                    failure.events = _warnings(kube, target.namespace, failure.pod)
                cause = _cause_line(failure.log)
                if cause and cause not in failure.message:
                    failure.message += f" — {cause}"
                timeline.add(f"{label}: FAILED after {time.monotonic() - started:.1f} s: {failure.describe()}")
                return WatchResult(False, time.monotonic() - started, deployment, new_rs, failure)
        if time.monotonic() - started > timeout_s:
            pending = _pod_failure(kube, target, new_rs, pending_too=True) if new_rs is not None else None
            n = counts(deployment)
            failure = PodFailure("Timeout", pending.pod if pending else target.deployment,
                                 pending.container if pending else None,
                                 f"the {label} did not finish within {timeout_s:g} s ({n['updatedReplicas']} updated, "
                                 f"{n['availableReplicas']} available of {n['desired']})"
                                 + (f"; {pending.message}" if pending else ""))
            failure.log = _tail(kube, target.namespace, failure, log_lines)
            timeline.add(f"{label}: FAILED: {failure.describe()}")
            return WatchResult(False, time.monotonic() - started, deployment, new_rs, failure)
        sleep(poll_s)


def _pod_failure(kube: Kube, target: Target, rs: Mapping[str, Any], pending_too: bool = False) -> PodFailure | None:
    """The first pod of ``rs`` with a known cause; with ``pending_too``, else why a pod is not Ready yet."""
    pods = [p for p in kube.pods(target.namespace, selector_string(rs["spec"]["selector"]))
            if not p["metadata"].get("deletionTimestamp")]
    for pod in pods:
        failure = diagnose_pod(pod)
        if failure is None:
            continue
        if failure.reason == "Unschedulable":
            events = _warnings(kube, target.namespace, pod["metadata"]["name"])
            scaling = [e for e in kube.events(target.namespace, pod["metadata"]["name"])
                       if e.get("reason") == "TriggeredScaleUp"]
            if scaling:
                continue  # the cluster autoscaler is adding a node for it: the deadline decides
            failure.events = events
        return failure
    if pending_too:
        for pod in pods:
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") != "True":
                    return PodFailure("NotReady", pod["metadata"]["name"], target.serving_container,
                                      f"pod {pod['metadata']['name']} is not Ready: {cond.get('message') or cond.get('reason')}",
                                      events=_warnings(kube, target.namespace, pod["metadata"]["name"]))
    return None


# -- rollback -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackOutcome:
    """What :func:`rollback` did."""

    applied: bool
    revision: int
    replicaset: str
    message: str
    generation: int
    stale_timeout: dict[str, Any] | None


def rollback(kube: Kube, namespace: str, name: str, *, to_revision: int = 0,
             to_replicaset: str | None = None) -> RollbackOutcome:
    """Re-apply a previous revision's pod template, as ``kubectl rollout undo`` (see the module docstring).

    Args:
        kube: The API client.
        namespace: The Deployment's namespace.
        name: The Deployment.
        to_revision: The revision to go back to; 0 = the previous one (the second-highest revision).
        to_replicaset: Go back to this ReplicaSet's template instead (the one that served before a deploy; its
            revision number changes when the controller reuses it, its name does not).

    Raises:
        NoPreviousRevisionError: no such revision / ReplicaSet; nothing was changed or deleted.
        RollbackFailed: the Deployment is paused.
        ClusterError: the API refused a call.
    """
    deployment = kube.deployment(namespace, name)
    replicasets = owned_replicasets(kube, deployment)
    if to_replicaset:
        target = next((rs for rs in replicasets if rs["metadata"]["name"] == to_replicaset), None)
        missing = f"ReplicaSet {to_replicaset} of deployment {namespace}/{name} no longer exists"
    elif to_revision:
        target = next((rs for rs in replicasets if revision(rs) == to_revision), None)
        missing = f"deployment {namespace}/{name} has no revision {to_revision}"
    else:
        ordered = sorted((rs for rs in replicasets if revision(rs) > 0), key=revision)
        target = ordered[-2] if len(ordered) >= 2 else None
        missing = (f"no rollout history found for deployment {namespace}/{name}: it has "
                   f"{len(ordered)} revision(s), so there is no previous one")
    if target is None:
        raise NoPreviousRevisionError(f"{missing}; nothing was changed or deleted")
    if deployment["spec"].get("paused"):
        raise RollbackFailed(f"you cannot roll back a paused deployment; resume it first with `kubectl rollout resume "
                             f"deployment/{name}` and try again")
    number = revision(target)
    generation = int(deployment["metadata"].get("generation") or 0)
    stale = condition(deployment, "Progressing")
    if same_template(target["spec"]["template"], deployment["spec"]["template"]):
        return RollbackOutcome(False, number, target["metadata"]["name"],
                               f"skipped rollback (current template already matches revision {number})", generation,
                               stale)
    template = without_hash(target["spec"]["template"])
    current = deployment["metadata"].get("annotations") or {}
    annotations = {k: current[k] for k in ANNOTATIONS_TO_SKIP if k in current}
    annotations.update({k: v for k, v in (target["metadata"].get("annotations") or {}).items()
                        if k not in ANNOTATIONS_TO_SKIP})
    # The test guards against another change of the template since it was read; status writes of the
    # controller (which also bump resourceVersion) do not matter here.
    patched = kube.patch_deployment(namespace, name, [
        {"op": "test", "path": "/spec/template", "value": deployment["spec"]["template"]},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace" if "annotations" in deployment["metadata"] else "add", "path": "/metadata/annotations",
         "value": annotations},
    ])
    return RollbackOutcome(True, number, target["metadata"]["name"], f"rolled back to revision {number}",
                           int(patched["metadata"].get("generation") or generation), stale)
