"""``kfp-tabular serve``, the local stand-in for TF Serving: real SavedModels in a repository folder, real HTTP
(urllib) and gRPC (tensorflow-serving-api stubs) clients against the server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kfp_tabular.components.export_savedmodel.signature import (
    SIGNATURE_FILE,
    SIGNATURE_KEY,
    InputColumn,
    SignatureInfo,
    to_float_value,
)
from kfp_tabular.errors import DataValidationError
from kfp_tabular.serving.local_server import LocalServer
from kfp_tabular.serving.verify import write_manifest

ROWS = [{"bill_length_mm": 39.1, "island": "Biscoe"}, {"bill_length_mm": 50.25, "island": "Dream"}]


def call(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def direct(folder: Path, rows: list[dict]) -> dict[str, np.ndarray]:
    """The SavedModel's own outputs for the rows, called through TensorFlow without any server."""
    import tensorflow as tf

    function = tf.saved_model.load(str(folder)).signatures[SIGNATURE_KEY]
    out = function(bill_length_mm=tf.constant([r["bill_length_mm"] for r in rows], tf.float64),
                   island=tf.constant([r["island"] for r in rows]))
    return {key: value.numpy() for key, value in out.items()}


def save_v2(folder: Path) -> Path:
    """A second model: ``prediction = 3 * bill_length_mm`` plus a string ``label`` output (two outputs)."""
    import tensorflow as tf

    class Two(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = tf.Variable(3.0, dtype=tf.float64)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.float64, name="bill_length_mm"),
                                      tf.TensorSpec([None], tf.string, name="island")])
        def serve(self, bill_length_mm, island):
            return {"prediction": tf.cast(self.weight * bill_length_mm, tf.float32),
                    "label": tf.strings.join([island, "!"])}

    module = Two()
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
    signature = SignatureInfo(
        inputs=(InputColumn("bill_length_mm", "bill_length_mm", "float64", "float"),
                InputColumn("island", "island", "string", "object")),
        problem_type="regression", outputs={"prediction": "float32 [N]", "label": "string [N]"},
        label="body_mass_g", model_name="two",
    )
    (folder / SIGNATURE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / SIGNATURE_FILE).write_text(signature.to_json(), encoding="utf-8")
    return folder


def publish(repo: Path, version: int, build) -> Path:
    """Write a version the way a publisher does: files first (in a staging folder), manifest last."""
    staging = repo / f".tmp-{version}"
    build(staging)
    os.rename(staging, repo / str(version))
    write_manifest(repo / str(version))
    return repo / str(version)


