"""The model versions the local server holds: repository polling, loading, and TF Serving's "latest" policy.

Like TF Serving's file-system source with its default version policy (``latest``, one version), the repository
is listed every ``poll_seconds``. When its highest complete version is not the one served, that version is
loaded (``verify_savedmodel``, ``tf.saved_model.load``, then the warmup requests of
``assets.extra/tf_serving_warmup_requests`` are replayed) and only then are the other versions unloaded, so a
version that fails to load leaves the previous one serving (TF Serving's ``AvailabilityPreservingPolicy``).
Version states are TF Serving's ``ModelVersionStatus`` states: ``LOADING``, ``AVAILABLE``, ``UNLOADING``,
``END`` (with an error status when the load failed); like TF Serving, the last state of every version seen is
kept and reported.

Requests are decoded with the export's own rules: a REST body through
:mod:`kfp_tabular.components.export_savedmodel.predict` (original or tensor column names, ``null`` as missing,
datetime text), a ``PredictRequest`` as TF Serving does (tensor names and the signature's dtypes only).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

# predict.py's REST decoding rule, reused as is (it has no public name yet).
from kfp_tabular.components.export_savedmodel.predict import _columns as request_columns
from kfp_tabular.components.export_savedmodel.signature import (
    FLOAT,
    SIGNATURE_KEY,
    SignatureInfo,
    read_signature,
)
from kfp_tabular.components.export_savedmodel.warmup import (
    MAX_WARMUP_RECORDS,
    WARMUP_FILE,
    read_warmup,
    request_to_tensors,
)
from kfp_tabular.errors import DataSourceError, DataValidationError, KfpTabularError, ModelError
from kfp_tabular.serving.verify import (
    MANIFEST_FILE,
    SAVED_MODEL_PB,
    SERVE_TAG,
    list_files,
    verify_savedmodel,
)

log = logging.getLogger(__name__)

LOAD_RETRY_SECONDS = 60.0  # TF Serving's default load_retry_interval_micros
AVAILABLE, LOADING, UNLOADING, END = "AVAILABLE", "LOADING", "UNLOADING", "END"


class ServingError(KfpTabularError):
    """A request the server refuses, with the canonical status code TF Serving answers it with.

    Attributes:
        code: Canonical code name: ``NOT_FOUND``, ``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``...
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_code(error: BaseException) -> str:
    """Canonical code name of an error raised while loading a model or answering a request."""
    if isinstance(error, ServingError):
        return error.code
    if isinstance(error, DataValidationError | TypeError | ValueError):
        return "INVALID_ARGUMENT"  # bad values, or arguments the signature function refuses
    if isinstance(error, DataSourceError):
        return "UNAVAILABLE"
    if isinstance(error, ModelError):
        return "FAILED_PRECONDITION"
    number = getattr(error, "error_code", None)  # tf.errors.OpError
    if isinstance(number, int) and number in _code_enum().values_by_number:
        return _code_enum().values_by_number[number].name
    return "UNKNOWN"


def _code_enum() -> Any:
    from tensorflow_serving.apis import status_pb2

    return status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type


def _is_s3(repository: str) -> bool:
    return repository.strip().lower().startswith("s3://")


def _local_root(repository: str) -> Path:
    scheme, sep, _ = repository.partition("://")
    if not sep:
        return Path(repository).expanduser()
    if scheme.lower() == "file":
        return Path(unquote(urlsplit(repository).path))
    raise DataSourceError(
        f"unknown scheme {scheme + '://'!r} in --model-repository {repository!r}; use s3://bucket/prefix/<model>, "
        "a folder or file:///folder"
    )


