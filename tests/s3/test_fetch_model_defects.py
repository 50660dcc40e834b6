"""Defects of the first fetch-model, reproduced against the real SeaweedFS server and real processes / sockets.

1. a flipped byte in saved_model.pb was served: see test_publish_model_s3 and tests/unit (manifest mandatory);
2. a fetch during an upload published a version with 3-5 of its 6 files;
3. two concurrent fetches into one destination failed 9 times in 20: one removed the other's live staging folder;
4. an endpoint that accepts connections and never answers took about 3 minutes (3 x 60 s) to fail.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kfp_tabular.components._shared.s3 import S3Timeouts
from kfp_tabular.errors import DataSourceError, ModelError
from kfp_tabular.serving.fetch import fetch_model
from kfp_tabular.serving.repository import publish_savedmodel
from kfp_tabular.serving.verify import MANIFEST_FILE, list_files, verify_savedmodel, write_manifest

pytestmark = pytest.mark.s3

TRIALS = 20
FETCHERS = 3


@pytest.fixture(scope="module")
def manifested(tiny_savedmodel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("manifested") / "savedmodel"
    shutil.copytree(tiny_savedmodel, model)
    write_manifest(model)
    return model


def test_a_fetch_during_an_upload_never_publishes_a_partial_version(
    s3_server, s3_env, s3_bucket: str, manifested: Path, tmp_path: Path
) -> None:
    prefix = f"uploads/{uuid.uuid4().hex[:8]}/tabular/1"
    # The order publish_model uploads in: every file, then the manifest.
    names = sorted(list_files(manifested), key=lambda name: (name == MANIFEST_FILE, name))
    assert len(names) == 6
    client = s3_server.client()
    uploaded = threading.Event()

    def upload() -> None:
        for name in names:
            client.fput_object(s3_bucket, f"{prefix}/{name}", str(manifested / name))
            time.sleep(0.2)
        uploaded.set()

    uploader = threading.Thread(target=upload)
    dest = tmp_path / "serving"
    refused, fetched = [], []
    uploader.start()
    try:
        while True:
            finished = uploaded.is_set()
            try:
                fetched.append(list_files(fetch_model(f"s3://{s3_bucket}/{prefix}", dest)))
            except (ModelError, DataSourceError) as error:
                refused.append(str(error))
                assert not (dest / "1").exists(), "a refused fetch left a version folder"
            if finished:
                break
    finally:
        uploader.join()
    assert fetched, refused[-3:]
    assert all(files == list_files(manifested) for files in fetched)  # never a partial version
    assert len(refused) >= 3  # fetches really ran against the half-uploaded prefix
    assert any("no manifest.json" in message for message in refused)


def _fetch_worker(uri: str, dests: list[str], start, results) -> None:
    """One fetch-model process: for each trial, wait for the others, then fetch into the trial's destination."""
    for dest in dests:
        start.wait()
        try:
            fetch_model(uri, Path(dest))
            results.put((dest, "ok"))
        except Exception as error:
            results.put((dest, f"{type(error).__name__}: {error}"))


def test_concurrent_fetches_into_one_destination_all_succeed(
    s3_env, s3_bucket: str, manifested: Path, tmp_path: Path
) -> None:
    repo = f"s3://{s3_bucket}/concurrent/{uuid.uuid4().hex[:8]}/tabular"
    uri = publish_savedmodel(manifested, repo).uri
    dests = [str(tmp_path / f"trial{i}" / "tabular") for i in range(TRIALS)]
    context = multiprocessing.get_context("spawn")  # real, independent processes, as two init containers are
    start, results = context.Barrier(FETCHERS), context.Queue()
    workers = [context.Process(target=_fetch_worker, args=(uri, dests, start, results)) for _ in range(FETCHERS)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(TRIALS * FETCHERS)]
    for worker in workers:
        worker.join(30)
    failures = [outcome for outcome in outcomes if outcome[1] != "ok"]
    assert failures == [], f"{len(failures)} of {len(outcomes)} fetches failed: {failures[:3]}"
    for dest in map(Path, dests):
        assert sorted(p.name for p in dest.iterdir()) == ["1"]  # no staging folder or owner file left
        verify_savedmodel(dest / "1", require_manifest=True)


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "something-secret")
    for name in ("S3_CONNECT_TIMEOUT_S", "S3_READ_TIMEOUT_S", "S3_RETRIES", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield endpoint, accepted
    finally:
        server.close()
        for connection in accepted:
            connection.close()


def test_an_endpoint_that_never_answers_fails_within_the_timeouts(silent_endpoint, tmp_path: Path) -> None:
    endpoint, accepted = silent_endpoint
    timeouts = S3Timeouts(connect_s=1, read_s=1, retries=1)
    started = time.monotonic()
    with pytest.raises(DataSourceError) as caught:
        fetch_model("s3://models/tabular/1", tmp_path / "dest", timeouts=timeouts)
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed  # 2 attempts x 1 s read timeout, plus backoff
    message = str(caught.value)
    assert endpoint in message and "did not answer within 1 s" in message and "2 attempts" in message
    assert "--read-timeout" in message and "S3_READ_TIMEOUT_S" in message
    assert len(accepted) == 2  # one try and one retry, each on a new connection
    assert not (tmp_path / "dest").exists()


def test_the_init_container_takes_its_timeouts_from_the_environment(silent_endpoint, tmp_path: Path) -> None:
    endpoint, _ = silent_endpoint
    script = Path(sys.executable).with_name("kfp-tabular")
    env = {**os.environ, "S3_READ_TIMEOUT_S": "1", "S3_RETRIES": "0"}
    started = time.monotonic()
    done = subprocess.run([str(script), "fetch-model", "--source-uri", "s3://models/tabular/1", "--dest",
                           str(tmp_path / "dest")], capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert endpoint in done.stderr and "did not answer within 1 s (1 attempt)" in done.stderr
    assert elapsed < 10, elapsed  # interpreter start-up included


def test_an_endpoint_that_drops_connections_fails_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting times out.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    filler = socket.create_connection(server.getsockname(), timeout=2)
    monkeypatch.setenv("S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "something-secret")
    try:
        started = time.monotonic()
        with pytest.raises(DataSourceError) as caught:
            fetch_model("s3://models/tabular/1", tmp_path / "dest",
                        timeouts=S3Timeouts(connect_s=0.5, read_s=5, retries=1))
        elapsed = time.monotonic() - started
    finally:
        filler.close()
        server.close()
    assert elapsed < 3, elapsed
    assert f"cannot connect to the S3 endpoint http://{endpoint} within 0.5 s (2 attempts)" in str(caught.value)
    assert "--connect-timeout" in str(caught.value)
