"""Building blocks of the export, on hand-made inputs: names, tree rules, grappler-proof arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from kfp_tabular.errors import ConfigError


def test_sanitize_names_gives_unique_identifier_like_names() -> None:
    from kfp_tabular.components.export_savedmodel.signature import sanitize_names

    names = sanitize_names(["num a", "num_a", "1st", "é", "Num A", "x.y/z"])
    # `num_a` is a valid tensor name already and keeps it: tensor `num_a` always means column `num_a`
    assert names == {"num a": "num_a_2", "num_a": "num_a", "1st": "f_1st", "é": "col", "Num A": "Num_A_3",
                     "x.y/z": "x_y_z"}


def test_datetime_inputs_take_iso_text_datetimes_and_seconds() -> None:
    import datetime

    import pandas as pd

    from kfp_tabular.components.export_savedmodel.signature import InputColumn
    from kfp_tabular.errors import DataValidationError

    column = InputColumn("when", "when", "float64", "float", logical_type="datetime")
    noon = 1714566600.0  # 2024-05-01T12:30:00Z
    values = ["2024-05-01T12:30:00Z", "2024-05-01 14:30:00+02:00", "2024-05-01T12:30:00",
              datetime.datetime(2024, 5, 1, 12, 30), pd.Timestamp("2024-05-01 12:30", tz="UTC"), noon, None, ""]
    encoded = column.encode(values)
    assert encoded[:6].tolist() == [noon] * 6
    assert pd.isna(encoded[6]) and pd.isna(encoded[7])
    with pytest.raises(DataValidationError, match="'when' is a date and time but got 'soon'"):
        column.encode(["soon"])


def test_export_config_rejects_a_bad_tolerance() -> None:
    from kfp_tabular.components.export_savedmodel.core import ExportConfig

    with pytest.raises(ConfigError, match="tolerance"):
        ExportConfig(tolerance=-1.0)


def _lightgbm_like_table():
    """Root: feature 0 <= 0.5 (missing_type Zero, default right); left: category set {1, 3} on feature 1."""
    from kfp_tabular.components.export_savedmodel.trees import TreeTable

    table = TreeTable(n_outputs=1)
    root = table.add_node(feature=0, threshold=0.5, default_left=False, zero_missing=True)
    categorical = table.add_node(feature=1, category_set={1, 3})
    leaf_in, leaf_out = table.add_node(value=[1.0]), table.add_node(value=[2.0])
    leaf_right = table.add_node(value=[3.0])
    table.link(root, categorical, leaf_right)
    table.link(categorical, leaf_in, leaf_out)
    table.add_tree(root, depth=2)
    return table


def test_tree_rules_missing_zero_and_category_sets() -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.trees import evaluate_trees

    design = np.array([
        [0.2, 1.0],      # 0.2 <= 0.5 -> category 1 in the set -> 1
        [0.2, 2.0],      # category 2 not in the set -> 2
        [0.0, 1.0],      # zero is missing here -> default right -> 3
        [np.nan, 3.0],   # NaN is read as 0 (missing_type Zero) -> default right -> 3
        [0.2, np.nan],   # NaN category goes right -> 2
        [0.2, -1.0],     # negative category goes right -> 2
        [0.2, 99.0],     # beyond the set -> 2
        [0.7, 1.0],      # 0.7 > 0.5 -> 3
    ])
    leaves = tf.function(lambda d: evaluate_trees(_lightgbm_like_table(), d))(tf.constant(design))
    assert leaves.numpy()[:, 0, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 2.0, 2.0, 2.0, 3.0]


def test_float32_strict_less_than_becomes_less_or_equal() -> None:
    from kfp_tabular.components.export_savedmodel.trees import float32_less_than_as_le

    rng = np.random.default_rng(0)
    thresholds = rng.normal(size=200).astype(np.float32)
    for threshold in thresholds:
        values = np.array([threshold, np.nextafter(threshold, np.float32(-1e9)), np.nextafter(threshold, 1e9)],
                          dtype=np.float32)
        le = float32_less_than_as_le(float(threshold))
        assert np.array_equal(values < threshold, values.astype(np.float64) <= le)


def test_division_and_sums_keep_their_ieee_results_after_grappler() -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.numerics import exact_divide, sequential_sum

    rng = np.random.default_rng(1)
    x32 = rng.uniform(1, 3, size=(4000, 7)).astype(np.float32)
    graph = tf.function(lambda v: (exact_divide(1.0, v), exact_divide(v, 3.0), sequential_sum(v, axis=1)))
    reciprocal, third, total = (t.numpy() for t in graph(tf.constant(x32)))
    assert np.array_equal(reciprocal, np.float32(1) / x32)
    assert np.array_equal(third, x32 / np.float32(3))
    expected = x32[:, 0].copy()
    for k in range(1, 7):
        expected = expected + x32[:, k]
    assert np.array_equal(total, expected)


def test_normal_quantile_matches_scipy() -> None:
    import tensorflow as tf
    from scipy.special import ndtri

    from kfp_tabular.components.export_savedmodel.numerics import normal_quantile

    rng = np.random.default_rng(2)
    p = np.concatenate([rng.random(20000), rng.random(100) * 1e-12, np.exp(-rng.uniform(30, 600, 100)),
                        [0.0, 1.0, 0.5, np.exp(-2), 1 - np.exp(-2), np.nan]])
    got = tf.function(normal_quantile)(tf.constant(p)).numpy()
    expected = ndtri(p)
    finite = np.isfinite(expected) & (expected != 0)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(got[~finite & ~np.isnan(p)], expected[~finite & ~np.isnan(p)])
    assert np.max(np.abs(got[finite] - expected[finite]) / np.abs(expected[finite])) < 4e-15


def test_float64_threshold_rounded_down_to_float32_keeps_the_comparison() -> None:
    from kfp_tabular.components.export_savedmodel.trees import float32_at_most

    rng = np.random.default_rng(3)
    thresholds = rng.normal(size=500) * 10.0 ** rng.integers(-5, 5, size=500)
    rounded = float32_at_most(thresholds)
    for threshold, down in zip(thresholds, rounded, strict=True):
        t32 = np.float32(threshold)
        values = np.array([t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))])
        assert np.array_equal(values.astype(np.float64) <= threshold, values <= np.float32(down))