def repository_versions(repository: str) -> list[int]:
    """The complete versions of a model repository, ascending; the one place that lists a repository.

    A version is an integer-named folder ``<repository>/<N>/`` holding ``manifest.json`` (written last by the
    publisher, so its presence means the upload is complete). In a local folder where no version has a
    manifest (plain export folders), a version folder holding ``saved_model.pb`` counts.

    Raises:
        DataSourceError: the repository cannot be read.
    """
    if _is_s3(repository):
        return _s3_versions(repository)
    root = _local_root(repository)
    if not root.is_dir():
        raise DataSourceError(f"model repository {repository!r} is not a folder ({root.resolve()})")
    numbered = {int(p.name): p for p in root.iterdir() if p.name.isascii() and p.name.isdigit() and p.is_dir()}
    published = [number for number, path in numbered.items() if (path / MANIFEST_FILE).is_file()]
    if published:
        return sorted(published)
    return sorted(number for number, path in numbered.items() if (path / SAVED_MODEL_PB).is_file())


def _s3_versions(repository: str) -> list[int]:
    from kfp_tabular.components._shared import s3

    bucket, prefix = s3.parse_s3_prefix(repository)
    settings = s3.s3_settings_from_env(repository)
    client = s3.s3_client(settings)
    start = f"{prefix}/" if prefix else ""
    versions = set()
    with s3.s3_errors(settings, repository, bucket, start, client):
        for item in client.list_objects(bucket, prefix=start, recursive=True):
            parts = item.object_name[len(start):].split("/")
            if len(parts) == 2 and parts[1] == MANIFEST_FILE and parts[0].isascii() and parts[0].isdigit():
                versions.add(int(parts[0]))
    return sorted(versions)


