"""Benchmark: a bounded load test of ``kfp-tabular serve``, the local stand-in for TF Serving, on 127.0.0.1.

Starts ``kfp-tabular serve`` as a subprocess over a repository holding one SavedModel (default: a tiny one shaped
like an export, two inputs and two outputs; ``--savedmodel`` takes a real export), then sends one-row REST
``:predict`` requests (and gRPC ``Predict`` ones with ``--grpc``) at a fixed rate for a fixed time from keep-alive
connections, and stops by itself. Latency counts from each request's scheduled send time, so time spent queued
behind slow answers is included (no coordinated omission). The anchor is the same row answered in-process by the
server's own code path (request decoding, the SavedModel's signature, JSON answer) without HTTP, one at a time;
the ratio is what HTTP, threads and load add.

    .venv/bin/python benchmarks/serve.py [--rps 100] [--duration 10] [--connections 8] [--grpc] [--savedmodel DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
MAX_RPS, MAX_DURATION_S, TIMEOUT_S = 2000, 120, 5.0


def tiny_savedmodel(folder: Path) -> Path:
    """``score = 0.1 * amount`` and ``label = channel + "!"``, with the export's signature file."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.signature import (
        SIGNATURE_FILE,
        SIGNATURE_KEY,
        InputColumn,
        SignatureInfo,
    )

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = tf.Variable(0.1, dtype=tf.float64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64, name="amount"),
                                      tf.TensorSpec([None], tf.string, name="channel")])
        def serve(self, amount, channel):
            return {"score": tf.cast(self.weight * amount, tf.float32), "label": tf.strings.join([channel, "!"])}

    module = Tiny()
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
    signature = SignatureInfo(
        inputs=(InputColumn("amount", "amount", "float64", "float"), InputColumn("channel", "channel", "string",
                                                                               "object")),
        problem_type="regression", outputs={"score": "float32 [N]", "label": "string [N]"}, label="y",
    )
    (folder / SIGNATURE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / SIGNATURE_FILE).write_text(signature.to_json(), encoding="utf-8")
    return folder


def one_row(savedmodel: Path) -> dict:
    """A valid row for any export: 1.5 for numeric inputs, "a" for the others, by original column name."""
    from kfp_tabular.components.export_savedmodel.signature import FLOAT, read_signature

    return {c.column: 1.5 if c.dtype == FLOAT else "a" for c in read_signature(savedmodel).inputs}


def anchor(savedmodel: Path, body: dict, calls: int) -> list[float]:
    """The server's code path in-process, without HTTP: decode, run, write JSON; one call at a time."""
    from kfp_tabular.serving.local_models import load_version
    from kfp_tabular.serving.local_server import rest_predictions

    loaded = load_version("model", 1, savedmodel)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        outputs, row_format = loaded.predict_json(body)
        json.dumps(rest_predictions(outputs, row_format))
        times.append(time.perf_counter() - started)
    return times


def start_server(repo: Path, grpc: bool) -> tuple[subprocess.Popen, str, str | None]:
    command = [sys.executable, "-m", "kfp_tabular.cli", "serve", "--model-repository", str(repo),
               "--model-name", "model", "--port", "0"] + (["--grpc-port", "0"] if grpc else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rest = target = None
    for line in process.stdout:
        if line.startswith("REST:"):
            rest = line.split()[1].rsplit("/v1/", 1)[0]
        elif line.startswith("gRPC:"):
            target = line.split()[1]
        if line.startswith("metrics:"):
            break
    if rest is None:
        process.kill()
        raise SystemExit("kfp-tabular serve did not start; run it by hand to see why")
    return process, rest, target


def rest_sender(base: str, body: bytes):
    host, port = base.removeprefix("http://").split(":")
    state = threading.local()

    def send() -> bool:
        if getattr(state, "connection", None) is None:
            state.connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
        try:
            state.connection.request("POST", "/v1/models/model:predict", body,
                                     {"Content-Type": "application/json"})
            response = state.connection.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            state.connection.close()
            state.connection = None
            return False

    return send


def grpc_sender(target: str, savedmodel: Path, row: dict):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from kfp_tabular.components.export_savedmodel.signature import read_signature
    from kfp_tabular.components.export_savedmodel.warmup import predict_request

    signature = read_signature(savedmodel)
    arrays = {c.column: np.array([row[c.column]], dtype=np.float64 if c.dtype == "float64" else object)
              for c in signature.inputs}
    request = predict_request(arrays, signature, "model")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))

    def send() -> bool:
        try:
            stub.Predict(request, timeout=TIMEOUT_S)
            return True
        except grpc.RpcError:
            return False

    return send


