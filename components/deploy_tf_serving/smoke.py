"""Golden requests and the smoke test of a rolled-out version, through the Service, against that version only.

**Golden requests** are rows the SavedModel was run on, with its outputs. Given as a JSON file
(:meth:`Golden.write` writes one), or computed here from a SavedModel: the batch request of its TF Serving
warmup file (``assets.extra/tf_serving_warmup_requests``: rows of the test split that export_savedmodel wrote)
run through its ``serving_default`` signature with TensorFlow.

**The smoke test** speaks to the Service as any client would, naming the pushed version in every request, so an
old version that still answers, or the wrong one, fails it:

1. ``GET /v1/models/<name>/versions/<N>`` reports ``AVAILABLE`` (retried until the timeout: endpoints may lag),
   and ``GetModelStatus`` over gRPC agrees; ``.../metadata`` has the ``serving_default`` signature with the
   golden inputs and outputs;
2. REST ``POST /v1/models/<name>/versions/<N>:predict`` with the golden rows in row format answers
   ``{"predictions": [...]}`` (one value per row, or one object per row with every output when there are
   several) equal to the expected outputs; gRPC ``Predict`` with ``model_spec.version = N`` answers
   ``model_spec.version == N`` and the same tensors. Floats are compared after casting the answer to the
   output's dtype (TF Serving writes float32 with the digits that round-trip), within ``tolerance`` scaled by
   ``max(1, |expected|)``; strings must be equal;
3. latency: ``requests`` single-row REST and gRPC requests on one keep-alive connection / channel each, p50 and
   p99 in ms;
4. TF Serving's Prometheus ``:tensorflow:serving:request_count`` (``model_name``, ``status="OK"``) is read
   before and after the REST requests on that same connection; it must be readable and non-zero (with one
   replica the difference is at least the requests sent; with several, a reconnect may reach another pod).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from kfp_tabular.errors import ConfigError, ModelError

SIGNATURE_KEY = "serving_default"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
GOLDEN_FORMAT = "kfp-tabular-golden-v1"


@dataclass(frozen=True)
class Golden:
    """Rows and the outputs the SavedModel gave for them.

    Attributes:
        inputs: Signature input tensor name -> one value per row.
        input_dtypes: Tensor name -> numpy dtype name (``float64``, ``object`` for strings...).
        outputs: Output name -> one value (or list of values) per row.
        output_dtypes: Output name -> numpy dtype name.
        source: Where the rows and outputs come from (for the report).
    """

    inputs: dict[str, list[Any]]
    input_dtypes: dict[str, str]
    outputs: dict[str, list[Any]]
    output_dtypes: dict[str, str]
    source: str

    @property
    def rows(self) -> int:
        """Number of golden rows."""
        return len(next(iter(self.inputs.values()), []))

    def instances(self, rows: range | None = None) -> list[dict[str, Any]]:
        """REST row format: one ``{tensor name: value}`` per row."""
        return [{name: values[i] for name, values in self.inputs.items()} for i in (rows or range(self.rows))]

    def input_arrays(self, rows: range | None = None) -> dict[str, np.ndarray]:
        """Input arrays (strings as bytes) for a PredictRequest."""
        chosen = list(rows or range(self.rows))
        arrays = {}
        for name, values in self.inputs.items():
            dtype = self.input_dtypes[name]
            if dtype == "object":
                arrays[name] = np.array([str(values[i]).encode() for i in chosen], dtype=object)
            else:
                arrays[name] = np.array([values[i] for i in chosen], dtype=dtype)
        return arrays

    def expected(self, rows: range | None = None) -> dict[str, np.ndarray]:
        """The expected outputs as arrays of their dtypes."""
        chosen = list(rows or range(self.rows))
        return {name: np.array([values[i] for i in chosen],
                               dtype=object if self.output_dtypes[name] == "object" else self.output_dtypes[name])
                for name, values in self.outputs.items()}

    def to_json(self) -> str:
        """The golden file's JSON text."""
        return json.dumps({"format": GOLDEN_FORMAT, "signature_name": SIGNATURE_KEY, "source": self.source,
                           "inputs": self.inputs, "input_dtypes": self.input_dtypes, "outputs": self.outputs,
                           "output_dtypes": self.output_dtypes}, indent=1)

    def write(self, path: Path) -> Path:
        """Write the golden file; returns its path."""
        Path(path).write_text(self.to_json(), encoding="utf-8")
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> Golden:
        """Read a golden file.

        Raises:
            ConfigError: not a golden file of this format, or rows of unequal length.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read the golden requests {path}: {error}") from error
        if not isinstance(data, dict) or data.get("format") != GOLDEN_FORMAT:
            raise ConfigError(f"{path} is not a golden requests file ({GOLDEN_FORMAT}); write it with "
                              "Golden.write or leave the input empty to compute it from the published model")
        golden = cls(data["inputs"], data["input_dtypes"], data["outputs"], data["output_dtypes"],
                     data.get("source") or str(path))
        lengths = {len(v) for v in [*golden.inputs.values(), *golden.outputs.values()]}
        if len(lengths) != 1 or not golden.rows:
            raise ConfigError(f"{path}: every input and output must have the same number (>= 1) of rows")
        return golden


def _plain(array: np.ndarray) -> list[Any]:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return array.tolist()


def golden_from_savedmodel(folder: Path, source: str) -> Golden:
    """Run the batch warmup request of a SavedModel through its ``serving_default`` signature.

    Raises:
        ModelError: the SavedModel has no warmup requests (not written by export_savedmodel).
    """
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.warmup import WARMUP_FILE, read_warmup, request_to_tensors

    if not (Path(folder) / WARMUP_FILE).is_file():
        raise ModelError(f"{source} has no {WARMUP_FILE}: no rows to smoke-test with. Export the model with "
                         "export_savedmodel, or pass golden requests")
    requests = read_warmup(Path(folder))
    request = max(requests, key=lambda r: max(len(tf.make_ndarray(t)) for t in r.inputs.values()))
    tensors = request_to_tensors(request)
    function = tf.saved_model.load(str(folder)).signatures[SIGNATURE_KEY]
    outputs = {name: value.numpy() for name, value in function(**tensors).items()}
    arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
    return Golden(
        inputs={name: _plain(array) for name, array in sorted(arrays.items())},
        input_dtypes={name: "object" if array.dtype == object else array.dtype.name for name, array in arrays.items()},
        outputs={name: _plain(array) for name, array in sorted(outputs.items())},
        output_dtypes={name: "object" if a.dtype == object else a.dtype.name for name, a in outputs.items()},
        source=f"{len(next(iter(arrays.values())))} warmup rows of {source} run through {SIGNATURE_KEY} with "
               f"TensorFlow {tf.__version__} in this step",
    )


# -- comparisons ------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """How far answers are from the golden outputs."""

    max_abs_diff: float = 0.0
    max_scaled_diff: float = 0.0
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, got: Any, expected: np.ndarray, tolerance: float, where: str) -> None:
        """Compare one output with its expected values and record any problem."""
        if expected.dtype == object:
            got_values = np.array(got, dtype=object).reshape(-1) if np.ndim(got) else np.array([got], dtype=object)
            want = expected.reshape(-1)
            got_text = [v.decode() if isinstance(v, bytes) else str(v) for v in got_values]
            want_text = [v.decode() if isinstance(v, bytes) else str(v) for v in want]
            if got_text != want_text:
                bad = next(i for i, (a, b) in enumerate(zip(got_text, want_text, strict=False)) if a != b) \
                    if len(got_text) == len(want_text) else None
                self.problems.append(f"{where}: output {name!r} differs" + (
                    f" at row {bad}: {got_text[bad]!r} instead of {want_text[bad]!r}" if bad is not None else
                    f": {len(got_text)} values instead of {len(want_text)}"))
            return
        try:
            answer = np.asarray(got, dtype=expected.dtype)
        except (TypeError, ValueError):
            self.problems.append(f"{where}: output {name!r} is not numeric: {str(got)[:80]}")
            return
        if answer.shape != expected.shape:
            self.problems.append(f"{where}: output {name!r} has shape {list(answer.shape)}, expected "
                                 f"{list(expected.shape)}")
            return
        both_nan = np.isnan(answer) & np.isnan(expected) if answer.dtype.kind == "f" else np.zeros_like(answer, bool)
        diff = np.where(both_nan, 0.0, np.abs(answer.astype(np.float64) - expected.astype(np.float64)))
        diff = np.where(np.isnan(diff), np.inf, diff)
        magnitude = np.abs(expected.astype(np.float64))
        scaled = diff / np.maximum(1.0, np.where(np.isnan(magnitude), 1.0, magnitude))  # NaN must not hide a diff
        worst = float(diff.max()) if diff.size else 0.0
        self.max_abs_diff = max(self.max_abs_diff, worst)
        self.max_scaled_diff = max(self.max_scaled_diff, float(scaled.max()) if scaled.size else 0.0)
        if scaled.size and float(scaled.max()) > tolerance:
            index = np.unravel_index(int(np.argmax(scaled)), scaled.shape)
            self.problems.append(f"{where}: output {name!r} differs by {worst:.3g} (tolerance {tolerance:g}) at "
                                 f"{list(map(int, index))}: {answer[index]!r} instead of {expected[index]!r}")


# -- clients --------------------------------------------------------------------------------------------------


class Rest:
    """One keep-alive HTTP connection to the Service's REST port."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"rest_url {base_url!r} must be http(s)://host:port")
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connection = factory(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                  timeout=timeout_s)
        self.base = base_url.rstrip("/")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        """One request on the connection: (status, body text)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self.connection.request(method, path, data, headers)
            response = self.connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def request_count(metrics_text: str, model_name: str) -> int | None:
    """The sum of ``:tensorflow:serving:request_count{model_name=..., status="OK"}`` in Prometheus text."""
    total, found = 0, False
    pattern = re.compile(re.escape(REQUEST_COUNT) + r"\{([^}]*)\}\s+([0-9.eE+-]+)")
    for line in metrics_text.splitlines():
        match = pattern.match(line.strip())
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        if labels.get("model_name") == model_name and labels.get("status") == "OK":
            total += int(float(match.group(2)))
            found = True
    return total if found else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value at rank ceil(q/100 * n)), in the units given."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class SmokeResult:
    """What the smoke test saw (for the report and metrics)."""

    rest_url: str
    grpc_target: str
    version: int
    state: str = ""
    grpc_state: str = ""
    signature_ok: bool = False
    rest: Comparison = field(default_factory=Comparison)
    grpc: Comparison = field(default_factory=Comparison)
    rows: int = 0
    requests: int = 0
    rest_latency_ms: list[float] = field(default_factory=list)
    grpc_latency_ms: list[float] = field(default_factory=list)
    count_before: int | None = None
    count_after: int | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.all_problems

    @property
    def all_problems(self) -> list[str]:
        """Every failed check, in order."""
        return [*self.problems, *self.rest.problems, *self.grpc.problems]

    def stats(self) -> dict[str, float]:
        """p50 and p99 latency of REST and gRPC, in ms."""
        return {"rest_p50_ms": percentile(self.rest_latency_ms, 50), "rest_p99_ms": percentile(self.rest_latency_ms, 99),
                "grpc_p50_ms": percentile(self.grpc_latency_ms, 50), "grpc_p99_ms": percentile(self.grpc_latency_ms, 99)}


def _until(deadline: float, attempt: Callable[[], str | None], poll_s: float = 0.5) -> str | None:
    """Call ``attempt`` until it returns None (success) or the deadline passes; the last problem."""
    problem = attempt()
    while problem is not None and time.monotonic() < deadline:
        time.sleep(poll_s)
        problem = attempt()
    return problem


def smoke_test(rest_url: str, grpc_target: str, model_name: str, version: int, golden: Golden, *,
               requests: int = 50, timeout_s: float = 60.0, request_timeout_s: float = 10.0,
               tolerance: float = 1e-6, require_metrics: bool = True) -> SmokeResult:
    """Run the smoke test (see the module docstring) and return what it saw; never raises for a failed check.

    Raises:
        ConfigError: a malformed address.
    """
    started = time.monotonic()
    result = SmokeResult(rest_url, grpc_target, version, rows=golden.rows)
    deadline = time.monotonic() + timeout_s
    base = f"/v1/models/{model_name}/versions/{version}"
    rest = Rest(rest_url, request_timeout_s)
    try:
        def available() -> str | None:
            try:
                status, text = rest.request("GET", base)
            except (OSError, http.client.HTTPException) as error:
                return f"GET {rest_url}{base}: {error}"
            if status != 200:
                rest.close()  # reconnect next time: the Service may pick a pod that serves the version
                return f"GET {rest_url}{base} answered {status}: {text[:200]}"
            try:
                entries = json.loads(text)["model_version_status"]
            except (ValueError, KeyError, TypeError):
                return f"GET {rest_url}{base} answered a body that is not a model status: {text[:200]}"
            mine = [e for e in entries if str(e.get("version")) == str(version)]
            result.state = mine[0].get("state", "") if mine else ""
            return None if result.state == "AVAILABLE" else f"version {version} is {result.state or 'not listed'}: {text[:200]}"

        problem = _until(deadline, available)
        if problem:
            result.problems.append(problem)
            return result
        _check_metadata(rest, base, golden, result)
        _rest_predict(rest, base, golden, tolerance, result)
        _grpc(grpc_target, model_name, version, golden, tolerance, requests, request_timeout_s, deadline, result)
        _rest_latency_and_metrics(rest, base, golden, requests, model_name, require_metrics, result)
    finally:
        rest.close()
        result.seconds = time.monotonic() - started
    return result


def _check_metadata(rest: Rest, base: str, golden: Golden, result: SmokeResult) -> None:
    status, text = rest.request("GET", f"{base}/metadata")
    try:
        signature = json.loads(text)["metadata"]["signature_def"]["signature_def"][SIGNATURE_KEY]
        inputs, outputs = set(signature["inputs"]), set(signature["outputs"])
    except (ValueError, KeyError, TypeError):
        result.problems.append(f"GET {base}/metadata answered {status} without a {SIGNATURE_KEY} signature: "
                               f"{text[:200]}")
        return
    if inputs != set(golden.inputs) or outputs != set(golden.outputs):
        result.problems.append(f"the served signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the "
                               f"golden requests have {sorted(golden.inputs)} and {sorted(golden.outputs)}")
        return
    result.signature_ok = True


def _rest_predict(rest: Rest, base: str, golden: Golden, tolerance: float, result: SmokeResult) -> None:
    status, text = rest.request("POST", f"{base}:predict",
                                {"signature_name": SIGNATURE_KEY, "instances": golden.instances()})
    if status != 200:
        result.rest.problems.append(f"REST :predict answered {status}: {text[:300]}")
        return
    try:
        predictions = json.loads(text)["predictions"]
    except (ValueError, KeyError, TypeError):
        result.rest.problems.append(f"REST :predict answered without 'predictions': {text[:300]}")
        return
    if not isinstance(predictions, list) or len(predictions) != golden.rows:
        result.rest.problems.append(f"REST :predict answered {len(predictions) if isinstance(predictions, list) else 0} "
                                    f"predictions for {golden.rows} rows")
        return
    expected = golden.expected()
    names = sorted(expected)
    if len(names) == 1:  # one output: TF Serving leaves its name out
        result.rest.add(names[0], predictions, expected[names[0]], tolerance, "REST")
        return
    if not all(isinstance(p, dict) and set(p) == set(names) for p in predictions):
        result.rest.problems.append(f"REST :predict rows do not carry exactly the outputs {names}: {text[:300]}")
        return
    for name in names:
        result.rest.add(name, [p[name] for p in predictions], expected[name], tolerance, "REST")


def _grpc(target: str, model_name: str, version: int, golden: Golden, tolerance: float, requests: int,
          timeout_s: float, deadline: float, result: SmokeResult) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(target)
    try:
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = model_name
        status_request.model_spec.version.value = version

        def status() -> str | None:
            try:
                answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request,
                                                                                         timeout=timeout_s)
            except grpc.RpcError as error:
                return f"gRPC GetModelStatus: {error.code().name}: {error.details()}"
            states = [get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                      for s in answer.model_version_status if s.version == version]
            result.grpc_state = states[0] if states else ""
            return None if result.grpc_state == "AVAILABLE" else f"gRPC: version {version} is {result.grpc_state}"

        problem = _until(deadline, status)
        if problem:
            result.grpc.problems.append(problem)
            return

        def predict_request(rows: range | None) -> Any:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.version.value = version
            request.model_spec.signature_name = SIGNATURE_KEY
            for name, array in golden.input_arrays(rows).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
            return request

        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(predict_request(None), timeout=timeout_s)
        except grpc.RpcError as error:
            result.grpc.problems.append(f"gRPC Predict: {error.code().name}: {error.details()}")
            return
        if response.model_spec.version.value != version:
            result.grpc.problems.append(f"gRPC Predict was answered by version {response.model_spec.version.value}, "
                                        f"not {version}")
        expected = golden.expected()
        if set(response.outputs) != set(expected):
            result.grpc.problems.append(f"gRPC Predict returned outputs {sorted(response.outputs)}, expected "
                                        f"{sorted(expected)}")
            return
        for name, proto in response.outputs.items():
            result.grpc.add(name, tf.make_ndarray(proto), expected[name], tolerance, "gRPC")
        singles = [predict_request(range(i % golden.rows, i % golden.rows + 1)) for i in range(requests)]
        for request in singles:
            start = time.perf_counter()
            try:
                stub.Predict(request, timeout=timeout_s)
            except grpc.RpcError as error:
                result.grpc.problems.append(f"gRPC Predict (latency run): {error.code().name}: {error.details()}")
                return
            result.grpc_latency_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        channel.close()


def _rest_latency_and_metrics(rest: Rest, base: str, golden: Golden, requests: int, model_name: str,
                              require_metrics: bool, result: SmokeResult) -> None:
    def count() -> int | None:
        try:
            status, text = rest.request("GET", PROMETHEUS_PATH)
        except (OSError, http.client.HTTPException):
            return None
        return request_count(text, model_name) if status == 200 else None

    result.count_before = count()
    bodies = [{"instances": golden.instances(range(i % golden.rows, i % golden.rows + 1))} for i in range(requests)]
    for body in bodies:
        start = time.perf_counter()
        status, text = rest.request("POST", f"{base}:predict", body)
        if status != 200:
            result.rest.problems.append(f"REST :predict (latency run) answered {status}: {text[:200]}")
            return
        result.rest_latency_ms.append((time.perf_counter() - start) * 1e3)
    result.requests = requests
    result.count_after = count()
    # Unreadable is a failure; a smaller count is not (with several replicas a reconnect may reach another pod).
    if require_metrics and not result.count_after:
        result.problems.append(f"TF Serving's Prometheus {REQUEST_COUNT} for model {model_name!r} could not be read "
                               f"back at {result.rest_url}{PROMETHEUS_PATH} (before: {result.count_before}, after: "
                               f"{result.count_after}); check the monitoring config of the Deployment")


def failure_message(result: SmokeResult) -> str:
    """The first failed checks, on one line."""
    return "; ".join(result.all_problems[:5])
