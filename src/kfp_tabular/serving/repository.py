"""A model repository: numbered, checksummed SavedModel versions under an S3 prefix or in a folder.

Layout (TF Serving's ``<base_path>/<version>/``, plus what makes a version trustworthy)::

    <repository>/                  s3://bucket/prefix/<model_name>, a folder, or file:///folder
        1/                         one SavedModel per integer version, as export_savedmodel wrote it
            saved_model.pb
            variables/...
            assets.extra/...
            manifest.json          written LAST: {"files": {relpath: {sha256, size}}, "root_digest", "lineage"}
        2/...
        .claims/<N>.json           who is publishing version N (its root digest), written FIRST

**A version is complete when its ``manifest.json`` exists.** Readers (``fetch-model``, ``kfp-tabular serve``,
:func:`list_versions`, :func:`resolve_version`) ignore versions without one and check every file against it.
The root digest is the sha256 of the manifest's ``files`` listing (:func:`~kfp_tabular.serving.verify.root_digest`):
it identifies the model's content. ``lineage`` (training data sha256, library versions, parity, image) is
recorded next to it and is not part of it, so re-publishing one model from another run is still "the same model".

Publishing (:func:`publish_savedmodel`) is safe with concurrent publishers and interruptions:

1. the version is **claimed** by creating ``.claims/<N>.json`` with an exclusive create; a claim holding another
   model's digest means the number is taken (an explicit version raises :class:`VersionConflictError`, an
   automatic one moves on to the next number), one holding the same digest is joined (a re-run after an
   interruption resumes it);
2. every file is uploaded under ``<N>/``;
3. ``<N>/manifest.json`` is created with an exclusive create, last. If it already exists with the same root
   digest, the publish was a no-op; with another digest, a conflict.

The exclusive create is ``PutObject`` with ``If-None-Match: *`` on S3 (HTTP 412 when the key exists) and
``os.link`` of a fully written temporary file on a local filesystem (``EEXIST``). Some S3-compatible stores
ignore ``If-None-Match``; that is detected by a probe (write one object twice, conditionally: the second write
must be refused) and raises :class:`ConditionalWriteUnsupportedError`, unless the caller accepts
``require_conditional_writes=False``: then an existence check, a write and a read-back stand in, which is safe
only with one publisher at a time. ``PublishResult.commit_mechanism`` says which mechanism was used.

An interrupted publish leaves files without a manifest and its claim: never listed, never fetched; the next
publish of the same model resumes that version, another model gets the next number.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from kfp_tabular import __version__
from kfp_tabular.components._shared import s3
from kfp_tabular.errors import (
    ConditionalWriteUnsupportedError,
    ConfigError,
    DataSourceError,
    IntegrityError,
    ModelError,
    VersionConflictError,
)
from kfp_tabular.serving.verify import (
    MANIFEST_FILE,
    build_manifest,
    list_files,
    manifest_json,
    parse_manifest,
    verify_savedmodel,
)

log = logging.getLogger(__name__)

CLAIMS = ".claims"
SUPPORTED = "s3://bucket/prefix/<model_name>, a local folder or file:///folder"
MAX_AUTO_ATTEMPTS = 50
IF_NONE_MATCH = "if-none-match"
OS_LINK = "os.link (atomic exclusive create on the local filesystem; O_EXCL where hard links are unsupported)"
NOTHING_WRITTEN = "none (nothing was written)"
READ_BACK = (
    "exists-check+write+read-back: the store ignores If-None-Match, so this is safe with one publisher at a time "
    "only"
)
# Settle time before the read-back of the fallback, so that a concurrent writer's PUT has landed.
READ_BACK_SETTLE_S = 0.5


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_savedmodel` did.

    Attributes:
        version: The version that holds the model.
        uri: ``<repository>/<version>``: what ``fetch-model --source-uri`` takes.
        repository_uri: The repository, as given.
        root_digest: sha256 of the manifest's file listing: the model's identity.
        status: ``published`` (a new version), ``resumed`` (finished a version an interrupted publish of this
            model had claimed) or ``unchanged`` (the version already held this model; nothing was written).
        files: Files of the version, ``manifest.json`` included.
        size: Their bytes.
        uploaded_files: Files written by this call (0 when unchanged).
        uploaded_bytes: Bytes written by this call.
        commit_mechanism: How the claim and the manifest were created exclusively (``if-none-match``,
            ``os.link ...``, or the read-back fallback).
        manifest: The version's manifest, lineage included.
    """

    version: int
    uri: str
    repository_uri: str
    root_digest: str
    status: str
    files: int
    size: int
    uploaded_files: int
    uploaded_bytes: int
    commit_mechanism: str
    manifest: dict[str, Any] = field(repr=False)


