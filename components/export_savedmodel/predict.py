"""Local prediction with an exported SavedModel, taking and returning TF Serving's REST JSON.

``{"instances": [{column: value, ...}, ...]}`` (row format) gives ``{"predictions": [{output: value}, ...]}``;
``{"inputs": {column: [values...]}}`` (columnar format) gives ``{"outputs": {output: [values...]}}``, as
TF Serving's ``:predict`` endpoint answers. Columns are named by their original column names or by their
signature tensor names, not a mix that makes a key ambiguous (:func:`~.signature.resolve_keys`). ``null`` is a
missing value (NaN for numbers, ``""`` for text). Keys that are not columns of the model are ignored (e.g. the
label column of a test file).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.signature import (
    FLOAT,
    SIGNATURE_KEY,
    InputColumn,
    SignatureInfo,
    read_signature,
    resolve_keys,
)
from kfp_tabular.errors import DataValidationError


@lru_cache(maxsize=4)
def _load(savedmodel_dir: str, stamp: float) -> tuple[Any, SignatureInfo]:
    """Load once per folder and version (``stamp``: mtime of saved_model.pb, so a re-export is picked up)."""
    import tensorflow as tf

    signature = read_signature(Path(savedmodel_dir))
    loaded = tf.saved_model.load(savedmodel_dir)
    return loaded, signature


def _columns(payload: dict[str, Any], signature: SignatureInfo) -> tuple[dict[str, list[Any]], int, bool]:
    """Per-input value lists from a REST payload; returns (values by tensor name, rows, row format?)."""
    if not isinstance(payload, dict) or ("instances" in payload) == ("inputs" in payload):
        raise DataValidationError('Send exactly one of "instances" (rows) or "inputs" (columns), as for TF Serving.')
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise DataValidationError('"instances" must be a list of objects {column: value}.')
        values: dict[str, list[Any]] = {column.name: [] for column in signature.inputs}
        resolved: dict[frozenset[str], dict[str, InputColumn]] = {}  # rows usually share one set of keys
        for index, row in enumerate(rows):
            keys = frozenset(row)
            if keys not in resolved:
                resolved[keys] = resolve_keys(row, signature, f"Instance {index}")
            for key, column in resolved[keys].items():
                values[column.name].append(row[key])
        return values, len(rows), True
    columns = payload["inputs"]
    if not isinstance(columns, dict):
        raise DataValidationError('"inputs" must be an object {column: [values...]}.')
    named = {column.name: columns[key] for key, column in resolve_keys(columns, signature, '"inputs"').items()}
    lengths = {len(v) if isinstance(v, list) else -1 for v in named.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise DataValidationError('Every "inputs" column must be a list, all of the same length.')
    return named, lengths.pop(), False


def predict_rows(savedmodel_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Predict with a SavedModel written by ``export_savedmodel``, TF Serving REST style.

    Args:
        savedmodel_dir: The SavedModel folder (with ``assets.extra/kfp_tabular_signature.json``).
        payload: ``{"instances": [...]}`` or ``{"inputs": {...}}``.

    Returns:
        ``{"predictions": [...]}`` for row input, ``{"outputs": {...}}`` for columnar input.

    Raises:
        DataValidationError: malformed payload, a missing or ambiguous column, or a non-numeric value in a
            numeric column.
    """
    import tensorflow as tf

    folder = Path(savedmodel_dir).resolve()
    if not (folder / "saved_model.pb").is_file():
        raise DataValidationError(f"{folder} is not a SavedModel folder (no saved_model.pb).")
    loaded, signature = _load(str(folder), (folder / "saved_model.pb").stat().st_mtime)
    values, count, row_format = _columns(payload, signature)
    tensors = {}
    for column in signature.inputs:
        encoded = column.encode(values[column.name])
        tensors[column.name] = tf.constant(encoded, tf.float64 if column.dtype == FLOAT else tf.string)
    if count == 0:
        return {"predictions": []} if row_format else {"outputs": {}}
    outputs = {key: _plain(value.numpy()) for key, value in loaded.signatures[SIGNATURE_KEY](**tensors).items()}
    if not row_format:
        return {"outputs": outputs}
    return {"predictions": [{key: value[i] for key, value in outputs.items()} for i in range(count)]}


def _plain(array: np.ndarray) -> list[Any]:
    if array.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return array.astype(np.float64).tolist()
