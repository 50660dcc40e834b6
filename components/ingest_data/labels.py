"""The label column: missing values, problem type (AutoGluon's rules for ``auto``), classes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_tabular.components.ingest_data.column_types import decimal_to_float64
from kfp_tabular.errors import DataValidationError

PROBLEM_TYPES = ("auto", "binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")

# AutoGluon's thresholds (autogluon.core.constants): an integer or integral float label with few distinct values
# relative to the rows is a class label, otherwise a quantity.
MULTICLASS_UPPER_LIMIT = 1000
LARGE_DATA_THRESHOLD = 1000
REGRESS_THRESHOLD_LARGE_DATA = 0.05
REGRESS_THRESHOLD_SMALL_DATA = 0.1


@dataclass(frozen=True)
class LabelSummary:
    """What the split and the profile need to know about the label."""

    name: str
    problem_type: str
    reason: str
    valid: np.ndarray  # bool per input row: False where the label is missing (the row is dropped)
    codes: np.ndarray | None  # classification: class index per input row (-1 where missing)
    classes: tuple[tuple[Any, int], ...]  # classification: (value, rows), most frequent first
    stats: dict[str, float]  # regression: min, max, mean, std

    @property
    def dropped(self) -> int:
        """Rows dropped because their label is missing."""
        return int(len(self.valid) - self.valid.sum())


def _is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def analyse_label(label: pa.Array, name: str, requested: str, display: str) -> LabelSummary:
    """Validate the label column and resolve the problem type; raises :class:`DataValidationError`."""
    data_type = label.type
    if not (_is_numeric(data_type) or pa.types.is_string(data_type) or pa.types.is_boolean(data_type)):
        raise DataValidationError(
            f"{display}: label column `{name}` has type {data_type}; a label must hold numbers, text or booleans"
        )
    if pa.types.is_decimal(data_type):
        label, data_type = decimal_to_float64(label), pa.float64()
    if pa.types.is_float16(data_type):  # stored as float32 (column_types); Arrow cannot hash float16
        label, data_type = pc.cast(label, pa.float32()), pa.float32()
    valid = label.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(data_type):
        values = label.to_numpy(zero_copy_only=False)
        valid &= ~np.isnan(values)
        infinite = np.flatnonzero(valid & np.isinf(values))
        if len(infinite):
            raise DataValidationError(
                f"{display}: label column `{name}` has {len(infinite)} infinite value(s) (first in data row "
                f"{infinite[0] + 1}); replace them with real values or remove those rows"
            )
    rows, labelled = len(label), int(valid.sum())
    if labelled == 0:
        raise DataValidationError(
            f"{display}: label column `{name}` is missing in all {rows} rows; choose another label column or fill it"
        )
    # One hash pass: the codes split the rows by class, their counts give the classes and the distinct values.
    encoded = pc.dictionary_encode(label)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes[~valid] = -1  # NaN labels are valid to Arrow but missing to us
    tallies = np.bincount(codes[valid], minlength=len(encoded.dictionary))
    seen = np.flatnonzero(tallies)  # dictionary entries with a labelled row (not a NaN's)
    values = encoded.dictionary.take(pa.array(seen))  # the distinct labels, in order of appearance
    distinct = len(values)
    if distinct < 2:
        raise DataValidationError(
            f"{display}: label column `{name}` has a single value ({values[0].as_py()!r}) in all {labelled} rows "
            "that have a label: there is nothing to learn. A classifier needs at least 2 classes; check the label "
            "column"
        )

    problem_type, reason = _resolve(requested, values, data_type, distinct, labelled, name, display)
    if problem_type == "regression":
        numbers = pc.cast(label, pa.float64()).to_numpy(zero_copy_only=False)[valid]
        stats = {
            "min": float(numbers.min()),
            "max": float(numbers.max()),
            "mean": float(numbers.mean()),
            "std": float(numbers.std(ddof=1)) if len(numbers) > 1 else 0.0,
        }
        return LabelSummary(name, problem_type, reason, valid, None, (), stats)

    counts = tallies[seen]
    listed = values.to_pylist()
    classes = tuple((listed[i], int(counts[i])) for i in np.argsort(-counts, kind="stable"))
    return LabelSummary(name, problem_type, reason, valid, codes, classes, {})


def _resolve(
    requested: str,
    values: pa.Array,
    data_type: pa.DataType,
    distinct: int,
    labelled: int,
    name: str,
    display: str,
) -> tuple[str, str]:
    if requested == "regression":
        if not _is_numeric(data_type):
            raise DataValidationError(
                f"{display}: problem_type='regression' needs a numeric label, but `{name}` holds {data_type} "
                f"values ({distinct} distinct); use problem_type='auto' or 'multiclass', or choose a numeric label"
            )
        return "regression", "requested"
    if requested == "binary":
        if distinct != 2:
            raise DataValidationError(
                f"{display}: problem_type='binary' needs exactly 2 classes, but label `{name}` has {distinct}; "
                "use problem_type='multiclass' (or 'auto')"
            )
        return "binary", "requested"
    if requested == "multiclass":
        return "multiclass", "requested"

    if distinct == 2:
        return "binary", "two distinct label values"
    if pa.types.is_string(data_type) or pa.types.is_boolean(data_type):
        return "multiclass", f"text label with {distinct} distinct values"
    threshold = (
        REGRESS_THRESHOLD_LARGE_DATA if labelled > LARGE_DATA_THRESHOLD else REGRESS_THRESHOLD_SMALL_DATA
    )
    few = distinct / labelled <= threshold and distinct <= MULTICLASS_UPPER_LIMIT
    if pa.types.is_integer(data_type):
        if few:
            return "multiclass", f"integer label with few distinct values ({distinct} of {labelled} rows)"
        return "regression", f"integer label with many distinct values ({distinct} of {labelled} rows)"
    if few:
        numbers = values.to_numpy(zero_copy_only=False)
        if np.array_equal(numbers, np.trunc(numbers)):
            return (
                "multiclass",
                f"float label with few distinct, whole values ({distinct} of {labelled} rows)",
            )
        return "regression", "float label with fractional values"
    return "regression", f"float label with many distinct values ({distinct} of {labelled} rows)"


def has_whole_classes(summary: LabelSummary) -> bool:
    """Whether a classification label's classes are all whole numbers (``0.0``, ``1.0``…): stored as int64."""
    if summary.problem_type not in CLASSIFICATION:
        return False
    return all(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        and float(value).is_integer() and abs(value) < 2**63
        for value, _ in summary.classes
    )


def describe_label(summary: LabelSummary, max_classes: int = 10) -> str:
    """``multiclass, 3 classes: Adelie 152, Gentoo 124, Chinstrap 68`` or ``regression, 2700 … 6300, mean 4202``."""
    if summary.problem_type in CLASSIFICATION:
        shown = ", ".join(f"{_fmt(value)} {count}" for value, count in summary.classes[:max_classes])
        more = f", … {len(summary.classes) - max_classes} more" if len(summary.classes) > max_classes else ""
        return f"{summary.problem_type}, {len(summary.classes)} classes: {shown}{more}"
    s = summary.stats
    return f"regression, {_fmt(s['min'])} … {_fmt(s['max'])}, mean {_fmt(s['mean'])}, std {_fmt(s['std'])}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)
