"""The ``serving_default`` signature of an exported model: input names, dtypes, outputs and class names.

Clients send one tensor per original feature column. Column names are free text in a table, but TF Serving,
TensorFlow and ONNX want identifier-like tensor names, so each column gets a sanitized name; the mapping is
written next to the graph (``assets.extra/kfp_tabular_signature.json``) and into the artifact metadata.

Requests may name an input by its original column name or by its tensor name (:func:`resolve_keys`). Sanitizing can
make one column's tensor name equal another column's original name (``a b`` -> ``a_b`` next to a column ``a_b``),
so such a key takes the naming of the rest of the request, and a request that is ambiguous is refused.

Missing values: numeric inputs carry NaN; string inputs carry the empty string (AutoGluon itself fills missing
text with ``""`` before looking categories up, so the two are the same thing for text columns).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfp_tabular.errors import DataValidationError

SIGNATURE_KEY = "serving_default"
SIGNATURE_FILE = Path("assets.extra") / "kfp_tabular_signature.json"
FLOAT = "float64"
STRING = "string"
DATETIME = "datetime"
# Spellings accepted as true / false for boolean columns sent as strings.
TRUE_STRINGS = ("True", "true", "TRUE", "1")
FALSE_STRINGS = ("False", "false", "FALSE", "0")


@dataclass(frozen=True)
class InputColumn:
    """One signature input.

    Attributes:
        name: Sanitized tensor name used in the signature.
        column: Original column name in the table.
        dtype: ``float64`` (numeric, integer) or ``string`` (categorical, boolean, text).
        raw_type: AutoGluon raw type of the column (``float``, ``int``, ``object``, ``category``, ``bool``).
        used: False when AutoGluon dropped the column (constant, unused): accepted and ignored.
        logical_type: The type ingest_data decided (``numeric``, ``boolean``, ``categorical``, ``datetime``); ""
            for models trained on splits without that decision. A ``datetime`` input is a float64 of seconds since
            1970-01-01 UTC; the request helpers also accept ISO 8601 text and datetime objects for it.
    """

    name: str
    column: str
    dtype: str
    raw_type: str
    used: bool = True
    logical_type: str = ""

    def encode(self, values: list[Any]) -> Any:
        """A request's values for this input as the numpy array the signature takes."""
        import numpy as np

        if self.dtype != FLOAT:
            return np.array([to_string_value(v) for v in values], dtype=object)
        if self.logical_type == DATETIME:
            return np.array([to_epoch_seconds(v, self.column) for v in values], dtype=np.float64)
        return np.array([to_float_value(v, self.column) for v in values], dtype=np.float64)


