"""A Kubernetes cluster TEST DOUBLE on 127.0.0.1: API server, controllers, scheduler, kubelet and kube-proxy.

:class:`ClusterDouble` ties :mod:`doubles.k8s_api` (REST paths, JSON, patches, RBAC), :mod:`doubles.k8s_controllers`
(Deployment and ReplicaSet controllers, scheduler) and :mod:`doubles.k8s_kubelet` (pods as real processes, the
Service forwarder) together. The official ``kubernetes`` client reaches it through a kubeconfig the double
writes (:meth:`ClusterDouble.kubeconfig`), for the admin or for a ServiceAccount whose token is authorized by the
Role and RoleBinding objects applied to it.

Control endpoints, beside the Kubernetes API (no authentication; loopback only):

- ``POST /_double/faults`` ``{"fault": "<name>", "match": {"<pod annotation>": "<value>"}}``; ``DELETE`` clears;
- ``GET /_double/services/<namespace>/<name>``: ``{"<port name>": "127.0.0.1:<port>"}`` where the Service answers.

It also records, every controller tick, how many pods exist and how many are Ready per ReplicaSet
(:attr:`ClusterDouble.history`), so a test can check what a rolling update did at every moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from doubles.k8s_api import ADMIN_TOKEN, KubeApiDouble, Store
from doubles.k8s_controllers import Controllers, Faults
from doubles.k8s_kubelet import Kubelet, ServiceProxy


class ClusterDouble:
    """The whole double; a context manager.

    Args:
        root: Folder for the pods' volumes and logs and for the kubeconfig files.
        time_scale: Factor on the kubelet's probe periods, restart back-off and grace periods (see
            :mod:`doubles.k8s_kubelet`).
    """

    def __init__(self, root: Path, time_scale: float = 0.1) -> None:
        self.root = Path(root)
        self.store = Store()
        self.faults = Faults()
        self.kubelet = Kubelet(self.store, self.faults, self.root / "nodes" / "kube-double-node", time_scale)
        self.api = KubeApiDouble(self.store, log_reader=self.kubelet.read_log, control=self._control)
        self.controllers = Controllers(self.store, self.faults)
        self.proxy = ServiceProxy(self.store, self.kubelet)
        self.store.on_delete.append(self.kubelet.handle_delete)
        self.history: list[dict[str, Any]] = []
        self._history_lock = threading.Lock()
        self.controllers.observers.append(self._observe)

    def start(self) -> ClusterDouble:
        self.root.mkdir(parents=True, exist_ok=True)
        self.api.start()
        self.controllers.start()
        self.kubelet.start()
        self.proxy.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()
        self.controllers.stop()
        self.kubelet.stop()
        self.api.stop()

    def __enter__(self) -> ClusterDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of faults inside the double's loops (a test asserts there are none)."""
        return self.controllers.errors + self.kubelet.errors

    # -- clients -----------------------------------------------------------------------------------------------

    def token_for(self, namespace: str, service_account: str) -> str:
        return self.api.auth.token_for(namespace, service_account)

    def kubeconfig(self, token: str = ADMIN_TOKEN, name: str = "admin", namespace: str = "default") -> Path:
        """A kubeconfig file for ``token`` whose server is this double."""
        path = self.root / f"kubeconfig-{name}.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": self.api.url}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": name, "namespace": namespace}}],
        }))
        return path

    def client(self, token: str = ADMIN_TOKEN) -> Any:
        """A ``kubernetes.client.ApiClient`` for ``token``."""
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig(token, f"client-{token[:12]}")))

    def apply(self, documents: Iterable[Mapping[str, Any]], namespace: str) -> None:
        """Create every object with the admin client (``kubernetes.utils.create_from_dict``), like a first
        ``kubectl apply`` of rendered manifests."""
        from kubernetes import utils

        client = self.client()
        for document in documents:
            if document:
                utils.create_from_dict(client, dict(document), namespace=namespace)

    # -- double-only ---------------------------------------------------------------------------------------------

    def inject(self, fault: str, **match: str) -> None:
        """Inject ``fault`` into every pod whose annotations contain ``match`` (e.g. the model version)."""
        self.faults.add(fault, match)

    def service_address(self, namespace: str, service: str, port_name: str) -> str:
        return self.proxy.address(namespace, service, port_name)

    def _control(self, method: str, path: str, body: Any) -> Any:
        parts = [part for part in path.split("/") if part][1:]
        if parts == ["faults"] and method == "POST":
            self.inject(body["fault"], **body.get("match", {}))
            return {"faults": self.faults.rules}
        if parts == ["faults"] and method == "DELETE":
            self.faults.clear()
            return {"faults": []}
        if len(parts) == 3 and parts[0] == "services" and method == "GET":
            service = self.store.get("", "services", parts[1], parts[2])
            return {port.get("name") or str(port["port"]): self.service_address(parts[1], parts[2],
                                                                               port.get("name") or str(port["port"]))
                    for port in service["spec"].get("ports") or []}
        from doubles.k8s_objects import ApiError

        raise ApiError(404, "NotFound", f"no control endpoint {method} {path}")

    def _observe(self) -> None:
        pods = self.store.list("", "pods")
        snapshot = {"t": time.monotonic(), "pods": 0, "ready": 0, "by_rs": {}}
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            owner = next((ref["name"] for ref in pod["metadata"].get("ownerReferences") or []), "")
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            entry = snapshot["by_rs"].setdefault(owner, {"pods": 0, "ready": 0})
            entry["pods"] += 1
            entry["ready"] += ready
            snapshot["pods"] += 1
            snapshot["ready"] += ready
        with self._history_lock:
            self.history.append(snapshot)
            del self.history[:-20000]

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll ``predicate()`` until it is true; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
