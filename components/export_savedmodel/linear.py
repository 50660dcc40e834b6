"""AutoGluon ``LinearModel`` children (scikit-learn logistic / ridge / lasso behind a ColumnTransformer).

What the child does at predict time (autogluon ``lr_model.py``, scikit-learn 1.9):

* ``child._pipeline`` (a fitted ``ColumnTransformer``) concatenates, in transformer order:
  ``cats`` - one-hot of the category codes (AutoGluon ``OneHotEncoderFeatureGenerator``, read here by probing);
  ``cont`` - ``SimpleImputer`` (NaN -> fitted median/mean) then ``StandardScaler`` ``(x - mean) / scale``;
  ``bool`` - ``StandardScaler`` on the 0/1 columns;
  ``skew`` - ``SimpleImputer`` then ``QuantileTransformer(output_distribution="normal")``: the average of two
  ``np.interp`` passes over the fitted quantiles (forward and mirrored), values within 1e-7 of the ends pinned
  to 0 / 1, then the normal quantile function, clipped;
* the decision is ``X @ coef.T + intercept``; binary: ``expit``; multiclass: softmax (max subtracted);
  regression: the decision itself.

All of it is float64 in scikit-learn and here (float32 in the numeric graph, ``numeric_graph``); the remaining differences are summation order (~1e-16), far
below the float32 rounding AutoGluon applies to every model output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.encoders import group_lookups, lookup, probe_one_hot
from kfp_tabular.components.export_savedmodel.numerics import exact_divide, normal_quantile, sequential_sum
from kfp_tabular.errors import UnsupportedModelError

# scikit-learn's QuantileTransformer constant (sklearn/preprocessing/_data.py).
BOUNDS_THRESHOLD = 1e-7


@dataclass
class LinearChild:
    """One fitted linear model: ``output(features)`` is its ``predict_proba`` as TensorFlow ops."""

    name: str
    features: tuple[str, ...]
    output: Any


def _scaler(step: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    mean = getattr(step, "mean_", None) if getattr(step, "with_mean", True) else None
    scale = getattr(step, "scale_", None) if getattr(step, "with_std", True) else None
    return mean, scale


def _imputer_statistics(step: Any, name: str) -> np.ndarray:
    statistics = np.asarray(step.statistics_, dtype=np.float64)
    if np.isnan(statistics).any() or getattr(step, "add_indicator", False):
        raise UnsupportedModelError(f"{name}: imputer with empty columns or missing indicators is not exported.")
    return statistics


def _interp(x: Any, xp: np.ndarray, fp: np.ndarray) -> Any:
    """``np.interp`` column by column: x [rows, C], knots xp / fp [Q, C], each xp column increasing.

    Same arithmetic as NumPy's C loop: with j the last knot ``xp[j] <= x``, ``slope[j] * (x - xp[j]) + fp[j]``
    (``fp[j]`` when x hits a knot exactly), ``fp[0]`` left of the knots, ``fp[-1]`` from the last knot on.
    """
    import tensorflow as tf

    knots, columns = xp.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    # Duplicate knots give inf / NaN slopes that NumPy never selects (j is the last duplicate); zero them.
    slopes = np.nan_to_num(np.vstack([slopes, np.zeros((1, columns))]), nan=0.0, posinf=0.0, neginf=0.0)
    dtype = x.dtype  # float64, or float32 in the numeric graph
    below = tf.less_equal(tf.constant(xp[None, :, :], dtype), tf.expand_dims(x, 1))  # [rows, Q, C]
    count = tf.reduce_sum(tf.cast(below, tf.int32), axis=1)
    j = tf.clip_by_value(count - 1, 0, knots - 1)
    flat = j * columns + tf.range(columns)[None, :]
    x_j = tf.gather(tf.constant(xp.reshape(-1), dtype), flat)
    f_j = tf.gather(tf.constant(fp.reshape(-1), dtype), flat)
    inner = tf.gather(tf.constant(slopes.reshape(-1), dtype), flat) * (x - x_j) + f_j
    inner = tf.where(tf.equal(x_j, x), f_j, inner)
    result = tf.where(count >= knots, tf.broadcast_to(tf.constant(fp[-1], dtype), tf.shape(inner)), inner)
    return tf.where(count <= 0, tf.broadcast_to(tf.constant(fp[0], dtype), tf.shape(inner)), result)


def _quantile_normal(x: Any, quantiles: np.ndarray, references: np.ndarray) -> Any:
    """``QuantileTransformer._transform_col`` forward, ``output_distribution="normal"``, for every column at once."""
    import tensorflow as tf

    references = np.repeat(references[:, None], quantiles.shape[1], axis=1)
    lower = tf.less(x - BOUNDS_THRESHOLD, tf.constant(quantiles[0], x.dtype))
    upper = tf.greater(x + BOUNDS_THRESHOLD, tf.constant(quantiles[-1], x.dtype))
    value = 0.5 * (_interp(x, quantiles, references) - _interp(-x, -quantiles[::-1], -references[::-1]))
    value = tf.where(upper, tf.ones_like(value), value)
    value = tf.where(lower, tf.zeros_like(value), value)
    clip_min = float(_ndtri(BOUNDS_THRESHOLD - np.spacing(1)))
    clip_max = float(_ndtri(1 - (BOUNDS_THRESHOLD - np.spacing(1))))
    return tf.clip_by_value(normal_quantile(value), clip_min, clip_max)


def _ndtri(q: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(q))


def _blocks(pipeline: Any, name: str, template: Any, category_counts: dict[str, int]) -> tuple[list[Any], list[int]]:
    """Block functions (features -> float64 [rows, width]) and, per design column, its pipeline output index."""
    blocks: list[Any] = []
    positions: list[int] = []
    offset = 0
    for block, transformer, columns in pipeline.transformers_:
        if block == "remainder" or isinstance(transformer, str) or not len(columns):
            continue
        steps = dict(transformer.steps)
        if block == "cats":
            probe = probe_one_hot(transformer.transform, template, {c: category_counts[c] for c in columns})
            for group in group_lookups(probe):
                blocks.append(lambda f, group=group: lookup(f, group))
                positions += [offset + p for p in group.positions]
            offset += len(probe)
        elif block in ("cont", "bool", "skew"):
            unknown = set(steps) - {"imputer", "scaler", "quantile"}
            if unknown:
                raise UnsupportedModelError(f"{name}: linear-model step(s) {sorted(unknown)} are not exported.")
            statistics = _imputer_statistics(steps["imputer"], name) if "imputer" in steps else None
            mean, scale = _scaler(steps["scaler"]) if "scaler" in steps else (None, None)
            quantile = steps.get("quantile")
            if quantile is not None and quantile.output_distribution != "normal":
                raise UnsupportedModelError(f"{name}: QuantileTransformer({quantile.output_distribution}) not exported.")
            blocks.append(lambda f, c=list(columns), s=statistics, m=mean, sc=scale, q=quantile:
                          _numeric_block(f, c, s, m, sc, q))
            positions += [offset + i for i in range(len(columns))]
            offset += len(columns)
        else:
            raise UnsupportedModelError(f"{name}: linear-model block {block!r} (e.g. text) is not exported.")
    return blocks, positions


def _numeric_block(features: dict[str, Any], columns: list[str], statistics: Any, mean: Any, scale: Any,
                   quantile: Any) -> Any:
    """Imputer, scaler and quantile transform of a group of numeric columns: float64 [rows, len(columns)]."""
    import tensorflow as tf

    value = tf.stack([features[c] for c in columns], axis=1)
    if statistics is not None:
        value = tf.where(tf.math.is_nan(value), tf.constant(statistics[None, :], value.dtype), value)
    if mean is not None:
        value = value - tf.constant(np.asarray(mean, dtype=np.float64)[None, :], value.dtype)
    if scale is not None:
        value = exact_divide(value, tf.constant(np.asarray(scale, dtype=np.float64)[None, :], value.dtype))
    if quantile is not None:
        value = _quantile_normal(value, np.asarray(quantile.quantiles_, dtype=np.float64),
                                 np.asarray(quantile.references_, dtype=np.float64))
    return value


def compile_child(child: Any, name: str, template: Any, category_counts: dict[str, int]) -> LinearChild:
    """Turn one fitted AutoGluon ``LinearModel`` into a :class:`LinearChild`."""
    model = child.model
    blocks, positions = _blocks(child._pipeline, name, template, category_counts)
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    if coef.shape[1] != len(positions):
        raise UnsupportedModelError(f"{name}: {len(positions)} columns, coefficients expect {coef.shape[1]}.")
    coef = coef[:, positions]  # design columns come grouped by input column; reorder the weights to match
    problem_type = child.problem_type
    if problem_type != "regression" and not np.array_equal(np.asarray(model.classes_), np.arange(child.num_classes)):
        raise UnsupportedModelError(f"{name}: classes {list(model.classes_)} do not cover every class.")

    def output(features: dict[str, Any]) -> Any:
        import tensorflow as tf

        parts = [block(features) for block in blocks]
        design = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
        decision = tf.matmul(design, tf.constant(coef.T, design.dtype)) + tf.constant(intercept, design.dtype)
        if problem_type == "binary":
            return tf.sigmoid(decision[:, 0])
        if problem_type == "multiclass":
            shifted = tf.exp(decision - tf.reduce_max(decision, axis=1, keepdims=True))
            return exact_divide(shifted, tf.expand_dims(sequential_sum(shifted, axis=1), 1))
        return decision[:, 0]

    features = tuple(
        c for block, transformer, columns in child._pipeline.transformers_
        if block != "remainder" and not isinstance(transformer, str) for c in columns
    )
    return LinearChild(name=name, features=features, output=output)
