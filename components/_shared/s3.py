"""S3 / MinIO plumbing shared by ingestion and model fetching: settings, URIs, client, downloads, errors.

Settings come only from environment variables (``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``S3_USE_HTTPS``, ``AWS_REGION``, ``AWS_SESSION_TOKEN``), never from
parameters: KFP parameters are public. Every failure becomes a ``DataSourceError`` that names the object, the
endpoint and what to fix; the secret key is never printed and the access key only as its first characters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kfp_tabular.errors import DataSourceError

S3_REQUIRED_ENV = ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Settings:
    """Connection settings read from the environment (the secret key is never printed)."""

    endpoint: str
    secure: bool
    access_key: str
    secret_key: str
    session_token: str | None
    region: str | None

    @property
    def url(self) -> str:
        """The endpoint as a URL, for messages."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def s3_settings_from_env(uri: str) -> S3Settings:
    """Read ``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (+ optional ones) from the environment.

    Args:
        uri: The ``s3://`` URI about to be read, named in the error when a variable is missing.

    Raises:
        DataSourceError: a required variable is missing, or ``S3_ENDPOINT`` is not ``host:port`` /
            ``http(s)://host:port``.
    """
    missing = [name for name in S3_REQUIRED_ENV if not os.environ.get(name, "").strip()]
    if missing:
        raise DataSourceError(
            f"reading {uri} needs the environment variable(s) {', '.join(missing)} (credentials are never "
            "parameters); in a pipeline they come from the Kubernetes Secret named by s3_secret_name, locally "
            "export S3_ENDPOINT=host:port, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    raw = os.environ["S3_ENDPOINT"].strip()
    use_https = os.environ.get("S3_USE_HTTPS", "")
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise DataSourceError(
                f"S3_ENDPOINT={raw!r} is not host:port or http(s)://host:port (no path, no bucket in it)"
            )
        endpoint, secure = parts.netloc, parts.scheme.lower() == "https"
    else:
        endpoint, secure = raw.rstrip("/"), _truthy(use_https)
        if "/" in endpoint:
            raise DataSourceError(f"S3_ENDPOINT={raw!r} is not host:port or http(s)://host:port")
    return S3Settings(
        endpoint=endpoint,
        secure=secure,
        access_key=os.environ["AWS_ACCESS_KEY_ID"].strip(),
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"].strip(),
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` naming one object into ``(bucket, key)``.

    Raises:
        DataSourceError: no bucket, no key, or the key ends with ``/`` (a folder).
    """
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key or key.endswith("/"):
        raise DataSourceError(f"{uri!r} is not s3://bucket/key: name one object (a folder is not a table)")
    return bucket, key


def parse_s3_prefix(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/folder/`` into ``(bucket, "some/folder")`` (no trailing slash, may be empty).

    Raises:
        DataSourceError: the URI names no bucket.
    """
    parts = urlsplit(uri)
    bucket, prefix = parts.netloc, unquote(parts.path).strip("/")
    if not bucket:
        raise DataSourceError(f"{uri!r} is not s3://bucket/folder: it names no bucket")
    return bucket, prefix


def s3_client(settings: S3Settings) -> Any:
    """A ``minio.Minio`` client with short timeouts and few retries, so a dead endpoint fails in seconds.

    Raises:
        DataSourceError: the SDK refuses the endpoint.
    """
    import certifi
    import urllib3
    from minio import Minio

    # Few, short retries: an unreachable endpoint should fail in seconds with a clear message, not hang.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=4,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    try:
        return Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            session_token=settings.session_token,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
    except ValueError as error:
        raise DataSourceError(f"S3_ENDPOINT={settings.endpoint!r} is not usable: {error}") from error


def masked(access_key: str) -> str:
    """The first four characters of an access key, enough to recognise it in a message."""
    return access_key[:4] + "…" if len(access_key) > 4 else "…"


def s3_error(error: Any, settings: S3Settings, bucket: str, key: str, client: Any = None) -> DataSourceError:
    """Turn a ``minio.error.S3Error`` into a message that says what to fix.

    Args:
        error: The SDK's error (its ``code`` decides the message).
        settings: Where the request went.
        bucket: Bucket of the request.
        key: Object key (or prefix) of the request.
        client: When given, a NoSuchKey is checked against the bucket: a bare 404 for a missing bucket reads
            as a missing key otherwise.
    """
    where = f"s3://{bucket}/{key} at {settings.url}"
    code = error.code
    if code == "InvalidAccessKeyId":
        return DataSourceError(
            f"S3 rejected the access key {masked(settings.access_key)} while reading {where}: the server does "
            "not know it (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID in the Secret"
        )
    if code == "SignatureDoesNotMatch":
        return DataSourceError(
            f"S3 rejected the request signature while reading {where} (SignatureDoesNotMatch): "
            f"AWS_SECRET_ACCESS_KEY does not belong to access key {masked(settings.access_key)}; check the Secret"
        )
    if code == "NoSuchBucket":
        return DataSourceError(
            f"bucket {bucket!r} does not exist at {settings.url} (NoSuchBucket); create it or fix the bucket in "
            "source_uri"
        )
    if code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
        if client is not None and not _bucket_exists(client, bucket):
            return DataSourceError(
                f"bucket {bucket!r} does not exist at {settings.url} (NoSuchBucket); create it or fix the bucket "
                "in source_uri"
            )
        return DataSourceError(
            f"object {key!r} not found in bucket {bucket!r} at {settings.url} (NoSuchKey); check the key "
            "(keys are case-sensitive and include the folder path)"
        )
    if code == "AccessDenied":
        return DataSourceError(
            f"access denied to {where} (AccessDenied): the credentials in AWS_ACCESS_KEY_ID need s3:GetObject on "
            "this object"
        )
    return DataSourceError(f"S3 error {code} while reading {where}: {error.message}")


def _bucket_exists(client: Any, bucket: str) -> bool:
    try:
        return bool(client.bucket_exists(bucket))
    except Exception:  # the original NoSuchKey is the better message when this check cannot run
        return True


def unreachable(error: Exception, settings: S3Settings, uri: str) -> DataSourceError:
    """The error for a network failure: the endpoint, the cause, and the settings to check."""
    reason = getattr(error, "reason", None) or error
    return DataSourceError(
        f"cannot reach the S3 endpoint {settings.url} while reading {uri} ({type(reason).__name__}: {reason}); "
        "check S3_ENDPOINT (host:port), that the server runs and is reachable from here, and http vs https "
        "(scheme in S3_ENDPOINT or S3_USE_HTTPS)"
    )


@contextmanager
def s3_errors(settings: S3Settings, uri: str, bucket: str, key: str, client: Any = None) -> Iterator[None]:
    """Translate S3, protocol and network errors raised in the block into ``DataSourceError``.

    Args:
        settings: Where the requests go.
        uri: The URI being read, for messages.
        bucket: Bucket of the requests.
        key: Object key (or prefix) of the requests.
        client: Passed to :func:`s3_error` to tell a missing bucket from a missing key.
    """
    import urllib3
    from minio.error import InvalidResponseError, S3Error

    try:
        yield
    except S3Error as error:
        raise s3_error(error, settings, bucket, key, client) from error
    except InvalidResponseError as error:
        raise DataSourceError(
            f"{settings.url} did not answer like an S3 server while reading {uri} ({error}); check S3_ENDPOINT"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise unreachable(error, settings, uri) from error


def download_object(client: Any, settings: S3Settings, bucket: str, key: str, local: Path,
                    expected_size: int | None = None, uri: str | None = None) -> int:
    """Stream one object into ``local`` in chunks and check that every byte arrived.

    Args:
        client: From :func:`s3_client`.
        settings: Where the request goes, for messages.
        bucket: Bucket of the object.
        key: Key of the object.
        local: File to write (its folder must exist); left partial on failure, the caller removes it.
        expected_size: Size from a stat or a listing; a shorter or longer download fails.
        uri: How to name the object in messages (default ``s3://bucket/key``).

    Returns:
        The number of bytes written.

    Raises:
        DataSourceError: S3 or network failure, a download cut short, or the local file cannot be written.
    """
    uri = uri or f"s3://{bucket}/{key}"
    with s3_errors(settings, uri, bucket, key, client):
        response = client.get_object(bucket, key)
        try:
            try:
                handle = open(local, "wb")  # noqa: SIM115 - closed below; its errors are not network errors
            except OSError as error:
                raise _write_error(uri, local, error) from error
            with handle:
                for chunk in response.stream(DOWNLOAD_CHUNK):
                    try:
                        handle.write(chunk)
                    except OSError as error:
                        raise _write_error(uri, local, error) from error
        finally:
            response.close()
            response.release_conn()
    size = local.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DataSourceError(
            f"download of {uri} stopped after {size} of {expected_size} bytes; the object changed or the "
            "connection dropped: run the step again"
        )
    return size


def _write_error(uri: str, local: Path, error: OSError) -> DataSourceError:
    # A DataSourceError is not an OSError, so s3_errors lets it through instead of blaming the network.
    return DataSourceError(
        f"cannot write the download of {uri} to {local} ({error.strerror or error}); free space there or make it "
        "writable"
    )
