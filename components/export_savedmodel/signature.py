"""The ``serving_default`` signature of an exported model: input names, dtypes, outputs and class names.

Clients send one tensor per original feature column. Column names are free text in a table, but TF Serving,
TensorFlow and ONNX want identifier-like tensor names, so each column gets a sanitized name; the mapping is
written next to the graph (``assets.extra/kfp_tabular_signature.json``) and into the artifact metadata.

Missing values: numeric inputs carry NaN; string inputs carry the empty string (AutoGluon itself fills missing
text with ``""`` before looking categories up, so the two are the same thing for text columns).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfp_tabular.errors import DataValidationError

SIGNATURE_KEY = "serving_default"
SIGNATURE_FILE = Path("assets.extra") / "kfp_tabular_signature.json"
FLOAT = "float64"
STRING = "string"
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
    """

    name: str
    column: str
    dtype: str
    raw_type: str
    used: bool = True


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


def read_signature(savedmodel_dir: Path) -> SignatureInfo:
    """Read the signature JSON stored inside a SavedModel folder written by the export."""
    path = Path(savedmodel_dir) / SIGNATURE_FILE
    if not path.is_file():
        raise DataValidationError(
            f"{path} not found: {savedmodel_dir} is not a SavedModel written by export_savedmodel."
        )
    return SignatureInfo.from_json(path.read_text(encoding="utf-8"))


def sanitize_names(columns: list[str]) -> dict[str, str]:
    """Map column names to unique tensor names made of letters, digits and underscores, starting with a letter.

    Args:
        columns: Original column names, in signature order.

    Returns:
        Original name -> sanitized name; collisions get ``_2``, ``_3``... suffixes.
    """
    used: set[str] = set()
    mapping: dict[str, str] = {}
    for column in columns:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(column)).strip("_") or "col"
        if not base[0].isalpha():
            base = f"f_{base}"
        name, suffix = base, 2
        while name.lower() in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.lower())
        mapping[column] = name
    return mapping


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


def frame_to_inputs(frame: Any, signature: SignatureInfo) -> dict[str, Any]:
    """Convert a pandas DataFrame into the signature's input arrays (sanitized name -> numpy array).

    Raises:
        DataValidationError: a signature column is missing from the frame, or a numeric cell is not a number.
    """
    import numpy as np

    missing = [column.column for column in signature.inputs if column.column not in frame.columns]
    if missing:
        raise DataValidationError(
            f"Input is missing column(s) {missing}: the model needs every column of "
            f"{[column.column for column in signature.inputs]}."
        )
    arrays = {}
    for column in signature.inputs:
        values = frame[column.column].tolist()
        if column.dtype == FLOAT:
            arrays[column.name] = np.array([to_float_value(v, column.column) for v in values], dtype=np.float64)
        else:
            arrays[column.name] = np.array([to_string_value(v) for v in values], dtype=object)
    return arrays