@dataclass(frozen=True)
class LoadedVersion:
    """One loaded version of a model.

    Attributes:
        name: Model name it is served under.
        version: Version number.
        folder: The SavedModel folder it was loaded from.
        signature: The export's signature description (``assets.extra/kfp_tabular_signature.json``).
        signature_defs: ``tensorflow.serving.SignatureDefMap`` of the ``serve`` meta graph, as TF Serving reports.
        function: The ``serving_default`` concrete function.
        module: The loaded SavedModel object; keeps the function's variables and tables alive.
    """

    name: str
    version: int
    folder: Path
    signature: SignatureInfo
    signature_defs: Any
    function: Any
    module: Any

    def run(self, tensors: dict[str, Any], outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Run ``serving_default`` on input tensors; ``outputs`` keeps only those outputs (default: all)."""
        results = self.function(**tensors)
        names = list(outputs) or sorted(results)
        return {name: results[name].numpy() for name in names}

    def predict_json(self, payload: Any) -> tuple[dict[str, np.ndarray], bool]:
        """Decode a REST ``:predict`` body with the export's rules and run it.

        Returns:
            (outputs by name, whether the request was in row format).

        Raises:
            DataValidationError: the body does not fit the signature (the export's messages).
        """
        import tensorflow as tf

        values, _, row_format = request_columns(payload, self.signature)
        tensors = {
            column.name: tf.constant(column.encode(values[column.name]),
                                     tf.float64 if column.dtype == FLOAT else tf.string)
            for column in self.signature.inputs
        }
        return self.run(tensors), row_format

    def predict_proto(self, request: Any) -> Any:
        """Answer a ``tensorflow.serving.PredictRequest`` as TF Serving does.

        Inputs must be named by tensor name with the signature's dtypes; ``output_filter`` selects outputs.

        Raises:
            ServingError: unknown signature, inputs that do not match the signature, an unknown output alias.
        """
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import predict_pb2

        name = request.model_spec.signature_name or SIGNATURE_KEY
        defs = self.signature_defs.signature_def
        if name not in defs:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        if name != SIGNATURE_KEY:
            raise ServingError("UNIMPLEMENTED", f"the local server runs only the {SIGNATURE_KEY!r} signature")
        signature = defs[name]
        sent, wanted = set(request.inputs), set(signature.inputs)
        if sent != wanted:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}})"
                f" != len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.",
            )
        for index, key in enumerate(sorted(wanted)):
            expected, got = signature.inputs[key].dtype, request.inputs[key].dtype
            if expected != got:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Expects arg[{index}] ({key}) to be {types_pb2.DataType.Name(expected)} "
                    f"but {types_pb2.DataType.Name(got)} is provided",
                )
        aliases = list(request.output_filter)
        for alias in aliases:
            if alias not in signature.outputs:
                raise ServingError(
                    "INVALID_ARGUMENT", f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(signature.outputs))}}}.",
                )
        if len(set(aliases)) != len(aliases):
            raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {aliases}")
        outputs = self.run(request_to_tensors(request), aliases)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
        return response


def _signature_defs(folder: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel.FromString((folder / SAVED_MODEL_PB).read_bytes())
    graph = next(g for g in saved.meta_graphs if SERVE_TAG in g.meta_info_def.tags)
    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, value in graph.signature_def.items():
        defs.signature_def[key].CopyFrom(value)
    return defs


def load_version(name: str, version: int, folder: Path) -> LoadedVersion:
    """Verify, load and warm up one SavedModel version written by ``export_savedmodel``.

    Raises:
        ModelError: the folder is not a complete SavedModel (see :func:`verify_savedmodel`).
        DataValidationError: it has no export signature file, or a warmup request does not fit it.
    """
    import tensorflow as tf

    folder = Path(folder)
    verify_savedmodel(folder)
    signature = read_signature(folder)
    module = tf.saved_model.load(str(folder), tags=[SERVE_TAG])
    loaded = LoadedVersion(name, version, folder, signature, _signature_defs(folder),
                           module.signatures[SIGNATURE_KEY], module)
    if (folder / WARMUP_FILE).is_file():
        requests = read_warmup(folder)[:MAX_WARMUP_RECORDS]
        for request in requests:
            loaded.predict_proto(request)
        log.info("replayed %d warmup request(s) of version %d of %s", len(requests), version, name)
    return loaded


@dataclass
class _State:
    state: str
    error_code: str = "OK"
    error_message: str = ""


class ServedModel:
    """One model name served from a repository's versions under the ``latest`` policy; thread-safe.

    Args:
        repository: ``s3://bucket/prefix/<model>``, a folder or ``file:///folder`` holding ``<N>/`` versions.
            S3 versions are fetched (and verified) into ``cache_dir`` first, as TF Serving's init container does.
        name: Model name in request paths and model specs.
        poll_seconds: Seconds between two listings of the repository (TF Serving's
            ``--file_system_poll_wait_seconds``, 1 by default).
        labels: Version labels (``{"stable": 3}``), as in TF Serving's model config.
        cache_dir: Where S3 versions are copied; default a temporary folder removed by :meth:`close`.
    """

    def __init__(self, repository: str, name: str, poll_seconds: float = 1.0,
                 labels: dict[str, int] | None = None, cache_dir: Path | None = None) -> None:
        self.repository = repository.strip()
        if not _is_s3(self.repository):
            _local_root(self.repository)  # an unknown scheme fails now, not at every poll
        self.name = name
        self.poll_seconds = poll_seconds
        self.labels = dict(labels or {})
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._own_cache = False
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._loaded: dict[int, LoadedVersion] = {}
        self._states: dict[int, _State] = {}
        self._failed: dict[int, tuple[Any, float]] = {}
        self._last_listing_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Poll once (loading the latest version), then keep polling in a background thread."""
        self.poll()
        self._thread = threading.Thread(target=self._poll_forever, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and unload every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._poll_lock:
            for version in sorted(self._loaded):
                self._unload(version)
            if self._own_cache and self._cache_dir is not None:
                shutil.rmtree(self._cache_dir, ignore_errors=True)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything; the next poll tries again
                log.exception("polling %s failed", self.repository)

    # -- version policy --------------------------------------------------------------------------------------

    def poll(self) -> None:
        """List the repository once; load its latest version if new, then unload the others."""
        with self._poll_lock:
            try:
                versions = repository_versions(self.repository)
            except KfpTabularError as error:
                if str(error) != self._last_listing_error:  # say it once, not every second
                    log.warning("cannot list model repository %s: %s", self.repository, error)
                    self._last_listing_error = str(error)
                return
            self._last_listing_error = ""
            aspired = versions[-1] if versions else None
            if aspired is not None and aspired not in self._loaded and self._should_load(aspired):
                self._load(aspired)
            if aspired is None or aspired in self._loaded:
                for version in sorted(self._loaded):
                    if version != aspired:
                        self._unload(version)

    def _should_load(self, version: int) -> bool:
        if version not in self._failed:
            return True
        fingerprint, when = self._failed[version]
        return time.monotonic() - when >= LOAD_RETRY_SECONDS or self._fingerprint(version) != fingerprint

    def _fingerprint(self, version: int) -> Any:
        """What a failed version's retry waits to change: its local files (S3 versions retry on a timer)."""
        if _is_s3(self.repository):
            return None
        return tuple(sorted(list_files(_local_root(self.repository) / str(version)).items()))

    def _folder(self, version: int) -> Path:
        if not _is_s3(self.repository):
            return _local_root(self.repository) / str(version)
        from kfp_tabular.serving.fetch import fetch_model

        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix=f"kfp-tabular-serve-{self.name}-"))
            self._own_cache = True
        return fetch_model(f"{self.repository.rstrip('/')}/{version}", self._cache_dir, version)

    def _set(self, version: int, state: str, code: str = "OK", message: str = "") -> None:
        with self._lock:
            self._states[version] = _State(state, code, message)

    def _load(self, version: int) -> None:
        self._set(version, LOADING)
        log.info("loading servable version {name: %s version: %d}", self.name, version)
        started = time.monotonic()
        fingerprint = self._fingerprint(version)
        try:
            loaded = load_version(self.name, version, self._folder(version))
        except Exception as error:  # any failed load must leave the served version serving
            self._failed[version] = (fingerprint, time.monotonic())
            self._set(version, END, status_code(error), str(error))
            log.error("loading version %d of %s failed: %s", version, self.name, error)
            return
        self._failed.pop(version, None)
        with self._lock:
            self._loaded[version] = loaded
            self._states[version] = _State(AVAILABLE)
        log.info("successfully loaded servable version {name: %s version: %d} in %.1f s", self.name, version,
                 time.monotonic() - started)

    def _unload(self, version: int) -> None:
        self._set(version, UNLOADING)
        with self._lock:
            loaded = self._loaded.pop(version)
            self._states[version] = _State(END)
        log.info("unloaded servable version {name: %s version: %d}", self.name, version)
        if self._own_cache and self._cache_dir is not None and loaded.folder.parent == self._cache_dir:
            shutil.rmtree(loaded.folder, ignore_errors=True)

    # -- lookups ---------------------------------------------------------------------------------------------

    @property
    def available_versions(self) -> list[int]:
        """Versions that answer requests now."""
        with self._lock:
            return sorted(self._loaded)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The loaded version a model spec asks for: the latest by default, a number, or a label.

        Raises:
            ServingError: no name, an unknown label, or no such model or version loaded (``NOT_FOUND``).
        """
        if not name:
            raise ServingError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise ServingError("INVALID_ARGUMENT", f"Both model version ({version}) and model version label "
                               f"({label}) cannot be supplied.")
        if label is not None:
            if name != self.name or label not in self.labels:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        with self._lock:
            if name == self.name and self._loaded:
                found = self._loaded.get(max(self._loaded) if version is None else version)
                if found is not None:
                    return found
        wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError("NOT_FOUND", f"Servable not found for request: {wanted}")

    def status(self, name: str, version: int | None = None) -> Any:
        """``tensorflow.serving.GetModelStatusResponse`` for every version seen, or for one.

        Raises:
            ServingError: ``NOT_FOUND`` when the model or the version was never seen.
        """
        from tensorflow_serving.apis import get_model_status_pb2

        with self._lock:
            states = dict(self._states) if name == self.name else {}
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            states = {version: states[version]}
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        codes = _code_enum().values_by_name
        for number in sorted(states, reverse=True):  # TF Serving lists the newest first
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(states[number].state)
            entry.status.error_code = codes[states[number].error_code].number
            entry.status.error_message = states[number].error_message
        return response

    def metadata(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """``tensorflow.serving.GetModelMetadataResponse`` with the ``signature_def`` field, as TF Serving.

        Raises:
            ServingError: as :meth:`get`.
        """
        from tensorflow_serving.apis import get_model_metadata_pb2

        loaded = self.get(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(loaded.signature_defs)
        return response