@dataclass(frozen=True)
class SignatureInfo:
    """Everything a client needs to call the exported model, also written as JSON into the SavedModel."""

    inputs: tuple[InputColumn, ...]
    problem_type: str
    outputs: dict[str, str]
    class_labels: tuple[str, ...] = ()
    decision_threshold: float | None = None
    label: str = ""
    model_name: str = ""
    # The numeric graph's inputs with their vocabularies (``numeric_graph.numeric_description``); empty in files
    # written before it existed.
    numeric: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize to indented JSON."""
        data = asdict(self)
        data["inputs"] = [asdict(column) for column in self.inputs]
        return json.dumps(data, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> SignatureInfo:
        """Parse the JSON written by :meth:`to_json`."""
        data = json.loads(text)
        data["inputs"] = tuple(InputColumn(**column) for column in data["inputs"])
        data["class_labels"] = tuple(data.get("class_labels") or ())
        return cls(**data)

    @property
    def by_column(self) -> dict[str, InputColumn]:
        """Inputs keyed by original column name."""
        return {column.column: column for column in self.inputs}

    @property
    def by_name(self) -> dict[str, InputColumn]:
        """Inputs keyed by tensor name."""
        return {column.name: column for column in self.inputs}


def read_signature(savedmodel_dir: Path) -> SignatureInfo:
    """Read the signature JSON stored inside a SavedModel folder written by the export."""
    path = Path(savedmodel_dir) / SIGNATURE_FILE
    if not path.is_file():
        raise DataValidationError(
            f"{path} not found: {savedmodel_dir} is not a SavedModel written by export_savedmodel."
        )
    return SignatureInfo.from_json(path.read_text(encoding="utf-8"))


def _identifier(column: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", str(column)).strip("_") or "col"
    return base if base[0].isalpha() else f"f_{base}"


def sanitize_names(columns: list[str]) -> dict[str, str]:
    """Map column names to unique tensor names made of letters, digits and underscores, starting with a letter.

    A column whose name already is such a name keeps it, so a client that sends tensor ``a_b`` always means
    column ``a_b``; the others get their sanitized name, with ``_2``, ``_3``… when it is taken. Names are unique
    regardless of case.

    Args:
        columns: Original column names, in signature order.

    Returns:
        Original name -> tensor name.
    """
    used: set[str] = set()
    mapping: dict[str, str] = {}
    for column in columns:
        if _identifier(column) == column and column.lower() not in used:
            mapping[column] = column
            used.add(column.lower())
    for column in columns:
        if column in mapping:
            continue
        base = _identifier(column)
        name, suffix = base, 2
        while name.lower() in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.lower())
        mapping[column] = name
    return {column: mapping[column] for column in columns}


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, pd.NA-like values
    except (TypeError, ValueError):
        return False


def to_string_value(value: Any) -> str:
    """Render one cell for a string input: missing -> ``""``, everything else ``str(value)``."""
    return "" if _is_missing(value) else str(value)


def to_float_value(value: Any, column: str) -> float:
    """Render one cell for a numeric input: missing -> NaN; strings must parse as numbers."""
    if _is_missing(value) or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"Column {column!r} is numeric but got {value!r}: send a number, or null / NaN for a missing value."
        ) from None


def to_epoch_seconds(value: Any, column: str) -> float:
    """Render one cell of a datetime input: seconds since 1970-01-01 UTC (naive times count as UTC).

    Takes a number (already seconds), ISO 8601 text, or a ``datetime`` / ``pandas.Timestamp``; missing -> NaN.
    """
    import pandas as pd

    if _is_missing(value) or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"Column {column!r} is a date and time but got {value!r}: send ISO 8601 text such as "
            "'2024-05-01T12:30:00Z', seconds since 1970-01-01 UTC, or null for a missing value."
        ) from None
    if stamp is pd.NaT:
        return math.nan
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return (stamp - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


MIX_HINT = "Send either original column names or tensor names, not a mix."


def resolve_keys(keys: Any, signature: SignatureInfo, where: str = "The request") -> dict[Any, InputColumn]:
    """Map the keys of a request (JSON object keys, DataFrame columns) to the inputs they name.

    A key that is an original column name means that column; a key that is only a tensor name means that
    tensor's column. A key that is the original name of one column and the tensor name of another means the
    former, unless the other keys use tensor names only. Keys that name no input (the label, ids) are ignored.

    Args:
        keys: The request's keys.
        signature: Signature of the model.
        where: How to name the request in messages (``Instance 3``, ``"inputs"``).

    Returns:
        Key -> input, one key per input.

    Raises:
        DataValidationError: a key could mean two inputs because the request mixes both namings, one input is
            sent under two keys, or an input is missing.
    """
    keys = list(keys)
    by_column, by_name = signature.by_column, signature.by_name
    present = set(keys)
    as_label = by_name.get(signature.label)
    if as_label is not None and as_label.column in present:
        present.discard(signature.label)  # the label column of a test file, not a second copy of that input
    meaning: dict[Any, InputColumn] = {}
    two_way: list[Any] = []
    original_only: list[Any] = []
    tensor_only: list[Any] = []
    for key in keys:
        if key not in present:
            continue
        by_original, by_tensor = by_column.get(key), by_name.get(key)
        if by_original is not None and by_tensor is not None and by_original is not by_tensor:
            two_way.append(key)
        elif by_original is not None:
            meaning[key] = by_original
            if by_tensor is None:
                original_only.append(key)
        elif by_tensor is not None:
            meaning[key] = by_tensor
            tensor_only.append(key)
    if two_way and original_only and tensor_only:
        readings = "; ".join(
            f"{key!r} is column {by_column[key].column!r} by original name and the tensor name of column "
            f"{by_name[key].column!r}" for key in two_way
        )
        raise DataValidationError(
            f"{where} mixes original column names (e.g. {original_only[:3]}) and tensor names (e.g. "
            f"{tensor_only[:3]}), so key(s) {two_way} could mean two inputs: {readings}. {MIX_HINT}"
        )
    for key in two_way:
        meaning[key] = by_name[key] if tensor_only else by_column[key]

    sent: dict[str, list[Any]] = {}
    for key in keys:  # a list: a DataFrame may hold one column name twice
        if key in meaning:
            sent.setdefault(meaning[key].name, []).append(key)
    twice = {name: found for name, found in sent.items() if len(found) > 1}
    if twice:
        parts = "; ".join(
            f"column {by_name[name].column!r} (tensor {name!r}) as " + " and ".join(map(repr, found))
            for name, found in twice.items()
        )
        raise DataValidationError(f"{where} sends an input under two keys: {parts}. {MIX_HINT}")

    missing = [column for column in signature.inputs if column.name not in sent]
    if missing:
        message = (
            f"{where} is missing column(s) {[column.column for column in missing]} "
            f"(tensor names {[column.name for column in missing]})."
        )
        unknown = [key for key in keys if key not in meaning and isinstance(key, str)]
        near = [
            f"{key!r} for {wanted!r}" for key in unknown for column in missing
            for wanted in dict.fromkeys((column.column, column.name)) if key.lower() == str(wanted).lower()
        ]
        if near:
            message += f" Names are case-sensitive: got {', '.join(near)}."
        raise DataValidationError(message)
    return {key: meaning[key] for key in keys if key in meaning}


def frame_to_inputs(frame: Any, signature: SignatureInfo) -> dict[str, Any]:
    """Convert a pandas DataFrame into the signature's input arrays (sanitized name -> numpy array).

    Columns are named as in a request (:func:`resolve_keys`): by original column names or by tensor names.

    Raises:
        DataValidationError: a signature column is missing or ambiguous, or a numeric cell is not a number.
    """
    arrays = {}
    for key, column in resolve_keys(frame.columns, signature, "The input table").items():
        arrays[column.name] = column.encode(frame[key].tolist())
    return {column.name: arrays[column.name] for column in signature.inputs}
