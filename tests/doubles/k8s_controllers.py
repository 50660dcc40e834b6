"""Controller loops of the Kubernetes TEST DOUBLE: Deployment, ReplicaSet and a scheduler.

They follow ``pkg/controller/deployment`` (``sync.go``, ``rolling.go``, ``progress.go``,
``util/deployment_util.go``) and ``pkg/controller/replicaset`` of kubernetes/kubernetes:

- **new ReplicaSet per template**: the ReplicaSet whose template equals the Deployment's (ignoring
  ``pod-template-hash``) is the new one; else one is created, named ``<deployment>-<hash>``, with the hash
  label on its selector and template, ``deployment.kubernetes.io/revision`` = max old revision + 1 and
  ``desired-replicas`` / ``max-replicas``. An old ReplicaSet that becomes new again (a rollback) gets the next
  revision and its old one in ``deployment.kubernetes.io/revision-history``. The Deployment carries the new
  ReplicaSet's revision.
- **rolling update**: scale the new ReplicaSet up to ``replicas + maxSurge`` pods in total
  (``NewRSNewReplicas``), then scale old ones down: unhealthy replicas first (``cleanupUnhealthyReplicas``), then
  down to ``replicas - maxUnavailable`` available pods (``scaleDownOldReplicaSetsForRollingUpdate``), with
  ``maxSurge`` rounded up and ``maxUnavailable`` down from percentages and 1 unavailable when both are 0.
- **status** (``calculateStatus``): observedGeneration, replicas, updated, ready, available and unavailable
  replicas (zeros left out, as ``omitempty``); ``Available`` (``MinimumReplicasAvailable`` /
  ``MinimumReplicasUnavailable``) and ``Progressing`` (``NewReplicaSetCreated``, ``FoundNewReplicaSet``,
  ``ReplicaSetUpdated`` on any progress, ``NewReplicaSetAvailable`` when complete, and
  ``ProgressDeadlineExceeded`` once ``progressDeadlineSeconds`` pass without progress; it never rolls back).
  ``SetDeploymentCondition`` keeps a condition whose status and reason did not change, so after a rollback
  the timed-out condition stays until the rollout completes, as on a real cluster.
- **old ReplicaSets** beyond ``revisionHistoryLimit`` with no pods are deleted once the rollout is complete.
- **ReplicaSets** create pods from their template (``<rs>-<5 chars>``, owner reference, labels, annotations) and
  delete surplus pods worst first (unscheduled, pending, not ready, more restarts, newest); their status counts
  active, ready and available pods.
- **scheduler**: binds pods to the one node ``kube-double-node`` (``PodScheduled`` True, event ``Scheduled``),
  or, with the ``unschedulable`` fault, leaves them Pending with ``PodScheduled`` False ``Unschedulable`` and a
  ``FailedScheduling`` event, as the default scheduler does when no node has room.

Not modelled: proportional scaling of a mid-rollout replica change, ``Recreate``, ``paused``, ``minReadySeconds``
> 0 timing subtleties, orphan adoption, hash collisions.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from doubles.k8s_api import Store
from doubles.k8s_objects import (
    HASH_LABEL,
    now,
    parse_time,
    random_suffix,
    selector_object_matcher,
    template_hash,
    without_hash,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ANNOTATIONS_TO_SKIP = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                       DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"}
NODE = "kube-double-node"


def record_event(store: Store, obj: Mapping[str, Any], type_: str, reason: str, message: str,
                 component: str) -> None:
    """Record an Event on ``obj``; a repeat of the same reason and message counts up, as the event recorder."""
    meta = obj["metadata"]
    namespace = meta.get("namespace", "default")
    involved = {"kind": obj.get("kind"), "namespace": namespace, "name": meta["name"], "uid": meta.get("uid"),
                "apiVersion": obj.get("apiVersion"), "resourceVersion": meta.get("resourceVersion")}
    with store.lock:
        for event in store.list("", "events", namespace):
            same = event["involvedObject"].get("uid") == meta.get("uid")
            if same and event.get("reason") == reason and event.get("message") == message:
                def count(e: dict[str, Any]) -> None:
                    e["count"] = e.get("count", 1) + 1
                    e["lastTimestamp"] = now()
                store.mutate("", "events", namespace, event["metadata"]["name"], count)
                return
        stamp = now()
        store.create("", "events", namespace, {
            "metadata": {"name": f"{meta['name']}.{random_suffix(10)}", "namespace": namespace},
            "involvedObject": involved, "reason": reason, "message": message, "type": type_,
            "source": {"component": component, **({"host": NODE} if component == "kubelet" else {})},
            "reportingComponent": component, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        scaled = int(text[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(text)


def fenceposts(deployment: Mapping[str, Any]) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` resolved for the Deployment's replicas (``ResolveFenceposts``)."""
    spec = deployment["spec"]
    replicas = spec.get("replicas", 1)
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def revision(rs: Mapping[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _spec_replicas(rs: Mapping[str, Any]) -> int:
    return int(rs["spec"].get("replicas", 0) or 0)


def _status(rs: Mapping[str, Any], key: str) -> int:
    return int((rs.get("status") or {}).get(key, 0) or 0)


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _set_condition(status: dict[str, Any], kind: str, value: str, reason: str, message: str,
                   keep_transition: bool = True) -> None:
    """``SetDeploymentCondition``: unchanged status and reason keep the condition as it is."""
    current = _condition(status, kind)
    if current is not None and current["status"] == value and current.get("reason") == reason:
        return
    stamp = now()
    condition = {"type": kind, "status": value, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
                 "reason": reason, "message": message}
    if current is not None and current["status"] == value and keep_transition:
        condition["lastTransitionTime"] = current["lastTransitionTime"]
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind] + [condition]


class Faults:
    """Faults injected into pods: by a pod-template annotation, or registered by a test (control endpoint).

    A rule ``{"match": {annotation: value, ...}, "fault": name}`` applies to every pod whose annotations contain
    all of ``match``. Faults: ``unschedulable``, ``image-pull``, ``crash-loop``, ``oom``, ``wrong-answer``,
    ``never-ready``.
    """

    ANNOTATION = "double.kfp-tabular.dev/fault"
    KNOWN = ("unschedulable", "image-pull", "crash-loop", "oom", "wrong-answer", "never-ready")

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, fault: str, match: Mapping[str, str]) -> None:
        if fault not in self.KNOWN:
            raise ValueError(f"unknown fault {fault!r}; known: {self.KNOWN}")
        with self.lock:
            self.rules.append({"fault": fault, "match": dict(match)})

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def of(self, pod: Mapping[str, Any]) -> set[str]:
        annotations = pod["metadata"].get("annotations") or {}
        found = {name.strip() for name in annotations.get(self.ANNOTATION, "").split(",") if name.strip()}
        with self.lock:
            for rule in self.rules:
                if all(annotations.get(k) == v for k, v in rule["match"].items()):
                    found.add(rule["fault"])
        return found


