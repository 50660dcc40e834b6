"""S3 / MinIO plumbing shared by ingestion, model fetching and publishing: settings, URIs, client, transfers, errors.

Settings come only from environment variables (``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``S3_USE_HTTPS``, ``AWS_REGION``, ``AWS_SESSION_TOKEN``, and the timeouts
``S3_CONNECT_TIMEOUT_S``, ``S3_READ_TIMEOUT_S``, ``S3_RETRIES``), never from parameters: KFP parameters are public.
Every failure becomes a ``DataSourceError`` that names the object, the endpoint and what to fix; the secret key is
never printed and the access key only as its first characters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kfp_tabular.errors import ConfigError, DataSourceError

S3_REQUIRED_ENV = ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DOWNLOAD_CHUNK = 1 << 20
TIMEOUT_ENV = {"connect_s": "S3_CONNECT_TIMEOUT_S", "read_s": "S3_READ_TIMEOUT_S", "retries": "S3_RETRIES"}
BACKOFF_FACTOR = 0.2


@dataclass(frozen=True)
class S3Timeouts:
    """How long one S3 request may take: per-attempt connect and read timeouts, and how often it is retried.

    The defaults fit an init container: an endpoint that accepts connections and never answers fails after
    ``(retries + 1) x read_s`` = 90 s, one that refuses connections within seconds. ``read_s`` bounds the wait
    for each response byte, not a whole download, so large objects are not cut short by it.

    Attributes:
        connect_s: Seconds to wait for a TCP connection (``S3_CONNECT_TIMEOUT_S``).
        read_s: Seconds to wait for the server to answer or send the next bytes (``S3_READ_TIMEOUT_S``).
        retries: Retries of a request after a network error, timeout or HTTP 5xx (``S3_RETRIES``).
    """

    connect_s: float = 5.0
    read_s: float = 30.0
    retries: int = 2

    def __post_init__(self) -> None:
        for name, label in (("connect_s", "connect timeout"), ("read_s", "read timeout")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ConfigError(f"the S3 {label} must be a number of seconds in (0, 3600], got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            raise ConfigError(f"S3 retries must be an integer from 0 to 10, got {self.retries!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> S3Timeouts:
        """Defaults, replaced by ``S3_CONNECT_TIMEOUT_S`` / ``S3_READ_TIMEOUT_S`` / ``S3_RETRIES``, then by overrides.

        Args:
            environ: Where to read the variables (default ``os.environ``).
            **overrides: ``connect_s``, ``read_s``, ``retries`` values that win over the environment; ``None``
                values are ignored (an unset command-line flag).

        Raises:
            ConfigError: a variable is not a number, or a value is out of range.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in TIMEOUT_ENV.items():
            raw = environ.get(variable, "").strip()
            if raw:
                try:
                    values[name] = int(raw) if name == "retries" else float(raw)
                except ValueError:
                    kind = "an integer" if name == "retries" else "a number of seconds"
                    raise ConfigError(f"{variable}={raw!r} is not {kind}") from None
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def attempts(self) -> int:
        """Requests sent before giving up (the first one plus the retries)."""
        return self.retries + 1

    def describe(self) -> str:
        """``connect 5 s, read 30 s, 2 retries``."""
        return f"connect {self.connect_s:g} s, read {self.read_s:g} s, {self.retries} retries"


@dataclass(frozen=True)
class S3Settings:
    """Connection settings read from the environment (the secret key is never printed)."""

    endpoint: str
    secure: bool
    access_key: str
    secret_key: str
    session_token: str | None
    region: str | None
    timeouts: S3Timeouts = field(default_factory=S3Timeouts)

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
        ConfigError: a timeout variable is not a number (see :class:`S3Timeouts`).
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
        timeouts=S3Timeouts.from_env(),
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
    """A ``minio.Minio`` client with the timeouts and retries of ``settings.timeouts``, so a dead endpoint fails fast.

    Raises:
        DataSourceError: the SDK refuses the endpoint.
    """
    import certifi
    import urllib3
    from minio import Minio

    # Few, short retries: an unreachable endpoint should fail in seconds with a clear message, not hang.
    timeouts = settings.timeouts
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeouts.connect_s, read=timeouts.read_s),
        retries=urllib3.Retry(total=timeouts.retries, backoff_factor=BACKOFF_FACTOR,
                              status_forcelist=(500, 502, 503, 504)),
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


def unreachable(error: Exception, settings: S3Settings, uri: str, action: str = "reading") -> DataSourceError:
    """The error for a network failure: the endpoint, the cause, and the settings to check."""
    import urllib3

    reason = getattr(error, "reason", None) or error
    timeouts = settings.timeouts
    attempts = f"{timeouts.attempts} attempt{'s' if timeouts.attempts > 1 else ''}"
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return DataSourceError(
            f"the S3 endpoint {settings.url} accepted the connection but did not answer within "
            f"{timeouts.read_s:g} s ({attempts}) while {action} {uri}; check that S3_ENDPOINT points at a running "
            "S3 server (not a proxy or another service on that port), or allow it more time with --read-timeout "
            "/ S3_READ_TIMEOUT_S and --retries / S3_RETRIES"
        )
    # NewConnectionError (refused, unknown host) subclasses ConnectTimeoutError in urllib3: not a timeout.
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError):
        return DataSourceError(
            f"cannot connect to the S3 endpoint {settings.url} within {timeouts.connect_s:g} s ({attempts}) while "
            f"{action} {uri}; check S3_ENDPOINT (host:port) and that the server is reachable from here (network "
            "policy, firewall), or allow more time with --connect-timeout / S3_CONNECT_TIMEOUT_S"
        )
    return DataSourceError(
        f"cannot reach the S3 endpoint {settings.url} while {action} {uri} ({type(reason).__name__}: {reason}); "
        "check S3_ENDPOINT (host:port), that the server runs and is reachable from here, and http vs https "
        "(scheme in S3_ENDPOINT or S3_USE_HTTPS)"
    )