@pytest.fixture
def repo(tmp_path: Path, tiny_savedmodel: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    publish(repo, 1, lambda folder: shutil.copytree(tiny_savedmodel, folder))
    return repo


@pytest.fixture
def server(repo: Path):
    with LocalServer(str(repo), model_name="tiny", port=0, grpc_port=0, poll_seconds=0.2,
                     labels={"stable": 1}, threads=8) as running:
        yield running


def test_status_and_metadata_answer_like_tf_serving(server: LocalServer) -> None:
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert call("GET", f"{server.rest_url}/v1/models/tiny") == (200, expected)
    assert call("GET", f"{server.rest_url}/v1/models/tiny/versions/1") == (200, expected)
    assert call("GET", f"{server.rest_url}/v1/models/tiny/labels/stable") == (200, expected)

    status, metadata = call("GET", f"{server.rest_url}/v1/models/tiny/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "tiny", "version": "1", "signature_name": ""}
    serving = metadata["metadata"]["signature_def"]["signature_def"][SIGNATURE_KEY]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["bill_length_mm"]["dtype"] == "DT_DOUBLE"
    assert serving["inputs"]["island"]["dtype"] == "DT_STRING"
    assert serving["inputs"]["island"]["tensor_shape"]["dim"][0]["size"] == "-1"
    assert serving["outputs"]["prediction"]["dtype"] == "DT_FLOAT"
    assert call("GET", f"{server.rest_url}/v1/models/tiny/versions/1/metadata")[1] == metadata


def test_predict_rows_and_columns_equal_the_savedmodel(server: LocalServer, repo: Path) -> None:
    reference = direct(repo / "1", ROWS)["prediction"]
    status, rows = call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": ROWS})
    assert status == 200
    # One output tensor: TF Serving leaves its name out.
    assert np.allclose(rows["predictions"], reference, rtol=1e-7, atol=0)
    columns = {"bill_length_mm": [r["bill_length_mm"] for r in ROWS], "island": [r["island"] for r in ROWS]}
    status, answer = call("POST", f"{server.rest_url}/v1/models/tiny/versions/1:predict", {"inputs": columns})
    assert status == 200 and answer == {"outputs": rows["predictions"]}
    # null is a missing value (NaN), as the export's request rule says; NaN travels as JSON's NaN token.
    status, answer = call("POST", f"{server.rest_url}/v1/models/tiny/labels/stable:predict",
                          {"instances": [{"bill_length_mm": None, "island": "Biscoe"}]})
    assert status == 200 and math.isnan(answer["predictions"][0])

    def one(i: int) -> list[float]:
        return call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": ROWS})[1]["predictions"]

    with ThreadPoolExecutor(8) as pool:  # concurrent clients get the same answers
        assert all(answer == rows["predictions"] for answer in pool.map(one, range(40)))


def test_errors_have_tf_serving_status_codes_and_bodies(server: LocalServer) -> None:
    url = server.rest_url
    assert call("POST", f"{url}/v1/models/nope:predict", {"instances": ROWS}) == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    assert call("POST", f"{url}/v1/models/tiny/versions/9:predict", {"instances": ROWS}) == (
        404, {"error": "Servable not found for request: Specific(tiny, 9)"})
    assert call("GET", f"{url}/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})
    assert call("GET", f"{url}/v1/models/tiny/versions/9") == (404, {"error": "Could not find version 9 of model tiny"})
    assert call("GET", f"{url}/v1/models") == (400, {"error": "Missing model name in request."})
    assert call("POST", f"{url}/v1/models/tiny/labels/canary:predict", {"instances": ROWS}) == (
        400, {"error": "Unrecognized servable version label: canary"})

    with pytest.raises(DataValidationError) as expected:
        to_float_value("long", "bill_length_mm")
    bad = [{"bill_length_mm": "long", "island": "Biscoe"}]
    assert call("POST", f"{url}/v1/models/tiny:predict", {"instances": bad}) == (400, {"error": str(expected.value)})
    status, body = call("POST", f"{url}/v1/models/tiny:predict", {"instances": [{"island": "Biscoe"}]})
    assert status == 400 and "missing column(s) ['bill_length_mm']" in body["error"]
    status, body = call("POST", f"{url}/v1/models/tiny:predict", b"{not json")
    assert status == 400 and body["error"].startswith("JSON Parse error")
    assert call("POST", f"{url}/v1/models/tiny:predict", {"instances": []}) == (
        400, {"error": "No values in 'instances' array"})
    status, body = call("POST", f"{url}/v1/models/tiny:predict", {"instances": ROWS, "signature_name": "other"})
    assert status == 400 and body == {"error": 'Serving signature name: "other" not found in signature def'}


def test_metrics_count_requests_with_tf_serving_names(server: LocalServer) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    for _ in range(3):
        assert call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": ROWS})[0] == 200
    assert call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": [{}]})[0] == 400
    assert call("POST", f"{server.rest_url}/v1/models/other:predict", {"instances": ROWS})[0] == 404
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        with pytest.raises(grpc.RpcError):
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)

    status, text = call("GET", f"{server.rest_url}/monitoring/prometheus/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="tiny",status="OK"} 3' in lines
    assert ':tensorflow:serving:request_count{model_name="tiny",status="INVALID_ARGUMENT"} 2' in lines
    assert ':tensorflow:serving:request_count{model_name="other",status="NOT_FOUND"} 1' in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    labels = 'model_name="tiny",API="predict",entrypoint="REST"'
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 3" in lines
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}} 3' in lines
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="10"}} 0' in lines  # microseconds


