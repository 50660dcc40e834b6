"""The official ``kubernetes`` client for deploy_tf_serving: configured in-cluster, from a kubeconfig, or for a host.

Inside a pipeline pod the ServiceAccount token is used (``load_incluster_config``); outside, a kubeconfig (the
given file and context, or ``~/.kube/config``); or an explicit API server URL with an optional bearer-token
file. Objects are read and written as raw JSON (``_preload_content=False``): the rollback re-applies a
ReplicaSet's pod template exactly as the API server returned it, including fields newer than this client's
models, which the typed models would drop.

Every call has a connect and a read timeout, and API errors become :class:`~kfp_tabular.errors.ClusterError`
naming the object, the HTTP status and reason, the server's message, and (for 401/403) the RBAC fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_tabular.errors import ClusterError, ConfigError
from kfp_tabular.text import clause

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


@dataclass(frozen=True)
class KubeAccess:
    """How to reach the Kubernetes API.

    Attributes:
        kubeconfig: A kubeconfig file; None: in-cluster inside a pod, else ``~/.kube/config``.
        context: The kubeconfig context (default: its current context).
        host: An API server URL (``https://...`` or ``http://127.0.0.1:<port>``); overrides the kubeconfig.
        token_file: A file holding a bearer token for ``host``.
        connect_timeout_s: Seconds to connect to the API server.
        read_timeout_s: Seconds to wait for an answer.
    """

    kubeconfig: str | None = None
    context: str | None = None
    host: str | None = None
    token_file: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kubeconfig and not Path(self.kubeconfig).expanduser().is_file():
            raise ConfigError(f"kubeconfig {self.kubeconfig!r} does not exist; pass an existing file or leave it "
                              "empty (in-cluster configuration inside a pod, ~/.kube/config outside)")
        if self.host and "://" not in self.host:
            raise ConfigError(f"kube host {self.host!r} must be a URL such as https://10.0.0.1:6443")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("Kubernetes API timeouts must be positive")


class Kube:
    """Raw-JSON access to the few API calls the deploy step makes."""

    def __init__(self, api_client: Any, access: KubeAccess, where: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.timeout = (access.connect_timeout_s, access.read_timeout_s)
        self.where = where

    def _call(self, what: str, method: Callable[..., Any], *args: Any, raw: bool = True, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            raise api_error(what, error, self.where) from None
        except (HTTPError, OSError) as error:
            raise ClusterError(f"cannot reach the Kubernetes API at {self.where} to {what}: {clause(error)}. Check the "
                               "kubeconfig / in-cluster configuration and the network from this pod") from None
        data = response.data
        return data.decode("utf-8", "replace") if not raw else json.loads(data)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """GET the Deployment."""
        return self._call(f"get deployment {namespace}/{name}", self.apps.read_namespaced_deployment, name, namespace)

    def patch_deployment(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """PATCH: a dict goes as a strategic merge patch, a list as a JSON patch (kubernetes 30.1 ``rest.py``)."""
        return self._call(f"patch deployment {namespace}/{name}", self.apps.patch_namespaced_deployment, name,
                          namespace, body)

    def replicasets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """LIST ReplicaSets by label selector."""
        return self._call(f"list replicasets in {namespace} ({selector})",
                          self.apps.list_namespaced_replica_set, namespace, label_selector=selector)["items"]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """LIST pods by label selector."""
        return self._call(f"list pods in {namespace} ({selector})", self.core.list_namespaced_pod, namespace,
                          label_selector=selector)["items"]

    def events(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        """LIST the events of a pod (field selector on involvedObject)."""
        return self._call(f"list events of pod {namespace}/{pod}", self.core.list_namespaced_event, namespace,
                          field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}")["items"]

    def log(self, namespace: str, pod: str, container: str, lines: int, previous: bool = False) -> str:
        """The last ``lines`` log lines of a container (``previous``: of its instance before the last)."""
        return self._call(f"read the log of {namespace}/{pod} container {container}",
                          self.core.read_namespaced_pod_log, pod, namespace, raw=False, container=container,
                          tail_lines=lines, previous=previous)


def api_error(what: str, error: Any, where: str) -> ClusterError:
    """A :class:`ClusterError` from an ``ApiException``, with the ``Status`` message and what to do."""
    message, reason = error.reason or "", ""
    try:
        status = json.loads(error.body or b"{}")
        message, reason = status.get("message", message), status.get("reason", "")
    except (TypeError, ValueError):
        pass
    advice = {
        401: "the credentials were refused: check the token / kubeconfig user",
        403: "the step's ServiceAccount lacks this permission: bind it to the kfp-tabular-deployer Role "
             "(manifests/base/rbac.yaml) in this namespace and run the step as that ServiceAccount",
        404: "check the namespace and the Deployment name, and that manifests/ were applied",
        409: "the object changed while the step read it (another deploy?); run the step again",
    }.get(error.status, "")
    return ClusterError(f"cannot {what}: HTTP {error.status} {reason or error.reason}: {message}"
                        + (f" — {advice}" if advice else "") + f" (API server {where})", status=error.status)


def connect(access: KubeAccess) -> Kube:
    """A :class:`Kube` for ``access`` (see the module docstring).

    Raises:
        ClusterError: no configuration can be loaded.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if access.host:
            configuration.host = access.host.rstrip("/")
            if access.token_file:
                token = Path(access.token_file).read_text().strip()
                configuration.api_key = {"authorization": f"Bearer {token}"}
            return Kube(client.ApiClient(configuration), access, configuration.host)
        if access.kubeconfig or not os.environ.get(IN_CLUSTER_ENV):
            api_client = config.new_client_from_config(
                config_file=str(Path(access.kubeconfig).expanduser()) if access.kubeconfig else None,
                context=access.context or None, persist_config=False)
            return Kube(api_client, access, api_client.configuration.host)
        config.load_incluster_config(client_configuration=configuration)
        return Kube(client.ApiClient(configuration), access, configuration.host)
    except (ConfigException, OSError) as error:
        raise ClusterError(f"cannot configure the Kubernetes client: {clause(error)}. Inside a pod the ServiceAccount "
                           "token must be mounted; outside, pass a kubeconfig or a host") from None
