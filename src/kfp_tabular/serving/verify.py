"""Is this folder a complete SavedModel that TF Serving can load? Checked without importing TensorFlow.

The checks, cheapest first:

1. layout: ``saved_model.pb`` at the top; when ``variables/`` holds anything, ``variables.index`` and every
   ``variables.data-NNNNN-of-MMMMM`` shard (this runs on an S3 listing too, before any download);
2. ``saved_model.pb`` is a whole ``SavedModel`` message with a meta graph tagged ``serve`` (the one TF Serving
   loads); when that graph restores variables, the ``variables/`` checkpoint must be there;
3. when the export wrote ``assets.extra/kfp_tabular_signature.json``, it parses and names exactly the inputs and
   outputs of the ``serving_default`` signature (a folder mixing files of two exports fails here);
4. ``manifest.json`` (mandatory with ``require_manifest``, which model-repository fetches use): every file
   matches its sha256 and size, none is missing or extra, and the root digest matches (:func:`build_manifest`
   writes that format; a repository's manifest adds ``lineage``, which is not part of the digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kfp_tabular.components._shared.files import sha256_file, write_text_atomic
from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_FILE, SIGNATURE_KEY, SignatureInfo
from kfp_tabular.errors import IntegrityError, ModelError
from kfp_tabular.serving.protowire import WireError, saved_model_outline

SAVED_MODEL_PB = "saved_model.pb"
VARIABLES_INDEX = "variables/variables.index"
VARIABLES_SHARD = re.compile(r"variables/variables\.data-(\d{5})-of-(\d{5})")
SERVE_TAG = "serve"
MANIFEST_FILE = "manifest.json"
SIGNATURE_JSON = SIGNATURE_FILE.as_posix()


@dataclass(frozen=True)
class SavedModelCheck:
    """What :func:`verify_savedmodel` found in a folder that passed.

    Attributes:
        files: Number of files.
        size: Total bytes.
        signatures: Signature names of the ``serve`` meta graph (without TensorFlow's internal init op).
        has_variables: The graph restores a ``variables/`` checkpoint.
        signature_file: ``assets.extra/kfp_tabular_signature.json`` was present and matched.
        manifest: ``manifest.json`` was present and every file matched it.
    """

    files: int
    size: int
    signatures: tuple[str, ...]
    has_variables: bool
    signature_file: bool
    manifest: bool


def list_files(folder: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file under ``folder`` (empty folders do not count)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            if path.is_file():
                found[path.relative_to(folder).as_posix()] = path.stat().st_size
    return found


def check_layout(relpaths: Iterable[str], where: str) -> None:
    """Check a file listing for the files every SavedModel needs; runs on an S3 listing before downloading.

    Args:
        relpaths: Paths relative to the SavedModel folder, ``/``-separated.
        where: How to name the folder in messages (a URI or a path).

    Raises:
        ModelError: ``saved_model.pb`` is missing, or ``variables/`` is half there.
    """
    paths = set(relpaths)
    if SAVED_MODEL_PB not in paths:
        nested = sorted(p for p in paths if PurePosixPath(p).name == SAVED_MODEL_PB)
        hint = (
            f" It holds {nested[0]}: point the URI at {where.rstrip('/')}/{PurePosixPath(nested[0]).parent}/."
            if nested
            else " If an upload is still running, wait for it and retry; otherwise upload the whole SavedModel "
            "folder again."
        )
        raise ModelError(
            f"{where} is not a complete SavedModel: there is no {SAVED_MODEL_PB} at its top (TF Serving loads "
            f"<base_path>/<version>/{SAVED_MODEL_PB}).{hint}"
        )
    if any(p.startswith("variables/") for p in paths):
        _check_variables(paths, where)


def _check_variables(paths: set[str], where: str) -> None:
    if VARIABLES_INDEX not in paths:
        raise ModelError(
            f"{where} is not a complete SavedModel: {VARIABLES_INDEX} is missing, so TF Serving cannot restore "
            "the weights. The upload was cut short or skipped files: upload the whole SavedModel folder again."
        )
    shards: dict[int, set[int]] = {}
    for path in paths:
        match = VARIABLES_SHARD.fullmatch(path)
        if match:
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not shards:
        raise ModelError(
            f"{where} is not a complete SavedModel: variables/ has no variables.data-NNNNN-of-MMMMM shard next to "
            "variables.index. Upload the whole SavedModel folder again."
        )
    if len(shards) > 1:
        raise ModelError(
            f"{where} mixes variables shards of different saves (of {sorted(shards)} shards): files of two "
            "exports were uploaded into one folder. Upload one export into an empty version folder."
        )
    ((count, present),) = shards.items()
    missing = sorted(set(range(count)) - present)
    if missing:
        names = ", ".join(f"variables.data-{i:05d}-of-{count:05d}" for i in missing[:3])
        raise ModelError(
            f"{where} is not a complete SavedModel: {len(missing)} of {count} variables shard(s) missing "
            f"({names}{', ...' if len(missing) > 3 else ''}). Upload the whole SavedModel folder again."
        )


def verify_savedmodel(folder: Path, where: str | None = None, require_manifest: bool = False) -> SavedModelCheck:
    """Check that ``folder`` holds a complete SavedModel TF Serving can load (see the module docstring).

    Args:
        folder: The SavedModel folder (the one with ``saved_model.pb``).
        where: How to name it in messages; default the folder path.
        require_manifest: Refuse a folder without ``manifest.json`` (a structurally valid model may still have
            a flipped byte that changes its answers; only the manifest tells).

    Returns:
        A summary of what was checked.

    Raises:
        IntegrityError: ``manifest.json`` is required and missing, or a file does not match it.
        ModelError: a file is missing, truncated, corrupt, or does not match the signature file.
    """
    folder = Path(folder)
    where = where or str(folder)
    files = list_files(folder)
    check_layout(files, where)
    try:
        outlines = saved_model_outline((folder / SAVED_MODEL_PB).read_bytes())
    except WireError as error:
        raise ModelError(
            f"{where}/{SAVED_MODEL_PB} is not a readable SavedModel ({error}): the file is truncated or corrupt. "
            "Export and upload the model again."
        ) from error
    serving = [outline for outline in outlines if SERVE_TAG in outline.tags]
    if not serving:
        tags = sorted({tag for outline in outlines for tag in outline.tags})
        raise ModelError(
            f"{where}/{SAVED_MODEL_PB} has no meta graph tagged {SERVE_TAG!r} (tags: {tags or 'none'}); TF Serving "
            "loads that one. Save the model with tf.saved_model.save, which tags it 'serve'."
        )
    graph = serving[0]
    if graph.has_variables:
        _check_variables(set(files), where)
    signature_file = SIGNATURE_JSON in files
    if signature_file:
        _check_signature_file(folder, graph.signatures, where)
    manifest = MANIFEST_FILE in files
    if manifest:
        _check_manifest(folder, files, where)
    elif require_manifest:
        raise missing_manifest(where)
    return SavedModelCheck(
        files=len(files),
        size=sum(files.values()),
        signatures=tuple(sorted(name for name in graph.signatures if not name.startswith("__"))),
        has_variables=graph.has_variables,
        signature_file=signature_file,
        manifest=manifest,
    )


def _check_signature_file(folder: Path, signatures: dict[str, Any], where: str) -> None:
    try:
        info = SignatureInfo.from_json((folder / SIGNATURE_FILE).read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as error:
        raise ModelError(
            f"{where}/{SIGNATURE_JSON} is not the signature file export_savedmodel writes ({error}); export the "
            "model again."
        ) from error
    if SIGNATURE_KEY not in signatures:
        raise ModelError(
            f"{where}/{SAVED_MODEL_PB} has no {SIGNATURE_KEY!r} signature although {SIGNATURE_JSON} describes one "
            f"(signatures: {sorted(signatures)}); export the model again."
        )
    graph = signatures[SIGNATURE_KEY]
    expected_inputs = {column.name for column in info.inputs}
    if graph.inputs != expected_inputs or graph.outputs != set(info.outputs):
        raise ModelError(
            f"{where}: {SIGNATURE_JSON} and {SAVED_MODEL_PB} describe different models (inputs "
            f"{sorted(expected_inputs)} vs {sorted(graph.inputs)}, outputs {sorted(info.outputs)} vs "
            f"{sorted(graph.outputs)}): the folder mixes files of two exports. Upload one export into an empty "
            "version folder."
        )


def root_digest(entries: dict[str, dict[str, Any]]) -> str:
    """The sha256 of a manifest's ``files`` mapping as compact JSON with sorted keys: the model's identity."""
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()



def build_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a SavedModel folder: ``{"files": {relpath: {"sha256", "size"}}, "root_digest"}``.

    The root digest is the sha256 of the ``files`` mapping as compact JSON with sorted keys. ``manifest.json``
    itself is not listed.
    """
    folder = Path(folder)
    entries = {
        relpath: {"sha256": sha256_file(folder / relpath), "size": size}
        for relpath, size in sorted(list_files(folder).items())
        if relpath != MANIFEST_FILE
    }
    return {"files": entries, "root_digest": root_digest(entries)}


def manifest_json(manifest: dict[str, Any]) -> str:
    """A manifest as the text written to ``manifest.json`` (indented, sorted keys, final newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write_manifest(folder: Path) -> Path:
    """Write ``manifest.json`` into a SavedModel folder (see :func:`build_manifest`) and return its path."""
    path = Path(folder) / MANIFEST_FILE
    write_text_atomic(path, manifest_json(build_manifest(folder)))
    return path


def missing_manifest(where: str) -> IntegrityError:
    """The error for a model version without ``manifest.json``."""
    return IntegrityError(
        f"{where} has no {MANIFEST_FILE}, so its files cannot be checked and it is not a complete published "
        f"version: publish_model writes {MANIFEST_FILE} last, so a publish is still running or was interrupted. "
        "Wait for it and retry, or publish the model again (publish_model or `kfp-tabular publish`); a local "
        "export of an older kfp-tabular can be fetched with --allow-missing-manifest."
    )


def parse_manifest(text: str | bytes, where: str) -> dict[str, Any]:
    """Read a manifest: ``{"files": {relpath: {"sha256", "size"}}, "root_digest", "lineage"?}``.

    The root digest is checked against the file list here, so a returned manifest is self-consistent.

    Args:
        text: The content of ``manifest.json``.
        where: The version it belongs to, for messages.

    Returns:
        ``{"files": ..., "root_digest": ..., "lineage": {...}}`` (lineage empty when absent).

    Raises:
        IntegrityError: not JSON, not of that form, or its root digest does not match its file list.
    """
    try:
        manifest = json.loads(text)
        entries = {
            str(relpath): {"sha256": str(entry["sha256"]).lower(), "size": int(entry["size"])}
            for relpath, entry in manifest["files"].items()
        }
        lineage = manifest.get("lineage") or {}
        if not isinstance(lineage, dict):
            raise TypeError(f"lineage is a {type(lineage).__name__}, not an object")
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise IntegrityError(
            f"{where}/{MANIFEST_FILE} is not a manifest of the form "
            f'{{"files": {{path: {{"sha256": ..., "size": ...}}}}, "root_digest": ...}} ({error!r}).'
        ) from error
    digest = root_digest(entries)
    root = manifest.get("root_digest")
    if root is not None and str(root).lower() != digest:
        raise IntegrityError(
            f"{where}/{MANIFEST_FILE}: its root_digest does not match its file list; the manifest was edited or "
            "is corrupt. Write it again with kfp_tabular.serving.verify.write_manifest."
        )
    return {"files": entries, "root_digest": digest, "lineage": lineage}


def check_listing(files: dict[str, int], manifest: dict[str, Any], where: str) -> None:
    """Compare a file listing (relpath -> size, e.g. of an S3 prefix) with a manifest, before downloading.

    Raises:
        IntegrityError: a file is missing, extra, or of another size than the manifest says.
    """
    entries = manifest["files"]
    present = set(files) - {MANIFEST_FILE}
    missing, extra = sorted(set(entries) - present), sorted(present - set(entries))
    if missing or extra:
        raise IntegrityError(
            f"{where} does not match its {MANIFEST_FILE}: missing {missing[:5]}, not in the manifest {extra[:5]}. "
            "The upload is incomplete or mixes two exports: upload the whole SavedModel folder again."
        )
    for relpath, entry in sorted(entries.items()):
        if files[relpath] != entry["size"]:
            raise IntegrityError(
                f"{where}/{relpath} does not match {MANIFEST_FILE} ({files[relpath]} bytes, the manifest says "
                f"{entry['size']}): the file is corrupt or from another export. Upload the model again."
            )


def _check_manifest(folder: Path, files: dict[str, int], where: str) -> None:
    manifest = parse_manifest((folder / MANIFEST_FILE).read_bytes(), where)
    check_listing(files, manifest, where)
    for relpath, entry in sorted(manifest["files"].items()):
        if sha256_file(folder / relpath) != entry["sha256"]:
            raise IntegrityError(
                f"{where}/{relpath} does not match {MANIFEST_FILE} (its sha256 differs from the manifest's): the "
                "file is corrupt or from another export. Upload the model again."
            )
