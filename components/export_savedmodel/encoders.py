"""Exact lookup tables for fitted one-hot encoders, read by probing the encoder itself.

AutoGluon's models one-hot encode category codes with their own fitted encoders (XGBoost:
``OneHotMergeRaresHandleUnknownEncoder`` with rare levels merged; the linear model: ``OneHotEncoderFeatureGenerator``).
Their bookkeeping (merged rare levels, a NaN level seen or not at fit, unknown -> all zeros) is easy to get
subtly wrong when re-implemented. A one-hot output column depends on one input column only, and a category
column has few possible values (missing, code 0..K-1), so the encoder is simply asked: each column is set to
every possible value in turn, the others held missing, and every output column is read as a table indexed
by (code + 1), index 0 being missing. The parity gate then checks the whole model end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_tabular.errors import UnsupportedModelError


@dataclass(frozen=True)
class LookupColumn:
    """One encoder output column: ``table[code + 1]`` for category ``feature`` (index 0 = missing).

    ``feature`` is None for a column that no input changes; its value is ``table[0]``.
    """

    feature: str | None
    table: tuple[float, ...]


def _dense(matrix: Any) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float64)


def probe_one_hot(transform: Any, template: Any, categories: dict[str, int]) -> list[LookupColumn]:
    """Read a fitted per-column encoder into lookup tables.

    Args:
        transform: Function of a DataFrame (the encoder's input columns) returning a matrix.
        template: One row of AutoGluon-transformed features holding the encoder's input columns with their
            fitted dtypes (category columns keep their categories).
        categories: Input category columns -> number of categories.

    Raises:
        UnsupportedModelError: an output column depends on more than one input column (not a one-hot encoder).
    """
    import pandas as pd

    columns = list(categories)
    base = template[columns].iloc[[0]].copy()
    for column in columns:
        base[column] = pd.Categorical([np.nan], categories=template[column].cat.categories)
    baseline = _dense(transform(base))[0]
    owner: dict[int, str] = {}
    tables: dict[int, np.ndarray] = {}
    for column in columns:
        count = categories[column]
        probe = pd.concat([base] * (count + 1), ignore_index=True)
        values = [np.nan, *list(template[column].cat.categories[:count])]
        probe[column] = pd.Categorical(values, categories=template[column].cat.categories)
        out = _dense(transform(probe))
        for index in np.flatnonzero(np.any(out != out[0], axis=0)):
            if index in owner:
                raise UnsupportedModelError(
                    f"Encoder output column {index} depends on both {owner[index]!r} and {column!r}: "
                    "not a one-hot encoding."
                )
            owner[int(index)] = column
            tables[int(index)] = out[:, index]
    return [
        LookupColumn(owner[d], tuple(tables[d].tolist())) if d in owner else LookupColumn(None, (float(baseline[d]),))
        for d in range(baseline.shape[0])
    ]


@dataclass(frozen=True)
class LookupBlock:
    """Encoder output columns driven by one input column, evaluated with a single gather.

    ``matrix[code + 1]`` is the row of output values (index 0: missing); ``positions`` are the columns' indices
    in the encoder output. ``feature`` None holds the columns that no input changes (``matrix`` has one row).
    """

    feature: str | None
    positions: tuple[int, ...]
    matrix: np.ndarray


def group_lookups(columns: list[LookupColumn]) -> list[LookupBlock]:
    """Group lookup columns by the input column that drives them (order of first appearance)."""
    grouped: dict[str | None, list[int]] = {}
    for index, column in enumerate(columns):
        grouped.setdefault(column.feature, []).append(index)
    return [
        LookupBlock(feature, tuple(indices), np.stack([np.asarray(columns[i].table) for i in indices], axis=1))
        for feature, indices in grouped.items()
    ]


def lookup(features: dict[str, Any], block: LookupBlock) -> Any:
    """Evaluate a lookup block on AutoGluon feature tensors: [rows, len(positions)] in the features' dtype."""
    import tensorflow as tf

    any_feature = next(iter(features.values()))
    if block.feature is None:
        return tf.tile(tf.constant(block.matrix[:1], any_feature.dtype), tf.stack([tf.size(any_feature), 1]))
    codes = features[block.feature]
    index = tf.where(tf.math.is_nan(codes), tf.zeros_like(codes), codes + 1.0)
    return tf.gather(tf.constant(block.matrix, codes.dtype), tf.cast(index, tf.int32))
