"""Object mechanics of the Kubernetes API server TEST DOUBLE: errors, selectors, patches, defaults, hashes.

What the real API server does to a request body before it stores it, as far as the deploy step's objects
need it, with the upstream rules each piece follows:

- ``Status`` error bodies with the reasons and codes of ``k8s.io/apimachinery/pkg/api/errors``
  (``NotFound`` 404, ``AlreadyExists``/``Conflict`` 409, ``Invalid`` 422, ``BadRequest`` 400, ``Forbidden``
  403, ``MethodNotAllowed`` 405);
- label selectors in their string form (``a=b,c!=d,e in (x,y),!f``) and as ``LabelSelector`` objects
  (``matchLabels``, ``matchExpressions``), field selectors (``involvedObject.name=x``);
- the three patch types the API server accepts: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic
  merge patch (lists merged by their ``patchMergeKey`` from ``k8s.io/api``: containers, initContainers,
  volumes and env by ``name``, container ports by ``containerPort``, volumeMounts by ``mountPath``; the
  directives ``$patch: replace|delete|merge``, ``$setElementOrder/<list>``, ``$retainKeys``,
  ``$deleteFromPrimitiveList/<list>``; ``null`` deletes);
- the defaults the API server fills into a Deployment and its pod template (``pkg/apis/apps/v1/defaults.go``,
  ``pkg/apis/core/v1/defaults.go``): replicas 1, RollingUpdate 25 %/25 %, revisionHistoryLimit 10,
  progressDeadlineSeconds 600, restartPolicy Always, terminationGracePeriodSeconds 30, imagePullPolicy,
  probe timings, port protocol TCP...
- the pod-template hash of the Deployment controller (``controller.ComputeHash``: FNV-32a, then
  ``rand.SafeEncodeString``). The double hashes the template's canonical JSON where Go hashes its struct dump,
  so names have the real form (``tf-serving-7c9d5b8f4d``) but not the real value.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand: no vowels, no look-alikes
HASH_LABEL = "pod-template-hash"


def now() -> str:
    """RFC 3339 with second precision, as the API server writes ``metav1.Time``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float:
    """Seconds since the epoch of a ``metav1.Time`` (0 for None)."""
    if not value:
        return 0.0
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    """``utilrand.String(5)``: what ``generateName`` appends."""
    return "".join(secrets.choice(ALPHANUMS) for _ in range(length))


def template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """The ``pod-template-hash`` label value of a pod template (see the module docstring)."""
    data = json.dumps(without_hash(template), sort_keys=True, separators=(",", ":")).encode()
    value = 0x811C9DC5
    for byte in data + (str(collision_count).encode() if collision_count else b""):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(ALPHANUMS[ord(char) % len(ALPHANUMS)] for char in str(value))


def without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the ``pod-template-hash`` label (``EqualIgnoreHash``)."""
    copied = copy.deepcopy(dict(template))
    labels = copied.get("metadata", {}).get("labels")
    if labels and HASH_LABEL in labels:
        del labels[HASH_LABEL]
    return copied


# -- errors ------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An API error answered as a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            status["details"] = self.details
        return status


def qualified(resource: str, group: str) -> str:
    """``deployments.apps``, or ``pods`` for the core group, as error messages name a resource."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(resource, group)} "{name}" not found',
                    {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource})


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(resource, group)} "{name}" already exists',
                    {"name": name, "group": group, "kind": resource})


def conflict(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": '
                    "the object has been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": group, "kind": resource})


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 ``Invalid`` with one ``field: message`` cause per problem, as ``errors.NewInvalid`` writes it."""
    listed = "; ".join(f"{field}: {message}" for field, message in causes)
    message = f'{kind}.{group} "{name}" is invalid: {listed}' if group else f'{kind} "{name}" is invalid: {listed}'
    return ApiError(422, "Invalid", message, {
        "name": name, "group": group, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    })


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# -- selectors ---------------------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def label_matcher(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A predicate on labels for a label selector string (``labels.Parse`` syntax).

    Raises:
        ApiError: 400 for a selector that does not parse.
    """
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector or ""):
        match = _SET_TERM.match(term)
        if match:
            key, operator, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if operator == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda labels, k=absent: k not in labels)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            checks.append(lambda labels, k=term: k in labels)
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")
    return lambda labels: all(check(labels or {}) for check in checks)


def selector_object_matcher(selector: Mapping[str, Any] | None) -> Callable[[Mapping[str, str]], bool]:
    """A predicate on labels for a ``LabelSelector`` object; an empty selector matches everything."""
    selector = selector or {}
    match_labels = dict(selector.get("matchLabels") or {})
    expressions = list(selector.get("matchExpressions") or [])

    def matches(labels: Mapping[str, str]) -> bool:
        labels = labels or {}
        if any(labels.get(k) != v for k, v in match_labels.items()):
            return False
        for expression in expressions:
            key, operator, values = expression["key"], expression["operator"], set(expression.get("values") or [])
            if operator == "In" and labels.get(key) not in values:
                return False
            if operator == "NotIn" and key in labels and labels[key] in values:
                return False
            if operator == "Exists" and key not in labels:
                return False
            if operator == "DoesNotExist" and key in labels:
                return False
        return True

    return matches


