"""Many classes: boosters store one value per leaf and sum per class in tree order; the gate stays exact.

A K-class LightGBM / XGBoost tree adds to one class only. With K-long leaf vectors a 1000-class, 5-round
LightGBM (5000 trees) needed a [rows, 5000, 1000] float64 leaf tensor (40 MB a row) and ran out of memory;
with scalar leaves it is [rows, 5000].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

CLASSES = 200
ROUNDS = 3
PARALLEL_TREES = 2  # XGBoost: trees of a round go class 0, 0, 1, 1, ...: sum_by_output's gather path


def _frame(rows_per_class: int, rng: np.random.Generator) -> pd.DataFrame:
    classes = np.repeat(np.arange(CLASSES), rows_per_class)
    return pd.DataFrame({
        "x0": classes + rng.normal(0, 0.3, len(classes)),
        "x1": rng.normal(size=len(classes)),
        "x2": (classes % 7) + rng.normal(0, 0.1, len(classes)),
        "label": [f"c{i:03d}" for i in classes],
    }).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory):
    """A 200-class predictor with a 3-round LightGBM and a 3-round XGBoost (2 parallel trees), and its splits."""
    from autogluon.tabular import TabularPredictor

    folder = tmp_path_factory.mktemp("export_many_classes")
    rng = np.random.default_rng(0)
    train, test = _frame(3, rng), _frame(1, rng)
    test.to_parquet(folder / "test.parquet", index=False)
    hyperparameters = {"GBM": {"num_boost_round": ROUNDS},
                       "XGB": {"n_estimators": ROUNDS, "num_parallel_tree": PARALLEL_TREES, "min_child_weight": 0.01}}
    # Tuning on the training rows keeps every round (a 3-row class cannot early-stop meaningfully).
    TabularPredictor(label="label", problem_type="multiclass", path=str(folder / "model"), verbosity=0).fit(
        train, tuning_data=train, hyperparameters=hyperparameters, num_cpus=1, time_limit=120)
    return folder / "model", folder / "test.parquet"


def _child_table(model_dir, test_path, model_name: str):
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components._shared.ensemble import describe_ensemble
    from kfp_tabular.components.export_savedmodel.families import compile_members
    from kfp_tabular.components.export_savedmodel.features import build_feature_plan

    predictor = TabularPredictor.load(str(model_dir), verbosity=0)
    frame = pd.read_parquet(test_path).drop(columns=["label"])
    plan = build_feature_plan(predictor, frame)
    (member,) = compile_members(describe_ensemble(predictor, model_name), plan,
                                predictor.transform_features(frame.head(1)))
    (child,) = member.children
    return child.table


@pytest.mark.slow
@pytest.mark.parametrize(("model_name", "trees_per_class_per_round"), [("LightGBM", 1), ("XGBoost", PARALLEL_TREES)])
def test_many_class_boosters_keep_scalar_leaves_and_export_exactly(many_classes, tmp_path, model_name: str,
                                                                   trees_per_class_per_round: int) -> None:
    from kfp_tabular.components.export_savedmodel.core import ALLOWED_OP_TYPES, ExportConfig, export

    model_dir, test_path = many_classes
    table = _child_table(model_dir, test_path, model_name)
    assert table.n_outputs == CLASSES and table.scalar_leaves
    assert table.arrays()["values"].shape == (table.n_nodes, 1)  # not (nodes, 200)
    rounds = table.n_trees // (CLASSES * trees_per_class_per_round)
    assert rounds >= 2 and table.n_trees == rounds * CLASSES * trees_per_class_per_round
    per_round = np.repeat(np.arange(CLASSES), trees_per_class_per_round)
    assert table.tree_outputs == np.tile(per_round, rounds).tolist()
    assert table.split_thresholds()  # real splits, not stumps

    result = export(model_dir, test_path, tmp_path / "savedmodel", ExportConfig(model_name=model_name),
                    tmp_path / "parity.md")
    assert result.metrics["parity_max_abs_diff"] <= 1e-6
    assert result.metrics["label_agreement"] == 1.0
    assert result.metrics["parity_adversarial_rows"] > 0
    assert all(diff <= 1e-6 for diff in result.metadata["parity_member_diffs"].values())
    assert set(result.metadata["op_types"]) <= ALLOWED_OP_TYPES


def _summer(tree_outputs: np.ndarray, n_outputs: int, start: np.ndarray | None):
    from kfp_tabular.components.export_savedmodel.trees import sum_by_output

    return lambda leaves: sum_by_output(leaves, tree_outputs, n_outputs, start=start)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_by_output_adds_each_outputs_trees_in_tree_order(dtype) -> None:
    """Round-by-round, grouped and uneven layouts equal a C loop ``out[output_of[t]] += leaf[t]``."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    outputs = 5
    layouts = {
        "round by round": np.tile(np.arange(outputs), 7),
        "grouped": np.tile(np.repeat(np.arange(outputs), 3), 4),
        "uneven": rng.integers(0, outputs, size=41),
        "one output": np.zeros(9, dtype=int),
    }
    for name, tree_outputs in layouts.items():
        n_outputs = 1 if name == "one output" else outputs
        # Magnitudes far apart, so that another order or a pairwise sum changes the result.
        leaves = (rng.normal(size=(6, len(tree_outputs))) * 10.0 ** rng.integers(-8, 9, len(tree_outputs)))
        leaves = leaves.astype(dtype)
        start = rng.normal(size=n_outputs).astype(dtype)
        for first in (None, start):
            expected = np.zeros((6, n_outputs), dtype) if first is None else np.tile(first, (6, 1))
            for tree, output in enumerate(tree_outputs):
                expected[:, output] += leaves[:, tree]
            got = tf.function(_summer(tree_outputs, n_outputs, first))(tf.constant(leaves[:, :, None])).numpy()
            assert got.dtype == dtype and np.array_equal(got, expected), name
