"""``kfp-tabular serve``: a LOCAL STAND-IN for TF Serving that speaks its REST API (and, optionally, gRPC).

Production serving is TF Serving (``manifests/base/tf-serving/``). This server lets a user try the versions of
a model repository without a cluster, and stands in for TF Serving in end-to-end tests. It answers as TF
Serving's ``http_rest_api_handler.cc`` and ``http_server.cc`` do:

- ``GET /v1/models/<name>[/versions/<N>]``: the ``GetModelStatusResponse`` as JSON (``model_version_status``:
  version, state, status ``{error_code, error_message}``), newest version first; with ``/labels/<label>``
  every version, as TF Serving;
- ``GET /v1/models/<name>[/versions/<N>|/labels/<label>]/metadata``: ``{"model_spec", "metadata":
  {"signature_def": <SignatureDefMap>}}`` (inputs and outputs with dtypes and shapes);
- ``POST /v1/models/<name>[/versions/<N>|/labels/<label>]:predict``: ``{"instances": [...]}`` answers
  ``{"predictions": [...]}``, ``{"inputs": {...}}`` answers ``{"outputs": ...}``; with one output tensor its
  name is left out, as TF Serving does. Bodies are decoded with the export's own rules
  (:mod:`kfp_tabular.components.export_savedmodel.predict`);
- ``GET /monitoring/prometheus/metrics``: request count and latency (:mod:`.local_metrics`).

Errors are ``{"error": "<message>"}`` with TF Serving's HTTP status for the status code: 400 for
``INVALID_ARGUMENT`` (a body that does not fit the signature: the export's ``DataValidationError`` text) and
``FAILED_PRECONDITION``, 404 for ``NOT_FOUND`` (``Servable not found for request: Latest(<name>)``), 500 for
``INTERNAL`` / ``UNKNOWN``. Versions follow TF Serving's default ``latest`` policy (:mod:`.local_models`).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import math
import os
import re
import socket
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_KEY
from kfp_tabular.errors import ConfigError
from kfp_tabular.serving.local_metrics import PROMETHEUS_PATH, ServingMetrics
from kfp_tabular.serving.local_models import ServedModel, ServingError, status_code
from kfp_tabular.text import clause

log = logging.getLogger(__name__)

STAND_IN = "LOCAL STAND-IN for TF Serving (production serving is TF Serving)"
DEFAULT_MODEL_NAME = "model"  # TF Serving's MODEL_NAME default
MAX_BODY_BYTES = 256 << 20
IDLE_SECONDS = 30  # an idle keep-alive connection is closed after this long
CONNECTIONS_PER_THREAD = 8
# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
# tensorflow_serving/model_servers/http_rest_api_util.cc.
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_FLAGS = re.IGNORECASE | re.ASCII  # RE2's \d is ASCII
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", _FLAGS)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", _FLAGS)


def default_model_name(repository: str) -> str:
    """The last segment of the repository URI (``s3://bucket/models/tabular`` -> ``tabular``)."""
    path = urlsplit(repository).path if "://" in repository else repository
    return PurePosixPath(unquote(path).rstrip("/")).name or DEFAULT_MODEL_NAME


def _parts(match: re.Match[str]) -> tuple[str, int | None, str | None, str]:
    name, version, label, last = match.groups()
    number = int(version) if version is not None else None
    if number is not None and number >= 1 << 63:
        raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric.")
    return unquote(name or ""), number, unquote(label) if label is not None else None, last or ""


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        return json.loads(body)  # accepts NaN and Infinity, as TF Serving does
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {error}") from None


def _float32(value: float) -> float:
    """A float32 value as TF Serving writes it: six digits when they round-trip, else nine."""
    if not math.isfinite(value):
        return value
    text = f"{value:.6g}"
    if np.float32(text) != np.float32(value):
        text = f"{value:.9g}"
    return float(text)


def _json_values(name: str, array: np.ndarray) -> Any:
    if array.dtype == np.float32:
        flat = [_float32(v) for v in array.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    if array.dtype == object:
        if name.endswith("_bytes"):  # TF Serving writes such string tensors as {"b64": ...}
            flat = [{"b64": b64encode(v).decode()} for v in array.ravel().tolist()]
        else:
            flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def rest_predictions(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """The ``:predict`` answer for output tensors, as TF Serving's ``MakeJsonFromTensors`` writes it."""
    if not outputs:
        raise ServingError("INVALID_ARGUMENT", "Cannot convert empty tensor map to JSON")
    values = {name: _json_values(name, array) for name, array in sorted(outputs.items())}
    if not row_format:
        return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    batch = None
    for name, array in sorted(outputs.items()):
        if array.ndim == 0:
            raise ServingError("INVALID_ARGUMENT", f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise ServingError("INVALID_ARGUMENT", f"Tensor name: {name} has inconsistent batch size: "
                               f"{array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: column[i] for name, column in values.items()} for i in range(batch or 0)]}


def _proto_json(message: Any, preserve_names: bool) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=preserve_names)


class RestApi:
    """TF Serving's ``/v1/`` REST API over one :class:`ServedModel`; thread-safe."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def handle(self, method: str, path: str, body: bytes) -> tuple[str, str, str, str]:
        """Answer one request.

        Returns:
            (status code name, JSON body, model name, API) — the last two label the request in the metrics.
        """
        name = api = ""
        try:
            predict = _PREDICT_PATH.fullmatch(path) if method == "POST" else None
            if predict:
                name, version, label, api = _parts(predict)
                if api in ("predict", "classify", "regress"):
                    return "OK", self._predict(name, version, label, api, body), name, api
            status = _STATUS_PATH.fullmatch(path) if method == "GET" else None
            if status:
                name, version, label, resource = _parts(status)
                if not name:
                    raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
                if resource == "metadata":
                    return "OK", self._metadata(name, version, label), name, api
                return "OK", self._status(name, version), name, api
            raise ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        except Exception as error:  # every failure is a JSON error body, as TF Serving answers
            code = status_code(error)
            if code in ("UNKNOWN", "INTERNAL"):
                log.warning("%s %s failed", method, path, exc_info=error)
            return code, json.dumps({"error": str(error)}), name, api

    def _status(self, name: str, version: int | None) -> str:
        from google.protobuf import json_format

        return json_format.MessageToJson(self.model.status(name, version), indent=1,
                                         always_print_fields_with_no_presence=True)

    def _metadata(self, name: str, version: int | None, label: str | None) -> str:
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = self.model.metadata(name, version, label)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        answer = {"model_spec": _proto_json(response.model_spec, True),
                  "metadata": {"signature_def": _proto_json(defs, True)}}
        return json.dumps(answer, indent=1)

    def _predict(self, name: str, version: int | None, label: str | None, api: str, body: bytes) -> str:
        payload = _parse_json(body)
        loaded = self.model.get(name, version, label)  # looked up once the body parses, as in TF Serving
        if api != "predict":
            raise ServingError("INVALID_ARGUMENT", f"the {SIGNATURE_KEY!r} signature of model {name} is a predict "
                               f"signature, so :{api} cannot use it; POST the same rows to :predict")
        signature = payload.get("signature_name", "") if isinstance(payload, dict) else ""
        if not isinstance(signature, str):
            raise ServingError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
        if (signature or SIGNATURE_KEY) not in loaded.signature_defs.signature_def:
            raise ServingError("INVALID_ARGUMENT",
                               f'Serving signature name: "{signature}" not found in signature def')
        if (signature or SIGNATURE_KEY) != SIGNATURE_KEY:
            raise ServingError("UNIMPLEMENTED", f"the local server runs only the {SIGNATURE_KEY!r} signature")
        if isinstance(payload, dict) and payload.get("instances") == [] and "inputs" not in payload:
            raise ServingError("INVALID_ARGUMENT", "No values in 'instances' array")
        outputs, row_format = loaded.predict_json(payload)
        return json.dumps(rest_predictions(outputs, row_format))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving's libevent server
    server_version = "kfp-tabular-serve"
    timeout = IDLE_SECONDS
    disable_nagle_algorithm = True  # small answers go out at once, not after the client's delayed ACK
    server: _HttpServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        with self.server.busy():
            path = urlsplit(self.path).path
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True  # the body cannot be skipped: end the connection after the answer
                message = f"Content-Length must be a number of bytes up to {MAX_BODY_BYTES}, got {length}"
                self._reply(400, json.dumps({"error": message}), "application/json")
                return
            body = self.rfile.read(length) if length else b""
            if path == PROMETHEUS_PATH:
                self._reply(200, self.server.metrics.render(), "text/plain; version=0.0.4")
                return
            if not _API_PATH.fullmatch(path):
                self._reply(404, json.dumps({"error": f"Not found: {path}"}), "application/json")
                return
            with self.server.turn():
                code, text, model_name, api = self.server.api.handle(method, path, body)
            self.server.metrics.record(model_name, code, api, "REST", time.perf_counter() - started)
            self._reply(HTTP_STATUS.get(code, 500), text, "application/json")

    def _reply(self, status: int, text: str, content_type: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, at debug level
        log.debug("%s %s", self.address_string(), format % args)


class _HttpServer(http.server.HTTPServer):
    """A bounded HTTP server: ``threads`` requests at once, ``CONNECTIONS_PER_THREAD * threads`` connections.

    Each connection has a thread; more connections wait in the listen backlog, more requests for a turn. Idle
    keep-alive connections therefore cannot hold every turn.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: RestApi, metrics: ServingMetrics, threads: int) -> None:
        self.api = api
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(CONNECTIONS_PER_THREAD * threads)
        self._turns = threading.BoundedSemaphore(threads)
        self._closing = threading.Event()
        self._lock = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._inflight = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        try:
            self.finish_request(request, client_address)
        except Exception as error:  # a client that went away; nothing to answer
            log.debug("connection from %s ended: %r", client_address, error)
        finally:
            with self._lock:
                self._connections.discard(request)
            self.shutdown_request(request)
            self._slots.release()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count a request in flight for the whole time it is read, waits for its turn and is answered."""
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self._lock.notify_all()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """One of the ``threads`` turns to run a request."""
        with self._turns:
            yield

    def close(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` seconds), close idle connections."""
        self._closing.set()
        self.shutdown()
        with self._lock:
            self._lock.wait_for(lambda: self._inflight == 0, timeout=grace)
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()


def parse_labels(items: list[str]) -> dict[str, int]:
    """``["stable=3", "canary=4"]`` -> ``{"stable": 3, "canary": 4}``.

    Raises:
        ConfigError: an item is not ``LABEL=VERSION`` with an integer version.
    """
    labels = {}
    for item in items:
        label, sep, version = item.partition("=")
        if not sep or not label or not version.strip().isdigit():
            raise ConfigError(f"--version-label {item!r} is not LABEL=VERSION, e.g. stable=3")
        labels[label] = int(version)
    return labels


class LocalServer:
    """The local stand-in for TF Serving over a model repository: REST, optional gRPC; a context manager.

    Args:
        repository: ``s3://bucket/prefix/<model>``, a folder or ``file:///folder`` of ``<N>/`` versions.
        model_name: Name in request paths; default the repository's last path segment.
        host: Address to listen on (``127.0.0.1``: this machine only).
        port: REST port (TF Serving: 8501); 0 takes a free port.
        grpc_port: gRPC port (TF Serving: 8500); None: no gRPC; 0 takes a free port.
        poll_seconds: Seconds between two listings of the repository.
        labels: Version labels, ``{"stable": 3}``.
        threads: Requests (REST) and calls (gRPC) run at once; default 4 per CPU, as TF Serving.
        cache_dir: Where S3 versions are copied before loading; default a temporary folder.
    """

    def __init__(self, repository: str, model_name: str | None = None, host: str = "127.0.0.1", port: int = 8501,
                 grpc_port: int | None = None, poll_seconds: float = 1.0, labels: dict[str, int] | None = None,
                 threads: int | None = None, cache_dir: Path | None = None) -> None:
        if poll_seconds <= 0:
            raise ConfigError(f"poll_seconds must be positive, got {poll_seconds}")
        self.model = ServedModel(repository, model_name or default_model_name(repository), poll_seconds,
                                 labels, cache_dir)
        self.metrics = ServingMetrics()
        self.host, self.port, self.grpc_port = host, port, grpc_port
        self.threads = threads or 4 * (os.cpu_count() or 1)
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None

    @property
    def name(self) -> str:
        """The model name served."""
        return self.model.name

    @property
    def rest_url(self) -> str:
        """``http://host:port`` of the REST API."""
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` of the gRPC API, or None."""
        return None if self.grpc_port is None else f"{self.host}:{self.grpc_port}"

    def start(self) -> LocalServer:
        """Load the latest version, then open the ports (TF Serving opens them after the first load).

        Raises:
            ConfigError: a port cannot be opened.
        """
        self.model.start()
        try:
            self._http = _HttpServer((self.host, self.port), RestApi(self.model), self.metrics, self.threads)
            self.port = self._http.server_address[1]
            if self.grpc_port is not None:
                from kfp_tabular.serving.local_grpc import start_grpc_server

                self._grpc, self.grpc_port = start_grpc_server(self.model, self.metrics, self.host,
                                                               self.grpc_port, self.threads)
        except (OSError, RuntimeError) as error:
            self.stop()
            raise ConfigError(f"cannot listen on {self.host} (REST port {self.port}, gRPC port {self.grpc_port}): "
                              f"{clause(error)}. Choose free ports with --port / --grpc-port.") from error
        self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="rest", daemon=True)
        self._http_thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Finish the requests in flight (up to ``grace`` seconds), close the ports, unload the model."""
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        if self._http is not None:
            if self._http_thread is not None:
                self._http.close(grace)
                self._http_thread.join()
            else:
                self._http.server_close()
            self._http = self._http_thread = None
        self.model.close()

    def describe(self) -> str:
        """What is served where, for the console."""
        versions = self.model.available_versions
        lines = [
            f"kfp-tabular serve: {STAND_IN}.",
            f"model {self.name!r} from {self.model.repository}: "
            + (f"version {versions[-1]} AVAILABLE" if versions else "no version loaded yet (see the log)"),
            f"REST:    {self.rest_url}/v1/models/{self.name}",
        ]
        if self.grpc_target:
            lines.append(f"gRPC:    {self.grpc_target}")
        lines.append(f"metrics: {self.rest_url}{PROMETHEUS_PATH}")
        return "\n".join(lines)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