def selector_string(selector: Mapping[str, Any]) -> str:
    """``metav1.FormatLabelSelector`` for matchLabels (what the deploy step sends back as ``labelSelector``)."""
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))


def field_value(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def field_matcher(selector: str | None, supported: Iterable[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for a field selector (``a.b=c,d!=e``); only ``supported`` fields, as the API server.

    Raises:
        ApiError: 400 for an unsupported field (the API server's ``field label not supported``).
    """
    allowed = set(supported)
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in _split_terms(selector or ""):
        negate = "!=" in term
        key, value = (part.strip() for part in term.replace("==", "=").split("!=" if negate else "=", 1))
        if key not in allowed:
            raise bad_request(f'"{key}" is not a known field selector: only "{", ".join(sorted(allowed))}"')
        checks.append(lambda obj, k=key, v=value, n=negate: (str(field_value(obj, k) or "") != v) if n
                      else (str(field_value(obj, k) or "") == v))
    return lambda obj: all(check(obj) for check in checks)


# -- patches -----------------------------------------------------------------------------------------------

# patchMergeKey of the list fields the objects here carry (k8s.io/api core/v1 and apps/v1 types.go).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "hostAliases": "ip", "ownerReferences": "uid", "conditions": "type", "resourceClaims": "name",
    "schedulingGates": "name", "topologySpreadConstraints": "topologyKey",
}
# Lists of primitives merged as sets (patchStrategy:"merge" on a []string): finalizers.
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def _merge_key(field: str, parent: tuple[str, ...]) -> str | None:
    if field == "ports":
        return "containerPort" if parent and parent[-1] in ("containers", "initContainers") else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch (see the module docstring).

    Raises:
        ApiError: 400 for an unknown directive or a list item without its merge key.
    """
    if not isinstance(patch, Mapping) or not isinstance(original, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise bad_request(f"unknown patch type: {directive!r}")
    result = copy.deepcopy(dict(original))
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        if key.startswith("$"):
            raise bad_request(f"unknown directive {key!r} in strategic merge patch")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, (*path, key))
            order = patch.get(f"$setElementOrder/{key}")
            if order:
                result[key] = _reorder(key, result[key], order, path)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            merged = strategic_merge(result[key], value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = strategic_merge({}, value, (*path, key)) if isinstance(value, Mapping) else value
            if isinstance(value, Mapping) and result[key] is None:
                result.pop(key)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in set(retain)}
    return result


def _merge_list(field: str, original: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = _merge_key(field, path[:-1])
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, Mapping) and "$patch" in item)]
    if field in MERGED_PRIMITIVE_LISTS:
        merged = list(original or [])
        return merged + [item for item in patch if item not in merged]
    if key is None or not all(isinstance(item, Mapping) for item in patch):
        return copy.deepcopy(patch)  # atomic lists (command, args, tolerations...) are replaced
    merged = [copy.deepcopy(item) for item in (original or [])]
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {dict(item)} does not contain declared merge key: {key}")
        index = next((i for i, old in enumerate(merged) if isinstance(old, Mapping) and old.get(key) == item[key]),
                     None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
            continue
        if index is None:
            merged.append(strategic_merge({}, item, path))
        else:
            merged[index] = strategic_merge(merged[index], item, path)
    return merged


def _reorder(field: str, items: list[Any], order: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = _merge_key(field, path)
    if key is None:
        return items
    wanted = [entry.get(key) if isinstance(entry, Mapping) else entry for entry in order]
    ranked = {value: i for i, value in enumerate(wanted)}
    return sorted(items, key=lambda item: ranked.get(item.get(key) if isinstance(item, Mapping) else item,
                                                     len(ranked)))


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(original)) if isinstance(original, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    target = doc
    for part in parts[:-1]:
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise _patch_failed(f"doc is missing path: {path!r}")
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            raise _patch_failed(f"doc is missing path: {path!r}")
    return target, parts[-1]


def _patch_failed(message: str) -> ApiError:
    # apiserver patch.go: errors applying a JSON patch are answered with 422 (NewGenericServerResponse).
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {message}")


def _get(doc: Any, path: str) -> Any:
    value = doc
    for part in _pointer(path):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise _patch_failed(f"doc is missing path: {path!r}")
    return value


def json_patch(original: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test).

    Raises:
        ApiError: 400 for a patch that is not a list of operations, 422 when an operation cannot be applied
            (missing path, failed test), as the API server answers.
    """
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(original)
    for operation in operations:
        if not isinstance(operation, Mapping) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op == "test":
            if _get(doc, path) != operation.get("value"):
                raise _patch_failed(f"testing value {path} failed: test failed")
            continue
        if op in ("move", "copy"):
            value = copy.deepcopy(_get(doc, operation["from"]))
            if op == "move":
                doc = json_patch(doc, [{"op": "remove", "path": operation["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": path, "value": value}])
            continue
        parts = _pointer(path)
        if not parts:
            if op in ("add", "replace"):
                doc = copy.deepcopy(operation.get("value"))
                continue
            raise _patch_failed("cannot remove the whole document")
        parent, last = _parent(doc, parts, path)
        if isinstance(parent, list):
            if op == "add":
                index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
                if not 0 <= index <= len(parent):
                    raise _patch_failed(f"add operation does not apply: index out of bounds: {path!r}")
                parent.insert(index, copy.deepcopy(operation.get("value")))
            elif last.isdigit() and int(last) < len(parent):
                if op == "remove":
                    del parent[int(last)]
                elif op == "replace":
                    parent[int(last)] = copy.deepcopy(operation.get("value"))
                else:
                    raise bad_request(f"unknown JSON patch operation {op!r}")
            else:
                raise _patch_failed(f"doc is missing path: {path!r}")
        elif isinstance(parent, dict):
            if op == "add":
                parent[last] = copy.deepcopy(operation.get("value"))
            elif op in ("remove", "replace"):
                if last not in parent:
                    raise _patch_failed(f"{op} operation does not apply: doc is missing key: {path}")
                if op == "remove":
                    del parent[last]
                else:
                    parent[last] = copy.deepcopy(operation.get("value"))
            else:
                raise bad_request(f"unknown JSON patch operation {op!r}")
        else:
            raise _patch_failed(f"doc is missing path: {path!r}")
    return doc


# -- defaults ----------------------------------------------------------------------------------------------


def _default_probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
    container.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        _default_probe(container.get(name))
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if field_ref:
            field_ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict[str, Any]) -> None:
    """``SetDefaults_PodSpec`` and friends, for the fields the manifests here leave out."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if source in volume:
                volume[source].setdefault("defaultMode", 420)


def default_deployment(deployment: dict[str, Any]) -> None:
    """``SetDefaults_Deployment`` (apps/v1) plus the pod template defaults."""
    spec = deployment.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def validate_deployment(deployment: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The validation causes the deploy step could run into (``ValidateDeployment``), empty when valid."""
    causes = []
    spec = deployment.get("spec") or {}
    selector = spec.get("selector") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(("spec.selector", "Required value"))
    elif not selector_object_matcher(selector)(labels):
        causes.append(("spec.template.metadata.labels",
                       f"Invalid value: {json.dumps(labels, sort_keys=True)}: `selector` does not match template "
                       "`labels`"))
    if previous is not None and (previous.get("spec") or {}).get("selector") != selector:
        causes.append(("spec.selector", f"Invalid value: {json.dumps(selector, sort_keys=True)}: field is "
                       "immutable"))
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
        causes.append(("spec.replicas", f"Invalid value: {spec.get('replicas')!r}: must be greater than or equal to 0"))
    pod = (spec.get("template") or {}).get("spec") or {}
    if not pod.get("containers"):
        causes.append(("spec.template.spec.containers", "Required value"))
    for field in ("initContainers", "containers"):
        seen = set()
        for index, container in enumerate(pod.get(field) or []):
            where = f"spec.template.spec.{field}[{index}]"
            if not container.get("name"):
                causes.append((f"{where}.name", "Required value"))
            elif container["name"] in seen:
                causes.append((f"{where}.name", f'Duplicate value: "{container["name"]}"'))
            seen.add(container.get("name"))
            if not container.get("image"):
                causes.append((f"{where}.image", "Required value"))
            for env_index, env in enumerate(container.get("env") or []):
                if "value" in env and "valueFrom" in env:
                    causes.append((f"{where}.env[{env_index}].valueFrom",
                                   "Invalid value: \"\": may not be specified when `value` is not empty"))
    return causes


def check_string_maps(obj: Mapping[str, Any]) -> None:
    """Labels and annotations must be strings: the API server fails to decode anything else (400).

    Raises:
        ApiError: 400 with the Go decoder's message.
    """
    spec = obj.get("spec") or {}
    metas = [obj.get("metadata") or {}, ((spec.get("template") or {}).get("metadata") or {})]
    for meta in metas:
        for kind in ("labels", "annotations"):
            for value in (meta.get(kind) or {}).values():
                if not isinstance(value, str):
                    raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                                      f"ObjectMeta.metadata.{kind} of type string")
