"""ingest_data reading from a real S3 server (SeaweedFS) through the minio SDK: success and each failure."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kfp_tabular.components.ingest_data.core import IngestConfig, IngestResult, ingest
from kfp_tabular.errors import DataSourceError

pytestmark = pytest.mark.s3

SPLITS = ("train", "validation", "test")


def outputs(folder: Path) -> list[Path]:
    return [
        folder / "train.parquet",
        folder / "validation.parquet",
        folder / "test.parquet",
        folder / "profile.md",
    ]


def run(uri: str, folder: Path, label: str = "species") -> IngestResult:
    return ingest(uri, IngestConfig(label=label), *outputs(folder))


def assert_fails(uri: str, tmp_path: Path, *patterns: str) -> str:
    folder = tmp_path / "out"
    with pytest.raises(DataSourceError) as caught:
        run(uri, folder)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"
    assert not any(path.exists() for path in outputs(folder))
    return message


def test_ingest_csv_from_s3_equals_local(s3_env, s3_bucket: str, penguins_csv: Path, tmp_path: Path) -> None:
    remote = run(f"s3://{s3_bucket}/penguins.csv", tmp_path / "s3")
    local = run(str(penguins_csv), tmp_path / "local")
    assert remote.problem_type == "multiclass"
    assert remote.metrics == local.metrics
    for name in SPLITS:
        assert remote.splits[name]["sha256"] == local.splits[name]["sha256"]
    assert pq.read_table(tmp_path / "s3" / "train.parquet").num_rows == remote.splits["train"]["rows"]
    assert (tmp_path / "s3" / "profile.md").read_text().startswith("344 rows × 8 columns")


def test_parquet_object_in_a_folder(s3_env, s3_bucket: str, tmp_path: Path) -> None:
    result = run(f"s3://{s3_bucket}/tables/penguins.parquet", tmp_path, label="sex")
    assert result.problem_type == "binary"
    assert result.metrics["dropped_label_rows"] == 11


def test_endpoint_without_scheme(
    s3_env, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ENDPOINT", s3_env.endpoint)
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert run(f"s3://{s3_bucket}/penguins.csv", tmp_path).metrics["rows"] == 344


def test_download_is_removed_afterwards(s3_env, s3_bucket: str, tmp_path: Path, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    run(f"s3://{s3_bucket}/penguins.csv", tmp_path / "out")
    assert list(scratch.iterdir()) == []


def test_wrong_secret_key(s3_env, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    message = assert_fails(
        f"s3://{s3_bucket}/penguins.csv", tmp_path, "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"
    )
    assert "not-the-secret" not in message


def test_unknown_access_key(s3_env, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody-knows-me")
    assert_fails(
        f"s3://{s3_bucket}/penguins.csv", tmp_path, "InvalidAccessKeyId", "AWS_ACCESS_KEY_ID", "nobo…"
    )


def test_missing_bucket(s3_env, tmp_path: Path) -> None:
    assert_fails(
        "s3://no-such-bucket/penguins.csv", tmp_path, "bucket 'no-such-bucket' does not exist", "NoSuchBucket"
    )


def test_missing_bucket_with_a_region(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a region the SDK skips the bucket-location call and HEAD returns a bare 404: still named a bucket error.
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert_fails("s3://no-such-bucket/penguins.csv", tmp_path, "bucket 'no-such-bucket' does not exist")


def test_missing_key(s3_env, s3_bucket: str, tmp_path: Path) -> None:
    assert_fails(
        f"s3://{s3_bucket}/nope/penguins.csv", tmp_path, "object 'nope/penguins.csv' not found", "NoSuchKey"
    )


def test_unreachable_endpoint(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{port}")
    assert_fails(
        "s3://datasets/penguins.csv", tmp_path, f"cannot reach the S3 endpoint http://127.0.0.1:{port}"
    )


def test_endpoint_with_a_path_is_refused(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT", f"http://{s3_env.endpoint}/datasets")
    assert_fails("s3://datasets/penguins.csv", tmp_path, "S3_ENDPOINT=", "no path")