def load_test(send, rps: float, duration: float, connections: int) -> tuple[list[float], int, float]:
    """Send ``rps * duration`` requests on a fixed schedule; returns (latencies, errors, wall seconds)."""
    total = int(rps * duration)
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter() + 0.05

    def worker() -> None:
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                return
            scheduled = start + index / rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ok = send()
            done = time.perf_counter()
            with lock:
                latencies.append(done - scheduled)
                errors[0] += not ok

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - start


def row(name: str, latencies: list[float], errors: int, wall: float) -> str:
    ms = np.asarray(latencies) * 1e3
    return (f"| {name:<22} | {len(ms):>8} | {errors:>6} | {errors / max(len(ms), 1):>9.2%} | "
            f"{len(ms) / wall:>9.1f} | {np.percentile(ms, 50):>7.2f} | {np.percentile(ms, 99):>7.2f} | "
            f"{ms.max():>7.2f} |")


def metric_count(base: str) -> str:
    text = urllib.request.urlopen(f"{base}/monitoring/prometheus/metrics", timeout=10).read().decode()
    return " ".join(line for line in text.splitlines() if line.startswith(":tensorflow:serving:request_count"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rps", type=float, default=100.0, help=f"requests per second (at most {MAX_RPS})")
    parser.add_argument("--duration", type=float, default=10.0, help=f"seconds per path (at most {MAX_DURATION_S})")
    parser.add_argument("--connections", type=int, default=8, help="client connections (threads)")
    parser.add_argument("--grpc", action="store_true", help="also load the gRPC Predict endpoint")
    parser.add_argument("--savedmodel", type=Path, help="an export_savedmodel folder (default: a tiny model)")
    args = parser.parse_args()
    if not (0 < args.rps <= MAX_RPS and 0 < args.duration <= MAX_DURATION_S and args.connections > 0):
        parser.error(f"keep 0 < --rps <= {MAX_RPS}, 0 < --duration <= {MAX_DURATION_S}, --connections >= 1")

    work = Path(tempfile.mkdtemp(prefix="kfp-tabular-bench-serve-"))
    try:
        repo = work / "repo"
        if args.savedmodel:
            shutil.copytree(args.savedmodel, repo / "1")
        else:
            tiny_savedmodel(repo / "1")
        body = {"instances": [one_row(repo / "1")]}
        anchor_times = anchor(repo / "1", body, calls=300)
        process, base, target = start_server(repo, args.grpc)
        try:
            send = rest_sender(base, json.dumps(body).encode())
            for _ in range(20):  # warm the connections and the model
                send()
            results = [("REST :predict", *load_test(send, args.rps, args.duration, args.connections))]
            if args.grpc:
                send = grpc_sender(target, repo / "1", body["instances"][0])
                for _ in range(20):
                    send()
                results.append(("gRPC Predict", *load_test(send, args.rps, args.duration, args.connections)))
            counted = metric_count(base)
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    model = args.savedmodel or "tiny 2-input SavedModel"
    print(f"kfp-tabular serve (local stand-in for TF Serving), {model}, one row per request, "
          f"{args.rps:g} req/s for {args.duration:g} s per path, {args.connections} connections, "
          f"{os.cpu_count()} CPUs\n")
    print("| path                   | requests | errors | error rate | req/s     | p50 ms  | p99 ms  | max ms  |")
    print("|------------------------|----------|--------|------------|-----------|---------|---------|---------|")
    print(row("in-process (anchor)", anchor_times, 0, sum(anchor_times)))
    for name, latencies, errors, wall in results:
        print(row(name, latencies, errors, wall))
    anchor_p50 = np.percentile(anchor_times, 50)
    for name, latencies, _, _ in results:
        print(f"\n{name}: p50 {np.percentile(latencies, 50) / anchor_p50:.1f}x the in-process anchor")
    print(f"server metrics: {counted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
