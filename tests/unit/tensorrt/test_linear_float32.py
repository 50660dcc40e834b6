"""The linear model's column transforms in float32 (numeric graph) against scikit-learn's own float64 transform.

The inputs are what the numeric graph receives: float32 numbers, NaN for missing. The hard places are the
QuantileTransformer's tied knots (a column with repeated values; the imputed median sits on one), the values one
float32 step either side of every knot, the pinned ends and the far tails of the normal quantile, and a
StandardScaler whose mean is large against its scale (a year column).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from kfp_tabular.components.export_savedmodel.linear import _numeric_block


def _fit(steps: list, columns: np.ndarray) -> Pipeline:
    return Pipeline(steps).fit(columns)


def _probes(train: np.ndarray, quantiles: np.ndarray | None, seed: int) -> np.ndarray:
    """Per column: knots and their float32 neighbours, training values, NaN, extremes and random values."""
    rng = np.random.default_rng(seed)
    columns = []
    for c in range(train.shape[1]):
        points = [train[:, c], rng.uniform(np.nanmin(train[:, c]) - 1, np.nanmax(train[:, c]) + 1, 200)]
        if quantiles is not None:
            knots = quantiles[:, c].astype(np.float32)
            points += [knots, np.nextafter(knots, np.float32(-np.inf)), np.nextafter(knots, np.float32(np.inf))]
        points.append(np.array([np.nan, 0.0, -0.0, 1e30, -1e30]))
        columns.append(np.concatenate(points).astype(np.float32))
    rows = min(len(column) for column in columns)
    return np.stack([column[:rows] for column in columns], axis=1)


def _compare(pipeline: Pipeline, probes: np.ndarray) -> float:
    """Largest difference to scikit-learn, relative to max(1, |value|) (float32 holds ~7 digits of any value)."""
    import tensorflow as tf

    names = [f"c{i}" for i in range(probes.shape[1])]
    steps = dict(pipeline.steps)
    quantile = steps.get("quantile")
    mean = steps["scaler"].mean_ if "scaler" in steps else None
    scale = steps["scaler"].scale_ if "scaler" in steps else None
    got = _numeric_block({n: tf.constant(probes[:, i]) for i, n in enumerate(names)}, names,
                         steps["imputer"].statistics_ if "imputer" in steps else None, mean, scale, quantile)
    assert got.dtype == tf.float32
    expected = pipeline.transform(probes.astype(np.float64))
    return float(np.max(np.abs(got.numpy().astype(np.float64) - expected) / np.maximum(1.0, np.abs(expected))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantile_normal_on_tied_knots_matches_sklearn_in_float32(seed) -> None:
    rng = np.random.default_rng(seed)
    rows = 400
    train = np.stack([
        rng.integers(0, 6, rows).astype(np.float64),  # heavy ties: every knot is tied, the median on one
        np.round(rng.lognormal(3, 1.5, rows), 1),  # skewed, some ties
        rng.normal(1e4, 3, rows),  # large values, narrow spread
        np.where(rng.random(rows) < 0.9, 0.0, rng.exponential(5, rows)),  # mostly zero
    ], axis=1)
    train[rng.random(train.shape) < 0.15] = np.nan
    pipeline = _fit([("imputer", SimpleImputer(strategy="median")),
                     ("quantile", QuantileTransformer(output_distribution="normal", n_quantiles=rows))], train)
    probes = _probes(np.nan_to_num(train), pipeline.named_steps["quantile"].quantiles_, seed)
    assert _compare(pipeline, probes) <= 2e-6


def test_scaler_with_large_mean_matches_sklearn_in_float32() -> None:
    rng = np.random.default_rng(3)
    train = np.stack([rng.integers(1990, 2024, 300).astype(np.float64), rng.normal(5e6, 40, 300)], axis=1)
    train[rng.random(train.shape) < 0.1] = np.nan
    pipeline = _fit([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler())], train)
    probes = _probes(np.nan_to_num(train, nan=2000.0), None, 3)
    assert _compare(pipeline, probes) <= 3e-7
