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

All of it is float64 in scikit-learn and in the SavedModel; the remaining differences are summation order
(~1e-16), far below the float32 rounding AutoGluon applies to every model output. The numeric graph
(``numeric_graph``, float32 only) takes :func:`_float32_block`: same values within float32 precision.
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
    return tf.clip_by_value(normal_quantile(value), *_normal_clip())


def _normal_clip() -> tuple[float, float]:
    """scikit-learn's clip of the normal output: the quantiles of ``1e-7 - eps`` and ``1 - (1e-7 - eps)``."""
    from scipy.special import ndtri

    bound = BOUNDS_THRESHOLD - np.spacing(1)
    return float(ndtri(bound)), float(ndtri(1 - bound))


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
    """Imputer, scaler and quantile transform of a group of numeric columns: [rows, len(columns)].

    float64 inputs (the SavedModel) follow scikit-learn's arithmetic step by step; float32 inputs (the numeric
    graph) take :func:`_float32_block`, which makes every decision on the float32 input itself.
    """
    import tensorflow as tf

    value = tf.stack([features[c] for c in columns], axis=1)
    if value.dtype == tf.float32:
        return _float32_block(value, statistics, mean, scale, quantile)
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


class _Scaling:
    """The scaler's float64 map ``g(x) = (x - mean) / scale`` (identity without a scaler), as scikit-learn computes it."""

    def __init__(self, mean: Any, scale: Any, columns: int) -> None:
        self.mean = np.zeros(columns) if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = np.ones(columns) if scale is None else np.asarray(scale, dtype=np.float64)
        self.identity = mean is None and scale is None

    def __call__(self, x: np.ndarray, column: Any = slice(None)) -> np.ndarray:
        return (x.astype(np.float64) - self.mean[column]) / self.scale[column]


