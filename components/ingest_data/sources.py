"""Where the table comes from: a local path, ``file://``, ``builtin://<name>`` or ``s3://bucket/key``.

Every source becomes a local file for the readers. S3 objects are downloaded in chunks to a temporary folder
(stat first, so a missing key or bad credentials fail before any byte is written) and removed afterwards. S3
settings come only from environment variables, never from parameters: KFP parameters are public.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from kfp_tabular.errors import DataSourceError

BUILTIN_DATASETS = {"penguins": "data/penguins.csv"}
SUPPORTED_SCHEMES = ("a local path", "file://", "s3://bucket/key", "builtin://penguins")
S3_REQUIRED_ENV = ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalSource:
    """A source made local: where to read it, the name that decides its format, and how to name it in errors."""

    path: Path
    name: str
    display: str


@contextmanager
def open_source(source_uri: str) -> Iterator[LocalSource]:
    """Yield the source as a local file; temporary downloads are removed when the block ends."""
    uri = source_uri.strip()
    if not uri:
        raise DataSourceError(f"source_uri is empty; give {', '.join(SUPPORTED_SCHEMES)}")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        yield _local_file(Path(uri).expanduser(), uri)
        return
    scheme = scheme.lower()
    if scheme == "file":
        yield _local_file(_file_uri_path(uri), uri)
    elif scheme == "builtin":
        with _builtin(rest, uri) as source:
            yield source
    elif scheme == "s3":
        with _s3_download(uri) as source:
            yield source
    else:
        raise DataSourceError(
            f"unknown scheme {scheme + '://'!r} in source_uri {uri!r}; supported: {', '.join(SUPPORTED_SCHEMES)}"
        )


def _file_uri_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise DataSourceError(
            f"{uri!r} names the host {parts.netloc!r}; file:// URIs must be local: use file:///absolute/path"
        )
    return Path(unquote(parts.path))


def _local_file(path: Path, display: str) -> LocalSource:
    if not path.exists():
        raise DataSourceError(
            f"input file {display!r} does not exist (looked for {path.resolve()}); check the path, or use "
            "s3://bucket/key for object storage"
        )
    if not path.is_file():
        raise DataSourceError(
            f"input {display!r} is not a file ({path.resolve()}); point source_uri at one table file"
        )
    return LocalSource(path=path, name=path.name, display=str(path))


@contextmanager
def _builtin(name: str, uri: str) -> Iterator[LocalSource]:
    relative = BUILTIN_DATASETS.get(name.strip("/").lower())
    if relative is None:
        raise DataSourceError(
            f"unknown builtin dataset {name!r} in {uri!r}; available: "
            + ", ".join(f"builtin://{known}" for known in BUILTIN_DATASETS)
        )
    with resources.as_file(resources.files("kfp_tabular").joinpath(relative)) as path:
        yield LocalSource(path=Path(path), name=PurePosixPath(relative).name, display=uri)


# --------------------------------------------------------------------------------------------------- S3


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
    """Read ``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (+ optional ones) from the environment."""
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


def _parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key or key.endswith("/"):
        raise DataSourceError(f"{uri!r} is not s3://bucket/key: name one object (a folder is not a table)")
    return bucket, key


def _s3_client(settings: S3Settings):
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


def _masked(access_key: str) -> str:
    return access_key[:4] + "…" if len(access_key) > 4 else "…"


def _s3_error(error, settings: S3Settings, bucket: str, key: str, client=None) -> DataSourceError:
    """Turn an S3 error code into a message that says what to fix."""
    where = f"s3://{bucket}/{key} at {settings.url}"
    code = error.code
    if code == "InvalidAccessKeyId":
        return DataSourceError(
            f"S3 rejected the access key {_masked(settings.access_key)} while reading {where}: the server does "
            "not know it (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID in the Secret"
        )
    if code == "SignatureDoesNotMatch":
        return DataSourceError(
            f"S3 rejected the request signature while reading {where} (SignatureDoesNotMatch): "
            f"AWS_SECRET_ACCESS_KEY does not belong to access key {_masked(settings.access_key)}; check the Secret"
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


def _bucket_exists(client, bucket: str) -> bool:
    try:
        return bool(client.bucket_exists(bucket))
    except Exception:  # the original NoSuchKey is the better message when this check cannot run
        return True


def _unreachable(error: Exception, settings: S3Settings, uri: str) -> DataSourceError:
    reason = getattr(error, "reason", None) or error
    return DataSourceError(
        f"cannot reach the S3 endpoint {settings.url} while reading {uri} ({type(reason).__name__}: {reason}); "
        "check S3_ENDPOINT (host:port), that the server runs and is reachable from here, and http vs https "
        "(scheme in S3_ENDPOINT or S3_USE_HTTPS)"
    )


@contextmanager
def _s3_download(uri: str) -> Iterator[LocalSource]:
    import urllib3
    from minio.error import InvalidResponseError, S3Error

    bucket, key = _parse_s3_uri(uri)
    settings = s3_settings_from_env(uri)
    client = _s3_client(settings)
    network_errors = (urllib3.exceptions.HTTPError, OSError)
    try:
        stat = client.stat_object(bucket, key)
    except S3Error as error:
        raise _s3_error(error, settings, bucket, key, client) from error
    except InvalidResponseError as error:
        raise DataSourceError(
            f"{settings.url} did not answer like an S3 server while reading {uri} ({error}); check S3_ENDPOINT"
        ) from error
    except network_errors as error:
        raise _unreachable(error, settings, uri) from error

    with tempfile.TemporaryDirectory(prefix="kfp-tabular-s3-") as folder:
        local = Path(folder) / PurePosixPath(key).name
        try:
            response = client.get_object(bucket, key)
            try:
                with open(local, "wb") as handle:
                    for chunk in response.stream(DOWNLOAD_CHUNK):
                        handle.write(chunk)
            finally:
                response.close()
                response.release_conn()
        except S3Error as error:
            raise _s3_error(error, settings, bucket, key, client) from error
        except network_errors as error:
            raise _unreachable(error, settings, uri) from error
        size = local.stat().st_size
        if stat.size is not None and size != stat.size:
            raise DataSourceError(
                f"download of {uri} stopped after {size} of {stat.size} bytes; the object changed or the "
                "connection dropped: run the step again"
            )
        yield LocalSource(path=local, name=PurePosixPath(key).name, display=uri)
