"""Fixtures of the S3 tests: a bucket with the penguins table, and the Secret's variables (server: tests/seaweedfs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seaweedfs import BUCKET, S3Server


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server, penguins_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bucket holding penguins.csv and penguins.parquet, uploaded with the minio SDK."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    client = s3_server.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    client.fput_object(BUCKET, "penguins.csv", str(penguins_csv))
    parquet = tmp_path_factory.mktemp("upload") / "penguins.parquet"
    table = pcsv.read_csv(penguins_csv, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    pq.write_table(table, parquet)
    client.fput_object(BUCKET, "tables/penguins.parquet", str(parquet))
    return BUCKET


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Environment variables as the pipeline's Secret would set them."""
    monkeypatch.setenv("S3_ENDPOINT", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    for name in ("S3_USE_HTTPS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_server