def _smallest_float32(predicate: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Elementwise the smallest float32 ``x`` with ``predicate(x)``, for a predicate false then true along x.

    A bisection over the float32 values in order (their bit patterns, made monotone): 33 steps cover them all.
    +inf where no finite float32 qualifies.
    """
    def as_float(key: np.ndarray) -> np.ndarray:
        bits = np.where(key < 0, np.int64(-(2**31)) - key, key).astype(np.int64)
        return bits.astype(np.uint32).view(np.float32)

    low = np.full(shape, -(2**31 - 1) + 2**23 - 1, dtype=np.int64)  # key of -inf: predicate taken false there
    high = np.full(shape, 0x7F800000, dtype=np.int64)  # key of +inf: true there
    with np.errstate(over="ignore", invalid="ignore"):
        while (high - low > 1).any():
            middle = (low + high) // 2
            true = predicate(as_float(middle))
            high = np.where(true, middle, high)
            low = np.where(true, low, middle)
    return as_float(high)


def _split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``values`` as a float32 pair ``hi + lo`` (error ~2^-48 relative)."""
    hi = values.astype(np.float32)
    return hi, (values - hi.astype(np.float64)).astype(np.float32)


def _float32_block(value: Any, statistics: Any, mean: Any, scale: Any, quantile: Any) -> Any:
    """The numeric graph's transform of float32 columns ``value`` [rows, C], float32 ops only.

    * missing: the imputed value's transform, computed once in float64 (an imputed median often sits exactly on
      a tied quantile knot, where the transform jumps: float32 arithmetic would land on either side);
    * scaler: ``(x - mean) / scale`` with the mean as a float32 pair, so a large mean costs no precision;
    * quantile: :func:`_float32_quantile`.
    """
    import tensorflow as tf

    scaling = _Scaling(mean, scale, value.shape[1])
    if quantile is not None:
        result = _float32_quantile(value, scaling, quantile)
    else:
        hi, lo = _split(scaling.mean)
        result = exact_divide((value - tf.constant(hi)) - tf.constant(lo), tf.constant(scaling.scale, tf.float32))
    if statistics is None:
        return result
    fill = scaling(np.asarray(statistics, dtype=np.float64))
    if quantile is not None:
        fill = quantile.transform(fill[None, :])[0]
    return tf.where(tf.math.is_nan(value), tf.constant(fill[None, :], tf.float32), result)


def _float32_quantile(value: Any, scaling: _Scaling, quantile: Any) -> Any:
    """``QuantileTransformer(output_distribution="normal")`` of ``g(x)`` for float32 ``x``, decided in float64.

    scikit-learn averages a forward and a mirrored ``np.interp``. Between two distinct knot values ``u_k < u_k+1``
    both are the line from ``(u_k, r[last k])`` to ``(u_k+1, r[first k+1])``; exactly at a knot value the average
    is the midpoint of its tied references. Each knot becomes ``T_k``, the smallest float32 with ``g(T_k) >= u_k``
    (found in float64), so the segment of every float32 input is exactly scikit-learn's; the offsets
    ``g(x) - u_k`` and ``u_k+1 - g(x)`` come from ``x - T_k`` and ``T_k+1 - x`` and the float64 remainders
    ``g(T_k) - u_k``. The pinned ends (``g(x) -+ 1e-7`` beyond the end knots) become float32 thresholds the same
    way. The level ``p`` and its complement ``1 - p`` are interpolated separately, and the normal quantile is
    taken on the smaller, so the tails keep float32's relative precision.
    """
    import tensorflow as tf

    quantiles = np.asarray(quantile.quantiles_, dtype=np.float64)
    references = np.asarray(quantile.references_, dtype=np.float64)
    columns = quantiles.shape[1]
    tables = [_knot_table(quantiles[:, c], references, scaling, c) for c in range(columns)]
    knots = max(len(table["threshold"]) for table in tables)
    padding = {"threshold": np.inf, "exact": False}

    def stacked(key: str, dtype: Any) -> Any:
        rows = [np.concatenate([t[key], np.full(knots - len(t[key]), padding.get(key, 0.0))]) for t in tables]
        return np.stack(rows, axis=1).astype(dtype)  # [knots, C]

    threshold = stacked("threshold", np.float32)
    count = tf.reduce_sum(tf.cast(tf.less_equal(tf.constant(threshold[None]), tf.expand_dims(value, 1)), tf.int32), 1)
    flat = tf.clip_by_value(count - 1, 0, knots - 1) * columns + tf.range(columns)[None, :]

    def at(key: str, dtype: Any = np.float32) -> Any:
        return tf.gather(tf.constant(stacked(key, dtype).reshape(-1)), flat)

    def distance(start: Any, end: Any) -> Any:  # (end - start) / scale, float32
        return end - start if scaling.identity else exact_divide(end - start, tf.constant(scaling.scale, tf.float32))

    t_k = at("threshold")
    slope = at("slope")
    hit = tf.logical_and(tf.equal(value, t_k), at("exact", bool))
    # g(x) - u_k and u_k+1 - g(x): p grows from the segment's left end, 1 - p from its right end (no cancellation)
    p = at("right") + (distance(t_k, value) + at("remainder")) * slope
    q = at("next_left_complement") + (distance(value, at("next_threshold")) - at("next_remainder")) * slope
    p = tf.where(hit, at("mid"), p)
    q = tf.where(hit, at("mid_complement"), q)
    upper = tf.greater_equal(value, tf.constant(np.stack([t["upper"] for t in tables]), tf.float32))
    lower = tf.less(value, tf.constant(np.stack([t["lower"] for t in tables]), tf.float32))
    p = tf.where(lower, tf.zeros_like(p), tf.where(upper, tf.ones_like(p), p))
    q = tf.where(lower, tf.ones_like(q), tf.where(upper, tf.zeros_like(q), q))
    # The quantile of the smaller of p, 1 - p, floored below the clip (1e-8 -> -5.6): no infinities in the graph
    # (tf2onnx may rewrite a float select as arithmetic, where inf * 0 is NaN).
    tail = normal_quantile(tf.maximum(tf.minimum(p, q), tf.constant(1e-8, tf.float32)))
    z = tail * tf.where(p <= q, tf.ones_like(p), -tf.ones_like(p))
    return tf.clip_by_value(z, *_normal_clip())


def _knot_table(quantiles: np.ndarray, references: np.ndarray, scaling: _Scaling, column: int) -> dict[str, Any]:
    """One column's knot values as float32 input thresholds, with the float64 constants of each segment."""
    values, first = np.unique(quantiles, return_index=True)
    last = len(quantiles) - 1 - np.unique(quantiles[::-1], return_index=True)[1]
    left, right = references[first], references[last]

    def g(x: np.ndarray) -> np.ndarray:
        return scaling(x, column)

    threshold = _smallest_float32(lambda x: g(x) >= values, values.shape)
    at_threshold = g(threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.append((left[1:] - right[:-1]) / (values[1:] - values[:-1]), 0.0)
    mid = 0.5 * (left + right)
    start, end = quantiles[0], quantiles[-1]
    remainder = np.where(np.isfinite(at_threshold), at_threshold - values, 0.0)

    def shifted(x: np.ndarray) -> np.ndarray:  # the next knot's entry (the last knot's own: pinned there anyway)
        return np.append(x[1:], x[-1:])

    return {
        "threshold": threshold,
        "exact": at_threshold == values,
        "remainder": remainder,
        "next_threshold": shifted(threshold), "next_remainder": shifted(remainder),
        "next_left_complement": shifted(1.0 - left),
        "slope": np.nan_to_num(slope, nan=0.0, posinf=0.0, neginf=0.0),
        "mid": mid, "mid_complement": 1.0 - mid,
        "right": right,
        # scikit-learn: pinned to 0 where g(x) - 1e-7 < start, to 1 where g(x) + 1e-7 > end (0 wins).
        "lower": _smallest_float32(lambda x: ~(g(x) - BOUNDS_THRESHOLD < start), (1,))[0],
        "upper": _smallest_float32(lambda x: g(x) + BOUNDS_THRESHOLD > end, (1,))[0],
    }


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
