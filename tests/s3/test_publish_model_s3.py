"""publish_model into an S3 model repository on a real SeaweedFS server, with the minio SDK (no mocks).

Also the one test double of this folder, named as such: ``IgnoringProxy``, an HTTP proxy in front of the real
SeaweedFS that drops the ``If-None-Match`` header (and re-signs the request), i.e. an S3 store that ignores
conditional writes, as some S3-compatible stores do. The objects still land in SeaweedFS.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import struct
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from savedmodels import variant

from kfp_tabular.components._shared import s3
from kfp_tabular.errors import ConditionalWriteUnsupportedError, IntegrityError, VersionConflictError
from kfp_tabular.serving.fetch import fetch_model
from kfp_tabular.serving.repository import (
    list_versions,
    publish_savedmodel,
    resolve_version,
    version_manifest,
)
from kfp_tabular.serving.verify import MANIFEST_FILE, build_manifest, list_files

pytestmark = pytest.mark.s3

@pytest.fixture
def model(tiny_savedmodel: Path, tmp_path: Path) -> Path:
    return variant(tiny_savedmodel, tmp_path / "savedmodel")


@pytest.fixture
def repo(s3_env, s3_bucket: str) -> str:
    """A fresh repository prefix in the session's bucket (a second bucket would exhaust SeaweedFS's volumes)."""
    return f"s3://{s3_bucket}/repos/{uuid.uuid4().hex[:8]}/tabular"


def objects(s3_server, uri: str) -> dict[str, tuple[str, datetime]]:
    bucket, prefix = s3.parse_s3_prefix(uri)
    return {item.object_name[len(prefix) + 1:]: (item.etag, item.last_modified)
            for item in s3_server.client().list_objects(bucket, prefix=prefix + "/", recursive=True)}


def test_seaweedfs_honours_if_none_match_through_the_minio_sdk(s3_env, s3_bucket: str) -> None:
    settings = s3.s3_settings_from_env(f"s3://{s3_bucket}/")
    client = s3.s3_client(settings)
    key = f"probes/{uuid.uuid4().hex}"
    assert s3.put_if_absent(client, settings, s3_bucket, key, b"first") is True
    assert s3.put_if_absent(client, settings, s3_bucket, key, b"second") is False  # 412 PreconditionFailed
    assert client.get_object(s3_bucket, key).read() == b"first"

    race = f"probes/{uuid.uuid4().hex}"
    created: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: created.append(
        s3.put_if_absent(client, settings, s3_bucket, race, f"writer {i}".encode()))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [False] * 7 + [True]

    # Why s3.put_if_absent exists: the SDK's public put_object turns the header into user metadata
    # (x-amz-meta-if-none-match), which no store treats as a precondition.
    trap = f"probes/{uuid.uuid4().hex}"
    for body in (b"one", b"two"):
        client.put_object(s3_bucket, trap, io.BytesIO(body), len(body), metadata={"If-None-Match": "*"})
    assert client.get_object(s3_bucket, trap).read() == b"two"


def test_publish_then_fetch_over_s3(s3_server, repo: str, model: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    result = publish_savedmodel(model, repo, lineage={"training_data_sha256": "ab" * 32})
    assert (result.version, result.status, result.uri) == (1, "published", f"{repo}/1")
    assert result.commit_mechanism == "if-none-match"
    stored = objects(s3_server, repo)
    assert {k for k in stored if k.startswith("1/")} == {f"1/{name}" for name in list_files(model)}
    assert stored[".claims/1.json"]  # the claim, written first
    # The manifest is the last object written.
    assert stored[f"1/{MANIFEST_FILE}"][1] == max(stamp for name, (_, stamp) in stored.items()
                                                  if name.startswith("1/"))
    assert list_versions(repo) == [1] and resolve_version(repo) == 1
    assert version_manifest(repo, 1)["lineage"]["training_data_sha256"] == "ab" * 32

    path = fetch_model(result.uri, tmp_path / "serving")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(bill_length_mm=tf.constant([1.0], tf.float64), island=tf.constant(["Dream"]))
    assert out["prediction"].numpy().tolist() == [3.0]


def test_republish_uploads_nothing_and_a_different_model_conflicts(
    s3_server, repo: str, model: Path, tiny_savedmodel: Path, tmp_path: Path
) -> None:
    first = publish_savedmodel(model, repo)
    before = objects(s3_server, repo)
    again = publish_savedmodel(model, repo, lineage={"run": "another"})
    assert (again.version, again.status, again.uploaded_files, again.uploaded_bytes) == (1, "unchanged", 0, 0)
    assert objects(s3_server, repo) == before  # no object was written again (same etags and times)

    other = variant(tiny_savedmodel, tmp_path / "other", tag="other")
    with pytest.raises(VersionConflictError) as caught:
        publish_savedmodel(other, repo, version=1)
    assert f"{repo}/1" in str(caught.value) and first.root_digest[:12] in str(caught.value)
    assert objects(s3_server, repo) == before
    assert publish_savedmodel(other, repo).version == 2


def test_an_interrupted_s3_publish_leaves_no_manifest_and_fetch_refuses_it(
    s3_server, repo: str, model: Path, tmp_path: Path
) -> None:
    def interrupt(relpath: str) -> None:
        if relpath == "saved_model.pb":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_savedmodel(model, repo, on_file_uploaded=interrupt)
    stored = objects(s3_server, repo)
    assert f"1/{MANIFEST_FILE}" not in stored and "1/saved_model.pb" in stored
    assert list_versions(repo) == []
    dest = tmp_path / "serving"
    with pytest.raises(IntegrityError, match=r"no manifest\.json"):
        fetch_model(f"{repo}/1", dest)
    assert not dest.exists() or not any(dest.iterdir())

    resumed = publish_savedmodel(model, repo)
    assert (resumed.version, resumed.status) == (1, "resumed")
    assert fetch_model(f"{repo}/1", dest) == dest / "1"


def test_a_flipped_byte_in_saved_model_pb_on_s3_is_refused(s3_server, repo: str, model: Path, tmp_path: Path) -> None:
    publish_savedmodel(model, repo)
    bucket, prefix = s3.parse_s3_prefix(repo)
    data = bytearray((model / "saved_model.pb").read_bytes())
    data[data.index(struct.pack("<d", 1.0)) + 6] ^= 0x08  # "+ 1.0" becomes "+ 1.5"; the file still loads
    s3_server.client().put_object(bucket, f"{prefix}/1/saved_model.pb", io.BytesIO(bytes(data)), len(data))
    dest = tmp_path / "serving"
    with pytest.raises(IntegrityError, match=r"saved_model\.pb does not match manifest\.json"):
        fetch_model(f"{repo}/1", dest)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_concurrent_s3_publishers_of_one_version_exactly_one_wins(
    s3_env, s3_bucket: str, tiny_savedmodel: Path, tmp_path: Path
) -> None:
    models = [variant(tiny_savedmodel, tmp_path / f"m{i}", tag=str(i)) for i in range(4)]
    for trial in range(3):
        repo = f"s3://{s3_bucket}/races/{uuid.uuid4().hex[:8]}/tabular"
        outcomes: list[tuple[str, Path]] = []
        barrier = threading.Barrier(len(models))

        def run(folder: Path, repo: str = repo, barrier: threading.Barrier = barrier,
                outcomes: list = outcomes) -> None:
            barrier.wait()
            try:
                publish_savedmodel(folder, repo, version=1)
                outcomes.append(("ok", folder))
            except VersionConflictError:
                outcomes.append(("conflict", folder))

        threads = [threading.Thread(target=run, args=(folder,)) for folder in models]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        winners = [folder for outcome, folder in outcomes if outcome == "ok"]
        assert len(outcomes) == 4 and len(winners) == 1, (trial, outcomes)
        assert version_manifest(repo, 1)["root_digest"] == build_manifest(winners[0])["root_digest"]
        fetch_model(f"{repo}/1", tmp_path / f"serving{trial}")  # verified: the losers wrote nothing into it


class IgnoringProxy(http.server.ThreadingHTTPServer):
    """TEST DOUBLE: forwards S3 requests to SeaweedFS without ``If-None-Match``, re-signed for SeaweedFS.

    It stands in for an S3-compatible store that ignores conditional writes (none runs here): everything else,
    storage included, is the real SeaweedFS.
    """

    def __init__(self, upstream: str, access_key: str, secret_key: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.access_key, self.secret_key = upstream, access_key, secret_key
        self.dropped = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: IgnoringProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        from minio.credentials import Credentials
        from minio.signer import sign_v4_s3

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        dropped = {"if-none-match"}
        skip = dropped | {"authorization", "host", "x-amz-date", "x-amz-content-sha256", "content-length",
                          "connection", "accept-encoding", "user-agent"}
        if "If-None-Match" in self.headers:
            self.server.dropped += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        scope = self.headers["Authorization"].split("Credential=")[1].split(",")[0].split("/")
        now = datetime.now(UTC)
        sha = hashlib.sha256(body).hexdigest()
        headers.update({"Host": self.server.upstream, "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
                        "x-amz-content-sha256": sha})
        if body:
            headers["Content-Length"] = str(len(body))
        url = urlsplit(f"http://{self.server.upstream}{self.path}")
        signed = sign_v4_s3(method=self.command, url=url, region=scope[2], headers=headers,
                            credentials=Credentials(self.server.access_key, self.server.secret_key),
                            content_sha256=sha, date=now)
        connection = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            connection.request(self.command, self.path, body=body or None, headers=signed)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward


@pytest.fixture
def ignoring_store(s3_server, s3_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[IgnoringProxy]:
    proxy = IgnoringProxy(s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("S3_ENDPOINT", f"http://{proxy.endpoint}")
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_store_that_ignores_if_none_match_is_detected_and_refused(
    ignoring_store: IgnoringProxy, s3_server, s3_bucket: str, model: Path, tmp_path: Path
) -> None:
    repo = f"s3://{s3_bucket}/ignoring/{uuid.uuid4().hex[:8]}/tabular"
    with pytest.raises(ConditionalWriteUnsupportedError) as caught:
        publish_savedmodel(model, repo)
    message = str(caught.value)
    assert ignoring_store.endpoint in message and "If-None-Match" in message
    assert "require_conditional_writes" in message  # the documented way out
    assert ignoring_store.dropped >= 2  # the probe really sent the header twice
    assert objects(s3_server, repo) == {}  # nothing claimed, nothing uploaded; the probe cleaned up after itself

    # Opting in to the fallback: a claim and a manifest written after an existence check and read back.
    result = publish_savedmodel(model, repo, require_conditional_writes=False)
    assert result.version == 1 and "read-back" in result.commit_mechanism
    assert "one publisher at a time" in result.commit_mechanism
    assert fetch_model(f"{repo}/1", tmp_path / "serving").name == "1"
