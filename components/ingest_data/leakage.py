"""Warnings about columns that will mislead a model: copies of the label (target leakage) and row IDs.

A column that reproduces the label scores perfectly in evaluation, gets blessed, and is useless (or absent) when
the model serves real requests. A column with a different value in every row identifies rows rather than
describing them. Both are reported at ingest, with the fix (``drop_columns``), before anyone waits for training.

Label reproduction is judged on the first rows of the table (up to ``SAMPLE_ROWS``): for a classification, the
share of rows whose class a majority vote per feature value gets right; for a regression, the correlation of a
numeric feature with the label.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_tabular.components._shared.table_schema import TableSchema
from kfp_tabular.components.ingest_data.column_types import drop_columns_argument
from kfp_tabular.components.ingest_data.labels import LabelSummary
from kfp_tabular.components.ingest_data.profiling import TableProfile

SAMPLE_ROWS = 100_000
HEAD_ROWS = 2_000  # rows whose distinct values are counted before the whole sample is encoded
REPRODUCES = 0.99  # share of rows (classification) or |correlation| (regression) that counts as a copy
MIN_ROWS = 20


def _normalized(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def find_warnings(sample: pa.Table, schema: TableSchema, label: LabelSummary, profile: TableProfile) -> list[str]:
    """Warnings for the profile and the step log, one sentence each (with the fix)."""
    warnings: list[str] = []
    for name in sample.column_names:
        fix = _fix(name)
        if name == label.name:
            continue
        if _normalized(name) == _normalized(label.name):
            warnings.append(
                f"`{name}` has the label's name `{label.name}` up to case, spaces and punctuation: it may be a copy "
                f"of the label; {fix}"
            )
            continue
        share = _reproduction(sample.column(name), label, sample)
        if share is not None:
            warnings.append(
                f"`{name}` reproduces the label `{label.name}`: {share} on its own. A model that "
                f"reads it scores well in evaluation and fails in serving if the value is known only after the "
                f"outcome (target leakage); {fix}"
            )
    warnings += _id_like(profile, label.name)
    return warnings


def _fix(name: str) -> str:
    return f"if so, leave it out with drop_columns='{drop_columns_argument([name])}' (kfp-tabular run --drop-columns)"


def _reproduction(column: pa.ChunkedArray, label: LabelSummary, sample: pa.Table) -> str | None:
    """How well ``column`` alone gives the label, in words, when it does so for at least ``REPRODUCES``."""
    if label.codes is None:
        t = column.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            return None
        x = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        y = pc.cast(sample.column(label.name), pa.float64()).to_numpy(zero_copy_only=False)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() < MIN_ROWS or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
            return None
        r = float(np.corrcoef(x[keep], y[keep])[0, 1])
        return f"correlation {r:.4f}" if abs(r) >= REPRODUCES else None
    y = label.codes[: len(column)]
    keep = y >= 0
    rows = int(keep.sum())
    if rows < MIN_ROWS:
        return None
    most = max(2 * len(label.classes), 20)
    # The count of distinct values only grows with rows: a head that already has too many settles it cheaply.
    if pc.count_distinct(column.slice(0, HEAD_ROWS), mode="all").as_py() > most:
        return None  # too many values: a majority vote per value would fit any label
    encoded = pc.dictionary_encode(column).combine_chunks()
    values = len(encoded.dictionary) + 1  # codes 0..n-1, and n for a missing value
    x = pc.fill_null(encoded.indices, values - 1).to_numpy(zero_copy_only=False).astype(np.int64)[keep]
    distinct = int(np.count_nonzero(np.bincount(x, minlength=values)))
    if distinct > most or 2 * distinct > rows:
        return None
    classes = int(y.max()) + 1
    joint = np.bincount(x * classes + y[keep], minlength=values * classes).reshape(values, classes)
    share = joint.max(axis=1).sum() / rows
    return f"its value gives the class of {100 * share:.1f}% of rows" if share >= REPRODUCES else None


def _id_like(profile: TableProfile, label: str) -> list[str]:
    out = []
    for column in profile.columns:
        if column.name == label or profile.rows < MIN_ROWS or column.missing:
            continue
        if column.type in ("string", "int64", "int32", "uint64", "uint32") and column.distinct == profile.rows:
            out.append(
                f"`{column.name}` has a different value in each of the {profile.rows} rows: it looks like an ID, "
                f"which names rows but predicts nothing about new ones; {_fix(column.name)}"
            )
    return out