class Controllers:
    """The Deployment controller, the ReplicaSet controller and the scheduler, in one loop thread."""

    def __init__(self, store: Store, faults: Faults, tick_s: float = 0.1) -> None:
        self.store = store
        self.faults = faults
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.observers: list[Callable[[], None]] = []

    def start(self) -> Controllers:
        self._thread = threading.Thread(target=self._run, name="kube-controllers-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        import traceback

        while not self._stop.wait(self.tick_s):
            try:
                self.sync_once()
                for observe in self.observers:
                    observe()
            except Exception:  # a fault in the double must show up in the test, not kill the loop
                self.errors.append(traceback.format_exc())

    def sync_once(self) -> None:
        for deployment in self.store.list("apps", "deployments"):
            self.sync_deployment(deployment)
        for rs in self.store.list("apps", "replicasets"):
            self.sync_replicaset(rs)
        for pod in self.store.list("", "pods", where=lambda p: not p["spec"].get("nodeName")):
            self.schedule(pod)

    # -- Deployment controller ---------------------------------------------------------------------------------

    def _owned(self, owner: Mapping[str, Any], group: str, resource: str) -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return self.store.list(group, resource, owner["metadata"]["namespace"], lambda o: any(
            ref.get("uid") == uid and ref.get("controller") for ref in o["metadata"].get("ownerReferences") or []))

    def sync_deployment(self, d: dict[str, Any]) -> None:
        if d["metadata"].get("deletionTimestamp") or d["spec"].get("paused"):
            return
        namespace, name = d["metadata"]["namespace"], d["metadata"]["name"]
        rss = sorted(self._owned(d, "apps", "replicasets"), key=lambda r: r["metadata"]["creationTimestamp"])
        wanted = without_hash(d["spec"]["template"])
        new_rs = next((rs for rs in rss if without_hash(rs["spec"]["template"]) == wanted), None)
        old_rss = [rs for rs in rss if rs is not new_rs]
        max_old = max((revision(rs) for rs in old_rss), default=0)
        status = copy.deepcopy(d.get("status") or {})
        surge, max_unavailable = fenceposts(d)
        replicas = d["spec"].get("replicas", 1)
        if new_rs is None:
            new_rs = self._create_rs(d, old_rss, max_old + 1, surge)
            if d["spec"].get("progressDeadlineSeconds") is not None:
                _set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                               f'Created new replica set "{new_rs["metadata"]["name"]}"')
        else:
            new_rs = self._sync_revision(d, new_rs, max_old, surge)
            if d["spec"].get("progressDeadlineSeconds") is not None and _condition(status, "Progressing") is None:
                _set_condition(status, "Progressing", "True", "FoundNewReplicaSet",
                               f'Found new replica set "{new_rs["metadata"]["name"]}"')
        wanted_revision = str(revision(new_rs))
        if (d["metadata"].get("annotations") or {}).get(REVISION) != wanted_revision:
            def set_revision(obj: dict[str, Any]) -> None:
                obj["metadata"].setdefault("annotations", {})[REVISION] = wanted_revision
            d = self.store.mutate("apps", "deployments", namespace, name, set_revision) or d
        all_rss = [*old_rss, new_rs]
        # Scale up, then down (rolloutRolling); each pass changes one thing and the next tick continues.
        if not self._reconcile_new(d, all_rss, new_rs, replicas, surge):
            self._reconcile_old(d, all_rss, old_rss, new_rs, replicas, max_unavailable)
        all_rss = [self.store.find("apps", "replicasets", namespace, rs["metadata"]["name"]) or rs
                   for rs in all_rss]
        new_rs = all_rss[-1]
        self._sync_status(d, all_rss, new_rs, status, replicas, max_unavailable)
        if self._complete(d, d.get("status") or {}):
            self._cleanup(d, [rs for rs in all_rss[:-1]])

    def _create_rs(self, d: dict[str, Any], old_rss: list[dict[str, Any]], number: int,
                   surge: int) -> dict[str, Any]:
        meta = d["metadata"]
        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = template_hash(template, d.get("status", {}).get("collisionCount", 0))
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        replicas = d["spec"].get("replicas", 1)
        current = sum(_spec_replicas(rs) for rs in old_rss)
        count = max(0, min(replicas + surge - current, replicas))
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in ANNOTATIONS_TO_SKIP}
        annotations.update({REVISION: str(number), DESIRED_REPLICAS: str(replicas),
                            MAX_REPLICAS: str(replicas + surge)})
        rs = self.store.create("apps", "replicasets", meta["namespace"], {
            "metadata": {"name": f"{meta['name']}-{pod_hash}", "namespace": meta["namespace"],
                         "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"replicas": count, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                     "selector": selector, "template": template},
            "status": {"replicas": 0},
        })
        if count:
            record_event(self.store, d, "Normal", "ScalingReplicaSet",
                         f"Scaled up replica set {rs['metadata']['name']} from 0 to {count}", "deployment-controller")
        return self.store.get("apps", "replicasets", meta["namespace"], rs["metadata"]["name"])

    def _sync_revision(self, d: dict[str, Any], rs: dict[str, Any], max_old: int, surge: int) -> dict[str, Any]:
        """``SetNewReplicaSetAnnotations`` on an existing new ReplicaSet (its revision, copied annotations)."""
        replicas = d["spec"].get("replicas", 1)
        wanted = {k: v for k, v in (d["metadata"].get("annotations") or {}).items() if k not in ANNOTATIONS_TO_SKIP}
        old_revision = revision(rs)
        new_revision = max(old_revision, max_old + 1)

        def update(obj: dict[str, Any]) -> None:
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations.update(wanted)
            if new_revision != old_revision:
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                if old_revision:
                    history.append(str(old_revision))
                annotations[REVISION_HISTORY] = ",".join(history)
                annotations[REVISION] = str(new_revision)
            annotations[DESIRED_REPLICAS] = str(replicas)
            annotations[MAX_REPLICAS] = str(replicas + surge)

        changed = copy.deepcopy(rs)
        update(changed)
        if changed["metadata"].get("annotations") == rs["metadata"].get("annotations"):
            return rs
        namespace, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        return self.store.mutate("apps", "replicasets", namespace, name, update) or rs

    def _scale(self, d: dict[str, Any], rs: dict[str, Any], count: int) -> None:
        before = _spec_replicas(rs)
        if before == count:
            return
        replicas = d["spec"].get("replicas", 1)
        surge, _ = fenceposts(d)

        def scale(obj: dict[str, Any]) -> None:
            obj["spec"]["replicas"] = count
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[DESIRED_REPLICAS] = str(replicas)
            annotations[MAX_REPLICAS] = str(replicas + surge)

        self.store.mutate("apps", "replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], scale)
        rs["spec"]["replicas"] = count
        direction = "up" if count > before else "down"
        record_event(self.store, d, "Normal", "ScalingReplicaSet",
                     f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {count}",
                     "deployment-controller")

    def _reconcile_new(self, d: dict[str, Any], all_rss: list[dict[str, Any]], new_rs: dict[str, Any],
                       replicas: int, surge: int) -> bool:
        current = _spec_replicas(new_rs)
        if current == replicas:
            return False
        if current > replicas:
            self._scale(d, new_rs, replicas)
            return True
        total = sum(_spec_replicas(rs) for rs in all_rss)
        if total >= replicas + surge:
            return False
        count = current + min(replicas + surge - total, replicas - current)
        self._scale(d, new_rs, count)
        return True

    def _reconcile_old(self, d: dict[str, Any], all_rss: list[dict[str, Any]], old_rss: list[dict[str, Any]],
                       new_rs: dict[str, Any], replicas: int, max_unavailable: int) -> bool:
        old_active = [rs for rs in old_rss if _spec_replicas(rs) > 0]
        if not old_active:
            return False
        all_pods = sum(_spec_replicas(rs) for rs in all_rss)
        min_available = replicas - max_unavailable
        new_unavailable = _spec_replicas(new_rs) - _status(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        scaled = 0
        for rs in sorted(old_active, key=lambda r: r["metadata"]["creationTimestamp"]):  # cleanupUnhealthyReplicas
            if scaled >= max_scaled_down:
                break
            unhealthy = _spec_replicas(rs) - _status(rs, "availableReplicas")
            if unhealthy <= 0:
                continue
            down = min(max_scaled_down - scaled, unhealthy)
            self._scale(d, rs, _spec_replicas(rs) - down)
            scaled += down
        available = sum(_status(rs, "availableReplicas") for rs in all_rss)  # scaleDownOldReplicaSets...
        if available > min_available:
            budget = available - min_available
            for rs in sorted(old_active, key=lambda r: r["metadata"]["creationTimestamp"]):
                if budget <= 0:
                    break
                if _spec_replicas(rs) == 0:
                    continue
                down = min(_spec_replicas(rs), budget)
                self._scale(d, rs, _spec_replicas(rs) - down)
                budget -= down
                scaled += down
        return scaled > 0

    @staticmethod
    def _complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """``DeploymentComplete``."""
        replicas = d["spec"].get("replicas", 1)
        return (status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
                and status.get("availableReplicas", 0) == replicas
                and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1))

    def _sync_status(self, d: dict[str, Any], all_rss: list[dict[str, Any]], new_rs: dict[str, Any],
                     previous: dict[str, Any], replicas: int, max_unavailable: int) -> None:
        available = sum(_status(rs, "availableReplicas") for rs in all_rss)
        total = sum(_spec_replicas(rs) for rs in all_rss)
        counts = {
            "replicas": sum(_status(rs, "replicas") for rs in all_rss),
            "updatedReplicas": _status(new_rs, "replicas"),
            "readyReplicas": sum(_status(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
        }
        status: dict[str, Any] = {"observedGeneration": d["metadata"].get("generation", 1)}
        status.update({k: v for k, v in counts.items() if v})  # omitempty
        status["conditions"] = copy.deepcopy(previous.get("conditions") or [])
        if available >= replicas - max_unavailable:
            _set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            _set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                           "Deployment does not have minimum availability.")
        deadline = d["spec"].get("progressDeadlineSeconds")
        current = _condition(previous, "Progressing")
        old_status = d.get("status") or {}
        rs_name = new_rs["metadata"]["name"]
        complete_before = (counts["replicas"] == counts["updatedReplicas"] and current is not None
                           and current.get("reason") == "NewReplicaSetAvailable")
        if deadline is not None and not complete_before:
            if self._complete(d, status):
                _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                               f'ReplicaSet "{rs_name}" has successfully progressed.')
            elif self._progressing(old_status, status):
                stamp = now()
                condition = {"type": "Progressing", "status": "True", "lastUpdateTime": stamp,
                             "lastTransitionTime": stamp, "reason": "ReplicaSetUpdated",
                             "message": f'ReplicaSet "{rs_name}" is progressing.'}
                if current is not None and current["status"] == "True":
                    condition["lastTransitionTime"] = current["lastTransitionTime"]
                status["conditions"] = [c for c in status["conditions"] if c["type"] != "Progressing"] + [condition]
            elif self._timed_out(d, status):
                _set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                               f'ReplicaSet "{rs_name}" has timed out progressing.')
        if deadline is None:
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Progressing"]
        if "collisionCount" in old_status:
            status["collisionCount"] = old_status["collisionCount"]
        if status != old_status:
            namespace, name = d["metadata"]["namespace"], d["metadata"]["name"]
            self.store.mutate("apps", "deployments", namespace, name, lambda o: o.__setitem__("status", status),
                              status=True)
            d["status"] = status

    @staticmethod
    def _progressing(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """``DeploymentProgressing``."""
        def value(status: Mapping[str, Any], key: str) -> int:
            return int(status.get(key, 0) or 0)
        old_old = value(old, "replicas") - value(old, "updatedReplicas")
        new_old = value(new, "replicas") - value(new, "updatedReplicas")
        return (value(new, "updatedReplicas") > value(old, "updatedReplicas") or new_old < old_old
                or value(new, "readyReplicas") > value(old, "readyReplicas")
                or value(new, "availableReplicas") > value(old, "availableReplicas"))

    @staticmethod
    def _timed_out(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """``DeploymentTimedOut``."""
        condition = _condition(status, "Progressing")
        if condition is None or condition.get("reason") == "NewReplicaSetAvailable":
            return False
        if condition.get("reason") == "ProgressDeadlineExceeded":
            return True
        return time.time() > parse_time(condition.get("lastUpdateTime")) + d["spec"]["progressDeadlineSeconds"]

    def _cleanup(self, d: Mapping[str, Any], old_rss: list[dict[str, Any]]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = sorted((rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")), key=revision)
        surplus = len(cleanable) - limit
        for rs in cleanable:
            if surplus <= 0:
                break
            if _spec_replicas(rs) or _status(rs, "replicas") or \
                    rs["metadata"].get("generation", 1) > (rs.get("status") or {}).get("observedGeneration", 0):
                continue
            self.store.remove("apps", "replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
            surplus -= 1

    # -- ReplicaSet controller ---------------------------------------------------------------------------------

    def sync_replicaset(self, rs: dict[str, Any]) -> None:
        namespace, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        pods = self._owned(rs, "", "pods")
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                  and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        wanted = _spec_replicas(rs)
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                active.append(self._create_pod(rs))
        elif len(active) > wanted:
            for pod in sorted(active, key=_deletion_rank)[: len(active) - wanted]:
                self.store.delete("", "pods", namespace, pod["metadata"]["name"])
                record_event(self.store, rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                             "replicaset-controller")
                active.remove(pod)
        min_ready = rs["spec"].get("minReadySeconds", 0)
        ready = [p for p in active if _pod_ready_since(p) is not None]
        available = [p for p in ready if time.time() - (_pod_ready_since(p) or 0) >= min_ready]
        matcher = selector_object_matcher({"matchLabels": (rs["spec"]["template"]["metadata"].get("labels") or {})})
        status = {"replicas": len(active), "observedGeneration": rs["metadata"].get("generation", 1)}
        for key, value in (("fullyLabeledReplicas", sum(1 for p in active if matcher(p["metadata"].get("labels")))),
                           ("readyReplicas", len(ready)), ("availableReplicas", len(available))):
            if value:
                status[key] = value
        if (rs.get("status") or {}) != status:
            self.store.mutate("apps", "replicasets", namespace, name, lambda o: o.__setitem__("status", status),
                              status=True)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = rs["metadata"]
        pod = self.store.create("", "pods", meta["namespace"], {
            "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                         "labels": template["metadata"].get("labels") or {},
                         "annotations": template["metadata"].get("annotations") or {},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        })
        record_event(self.store, rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                     "replicaset-controller")
        return self.store.get("", "pods", meta["namespace"], pod["metadata"]["name"])

    # -- scheduler ---------------------------------------------------------------------------------------------

    def schedule(self, pod: dict[str, Any]) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if "unschedulable" in self.faults.of(pod):
            message = ("0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No "
                       "preemption victims found for incoming pod.")
            existing = _condition(pod.get("status") or {}, "PodScheduled")
            if existing is None or existing.get("reason") != "Unschedulable":
                def unschedulable(obj: dict[str, Any]) -> None:
                    status = obj.setdefault("status", {"phase": "Pending"})
                    status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
                    status["conditions"].append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                                                 "lastTransitionTime": now(), "reason": "Unschedulable",
                                                 "message": message})
                self.store.mutate("", "pods", namespace, name, unschedulable, status=True)
                record_event(self.store, pod, "Warning", "FailedScheduling", message, "default-scheduler")
            return

        def bind(obj: dict[str, Any]) -> None:
            obj["spec"]["nodeName"] = NODE

        self.store.mutate("", "pods", namespace, name, bind)

        def scheduled(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {"phase": "Pending"})
            status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
            status["conditions"].append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                         "lastTransitionTime": now()})

        self.store.mutate("", "pods", namespace, name, scheduled, status=True)
        record_event(self.store, pod, "Normal", "Scheduled", f"Successfully assigned {namespace}/{name} to {NODE}",
                     "default-scheduler")


def _pod_ready_since(pod: Mapping[str, Any]) -> float | None:
    if pod["metadata"].get("deletionTimestamp"):
        return None
    condition = _condition(pod.get("status") or {}, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def _deletion_rank(pod: Mapping[str, Any]) -> tuple[int, int, int, int, float]:
    """``controller.ActivePods`` order: the pods to delete first sort first."""
    status = pod.get("status") or {}
    phase = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", "Pending"), 0)
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    return (1 if pod["spec"].get("nodeName") else 0, phase, 0 if _pod_ready_since(pod) is None else 1, -restarts,
            -parse_time(pod["metadata"].get("creationTimestamp")))
