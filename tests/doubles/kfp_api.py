"""A Kubeflow Pipelines API server TEST DOUBLE: the v2beta1 REST paths and JSON on 127.0.0.1.

The real KFP API server needs a cluster (MySQL, Argo, Kubernetes) and cannot run here. This double is a threaded
HTTP server that the unchanged ``kfp.Client`` (kfp 2.17, ``kfp_server_api``) talks to over HTTP. It answers the
paths the client uses to submit and follow a run, with the real server's checks, status codes and grpc-gateway
error bodies (``{"error", "code", "message", "details"}``, ``code`` being the gRPC code):

- ``GET /apis/v2beta1/healthz`` (never authenticated, as on the real server);
- experiments: list (``filter`` on ``display_name``, ``namespace``), create (409 on a duplicate name), get;
- pipelines: multipart ``POST /pipelines/upload`` and ``/pipelines/upload_version`` (field ``uploadfile``),
  list (``filter``), get, list and get versions;
- runs: create from an inlined ``pipeline_spec`` or a ``pipeline_version_reference``, get. A run's state moves
  with time, PENDING → RUNNING → SUCCEEDED (or FAILED, with an ``error``, when the test sets ``outcome``).

The package is parsed as the API server does (YAML → ``PipelineSpec`` proto, strict on unknown fields, schema
2.1.0, a pipeline name, a root) and a run's ``runtime_config.parameters`` are checked against the root
``inputDefinitions`` with the server's rules and messages (``v2_template.go::validatePipelineJobInputs``): an
unknown parameter, a value of the wrong kind (a string for a number or a bool) or a missing required one is 400.

Multi-user mode (``profiles`` given) acts like KFP behind its authenticators: a request needs
``Authorization: Bearer <token>`` (the TokenReview authenticator) or the login cookie that the gateway turns
into a user header; none is 401 ``Request header error: there is no user identity header.``, a wrong token is
401 from the token review, and a namespace without a profile the user may use is 403 ``PermissionDenied``
(the SubjectAccessReview answer). Not implemented: recurring runs, archive/delete, pagination, run details.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

PREFIX = "/apis/v2beta1"
_HTTP_STATUS = {3: 400, 5: 404, 6: 409, 7: 403, 10: 409, 12: 501, 13: 500, 16: 401}
_NUMBER_KINDS = {"NUMBER_DOUBLE", "NUMBER_INTEGER"}


class ApiError(Exception):
    """An error answer: the gRPC code and the message, as the server's ``util.UserError`` carries them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict:
        """The grpc-gateway JSON body of this error."""
        return {"error": self.message, "code": self.code, "message": self.message,
                "details": [{"@type": "type.googleapis.com/api.Error", "error_message": self.message,
                             "error_details": self.message}]}


def _invalid(message: str) -> ApiError:
    return ApiError(3, message)