class _Store(Protocol):
    """Keys are ``/``-separated and relative to the repository root (``3/saved_model.pb``, ``.claims/3.json``)."""

    uri: str

    def where(self, key: str = "") -> str: ...

    def numbered(self) -> set[int]: ...

    def claimed(self) -> set[int]: ...

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes | None: ...

    def listing(self, version: int) -> dict[str, int]: ...

    def upload(self, key: str, local: Path) -> None: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def mechanism(self) -> str: ...


def _version_name(name: str) -> int | None:
    """``"12"`` -> 12; anything TF Serving would not read as that version (``"012"``, ``"-1"``, ``"x"``) -> None."""
    return int(name) if name.isascii() and name.isdigit() and str(int(name)) == name else None


class _LocalStore:
    """A repository folder on a mounted volume (or a test's tmp folder)."""

    def __init__(self, root: Path, uri: str, require_conditional_writes: bool = True) -> None:
        self.root, self.uri = root, uri

    def where(self, key: str = "") -> str:
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*PurePosixPath(key).parts)

    def _check_root(self) -> bool:
        if not self.root.exists():
            return False
        if not self.root.is_dir():
            raise DataSourceError(f"model repository {self.uri!r} is not a folder ({self.root.resolve()})")
        return True

    def numbered(self) -> set[int]:
        if not self._check_root():
            return set()
        found = {_version_name(p.name) for p in self.root.iterdir() if p.is_dir()}
        return {number for number in found if number is not None}

    def claimed(self) -> set[int]:
        folder = self.root / CLAIMS
        found = {_version_name(p.name[:-5]) for p in folder.glob("*.json")} if folder.is_dir() else set()
        return {number for number in found if number is not None}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise DataSourceError(f"cannot read {self._path(key)} ({error})") from error

    def listing(self, version: int) -> dict[str, int]:
        folder = self.root / str(version)
        return list_files(folder) if folder.is_dir() else {}

    def upload(self, key: str, local: Path) -> None:
        import shutil

        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        except OSError as error:
            raise DataSourceError(f"cannot write {target} ({error}); check that the repository is writable and "
                                  "has free space") from error

    def create(self, key: str, data: bytes) -> bool:
        # Write the whole content to a temporary file, then hard-link it to the final name: the name appears
        # atomically with its full content, and os.link refuses an existing name (EEXIST), also on NFS.
        # The temporary lives in .claims/ so that a kill never leaves a stray file inside a version folder.
        target = self._path(key)
        scratch = self.root / CLAIMS
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".create-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
                except OSError as error:
                    if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    return self._create_exclusive(target, data)  # no hard links here (some FUSE / SMB mounts)
                return True
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as error:
            raise DataSourceError(f"cannot create {target} ({error}); check that the repository is writable and "
                                  "has free space") from error

    @staticmethod
    def _create_exclusive(target: Path, data: bytes) -> bool:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def mechanism(self) -> str:
        return OS_LINK


# Conditional-write support per (endpoint, bucket), probed once per process.
_PROBED: dict[tuple[str, str], bool] = {}


