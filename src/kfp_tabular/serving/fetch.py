"""Copy one model version from S3/MinIO (or a folder) into TF Serving's ``<base_path>/<version>/`` layout.

TF Serving cannot read ``s3://`` since 2.7, so its pod's init container runs ``kfp-tabular fetch-model``. The
copy is all or nothing:

1. the source is listed; a version without ``manifest.json`` is refused (publish_model writes it last, so its
   absence means an unfinished or interrupted publish), as is one whose listing is not a complete SavedModel;
2. files land in a staging folder ``<dest>/.tmp-<version>-<random>/``, the manifest first: names and sizes
   are compared with it before anything else is downloaded;
3. the folder is checked to be a complete SavedModel whose every file matches the manifest's sha256
   (:mod:`kfp_tabular.serving.verify`), and only then renamed to ``<dest>/<version>`` in one ``os.rename``.

TF Serving only picks up folders named by an integer, so it never sees a staging folder. On any failure the
staging folder is removed and no version folder appears; the command exits non-zero, the pod never becomes
Ready and the rollout stops. Fetching the same model again changes nothing.

Concurrent fetches into one ``dest`` are safe: each staging folder has an owner file
``<staging>.owner`` that its fetch holds an exclusive ``flock`` on while it runs. The clean-up of staging
folders left by killed fetches removes only those whose lock is free (the kernel releases it when the owner
dies, even on SIGKILL), and staging folders without an owner file only when they are older than
``ORPHAN_AGE_S``.

S3 requests use :class:`~kfp_tabular.components._shared.s3.S3Timeouts` (connect 5 s, read 30 s, 2 retries by
default; ``--connect-timeout`` / ``--read-timeout`` / ``--retries`` or ``S3_CONNECT_TIMEOUT_S`` /
``S3_READ_TIMEOUT_S`` / ``S3_RETRIES``), so an endpoint that never answers fails in bounded time.

Writes happen only under ``dest`` (the root filesystem of the container is read-only).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import filecmp
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlsplit

from kfp_tabular.components._shared import s3
from kfp_tabular.components._shared.files import remove_path
from kfp_tabular.errors import ConfigError, DataSourceError, ModelError, VersionConflictError
from kfp_tabular.serving.verify import (
    MANIFEST_FILE,
    check_layout,
    check_listing,
    list_files,
    missing_manifest,
    parse_manifest,
    verify_savedmodel,
)

log = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"
OWNER_SUFFIX = ".owner"
ORPHAN_AGE_S = 3600  # a staging folder without owner file (older kfp-tabular, or owner file lost) is this old
SUPPORTED = "s3://bucket/path/<version>, a local folder or file:///folder"


class _Source(Protocol):
    display: str

    def list_files(self) -> dict[str, int]: ...

    def copy(self, relpath: str, target: Path, size: int) -> None: ...


@dataclass
class _LocalFolder:
    """A SavedModel folder on a mounted volume (or a test's tmp folder)."""

    path: Path
    display: str

    def list_files(self) -> dict[str, int]:
        if not self.path.is_dir():
            what = "does not exist" if not self.path.exists() else "is not a folder"
            raise DataSourceError(
                f"model source {self.display!r} {what} ({self.path.resolve()}); point --source-uri at the "
                "SavedModel version folder (the one holding saved_model.pb)"
            )
        return list_files(self.path)

    def copy(self, relpath: str, target: Path, size: int) -> None:
        source = self.path / relpath
        try:
            shutil.copyfile(source, target)
        except OSError as error:
            raise DataSourceError(f"cannot copy {source} to {target}: {error}") from error
        if target.stat().st_size != size:
            raise DataSourceError(f"{source} changed while it was copied; run fetch-model again")


@dataclass
class _S3Prefix:
    """Every object under ``s3://bucket/prefix/``."""

    uri: str
    display: str

    timeouts: s3.S3Timeouts | None = None

    def __post_init__(self) -> None:
        self.bucket, self.prefix = s3.parse_s3_prefix(self.uri)
        self.settings = s3.s3_settings_from_env(self.uri)
        if self.timeouts is not None:
            self.settings = dataclasses.replace(self.settings, timeouts=self.timeouts)
        self.client = s3.s3_client(self.settings)

    def list_files(self) -> dict[str, int]:
        start = f"{self.prefix}/" if self.prefix else ""
        found: dict[str, int] = {}
        with s3.s3_errors(self.settings, self.display, self.bucket, start, self.client):
            for item in self.client.list_objects(self.bucket, prefix=start, recursive=True):
                if item.is_dir or item.object_name.endswith("/"):
                    continue  # folder markers some tools create: no content
                found[_safe_relpath(item.object_name[len(start):], self.display)] = item.size or 0
        return found

    def copy(self, relpath: str, target: Path, size: int) -> None:
        key = f"{self.prefix}/{relpath}" if self.prefix else relpath
        s3.download_object(self.client, self.settings, self.bucket, key, target, expected_size=size)


def _safe_relpath(relpath: str, display: str) -> str:
    """Refuse keys that would write outside the staging folder (``..``, absolute, empty segments)."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise DataSourceError(
            f"object {relpath!r} under {display} has a path that cannot be a file of a SavedModel "
            "(empty, '.' or '..' segments); remove it from the bucket"
        )
    return relpath


def _open_source(uri: str, timeouts: s3.S3Timeouts | None = None) -> _Source:
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return _LocalFolder(Path(uri).expanduser(), uri)
    scheme = scheme.lower()
    if scheme == "s3":
        return _S3Prefix(uri, uri, timeouts)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise DataSourceError(f"{uri!r} names the host {parts.netloc!r}; use file:///absolute/folder")
        return _LocalFolder(Path(unquote(parts.path)), uri)
    raise DataSourceError(f"unknown scheme {scheme + '://'!r} in source_uri {uri!r}; supported: {SUPPORTED}")


def model_version(source_uri: str, version: int | None = None) -> int:
    """The model version: the URI's last path segment when it is an integer, else ``version``.

    Raises:
        ConfigError: no version anywhere, a negative one, or the URI and ``version`` disagree.
    """
    uri = source_uri.strip()
    path = urlsplit(uri).path if "://" in uri else uri
    last = PurePosixPath(unquote(path).rstrip("/")).name
    from_uri = int(last) if last.isascii() and last.isdigit() else None
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise ConfigError(f"version must be a non-negative integer, got {version!r}")
    if from_uri is not None and version is not None and from_uri != version:
        raise ConfigError(
            f"source_uri {uri!r} ends in version {from_uri} but version {version} was given; drop --version or "
            "point --source-uri at the folder of that version"
        )
    chosen = from_uri if from_uri is not None else version
    if chosen is None:
        raise ConfigError(
            f"no model version: the last segment of source_uri {uri!r} is not an integer and --version is not "
            "set. TF Serving serves <base_path>/<integer version>/: end the URI with the version "
            "(s3://bucket/models/tabular/3) or pass --version 3"
        )
    return chosen


def fetch_model(source_uri: str, dest: Path, version: int | None = None, *,
                timeouts: s3.S3Timeouts | None = None, require_manifest: bool = True) -> Path:
    """Copy every file under ``source_uri`` into ``<dest>/<version>/``, verified and atomically.

    Args:
        source_uri: ``s3://bucket/prefix/<version>`` (credentials from ``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``), a local folder, or ``file:///folder``: the SavedModel version folder.
        dest: TF Serving's ``base_path`` for the model, e.g. ``/models/tabular``; created if missing.
        version: The version when the URI does not end in one.
        timeouts: S3 connect / read timeouts and retries; default from ``S3_CONNECT_TIMEOUT_S``,
            ``S3_READ_TIMEOUT_S``, ``S3_RETRIES`` or 5 s / 30 s / 2.
        require_manifest: Refuse a version without ``manifest.json`` (the default, and the only choice for
            ``s3://``: a model repository version always has one). False accepts a local SavedModel folder
            exported by an older kfp-tabular; it is still checked for completeness, not for flipped bytes.

    Returns:
        The version folder, ``<dest>/<version>``.

    Raises:
        ConfigError: no usable version, ``dest`` cannot be written, or ``require_manifest=False`` for S3.
        DataSourceError: the source cannot be read (missing folder, bucket or objects, wrong credentials,
            unreachable or silent endpoint, download cut short).
        IntegrityError: no ``manifest.json``, or a file that does not match it (a ``ModelError``).
        VersionConflictError: ``<dest>/<version>`` already holds a different model (a ``ModelError``).
        ModelError: the source is not a complete SavedModel, or writing the copy failed.
    """
    uri = source_uri.strip()
    number = model_version(uri, version)
    dest = Path(dest)
    target = dest / str(number)
    if not require_manifest and uri.lower().startswith("s3://"):
        raise ConfigError(
            f"s3:// sources always need a manifest.json ({uri}): a version on S3 is a model repository version, "
            "and without the manifest a half-uploaded or corrupt one cannot be told from a good one; publish "
            "the model with publish_model / `kfp-tabular publish`"
        )
    source = _open_source(uri, timeouts)
    files = source.list_files()
    if not files:
        raise DataSourceError(
            f"no files under {uri}: nothing was uploaded there, or the path is wrong (keys are case-sensitive); "
            "point --source-uri at the SavedModel version folder"
        )
    where = uri.rstrip("/") or uri
    check_layout(files, where)  # a half-uploaded model fails here, before anything is written
    if MANIFEST_FILE not in files and require_manifest:
        raise missing_manifest(where)  # publish_model writes it last: an unfinished or interrupted publish
    if target.exists():
        _refuse_if_different_listing(target, files, uri)

    try:
        dest.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(dest, number)
        staging = Staging.create(dest, number)
    except OSError as error:
        raise ConfigError(f"cannot write into --dest {dest} ({error}); mount a writable volume there") from error
    try:
        total = sum(files.values())
        log.info("fetching %d files (%s) from %s into %s", len(files), _size(total), uri, staging.folder)
        order = sorted(files)
        if MANIFEST_FILE in files:
            # The manifest first: a listing that does not match it fails before the big files are downloaded.
            order.remove(MANIFEST_FILE)
            source.copy(MANIFEST_FILE, staging.folder / MANIFEST_FILE, files[MANIFEST_FILE])
            manifest = parse_manifest((staging.folder / MANIFEST_FILE).read_bytes(), where)
            check_listing(files, manifest, where)
        for relpath in order:
            local = staging.folder / relpath
            local.parent.mkdir(parents=True, exist_ok=True)
            source.copy(relpath, local, files[relpath])
        check = verify_savedmodel(staging.folder, where=where, require_manifest=require_manifest)
        staging.folder.chmod(0o755)  # private while staging; TF Serving may run as another user
        if _publish(staging.folder, target, uri):
            log.info(
                "published version %d at %s: %d files, signatures %s%s", number, target, check.files,
                list(check.signatures), ", manifest verified" if check.manifest else ", NO manifest (allowed)",
            )
        else:
            log.info("version %d at %s already holds this model; left unchanged", number, target)
    except OSError as error:
        if not staging.folder.exists():
            raise ModelError(
                f"the staging folder {staging.folder} disappeared while the model was written into it ({error}): "
                f"something else removed it; check for other processes cleaning {dest}"
            ) from error
        raise ModelError(f"cannot write the model into {staging.folder} ({error}); check the free space of "
                         f"{dest}") from error
    finally:
        staging.close()
    return target


@dataclass
class Staging:
    """A private staging folder ``<dest>/.tmp-<version>-<random>/``, owned through ``<same name>.owner``.

    The owner file is created first and locked (``flock``, exclusive) for as long as the fetch runs, then the
    folder is created. Other fetches' clean-up removes a staging folder only when they can take that lock,
    i.e. when its owner has died (:func:`_remove_stale_staging`).

    Attributes:
        folder: The staging folder.
        owner: The owner file next to it.
        fd: The open, locked descriptor of the owner file.
    """

    folder: Path
    owner: Path
    fd: int

    @classmethod
    def create(cls, dest: Path, number: int) -> Staging:
        """Create and lock a new staging folder for ``number`` in ``dest``."""
        fd, owner = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{number}-", suffix=OWNER_SUFFIX, dir=dest)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it yet
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            folder = Path(owner[: -len(OWNER_SUFFIX)])
            folder.mkdir(mode=0o700)
        except BaseException:
            os.close(fd)
            Path(owner).unlink(missing_ok=True)
            raise
        return cls(folder, Path(owner), fd)

    def close(self) -> None:
        """Remove the folder (if it was not renamed into place), then the owner file; release the lock."""
        try:
            remove_path(self.folder)
            self.owner.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _publish(staging: Path, target: Path, uri: str) -> bool:
    """Rename staging to target; False when target already holds identical files (then nothing changes)."""
    if not target.exists():
        try:
            os.rename(staging, target)
            return True
        except OSError:
            if not target.exists():
                raise
            # Another fetch of the same version won the race: fall through and compare with its result.
    difference = _difference(staging, target)
    if difference:
        raise _conflict(target, uri, difference)
    return False


def _refuse_if_different_listing(target: Path, files: dict[str, int], uri: str) -> None:
    """Fail before downloading when names or sizes already differ; equal ones are compared byte by byte later."""
    existing = list_files(target)
    if existing != files:
        raise _conflict(target, uri, _describe(set(existing), set(files), _sizes_differ(existing, files)))


def _sizes_differ(a: dict[str, int], b: dict[str, int]) -> list[str]:
    return sorted(name for name in a.keys() & b.keys() if a[name] != b[name])


def _difference(staging: Path, target: Path) -> str:
    new, old = list_files(staging), list_files(target)
    changed = _sizes_differ(old, new) or sorted(
        name for name in old.keys() & new.keys() if not filecmp.cmp(staging / name, target / name, shallow=False)
    )
    return _describe(set(old), set(new), changed)


def _describe(old: set[str], new: set[str], changed: list[str]) -> str:
    parts = []
    for label, names in (("only in the folder", old - new), ("only in the source", new - old),
                         ("different content", changed)):
        if names:
            shown = sorted(names)[:3]
            parts.append(f"{label}: {', '.join(shown)}{', ...' if len(names) > 3 else ''}")
    return "; ".join(parts)


def _conflict(target: Path, uri: str, difference: str) -> ModelError:
    return VersionConflictError(
        f"{target} already holds a different model than {uri} ({difference}). A version number must always "
        "mean the same model: publish the new model under a new version, or delete the folder if it is a "
        "leftover"
    )


def _remove_stale_staging(dest: Path, number: int) -> None:
    """Remove staging folders of this version left by killed fetches (SIGKILL skips clean-up), never live ones.

    A staging folder whose owner file can be locked belongs to a dead fetch; one whose owner holds the lock is
    another fetch at work and is left alone. A folder without owner file is removed only after
    ``ORPHAN_AGE_S``: it may be a fetch of an older kfp-tabular, or one in the instant between creating its
    owner file and its folder.
    """
    for entry in sorted(dest.glob(f"{STAGING_PREFIX}{number}-*")):
        if entry.name.endswith(OWNER_SUFFIX):
            _remove_if_owner_died(entry, entry.with_name(entry.name[: -len(OWNER_SUFFIX)]))
        elif not entry.with_name(entry.name + OWNER_SUFFIX).exists() and _age(entry) > ORPHAN_AGE_S:
            log.info("removing %s, left by an interrupted fetch more than %d s ago", entry, ORPHAN_AGE_S)
            remove_path(entry)


def _remove_if_owner_died(owner: Path, folder: Path) -> None:
    try:
        fd = os.open(owner, os.O_RDONLY)
    except FileNotFoundError:
        return  # its fetch just finished
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return  # its fetch is alive
            raise
        log.info("removing %s, left by a fetch that was killed", folder)
        remove_path(folder)
        owner.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