@contextmanager
def s3_errors(settings: S3Settings, uri: str, bucket: str, key: str, client: Any = None,
              action: str = "reading") -> Iterator[None]:
    """Translate S3, protocol and network errors raised in the block into ``DataSourceError``.

    Args:
        settings: Where the requests go.
        uri: The URI being read, for messages.
        bucket: Bucket of the requests.
        key: Object key (or prefix) of the requests.
        client: Passed to :func:`s3_error` to tell a missing bucket from a missing key.
        action: ``reading`` or ``writing``, for messages (writing needs s3:PutObject).
    """
    import urllib3
    from minio.error import InvalidResponseError, S3Error

    try:
        yield
    except S3Error as error:
        if action != "reading" and error.code == "AccessDenied":
            raise DataSourceError(
                f"access denied while {action} s3://{bucket}/{key} at {settings.url} (AccessDenied): the "
                f"credentials of access key {masked(settings.access_key)} need s3:PutObject, s3:GetObject, "
                "s3:DeleteObject and s3:ListBucket on this prefix"
            ) from error
        raise s3_error(error, settings, bucket, key, client) from error
    except InvalidResponseError as error:
        raise DataSourceError(
            f"{settings.url} did not answer like an S3 server while {action} {uri} ({error}); check S3_ENDPOINT"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise unreachable(error, settings, uri, action) from error


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


# Conflict answers to a conditional PUT: 412 = the key exists; 409 = another conditional write to it is in flight.
PRECONDITION_FAILED = ("PreconditionFailed",)
CONDITIONAL_CONFLICT = ("ConditionalRequestConflict", "OperationAborted")


def put_if_absent(client: Any, settings: S3Settings, bucket: str, key: str, data: bytes,
                  content_type: str = "application/json") -> bool:
    """Create an object only if its key does not exist yet (``PutObject`` with ``If-None-Match: *``).

    The minio SDK's public ``put_object`` has no parameter for the header (it would send it as user metadata,
    ``x-amz-meta-if-none-match``, which no store treats as a precondition), so this uses its single-request
    ``_put_object`` with the header set; ``minio`` is pinned. Whether the store honours the header is for the
    caller to probe (see :mod:`kfp_tabular.serving.repository`).

    Args:
        client: From :func:`s3_client`.
        settings: Where the request goes, for messages.
        bucket: Bucket of the object.
        key: Key of the object.
        data: The whole body (small: a claim or a manifest).
        content_type: Its Content-Type.

    Returns:
        True when this call created the object, False when the key already existed (HTTP 412) or another
        conditional write to it was in flight (HTTP 409, after a few retries).

    Raises:
        DataSourceError: any other S3 or network failure.
    """
    from minio.error import S3Error

    uri = f"s3://{bucket}/{key}"
    headers = {"If-None-Match": "*", "Content-Type": content_type}
    for attempt in range(4):
        with s3_errors(settings, uri, bucket, key, client, action="writing"):
            try:
                client._put_object(bucket, key, data, headers=dict(headers))
                return True
            except S3Error as error:
                if error.code in PRECONDITION_FAILED:
                    return False
                if error.code not in CONDITIONAL_CONFLICT:
                    raise
        time.sleep(0.1 * (attempt + 1))  # 409: the other writer's request is still in flight
    return False


def read_object(client: Any, settings: S3Settings, bucket: str, key: str) -> bytes | None:
    """The whole body of a small object, or None when the key does not exist.

    Raises:
        DataSourceError: any other S3 or network failure (a missing bucket included).
    """
    from minio.error import S3Error

    uri = f"s3://{bucket}/{key}"
    with s3_errors(settings, uri, bucket, key, client):
        try:
            response = client.get_object(bucket, key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject") and _bucket_exists(client, bucket):
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()


def object_exists(client: Any, settings: S3Settings, bucket: str, key: str) -> bool:
    """Whether a key exists (``HeadObject``).

    Raises:
        DataSourceError: S3 or network failure other than a missing key (a missing bucket included).
    """
    from minio.error import S3Error

    with s3_errors(settings, f"s3://{bucket}/{key}", bucket, key, client):
        try:
            client.stat_object(bucket, key)
            return True
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") and _bucket_exists(client, bucket):
                return False
            raise


def upload_file(client: Any, settings: S3Settings, bucket: str, key: str, local: Path) -> None:
    """Upload one local file to ``s3://bucket/key`` (multipart above the SDK's part size).

    Raises:
        DataSourceError: S3 or network failure; the key then holds its old content or nothing (S3 writes are
            atomic per key).
    """
    with s3_errors(settings, f"s3://{bucket}/{key}", bucket, key, client, action="writing"):
        client.fput_object(bucket, key, str(local))


def put_bytes(client: Any, settings: S3Settings, bucket: str, key: str, data: bytes,
              content_type: str = "application/json") -> None:
    """Write a small object unconditionally.

    Raises:
        DataSourceError: S3 or network failure.
    """
    import io

    with s3_errors(settings, f"s3://{bucket}/{key}", bucket, key, client, action="writing"):
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)


def delete_object(client: Any, settings: S3Settings, bucket: str, key: str) -> None:
    """Delete one object (no error when it is already gone).

    Raises:
        DataSourceError: S3 or network failure.
    """
    with s3_errors(settings, f"s3://{bucket}/{key}", bucket, key, client, action="deleting"):
        client.remove_object(bucket, key)
