"""A Kubernetes API server TEST DOUBLE: an HTTP server on 127.0.0.1 with the real REST paths and JSON.

The official ``kubernetes`` Python client is pointed at it unchanged (a kubeconfig whose server is
``http://127.0.0.1:<port>``). It stores any namespaced object under its real path
(``/api/v1/namespaces/<ns>/<resource>`` for the core group, ``/apis/<group>/<version>/namespaces/<ns>/<resource>``
otherwise) and answers as the API server does for what the deploy step uses:

- get, list (``labelSelector``, ``fieldSelector``), create (POST), replace (PUT), patch and delete;
- PATCH with the content types the client sends (kubernetes 30.1 ``rest.py``: ``application/json-patch+json``
  for a list body, else ``application/strategic-merge-patch+json``) and merge patch; ``metadata.resourceVersion``
  in a patch or PUT is a precondition (409 ``Conflict`` when it is stale);
- ``metadata.generation`` counts spec changes of Deployments and ReplicaSets; ``status`` is written only by the
  controllers (a client's status in a patch is ignored, as for the main resource of the real server);
- ``GET /api/v1/namespaces/<ns>/pods/<name>/log?container=&tailLines=&previous=`` from the kubelet double, with
  the real 400 answers for a waiting container or a missing previous instance;
- ``Status`` bodies for errors (404 ``NotFound``, 409, 422 ``Invalid``, 400, 401, 403 ``Forbidden``, 405, 415);
- RBAC: a request with a ServiceAccount token is authorized against the namespace's stored ``Role`` and
  ``RoleBinding`` objects (``rbac/v1`` rule semantics: apiGroups, resources incl. ``pods/log``, verbs,
  resourceNames; no ``ClusterRole``), so a test applies the real ``manifests/`` Role and the deploy step gets 403
  for anything outside it. The admin token may do anything; no token is 401.

Not implemented (answered 405/415 where a client could ask): watch, server-side apply, discovery, ClusterRoles,
admission (Pod Security), finalizers and garbage collection other than a pod's owner scaling it away.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.server
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from doubles.k8s_objects import (
    ApiError,
    already_exists,
    bad_request,
    check_string_maps,
    conflict,
    default_deployment,
    default_pod_spec,
    field_matcher,
    invalid,
    json_patch,
    label_matcher,
    merge_patch,
    new_uid,
    not_found,
    now,
    qualified,
    strategic_merge,
    validate_deployment,
)

ADMIN_TOKEN = "kube-api-double-admin"

# (group, resource) -> (version, kind, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("", "namespaces"): ("v1", "Namespace", False),
    ("", "pods"): ("v1", "Pod", True),
    ("", "events"): ("v1", "Event", True),
    ("", "secrets"): ("v1", "Secret", True),
    ("", "configmaps"): ("v1", "ConfigMap", True),
    ("", "services"): ("v1", "Service", True),
    ("", "serviceaccounts"): ("v1", "ServiceAccount", True),
    ("apps", "deployments"): ("v1", "Deployment", True),
    ("apps", "replicasets"): ("v1", "ReplicaSet", True),
    ("rbac.authorization.k8s.io", "roles"): ("v1", "Role", True),
    ("rbac.authorization.k8s.io", "rolebindings"): ("v1", "RoleBinding", True),
    ("networking.k8s.io", "networkpolicies"): ("v1", "NetworkPolicy", True),
    ("policy", "poddisruptionbudgets"): ("v1", "PodDisruptionBudget", True),
    ("autoscaling", "horizontalpodautoscalers"): ("v2", "HorizontalPodAutoscaler", True),
    ("monitoring.coreos.com", "podmonitors"): ("v1", "PodMonitor", True),
}
KIND_TO_RESOURCE = {kind: key for key, (_, kind, _) in RESOURCES.items()}
FIELD_SELECTORS = {
    "pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
    "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
               "reason", "reportingComponent", "source", "type", "metadata.name", "metadata.namespace"),
}
GENERATION_COUNTED = {("apps", "deployments"), ("apps", "replicasets")}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")


class Store:
    """The API server's storage: objects by (group, resource) and (namespace, name); thread-safe.

    Controllers and the kubelet double use it directly (as the real ones use the API through informers); every
    write bumps the global ``resourceVersion``.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._version = 1000
        self.changed = threading.Condition(self.lock)
        self.on_delete: list[Callable[[str, str, dict[str, Any]], bool]] = []

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        self.changed.notify_all()

    @property
    def resource_version(self) -> str:
        return str(self._version)

    def _bucket(self, group: str, resource: str) -> dict[tuple[str, str], dict[str, Any]]:
        if (group, resource) not in RESOURCES:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({resource})")
        return self._objects.setdefault((group, resource), {})

    def get(self, group: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            found = self._bucket(group, resource).get((namespace, name))
            if found is None:
                raise not_found(resource, group, name)
            return copy.deepcopy(found)

    def find(self, group: str, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(group, resource, namespace, name)
        except ApiError:
            return None

    def list(self, group: str, resource: str, namespace: str | None = None,
             where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = [copy.deepcopy(obj) for (ns, _), obj in sorted(self._bucket(group, resource).items())
                     if namespace is None or ns == namespace]
        return [obj for obj in items if where is None or where(obj)]

    def create(self, group: str, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        version, kind, namespaced = RESOURCES[(group, resource)]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            from doubles.k8s_objects import random_suffix

            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name")
        if not name:
            raise invalid(kind, group, "", [("metadata.name", "Required value: name or generateName is required")])
        obj["apiVersion"] = f"{group}/{version}" if group else version
        obj["kind"] = kind
        if namespaced:
            meta["namespace"] = namespace
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now()
        if (group, resource) in GENERATION_COUNTED:
            meta["generation"] = 1
        with self.lock:
            bucket = self._bucket(group, resource)
            if (namespace if namespaced else "", name) in bucket:
                raise already_exists(resource, group, name)
            self._bump(obj)
            bucket[(namespace if namespaced else "", name)] = obj
            return copy.deepcopy(obj)

    def replace(self, group: str, resource: str, obj: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        """Store ``obj`` over the current one; ``status=True`` writes only its status (a controller's update)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        with self.lock:
            bucket = self._bucket(group, resource)
            current = bucket.get((namespace, meta["name"]))
            if current is None:
                raise not_found(resource, group, meta["name"])
            stored = copy.deepcopy(current)
            if status:
                if stored.get("status") == obj.get("status"):
                    return copy.deepcopy(current)
                stored["status"] = copy.deepcopy(obj.get("status") or {})
            else:
                if (group, resource) in GENERATION_COUNTED and current.get("spec") != obj.get("spec"):
                    meta = dict(meta, generation=current["metadata"].get("generation", 1) + 1)
                else:
                    meta = dict(meta, generation=current["metadata"].get("generation")) \
                        if "generation" in current["metadata"] else dict(meta)
                for key in ("uid", "creationTimestamp", "namespace", "name"):
                    if key in current["metadata"]:
                        meta[key] = current["metadata"][key]
                stored = {**copy.deepcopy(obj), "metadata": copy.deepcopy(meta),
                          "status": copy.deepcopy(current.get("status", obj.get("status")))}
                if stored["status"] is None:
                    stored.pop("status")
                if stored == current:
                    return copy.deepcopy(current)
            self._bump(stored)
            bucket[(namespace, meta["name"])] = stored
            return copy.deepcopy(stored)

    def mutate(self, group: str, resource: str, namespace: str, name: str,
               change: Callable[[dict[str, Any]], None], *, status: bool = False) -> dict[str, Any] | None:
        """Read-modify-write under the lock; None when the object is gone."""
        with self.lock:
            obj = self.find(group, resource, namespace, name)
            if obj is None:
                return None
            change(obj)
            return self.replace(group, resource, obj, status=status)

    def remove(self, group: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            bucket = self._bucket(group, resource)
            obj = bucket.pop((namespace, name), None)
            if obj is None:
                raise not_found(resource, group, name)
            self._bump(obj)
            return copy.deepcopy(obj)

    def delete(self, group: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete as a client asks: a handler (the kubelet for pods) may take it over for a graceful end."""
        obj = self.get(group, resource, namespace, name)
        for handler in self.on_delete:
            if handler(group, resource, obj):
                return self.get(group, resource, namespace, name)
        return self.remove(group, resource, namespace, name)


class Authorizer:
    """Bearer tokens to users, and RBAC ``Role`` rules for ServiceAccounts (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tokens: dict[str, str] = {ADMIN_TOKEN: "kubernetes-admin"}

    def token_for(self, namespace: str, service_account: str) -> str:
        token = f"sa-{namespace}-{service_account}-{new_uid()[:8]}"
        self.tokens[token] = f"system:serviceaccount:{namespace}:{service_account}"
        return token

    def user(self, header: str | None) -> str:
        if not header or not header.lower().startswith("bearer "):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        user = self.tokens.get(header.split(None, 1)[1].strip())
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def allowed(self, user: str, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        if user == "kubernetes-admin":
            return True
        if not user.startswith("system:serviceaccount:"):
            return False
        sa_namespace, sa_name = user.split(":")[2:4]
        for binding in self.store.list("rbac.authorization.k8s.io", "rolebindings", namespace):
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                       and s.get("namespace", namespace) == sa_namespace for s in binding.get("subjects") or []):
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "Role":
                continue
            role = self.store.find("rbac.authorization.k8s.io", "roles", namespace, ref.get("name", ""))
            for rule in (role or {}).get("rules") or []:
                if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                        and verb in rule.get("verbs", [])
                        and (not rule.get("resourceNames") or (name and name in rule["resourceNames"]))):
                    return True
        return False

    def check(self, user: str, verb: str, group: str, resource: str, namespace: str, name: str) -> None:
        if self.allowed(user, verb, group, resource, namespace, name):
            return
        what = f'{qualified(resource.split("/")[0], group)} "{name}"' if name else qualified(resource, group)
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise ApiError(403, "Forbidden", f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                       f'in API group "{group}"{where}',
                       {"name": name, "group": group, "kind": resource.split("/")[0]} if name
                       else {"group": group, "kind": resource})


class KubeApiDouble:
    """The HTTP side: routes, authorization, patches, defaults and validation over a :class:`Store`.

    Args:
        store: The storage shared with the controller and kubelet doubles.
        log_reader: ``(namespace, pod, container, previous, tail_lines) -> text`` (the kubelet double).
        control: ``(method, path, body) -> JSON`` for the double's own ``/_double/`` endpoints (faults, ports).
    """

    def __init__(self, store: Store, log_reader: Callable[..., str] | None = None,
                 control: Callable[[str, str, Any], Any] | None = None) -> None:
        self.store = store
        self.auth = Authorizer(store)
        self.log_reader = log_reader
        self.control = control
        self.requests: list[tuple[str, str, int, str]] = []  # (method, path, status, user): what clients did
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubeApiDouble:
        api = self

        class Handler(_Handler):
            double = api

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="kube-api-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- requests ----------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        """Answer one request: (status, content type, body)."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path.startswith("/_double/"):
            if self.control is None:
                raise ApiError(404, "NotFound", "no control endpoints")
            payload = json.loads(body) if body else None
            return 200, "application/json", json.dumps(self.control(method, parts.path, payload)).encode()
        group, resource, namespace, name, sub = _route(parts.path)
        user = self.auth.user(headers.get("Authorization"))
        verb = VERBS.get(method, "")
        if method == "GET" and not name:
            verb = "watch" if _bool(query.get("watch")) else "list"
        self.auth.check(user, verb, group, f"{resource}/{sub}" if sub else resource, namespace, name)
        if verb == "watch":
            raise ApiError(405, "MethodNotAllowed", "the Kubernetes API double does not implement watch; poll instead")
        if sub == "log":
            return self._log(namespace, name, query)
        if sub and not (sub == "status" and method == "GET"):
            raise ApiError(405, "MethodNotAllowed", f"the double does not serve {method} on {resource}/{sub}")
        if method == "GET" and name:
            return _json(200, self.store.get(group, resource, namespace, name))
        if method == "GET":
            return _json(200, self._list(group, resource, namespace, query))
        if method == "POST" and not name:
            return _json(201, self._create(group, resource, namespace, _decode(body)))
        if method == "PUT" and name:
            return _json(200, self._write(group, resource, namespace, name, _decode(body)))
        if method == "PATCH" and name:
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            return _json(200, self._patch(group, resource, namespace, name, content_type, body))
        if method == "DELETE" and name:
            return _json(200, self.store.delete(group, resource, namespace, name))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _list(self, group: str, resource: str, namespace: str, query: Mapping[str, str]) -> dict[str, Any]:
        labels = label_matcher(query.get("labelSelector"))
        fields = field_matcher(query.get("fieldSelector"),
                               FIELD_SELECTORS.get(resource, ("metadata.name", "metadata.namespace")))
        items = self.store.list(group, resource, namespace or None,
                                lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj))
        version, kind, _ = RESOURCES[(group, resource)]
        for item in items:  # list items carry no kind / apiVersion, as the API server writes them
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind}List", "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": self.store.resource_version}, "items": items}

    def _prepare(self, group: str, resource: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
        check_string_maps(obj)
        _, kind, _ = RESOURCES[(group, resource)]
        if (group, resource) == ("apps", "deployments"):
            default_deployment(obj)
            causes = validate_deployment(obj, previous)
            if causes:
                raise invalid(kind, group, obj["metadata"].get("name", ""), causes)
        elif (group, resource) == ("", "pods"):
            default_pod_spec(obj.setdefault("spec", {}))
        elif (group, resource) == ("", "secrets") and obj.get("stringData"):
            # The API server stores stringData base64-encoded in data and never returns stringData.
            data = obj.setdefault("data", {})
            data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()})

    def _create(self, group: str, resource: str, namespace: str, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise bad_request("the body of a create must be a JSON object")
        _, kind, _ = RESOURCES[(group, resource)]
        if obj.get("kind") not in (None, kind):
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the expected "
                              f"API version / kind ({kind})")
        obj.setdefault("metadata", {}).pop("resourceVersion", None)
        self._prepare(group, resource, obj, None)
        obj.pop("status", None)
        return self.store.create(group, resource, namespace, obj)

    def _write(self, group: str, resource: str, namespace: str, name: str, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise bad_request("the body of an update must be a JSON object")
        with self.store.lock:
            current = self.store.get(group, resource, namespace, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                                  f"({name})")
            wanted = meta.get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise conflict(resource, group, name)
            meta["name"], meta["namespace"] = name, namespace
            self._prepare(group, resource, obj, current)
            return self.store.replace(group, resource, obj)

    def _patch(self, group: str, resource: str, namespace: str, name: str, content_type: str,
               body: bytes) -> dict[str, Any]:
        if content_type not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                           f"media types include: {', '.join(PATCH_TYPES)} (server-side apply is not in the double)")
        patch = _decode(body)
        with self.store.lock:
            current = self.store.get(group, resource, namespace, name)
            if content_type == "application/json-patch+json":
                patched = json_patch(current, patch)
            elif not isinstance(patch, dict):
                raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
            elif content_type == "application/merge-patch+json":
                patched = merge_patch(current, patch)
            else:
                patched = strategic_merge(current, patch)
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            wanted = (patched.get("metadata") or {}).get("resourceVersion")
            if wanted != current["metadata"]["resourceVersion"]:
                raise conflict(resource, group, name)  # a patch that sets resourceVersion is a precondition
            patched["status"] = current.get("status")
            if patched["status"] is None:
                patched.pop("status")
            self._prepare(group, resource, patched, current)
            return self.store.replace(group, resource, patched)

    def _log(self, namespace: str, name: str, query: Mapping[str, str]) -> tuple[int, str, bytes]:
        pod = self.store.get("", "pods", namespace, name)
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        container = query.get("container")
        if not container:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {name}, choose one of: {names} or one "
                                  f"of the init containers: {init_names}")
            container = names[0]
        if container not in names + init_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        tail = query.get("tailLines")
        if tail is not None and (not tail.lstrip("-").isdigit()):
            raise bad_request(f'invalid tailLines: "{tail}"')
        if self.log_reader is None:
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        text = self.log_reader(namespace, name, container, _bool(query.get("previous")),
                               None if tail is None else max(0, int(tail)))
        return 200, "text/plain", text.encode("utf-8")


def _bool(value: str | None) -> bool:
    """A boolean query parameter, as Go's ``strconv.ParseBool`` reads it (the Python client sends ``True``)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise bad_request(f"error decoding the request body: {error}") from None


def _json(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj).encode()


def _route(path: str) -> tuple[str, str, str, str, str]:
    """``(group, resource, namespace, name, subresource)`` of an API path.

    Raises:
        ApiError: 404 for a path the API does not serve (unknown group, version or resource).
    """
    missing = ApiError(404, "NotFound", "the server could not find the requested resource")
    parts = [part for part in path.split("/") if part]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise missing
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"] and group == "" and len(rest) <= 2:
        return "", "namespaces", "", rest[1] if len(rest) == 2 else "", ""
    if not rest or len(rest) > 3:
        raise missing
    resource = rest[0]
    if (group, resource) not in RESOURCES or RESOURCES[(group, resource)][0] != version:
        raise missing
    return group, resource, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-api-double"
    double: KubeApiDouble

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        user = "?"
        try:
            with contextlib.suppress(ApiError):
                user = self.double.auth.user(self.headers.get("Authorization"))
            status, content_type, data = self.double.handle(self.command, self.path, self.headers, body)
        except ApiError as error:
            status, content_type, data = error.code, "application/json", json.dumps(error.body()).encode()
        except Exception as error:  # an unexpected fault of the double is a 500 Status, never a hang
            failure = ApiError(500, "InternalError", f"Internal error occurred: {error!r}")
            status, content_type, data = 500, "application/json", json.dumps(failure.body()).encode()
        self.double.requests.append((self.command, self.path, status, user))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
