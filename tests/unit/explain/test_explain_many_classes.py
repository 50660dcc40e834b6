"""explain_shap with many classes: compact leaf values for boosters, and report, summary and metrics bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components.explain_shap.children import _lightgbm_matrix
from kfp_tabular.components.explain_shap.core import MAX_OUTPUT_METRICS, ExplainConfig, explain
from kfp_tabular.components.explain_shap.report import MAX_BEESWARMS, MAX_CLASS_COLUMNS
from kfp_tabular.components.explain_shap.trees import forest_from_lightgbm

CLASSES = 200


def _frame(rows_per_class: int, rng: np.random.Generator) -> pd.DataFrame:
    classes = np.repeat(np.arange(CLASSES), rows_per_class)
    return pd.DataFrame({
        "x0": classes + rng.normal(0, 0.3, len(classes)),
        "x1": rng.normal(size=len(classes)),
        "colour": np.array(["red", "green", "blue"])[classes % 3],
        "label": [f"c{i:03d}" for i in classes],
    }).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory):
    """A 200-class LightGBM (3 rounds: 600 single-class trees) and its train / test Parquet splits."""
    from autogluon.tabular import TabularPredictor

    folder = tmp_path_factory.mktemp("many_classes")
    rng = np.random.default_rng(0)
    train, test = _frame(3, rng), _frame(1, rng)
    train.to_parquet(folder / "train.parquet", index=False)
    test.to_parquet(folder / "test.parquet", index=False)
    predictor = TabularPredictor(label="label", problem_type="multiclass", path=str(folder / "model"),
                                 verbosity=0).fit(train, hyperparameters={"GBM": {"num_boost_round": 3}},
                                                  num_cpus=1, time_limit=120)
    return predictor, folder / "train.parquet", folder / "test.parquet"


def test_multiclass_booster_keeps_one_value_per_leaf(many_classes):
    predictor, _, test_path = many_classes
    child = predictor._trainer.load_model("LightGBM")
    booster = child.model
    forest, _ = forest_from_lightgbm(booster)

    assert forest.n_outputs == CLASSES
    assert forest.leaf_value.shape == (len(forest.left), 1)  # not (nodes, classes): 200x less memory
    dense = forest.value
    assert dense.shape == (len(forest.left), CLASSES) and ((dense != 0).sum(axis=1) <= 1).all()
    frame = child.preprocess(predictor.transform_features(pd.read_parquet(test_path).drop(columns=["label"])))
    margins = forest.margins(_lightgbm_matrix(frame, booster))
    assert np.abs(margins - booster.predict(frame, raw_score=True)).max() < 1e-9


def test_many_classes_explain_exactly_with_bounded_report_summary_and_metrics(many_classes, tmp_path):
    predictor, train_path, test_path = many_classes
    values, report, summary = tmp_path / "values.parquet", tmp_path / "report.html", tmp_path / "summary.md"

    result = explain(Path(predictor.path), train_path, test_path, ExplainConfig(background_size=10, max_rows=20),
                     values, report, summary)

    assert result.method == "exact_tree" and result.metrics["max_additivity_error"] <= 1e-6
    assert len(result.outputs) == CLASSES
    assert len(pd.read_parquet(values)) == 20 * 3 * CLASSES  # the data keeps every class
    assert len([name for name in result.metrics if name.startswith("base_value/")]) == MAX_OUTPUT_METRICS
    assert f"{CLASSES} classes" in result.truncation

    html = report.read_text()
    assert html.count('alt="SHAP values for') == MAX_BEESWARMS
    importance_table = html[html.index("<h2>Global importance</h2>"):].split("</thead>")[0]
    assert importance_table.count("<th>") == 1 + 1 + MAX_CLASS_COLUMNS  # feature, all classes, top classes
    assert result.truncation.replace("'", "&#x27;") in html
    assert len(html) < 2_000_000

    text = summary.read_text()
    assert len(text) < 10_000 and f"{CLASSES - 10} more classes" in text
