"""Where the table comes from: a local path, ``file://``, ``builtin://<name>`` or ``s3://bucket/key``.

Every source becomes a local file for the readers. S3 objects are downloaded in chunks to a temporary folder
(stat first, so a missing key or bad credentials fail before any byte is written) and removed afterwards. S3
settings, client and error messages live in ``components/_shared/s3.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from kfp_tabular.components._shared import s3
from kfp_tabular.errors import DataSourceError

BUILTIN_DATASETS = {"penguins": "data/penguins.csv"}
SUPPORTED_SCHEMES = ("a local path", "file://", "s3://bucket/key", "builtin://penguins")


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


@contextmanager
def _s3_download(uri: str) -> Iterator[LocalSource]:
    bucket, key = s3.parse_s3_uri(uri)
    settings = s3.s3_settings_from_env(uri)
    client = s3.s3_client(settings)
    # Stat first: a missing key or bad credentials fail before any byte is written.
    with s3.s3_errors(settings, uri, bucket, key, client):
        stat = client.stat_object(bucket, key)
    with tempfile.TemporaryDirectory(prefix="kfp-tabular-s3-") as folder:
        local = Path(folder) / PurePosixPath(key).name
        s3.download_object(client, settings, bucket, key, local, expected_size=stat.size, uri=uri)
        yield LocalSource(path=local, name=PurePosixPath(key).name, display=uri)
