"""Every tree evaluation strategy routes every row to the same leaf as a plain Python walk of the node rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

N_FEATURES = 4
CATEGORY_FEATURE = 3


def _random_table(rng: np.random.Generator, n_trees: int, max_depth: int, kind: str):
    """Random trees; ``kind``: lightgbm (NaN / zero missing rules, categorical splits), xgboost (NaN missing), plain."""
    from kfp_tabular.components.export_savedmodel.trees import TreeTable

    table = TreeTable(n_outputs=1, scalar_leaves=True)
    grid = np.array([-1.5, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0])

    def grow(depth: int) -> tuple[int, int]:
        if depth == max_depth or (depth > 0 and rng.random() < 0.25):
            return table.add_node(value=float(rng.normal())), 0
        feature = int(rng.integers(N_FEATURES))
        if kind == "lightgbm" and feature == CATEGORY_FEATURE:
            members = {int(c) for c in rng.choice(6, size=int(rng.integers(1, 4)), replace=False)}
            node = table.add_node(feature=feature, category_set=members)
        else:
            missing = rng.integers(3) if kind == "lightgbm" else (1 if kind == "xgboost" else 0)
            node = table.add_node(feature=feature, threshold=float(rng.choice(grid)),
                                  default_left=bool(rng.random() < 0.5), nan_missing=missing == 1,
                                  zero_missing=missing == 2)
        left, left_depth = grow(depth + 1)
        right, right_depth = grow(depth + 1)
        table.link(node, left, right)
        return node, 1 + max(left_depth, right_depth)

    for _ in range(n_trees):
        root, depth = grow(0)
        table.add_tree(root, depth)
    return table


def _reference(table, row: np.ndarray, nan_free: bool) -> list[float]:
    """The node rules of ``trees`` (module docstring), one tree and one node at a time, in Python."""
    from kfp_tabular.components.export_savedmodel.trees import (
        _CAT_ROW,
        _CATEGORICAL,
        _DEFAULT_LEFT,
        _FEATURE,
        _LEFT,
        _NAN_MISSING,
        _RIGHT,
        _ZERO_MISSING,
    )

    arrays = table.arrays()
    ints, thresholds, values = arrays["ints"], arrays["thresholds"], arrays["values"]
    any_nan_rule = bool(any(r[_NAN_MISSING] for r in ints if r[_LEFT] != r[_RIGHT]))
    any_category = bool(any(r[_CATEGORICAL] for r in ints if r[_LEFT] != r[_RIGHT]))
    out = []
    for root in table.roots:
        node = root
        while ints[node, _LEFT] != ints[node, _RIGHT]:
            r = ints[node]
            raw = row[r[_FEATURE]]
            is_nan = math.isnan(raw) and not nan_free
            value = 0.0 if math.isnan(raw) and (is_nan or not (any_nan_rule or any_category)) else raw
            if (r[_NAN_MISSING] and is_nan) or (r[_ZERO_MISSING] and value == 0.0):
                go_left = bool(r[_DEFAULT_LEFT])
            elif r[_CATEGORICAL]:
                valid = not is_nan and 0.0 <= value < arrays["category_sets"].shape[1]
                go_left = valid and bool(arrays["category_sets"][r[_CAT_ROW], int(value)])
            else:
                go_left = value <= thresholds[node]
            node = r[_LEFT] if go_left else r[_RIGHT]
        out.append(float(values[node, 0]))
    return out


def _design(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Values on and next to the thresholds, zeros of both signs, NaN, negative and out-of-range category codes.

    No subnormals: TensorFlow reads them as 0 (the serving graph canonicalizes them first, ``numerics``).
    """
    specials = np.array([np.nan, 0.0, -0.0, -1.5, 0.5, np.nextafter(0.5, 1.0), np.nextafter(0.5, 0.0), 1.0, 2.0,
                         3.0, 7.0, -2.0, 1e300, -np.inf, np.inf, 2.7, 5.0, 6.0, 4.0])
    design = rng.choice(specials, size=(rows, N_FEATURES))
    return np.where(rng.random((rows, N_FEATURES)) < 0.2, rng.normal(0, 2, (rows, N_FEATURES)), design)


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "plain"])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_strategies_route_every_row_like_the_node_rules(kind: str, rows: int) -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.trees import evaluate_trees

    rng = np.random.default_rng(rows * 7 + len(kind))
    table = _random_table(rng, n_trees=25, max_depth=9, kind=kind)
    design = _design(rng, rows)
    nan_free = False
    if kind == "plain":  # scikit-learn fills NaN itself: a NaN-free design
        design = np.nan_to_num(design, nan=0.0, posinf=1e300, neginf=-1e300)
        nan_free = True
    expected = np.array([_reference(table, row, nan_free) for row in design])
    for strategy in ("nodes", "rules", "auto"):
        for single_walk in (False, True):
            leaves = evaluate_trees(table, tf.constant(design), nan_free=nan_free, single_walk=single_walk,
                                    strategy=strategy)
            np.testing.assert_array_equal(leaves.numpy()[:, :, 0], expected, err_msg=f"{strategy} {single_walk}")
    # float32 designs (the numeric graph) route the same way on float32 values
    design32 = design.astype(np.float32)
    expected32 = np.array([_reference(table, row, nan_free) for row in design32.astype(np.float64)])
    for strategy in ("nodes", "rules"):
        leaves = evaluate_trees(table, tf.constant(design32), nan_free=nan_free, single_walk=True, strategy=strategy)
        np.testing.assert_array_equal(leaves.numpy()[:, :, 0], expected32.astype(np.float32))


def test_unknown_strategy_is_refused() -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.trees import evaluate_trees

    table = _random_table(np.random.default_rng(0), n_trees=2, max_depth=2, kind="plain")
    with pytest.raises(ValueError, match="strategy"):
        evaluate_trees(table, tf.constant(np.zeros((1, N_FEATURES))), strategy="dense")


def test_traced_walk_keeps_its_batch_size_branch_as_one_unlowered_if() -> None:
    """In a graph, the few-rows and many-rows walks are one ``If`` that is not lowered to Switch / Merge.

    Lowered, the executor visits every node of the walk not taken as a dead node on every call. Both branches
    must still route every row like the node rules.
    """
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.trees import SMALL_BATCH, evaluate_trees

    rng = np.random.default_rng(11)
    table = _random_table(rng, n_trees=30, max_depth=9, kind="lightgbm")
    walk = tf.function(lambda design: evaluate_trees(table, design),
                       input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float64)])
    graph = walk.get_concrete_function().graph
    conds = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert len(conds) == 1
    assert conds[0].get_attr("_lower_using_switch_merge") is False
    for rows in (3, SMALL_BATCH + 24):  # one branch each
        design = _design(rng, rows)
        expected = np.array([_reference(table, row, nan_free=False) for row in design])
        np.testing.assert_array_equal(walk(tf.constant(design)).numpy()[:, :, 0], expected, err_msg=f"{rows} rows")