class _S3Store:
    """Every object under ``s3://bucket/prefix/``."""

    def __init__(self, uri: str, require_conditional_writes: bool = True) -> None:
        self.uri = uri
        self.bucket, self.prefix = s3.parse_s3_prefix(uri)
        self.settings = s3.s3_settings_from_env(uri)
        self.client = s3.s3_client(self.settings)
        self.require_conditional_writes = require_conditional_writes
        self._mechanism: str | None = None

    def where(self, key: str = "") -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{key}" if key else base

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _start(self, key: str = "") -> str:
        """The listing prefix of a folder key (``""`` = the repository root), with its trailing slash."""
        if key:
            return self._key(key) + "/"
        return f"{self.prefix}/" if self.prefix else ""

    def _names(self, start: str, recursive: bool) -> list[Any]:
        with s3.s3_errors(self.settings, self.uri, self.bucket, start, self.client):
            return list(self.client.list_objects(self.bucket, prefix=start, recursive=recursive))

    def numbered(self) -> set[int]:
        start = self._start()
        found = {_version_name(item.object_name[len(start):].rstrip("/")) for item in self._names(start, False)
                 if item.is_dir}
        return {number for number in found if number is not None}

    def claimed(self) -> set[int]:
        start = self._start(CLAIMS)
        names = [item.object_name[len(start):] for item in self._names(start, False) if not item.is_dir]
        found = {_version_name(name[:-5]) for name in names if name.endswith(".json")}
        return {number for number in found if number is not None}

    def exists(self, key: str) -> bool:
        return s3.object_exists(self.client, self.settings, self.bucket, self._key(key))

    def read(self, key: str) -> bytes | None:
        return s3.read_object(self.client, self.settings, self.bucket, self._key(key))

    def listing(self, version: int) -> dict[str, int]:
        start = self._start(str(version))
        return {item.object_name[len(start):]: item.size or 0 for item in self._names(start, True)
                if not item.is_dir and not item.object_name.endswith("/")}

    def upload(self, key: str, local: Path) -> None:
        s3.upload_file(self.client, self.settings, self.bucket, self._key(key), local)

    def create(self, key: str, data: bytes) -> bool:
        if self.mechanism() == IF_NONE_MATCH:
            return s3.put_if_absent(self.client, self.settings, self.bucket, self._key(key), data)
        return self._create_with_read_back(key, data)

    def _create_with_read_back(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        s3.put_bytes(self.client, self.settings, self.bucket, self._key(key), data)
        time.sleep(READ_BACK_SETTLE_S)
        return self.read(key) == data

    def delete(self, key: str) -> None:
        s3.delete_object(self.client, self.settings, self.bucket, self._key(key))

    def mechanism(self) -> str:
        """How :meth:`create` is exclusive; probes the store on first use (so a no-op publish writes nothing).

        Raises:
            ConditionalWriteUnsupportedError: the store ignores If-None-Match and conditional writes are required.
        """
        if self._mechanism is None:
            honoured = self._probe()
            if not honoured and self.require_conditional_writes:
                raise ConditionalWriteUnsupportedError(
                    f"the S3 store at {self.settings.url} (bucket {self.bucket!r}) ignores conditional writes: a "
                    "probe object written twice with If-None-Match: * was accepted both times, so two publishers "
                    "could both claim one version and overwrite each other's files. Use a store that honours "
                    "If-None-Match (AWS S3, MinIO, SeaweedFS >= 4.48 were checked), or, if only one publisher "
                    "ever writes to this repository, pass require_conditional_writes=False "
                    "(--allow-unconditional-store) to use an existence check and a read-back instead."
                )
            self._mechanism = IF_NONE_MATCH if honoured else READ_BACK
            if not honoured:
                log.warning("%s ignores If-None-Match; publishing with %s", self.settings.url, READ_BACK)
        return self._mechanism

    def _probe(self) -> bool:
        """Write one probe object twice with ``If-None-Match: *``: a store that honours it refuses the second."""
        cache_key = (self.settings.url, self.bucket)
        if cache_key in _PROBED:
            return _PROBED[cache_key]
        from minio.error import S3Error

        key = self._key(f"{CLAIMS}/.probe-{uuid.uuid4().hex}")
        try:
            first = s3.put_if_absent(self.client, self.settings, self.bucket, key, b"probe 1", "text/plain")
            second = s3.put_if_absent(self.client, self.settings, self.bucket, key, b"probe 2", "text/plain")
        except DataSourceError as error:
            cause = error.__cause__
            if not (isinstance(cause, S3Error) and cause.code in ("NotImplemented", "InvalidArgument")):
                raise
            first, second = True, True  # the store refuses the header outright: no conditional writes
        s3.delete_object(self.client, self.settings, self.bucket, key)
        honoured = first and not second
        _PROBED[cache_key] = honoured
        return honoured


def check_repository_uri(repository_uri: str) -> tuple[str, str]:
    """Parse a repository URI without touching the store: ``("s3", uri)`` or ``("local", folder path)``.

    Raises:
        ConfigError: empty URI, unknown scheme, ``file://`` with a host, or an ``s3://`` URI without bucket.
    """
    uri = (repository_uri or "").strip()
    if not uri:
        raise ConfigError(f"repository_uri is empty; use {SUPPORTED}")
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return "local", str(Path(uri).expanduser())
    scheme = scheme.lower()
    if scheme == "s3":
        if not urlsplit(uri).netloc:
            raise ConfigError(f"repository_uri {uri!r} names no bucket; use s3://bucket/prefix/<model_name>")
        return "s3", uri
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{uri!r} names the host {parts.netloc!r}; use file:///absolute/folder")
        return "local", unquote(parts.path)
    raise ConfigError(f"unknown scheme {scheme + '://'!r} in repository_uri {uri!r}; supported: {SUPPORTED}")


def open_repository(repository_uri: str, require_conditional_writes: bool = True) -> _Store:
    """The store behind a repository URI (nothing is created or read yet).

    Args:
        repository_uri: ``s3://bucket/prefix/<model_name>``, a folder, or ``file:///folder``.
        require_conditional_writes: For S3: refuse to write when the store ignores ``If-None-Match``.

    Raises:
        ConfigError: see :func:`check_repository_uri`.
        DataSourceError: S3 credentials are missing from the environment.
    """
    kind, location = check_repository_uri(repository_uri)
    uri = repository_uri.strip().rstrip("/") or repository_uri.strip()
    if kind == "s3":
        return _S3Store(uri, require_conditional_writes)
    return _LocalStore(Path(location), uri, require_conditional_writes)


def version_uri(repository_uri: str, version: int) -> str:
    """``<repository>/<version>``, in the form the repository was given (path, ``file://`` or ``s3://``)."""
    return open_repository(repository_uri).where(str(version))


def _manifest_of(store: _Store, version: int) -> dict[str, Any] | None:
    data = store.read(f"{version}/{MANIFEST_FILE}")
    return None if data is None else parse_manifest(data, store.where(str(version)))


def list_versions(repository_uri: str) -> list[int]:
    """The complete versions of a repository (those with a ``manifest.json``), ascending.

    A missing local folder or an empty prefix has none. Versions that are being published, or whose publish was
    interrupted, are not listed.

    Raises:
        ConfigError: the URI is not a repository URI.
        DataSourceError: the repository cannot be read (missing bucket, credentials, network).
    """
    store = open_repository(repository_uri)
    return sorted(number for number in store.numbered() if store.exists(f"{number}/{MANIFEST_FILE}"))


def resolve_version(repository_uri: str, version: int | None = None) -> int:
    """The version to serve: ``version`` if it is complete, else (``None``) the highest complete one.

    Raises:
        ModelError: the repository has no complete version, or ``version`` has no manifest.
        ConfigError / DataSourceError: as :func:`list_versions`.
    """
    store = open_repository(repository_uri)
    if version is not None:
        if store.exists(f"{version}/{MANIFEST_FILE}"):
            return version
        raise ModelError(
            f"version {version} of {store.where()} has no manifest.json: it was never published, or its publish "
            f"is still running or was interrupted (complete versions: {list_versions(repository_uri) or 'none'}). "
            "Publish it again with publish_model, or choose a complete version."
        )
    versions = list_versions(repository_uri)
    if not versions:
        raise ModelError(
            f"no complete version in {store.where()}: no <N>/manifest.json there. Publish a model with "
            "publish_model (or `kfp-tabular publish`) first, or check the URI."
        )
    return versions[-1]


def version_manifest(repository_uri: str, version: int) -> dict[str, Any]:
    """The manifest of a complete version: ``files``, ``root_digest`` and ``lineage``.

    Raises:
        ModelError: the version has no manifest.
        IntegrityError: the manifest is malformed or inconsistent.
    """
    store = open_repository(repository_uri)
    manifest = _manifest_of(store, version)
    if manifest is None:
        raise ModelError(f"version {version} of {store.where()} has no manifest.json: it is not published")
    return manifest


def version_file(repository_uri: str, version: int, relpath: str) -> bytes:
    """One file of a complete version, checked against its manifest entry (size and sha256).

    Raises:
        ModelError: the version has no manifest, or the manifest lists no such file.
        IntegrityError: the file is missing or does not match its manifest entry.
    """
    store = open_repository(repository_uri)
    entry = version_manifest(repository_uri, version)["files"].get(relpath)
    where = store.where(f"{version}/{relpath}")
    if entry is None:
        raise ModelError(f"{store.where(str(version))}/manifest.json lists no {relpath}")
    data = store.read(f"{version}/{relpath}")
    digest = None if data is None else hashlib.sha256(data).hexdigest()
    if data is None or len(data) != entry["size"] or digest != entry["sha256"]:
        found = "missing" if data is None else f"{len(data)} bytes, sha256 {digest[:12]}..."
        raise IntegrityError(f"{where} does not match its manifest entry ({entry['size']} bytes, sha256 "
                             f"{entry['sha256'][:12]}...): found {found}. Publish the model again")
    return data


def _claim_record(digest: str) -> bytes:
    return json.dumps({
        "root_digest": digest,
        "claimed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "claimed_by": f"{socket.gethostname()}:{os.getpid()}",
        "kfp_tabular_version": __version__,
    }, sort_keys=True).encode("utf-8")


def _read_claim(store: _Store, version: int) -> dict[str, Any] | None:
    # A claim is created whole (exclusive create); retry briefly in case the store lists it before serving it.
    for attempt in range(5):
        data = store.read(f"{CLAIMS}/{version}.json")
        if data is not None:
            try:
                claim = json.loads(data)
                return claim if isinstance(claim, dict) else {}
            except ValueError:
                return {}
        time.sleep(0.1 * (attempt + 1))
    return None


def _short(digest: str | None) -> str:
    return (digest or "unknown")[:12]


def _claim(store: _Store, version: int, digest: str, explicit: bool) -> str | None:
    """Claim ``version`` for the model ``digest``: ``claimed`` (new), ``joined`` (already this model's), or None.

    None means another model holds the claim and ``explicit`` is False (try the next number).

    Raises:
        VersionConflictError: another model holds the claim and the version was asked for explicitly.
    """
    if store.create(f"{CLAIMS}/{version}.json", _claim_record(digest)):
        return "claimed"
    claim = _read_claim(store, version)
    if claim is not None and claim.get("root_digest") == digest:
        return "joined"
    if not explicit:
        return None
    manifest = _manifest_of(store, version)
    if manifest is not None:
        raise _conflict(store, version, manifest["root_digest"], digest)
    holder = (claim or {}).get("root_digest")
    raise VersionConflictError(
        f"{store.where(str(version))} is claimed by an unfinished publish of another model (root digest "
        f"{_short(holder)}..., claimed {(claim or {}).get('claimed_at', 'at an unknown time')} by "
        f"{(claim or {}).get('claimed_by', 'an unknown publisher')}), not this one ({_short(digest)}...). Publish "
        f"under a new version (leave version unset for the next free one); if that publish is dead and you want "
        f"the number back, delete {store.where(f'{CLAIMS}/{version}.json')} and {store.where(str(version))}/."
    )


def _conflict(store: _Store, version: int, existing: str, digest: str) -> VersionConflictError:
    return VersionConflictError(
        f"{store.where(str(version))} already holds another model (root digest {_short(existing)}...) than the "
        f"one being published ({_short(digest)}...). A version number always means the same model: publish under "
        "a new version (leave version unset for the next free one)."
    )


def _choose_version(store: _Store, digest: str, version: int | None, files: Mapping[str, Any]) -> tuple[int, str]:
    """The version to write and how: ``unchanged`` (already there), ``claimed`` or ``joined``."""
    if version is not None:
        manifest = _manifest_of(store, version)
        if manifest is not None:
            if manifest["root_digest"] == digest:
                return version, "unchanged"
            raise _conflict(store, version, manifest["root_digest"], digest)
        _check_foreign_files(store, version, files)  # before claiming: a refused version keeps no claim of ours
        how = _claim(store, version, digest, explicit=True)
        assert how is not None
        return version, how
    numbered, claimed = store.numbered(), store.claimed()
    complete = set()
    for number in sorted(numbered, reverse=True):
        manifest = _manifest_of(store, number)
        if manifest is not None:
            complete.add(number)
            if manifest["root_digest"] == digest:
                return number, "unchanged"
    for number in sorted(claimed - complete):
        claim = _read_claim(store, number)
        if claim is not None and claim.get("root_digest") == digest:
            return number, "joined"  # finish what an interrupted publish of this model started
    candidate = max(numbered | claimed, default=0) + 1
    for _ in range(MAX_AUTO_ATTEMPTS):
        how = _claim(store, candidate, digest, explicit=False)
        if how is not None:
            return candidate, how
        candidate += 1
    raise VersionConflictError(
        f"could not claim a free version in {store.where()} after {MAX_AUTO_ATTEMPTS} tries (last {candidate}): "
        "many publishers are racing; retry, or pass an explicit version"
    )


def _check_foreign_files(store: _Store, version: int, files: Mapping[str, Any]) -> None:
    foreign = sorted(set(store.listing(version)) - set(files) - {MANIFEST_FILE})
    if foreign:
        raise VersionConflictError(
            f"{store.where(str(version))} already holds files that are not part of this model and has no manifest "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): an upload by another tool, or of "
            "another model. Publish under a new version, or delete that folder if it is a leftover."
        )