def test_grpc_predict_metadata_and_status(server: LocalServer, repo: Path) -> None:
    import grpc
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

    from kfp_tabular.components.export_savedmodel.signature import read_signature
    from kfp_tabular.components.export_savedmodel.warmup import predict_request

    signature = read_signature(repo / "1")
    arrays = {"bill_length_mm": np.array([r["bill_length_mm"] for r in ROWS]),
              "island": np.array([r["island"] for r in ROWS], dtype=object)}
    import tensorflow as tf

    with grpc.insecure_channel(server.grpc_target) as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = predictions.Predict(predict_request(arrays, signature, "tiny"), timeout=30)
        assert response.model_spec.version.value == 1 and response.model_spec.signature_name == SIGNATURE_KEY
        assert np.array_equal(tf.make_ndarray(response.outputs["prediction"]), direct(repo / "1", ROWS)["prediction"])

        request = predict_request(arrays, signature, "tiny")
        del request.inputs["island"]
        with pytest.raises(grpc.RpcError) as error:
            predictions.Predict(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Missing but required: {island}." in error.value.details()
        with pytest.raises(grpc.RpcError) as error:
            predictions.Predict(predict_request(arrays, signature, "nope"), timeout=30)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details() == "Servable not found for request: Latest(nope)"

        meta_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta_request.model_spec.name = "tiny"
        meta = predictions.GetModelMetadata(meta_request, timeout=30)
        defs = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(defs)
        assert set(defs.signature_def[SIGNATURE_KEY].inputs) == {"bill_length_mm", "island"}

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "tiny"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_a_new_version_is_served_and_the_old_one_unloaded(server: LocalServer, repo: Path) -> None:
    from kfp_tabular.components.export_savedmodel.signature import read_signature
    from kfp_tabular.components.export_savedmodel.warmup import write_warmup

    def build(folder: Path) -> None:
        save_v2(folder)
        import pandas as pd

        write_warmup(folder, pd.DataFrame(ROWS), read_signature(folder))  # replayed at load, as TF Serving

    publish(repo, 2, build)

    def states() -> list[tuple[str, str]]:
        return [(s["version"], s["state"]) for s in call("GET", f"{server.rest_url}/v1/models/tiny")[1]
                ["model_version_status"]]

    wait_for(lambda: states() == [("2", "AVAILABLE"), ("1", "END")])
    status, answer = call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": ROWS})
    reference = direct(repo / "2", ROWS)
    assert status == 200
    # Two outputs: one object per row.
    assert [row["label"] for row in answer["predictions"]] == ["Biscoe!", "Dream!"]
    assert np.allclose([row["prediction"] for row in answer["predictions"]], reference["prediction"], rtol=1e-7)
    assert call("POST", f"{server.rest_url}/v1/models/tiny/versions/1:predict", {"instances": ROWS}) == (
        404, {"error": "Servable not found for request: Specific(tiny, 1)"})

    # A half-published version (files, no manifest) is not a version; a corrupt one fails and v2 keeps serving.
    half = repo / "3"
    shutil.copytree(repo / "2", half)
    (half / "manifest.json").unlink()
    time.sleep(1.0)
    assert states()[0] == ("2", "AVAILABLE")
    (half / "saved_model.pb").write_bytes(b"\x00garbage")
    write_manifest(half)
    wait_for(lambda: states()[0][0] == "3")
    failed = call("GET", f"{server.rest_url}/v1/models/tiny/versions/3")[1]["model_version_status"][0]
    assert failed["state"] == "END" and failed["status"]["error_code"] != "OK"
    assert "saved_model.pb" in failed["status"]["error_message"]
    assert server.model.available_versions == [2]
    assert call("POST", f"{server.rest_url}/v1/models/tiny:predict", {"instances": ROWS})[0] == 200


def test_cli_serves_a_folder_of_plain_exports_and_stops_on_sigterm(tmp_path: Path, tiny_savedmodel: Path) -> None:
    from kfp_tabular.cli import build_parser

    serve_help = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "LOCAL STAND-IN" in serve_help and "TF Serving" in serve_help

    repo = tmp_path / "models" / "penguins"
    shutil.copytree(tiny_savedmodel, repo / "4")  # a plain export folder: no manifest
    process = subprocess.Popen(
        [sys.executable, "-m", "kfp_tabular.cli", "serve", "--model-repository", str(repo), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("REST:"):
                break
        assert "LOCAL STAND-IN" in "".join(lines)
        url = lines[-1].split()[1]
        assert url.endswith("/v1/models/penguins")  # model name: the repository's last segment
        assert call("GET", url)[1]["model_version_status"][0] == {
            "version": "4", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        assert call("POST", f"{url}:predict", {"instances": ROWS})[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