def _now(after_s: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + after_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_pipeline_spec(spec: Any) -> pipeline_spec_pb2.PipelineSpec:
    """Check a PipelineSpec dict as ``NewV2SpecTemplate`` does; InvalidArgument otherwise."""
    if not isinstance(spec, dict) or (not spec.get("root") and not spec.get("pipelineInfo")):
        raise _invalid("Failed to parse the pipeline spec: no pipeline spec is provided")
    proto = pipeline_spec_pb2.PipelineSpec()
    try:
        json_format.ParseDict(spec, proto)
    except json_format.ParseError as exc:
        raise _invalid(f"invalid v2 pipeline spec: {exc}") from None
    if proto.schema_version != "2.1.0":
        raise _invalid(f"KFP only supports schema version 2.1.0, but the pipeline spec has version "
                       f"{proto.schema_version}")
    if not proto.pipeline_info.name:
        raise _invalid("invalid v2 pipeline spec: name is empty")
    if not proto.HasField("root"):
        raise _invalid("invalid v2 pipeline spec: root component is empty")
    return proto


def parse_package(data: bytes) -> tuple[dict, pipeline_spec_pb2.PipelineSpec]:
    """The PipelineSpec document of an uploaded YAML package (a second document is the PlatformSpec)."""
    try:
        docs = [doc for doc in yaml.safe_load_all(data.decode("utf-8")) if doc]
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _invalid(f"Failed to create a pipeline: unable to decode yaml document: {exc}") from None
    specs = [doc for doc in docs if isinstance(doc, dict) and ("root" in doc or "pipelineInfo" in doc)]
    if not specs:
        raise _invalid("Failed to create a pipeline: no pipeline spec is provided")
    if len(specs) > 1:
        raise _invalid("Failed to create a pipeline: multiple pipeline specs provided")
    return specs[0], parse_pipeline_spec(specs[0])


def validate_parameters(spec: pipeline_spec_pb2.PipelineSpec, parameters: dict) -> None:
    """The server's ``validatePipelineJobInputs``: kinds as protobuf ``Value`` sees them, no extra names."""
    defined = spec.root.input_definitions.parameters
    for name, param in defined.items():
        kind = pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(param.parameter_type)
        if name not in parameters:
            if not param.is_optional and not param.HasField("default_value"):
                raise _invalid(f"parameter {name} is not optional, yet has neither default value nor user "
                               "provided value")
            continue
        value = parameters[name]
        ok = {
            "STRING": isinstance(value, str),
            "BOOLEAN": isinstance(value, bool),
            "LIST": isinstance(value, list),
            "STRUCT": isinstance(value, dict),
        }.get(kind, isinstance(value, int | float) and not isinstance(value, bool))
        if kind in _NUMBER_KINDS and not ok:
            raise _invalid(f"input parameter {name} requires type double or integer, but the parameter value "
                           "is not of number value type")
        if not ok:
            word = {"BOOLEAN": "bool"}.get(kind, kind.lower())
            raise _invalid(f"input parameter {name} requires type {word}, but the input parameter is not of "
                           f"{word} value type")
    extra = [name for name in parameters if name not in defined]
    if extra:
        raise _invalid(f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")


@dataclass
class _Run:
    body: dict
    created: float
    outcome: str
    pending_s: float
    running_s: float

    def __post_init__(self) -> None:
        self.finished_at = _now(self.pending_s + self.running_s)

    def state(self) -> str:
        elapsed = time.monotonic() - self.created
        if elapsed < self.pending_s:
            return "PENDING"
        if elapsed < self.pending_s + self.running_s:
            return "RUNNING"
        return self.outcome

    def to_json(self) -> dict:
        state = self.state()
        history = ["PENDING", "RUNNING", state][: {"PENDING": 1, "RUNNING": 2}.get(state, 3)]
        answer = dict(self.body, state=state,
                      state_history=[{"update_time": self.body["created_at"], "state": s} for s in history])
        if state == "FAILED":
            answer["error"] = {"code": 2, "message": "system-container-impl: the step train-autogluon failed "
                               "with exit code 1 (test double: the test asked for a failed run)"}
        if state in ("SUCCEEDED", "FAILED"):
            answer["finished_at"] = self.finished_at
        return answer


@dataclass
class KfpApiDouble:
    """The KFP API double; ``with KfpApiDouble() as api: kfp.Client(host=api.url)``.

    Args:
        profiles: Namespaces that have a Kubeflow profile the caller may use; empty: single-user mode.
        token: The bearer token the token review accepts (multi-user mode).
        cookie: The login cookie (``name=value``) the gateway accepts (multi-user mode).
        pending_s: Seconds a new run stays PENDING, then ``running_s`` seconds RUNNING.
        outcome: Final state of the runs created from now on (``SUCCEEDED`` or ``FAILED``).
    """

    profiles: tuple[str, ...] = ()
    token: str | None = None
    cookie: str | None = None
    pending_s: float = 0.3
    running_s: float = 0.6
    outcome: str = "SUCCEEDED"
    requests: list[tuple[str, str]] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def multi_user(self) -> bool:
        return bool(self.profiles)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the double first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KfpApiDouble:
        double = self

        class Handler(_Handler):
            api = double

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # --- authentication and authorization, as KFP's authenticators and SubjectAccessReview answer ---

    def authenticate(self, headers: Any) -> str | None:
        """The caller's identity in multi-user mode; ApiError 401 without valid credentials."""
        if not self.multi_user:
            return None
        cookies = [c.strip() for c in (headers.get("Cookie") or "").split(";")]
        if self.cookie and self.cookie in cookies:
            return "user@example.com"
        authorization = headers.get("Authorization")
        if authorization is None:
            raise ApiError(16, "Request header error: there is no user identity header.")
        if not authorization.startswith("Bearer "):
            raise ApiError(16, "Request header error: the authorization header does not start with 'Bearer '")
        if authorization.removeprefix("Bearer ") != self.token:
            raise ApiError(16, "Failed to authorize the request: Authentication failure: Failed to authenticate "
                           "token review: Review.Status.Authenticated is false")
        return "system:serviceaccount:kubeflow-user-example-com:default-editor"

    def authorize(self, user: str | None, namespace: str, verb: str, resource: str) -> None:
        """403 PermissionDenied for a namespace without a profile the caller may use (multi-user mode)."""
        if not self.multi_user:
            return
        if not namespace:
            raise _invalid(f"Failed to {verb} {resource}: In multi-user mode, the namespace must be set")
        if namespace not in self.profiles:
            raise ApiError(7, f"Failed to authorize the request: PermissionDenied: User '{user}' is not "
                           f"authorized with reason:  (request: &ResourceAttributes{{Namespace:{namespace},"
                           f"Verb:{verb},Group:pipelines.kubeflow.org,Version:v1beta1,Resource:{resource},"
                           "Subresource:,Name:,}): Unauthorized access")

    # --- resources ---

    def list_experiments(self, user: str | None, query: dict[str, str]) -> dict:
        namespace = query.get("namespace", "")
        self.authorize(user, namespace, "list", "experiments")
        found = [e for e in self.experiments.values()
                 if _matches(e, query.get("filter")) and (not self.multi_user or e["namespace"] == namespace)]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def create_experiment(self, user: str | None, body: dict) -> dict:
        name = body.get("display_name") or ""
        namespace = (body.get("namespace") or "") if self.multi_user else ""
        if not name:
            raise _invalid("Failed to create a new experiment due to validation error: Invalid input error: "
                           "Experiment must have a non-empty name")
        self.authorize(user, namespace, "create", "experiments")
        if any(e["display_name"] == name and e["namespace"] == namespace for e in self.experiments.values()):
            raise ApiError(6, f"Failed to create a new experiment: Already exist error: Failed to create a new "
                           f"experiment. The name {name} already exists. Please specify a new name")
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": name,
                      "description": body.get("description") or "", "created_at": _now(),
                      "namespace": namespace, "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def get_experiment(self, user: str | None, experiment_id: str) -> dict:
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            raise ApiError(5, f"Failed to get experiment: ResourceNotFoundError: Experiment {experiment_id} not "
                           "found")
        self.authorize(user, experiment["namespace"], "get", "experiments")
        return experiment

    def upload_pipeline(self, user: str | None, query: dict[str, str], package: bytes, filename: str) -> dict:
        spec_dict, spec = parse_package(package)
        name = query.get("name") or query.get("display_name") or filename
        namespace = query.get("namespace", "") if self.multi_user else ""
        if namespace:
            self.authorize(user, namespace, "create", "pipelines")
        if any(p["name"] == name and p["namespace"] == namespace for p in self.pipelines.values()):
            raise ApiError(6, f"Failed to create a pipeline and a pipeline version: Already exist error: Failed "
                           f"to create a new pipeline. The name {name} already exist. Please specify a new name")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "name": name, "display_name": query.get("display_name")
                    or name, "description": query.get("description") or "", "created_at": _now(),
                    "namespace": namespace}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, spec_dict, spec)
        return pipeline

    def upload_version(self, user: str | None, query: dict[str, str], package: bytes, filename: str) -> dict:
        spec_dict, spec = parse_package(package)
        pipeline = self.get_pipeline(user, query.get("pipelineid", ""))
        return self._add_version(pipeline["pipeline_id"], query.get("name") or filename, spec_dict, spec)

    def _add_version(self, pipeline_id: str, name: str, spec_dict: dict, spec: Any) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "name": name,
                   "display_name": name, "created_at": _now(), "pipeline_spec": spec_dict}
        self.versions[version["pipeline_version_id"]] = version
        return version

    def get_pipeline(self, user: str | None, pipeline_id: str) -> dict:
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise ApiError(5, f"Failed to get a pipeline with id {pipeline_id}: ResourceNotFoundError: Pipeline "
                           f"{pipeline_id} not found")
        if pipeline["namespace"]:
            self.authorize(user, pipeline["namespace"], "get", "pipelines")
        return pipeline

    def list_pipelines(self, user: str | None, query: dict[str, str]) -> dict:
        found = [p for p in self.pipelines.values() if _matches(p, query.get("filter"))]
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def list_versions(self, user: str | None, pipeline_id: str) -> dict:
        self.get_pipeline(user, pipeline_id)
        found = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return {"pipeline_versions": found, "total_size": len(found)}

    def get_version(self, user: str | None, pipeline_id: str, version_id: str) -> dict:
        self.get_pipeline(user, pipeline_id)
        version = self.versions.get(version_id)
        if version is None or version["pipeline_id"] != pipeline_id:
            raise ApiError(5, f"Failed to get a pipeline version: ResourceNotFoundError: PipelineVersion "
                           f"{version_id} not found")
        return version

    def create_run(self, user: str | None, body: dict) -> dict:
        experiment = self.get_experiment(user, body.get("experiment_id") or "")
        self.authorize(user, experiment["namespace"], "create", "runs")
        if not body.get("display_name"):
            raise _invalid("Failed to create a run: Invalid input error: The run name is empty. Please specify "
                           "a valid name")
        if body.get("pipeline_spec"):
            spec_dict = body["pipeline_spec"]
            spec_dict = spec_dict.get("pipeline_spec", spec_dict)  # {pipeline_spec, platform_spec} when both
            spec = parse_pipeline_spec(spec_dict)
        elif (reference := body.get("pipeline_version_reference") or {}).get("pipeline_version_id"):
            version = self.get_version(user, reference.get("pipeline_id", ""), reference["pipeline_version_id"])
            spec = parse_pipeline_spec(version["pipeline_spec"])
        else:
            raise _invalid("Failed to create a run: Invalid input error: Neither pipeline spec nor pipeline "
                           "version reference is provided")
        parameters = (body.get("runtime_config") or {}).get("parameters") or {}
        try:
            validate_parameters(spec, parameters)
        except ApiError as exc:
            raise _invalid(f"Failed to create a run: invalid pipeline job inputs: {exc.message}") from None
        run_id = str(uuid.uuid4())
        stored = dict(body, run_id=run_id, created_at=_now(), scheduled_at=_now(), storage_state="AVAILABLE",
                      service_account=body.get("service_account") or "default-editor")
        self.runs[run_id] = _Run(stored, time.monotonic(), self.outcome, self.pending_s, self.running_s)
        return self.runs[run_id].to_json()

    def get_run(self, user: str | None, run_id: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(5, f"Failed to get a run: ResourceNotFoundError: Run {run_id} not found")
        self.authorize(user, self.experiments[run.body["experiment_id"]]["namespace"], "get", "runs")
        return run.to_json()


def _matches(item: dict, filter_json: str | None) -> bool:
    """The ``filter`` query parameter: EQUALS / IS_SUBSTRING predicates on string fields."""
    if not filter_json:
        return True
    try:
        predicates = json.loads(filter_json).get("predicates", [])
    except (json.JSONDecodeError, AttributeError):
        raise _invalid(f"Failed to list: Invalid input error: filter {filter_json!r} is not a valid Filter") from None
    for predicate in predicates:
        value, expected = str(item.get(predicate.get("key"), "")), predicate.get("stringValue", "")
        operation = predicate.get("operation")
        if operation in (1, "EQUALS") and value != expected:
            return False
        if operation in (9, "IS_SUBSTRING") and expected not in value:
            return False
    return True


class _Handler(http.server.BaseHTTPRequestHandler):
    api: KfpApiDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.api.requests.append((method, url.path))
        try:
            status, answer = 200, self._route(method, url.path.removeprefix(PREFIX).strip("/"), query, body)
        except ApiError as exc:
            status, answer = _HTTP_STATUS.get(exc.code, 500), exc.body()
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> dict:
        if not self.path.startswith(PREFIX + "/"):
            raise ApiError(5, "Not Found")
        parts = path.split("/")
        if (method, parts) == ("GET", ["healthz"]):
            return {"commit_sha": "test-double", "tag_name": "2.5.0", "multi_user": self.api.multi_user,
                    "pipeline_store": "database"}
        user = self.api.authenticate(self.headers)
        with self.api._lock:
            match method, parts:
                case "GET", ["experiments"]:
                    return self.api.list_experiments(user, query)
                case "POST", ["experiments"]:
                    return self.api.create_experiment(user, _json(body))
                case "GET", ["experiments", experiment_id]:
                    return self.api.get_experiment(user, experiment_id)
                case "POST", ["pipelines", "upload" | "upload_version" as kind]:
                    package, filename = self._uploaded_file(body)
                    upload = self.api.upload_pipeline if kind == "upload" else self.api.upload_version
                    return upload(user, query, package, filename)
                case "GET", ["pipelines"]:
                    return self.api.list_pipelines(user, query)
                case "GET", ["pipelines", pipeline_id]:
                    return self.api.get_pipeline(user, pipeline_id)
                case "GET", ["pipelines", pipeline_id, "versions"]:
                    return self.api.list_versions(user, pipeline_id)
                case "GET", ["pipelines", pipeline_id, "versions", version_id]:
                    return self.api.get_version(user, pipeline_id, version_id)
                case "POST", ["runs"]:
                    return self.api.create_run(user, _json(body))
                case "GET", ["runs", run_id]:
                    return self.api.get_run(user, run_id)
        raise ApiError(5, "Not Found")

    def _uploaded_file(self, body: bytes) -> tuple[bytes, str]:
        """The ``uploadfile`` part of a multipart/form-data body."""
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise _invalid("Failed to create a pipeline: Failed to read pipeline from file: request Content-Type "
                           "isn't multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True), part.get_filename() or "pipeline.yaml"
        raise _invalid("Failed to create a pipeline: Failed to read pipeline from file: http: no such file")


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise _invalid(f"invalid character in the request body: {exc}") from None
    if not isinstance(value, dict):
        raise _invalid("the request body is not a JSON object")
    return value