def publish_savedmodel(
    savedmodel_dir: Path,
    repository_uri: str,
    version: int | None = None,
    *,
    lineage: Mapping[str, Any] | None = None,
    require_conditional_writes: bool = True,
    on_file_uploaded: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish a SavedModel folder as ``<repository>/<version>/``, manifest last (see the module docstring).

    Args:
        savedmodel_dir: The SavedModel folder (export_savedmodel's ``savedmodel`` output). Its own
            ``manifest.json``, when present, is checked and replaced by the repository manifest.
        repository_uri: ``s3://bucket/prefix/<model_name>`` (credentials from the environment, see
            :mod:`kfp_tabular.components._shared.s3`), a folder, or ``file:///folder``.
        version: The version to publish as (a positive integer); None = the next free number, or the version
            that already holds this model.
        lineage: Recorded in the manifest, not part of the root digest.
        require_conditional_writes: Refuse an S3 store that ignores ``If-None-Match`` (detected by a probe).
            False accepts an existence check and a read-back instead: safe with one publisher at a time only.
        on_file_uploaded: Called with each file's relative path after it is uploaded (progress; tests use it to
            interrupt a publish midway).

    Returns:
        What was published, or found already published.

    Raises:
        ConfigError: bad repository URI or version.
        ModelError: the folder is not a complete SavedModel (IntegrityError: it does not match its manifest).
        VersionConflictError: ``version`` holds, or is being published with, another model.
        ConditionalWriteUnsupportedError: the store ignores conditional writes and they are required.
        DataSourceError: the repository cannot be read or written.
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ConfigError(f"version must be a positive integer (or None for the next one), got {version!r}")
    folder = Path(savedmodel_dir)
    if not folder.is_dir():
        raise ModelError(f"SavedModel folder {folder} does not exist; pass export_savedmodel's savedmodel output")
    check = verify_savedmodel(folder)  # a complete SavedModel; its own manifest, when there is one, matches
    # The export's manifest was just checked file by file: reuse it rather than hashing every file again.
    content = (parse_manifest((folder / MANIFEST_FILE).read_bytes(), str(folder)) if check.manifest
               else build_manifest(folder))
    digest = content["root_digest"]
    record = {"files": content["files"], "root_digest": digest, "lineage": dict(lineage or {})}
    data = manifest_json(record).encode("utf-8")

    store = open_repository(repository_uri, require_conditional_writes)
    number, how = _choose_version(store, digest, version, content["files"])
    where = store.where(str(number))
    files = content["files"]
    total = sum(entry["size"] for entry in files.values()) + len(data)
    if how == "unchanged":
        log.info("%s already holds this model (root digest %s); nothing uploaded", where, digest)
        existing = _manifest_of(store, number) or record
        return PublishResult(number, where, repository_uri, digest, "unchanged", len(files) + 1, total, 0, 0,
                             NOTHING_WRITTEN, existing)

    try:
        _check_foreign_files(store, number, files)  # again, now that the number is ours: files may have appeared
    except VersionConflictError:
        if how == "claimed":
            store.delete(f"{CLAIMS}/{number}.json")  # nothing was uploaded: leave the number as it was
        raise
    log.info("publishing %d files to %s (root digest %s, %s)", len(files), where, digest, store.mechanism())
    uploaded = 0
    # Largest files first: saved_model.pb and the variables are the slow part, the small files follow.
    for relpath in sorted(files, key=lambda name: (-files[name]["size"], name)):
        store.upload(f"{number}/{relpath}", folder / relpath)
        uploaded += files[relpath]["size"]
        if on_file_uploaded is not None:
            on_file_uploaded(relpath)
    status = "published" if how == "claimed" else "resumed"
    written = len(files)
    if store.create(f"{number}/{MANIFEST_FILE}", data):
        _check_committed(store, number, data)
        written, uploaded = written + 1, uploaded + len(data)
    else:
        existing = _manifest_of(store, number)
        if existing is None or existing["root_digest"] != digest:
            raise _conflict(store, number, existing["root_digest"] if existing else "unknown", digest)
        status, record = "unchanged", existing  # a concurrent publisher of the same model committed first
    log.info("%s %s: %d files, %.1f kB", status, where, len(files) + 1, total / 1e3)
    return PublishResult(number, where, repository_uri, digest, status, len(files) + 1, total, written, uploaded,
                         store.mechanism(), record)


def _check_committed(store: _Store, version: int, data: bytes) -> None:
    """Read the manifest back: what readers will see must be what was written."""
    if store.read(f"{version}/{MANIFEST_FILE}") != data:
        raise IntegrityError(
            f"{store.where(str(version))}/{MANIFEST_FILE} reads back different from what was written: another "
            "publisher overwrote it (the store does not honour exclusive creates) or the store is inconsistent. "
            "Check the version with fetch-model before serving it."
        )
