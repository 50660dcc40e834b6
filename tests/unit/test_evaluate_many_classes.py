"""evaluate_model with many classes: the confusion matrix, the per-class table and the report stay bounded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kfp_tabular.components.evaluate_model.core import EvaluateConfig, evaluate
from kfp_tabular.components.evaluate_model.metrics import (
    MAX_CLASSES_SHOWN,
    OTHER_CLASSES,
    bounded_confusion,
    compute_metrics,
    shown_classes,
)
from kfp_tabular.components.train_autogluon.core import TrainConfig, train

CLASSES = 300
# The first classes get more test rows, so "most test rows" picks exactly them.
FREQUENT = 12


def _frame(classes: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "x0": classes + rng.normal(0, 0.3, len(classes)),
        "x1": rng.normal(size=len(classes)),
        "colour": np.array(["red", "green", "blue"])[classes % 3],
        "label": [f"c{i:03d}" for i in classes],
    }).sample(frac=1.0, random_state=0)


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random forest over 300 classes (600 train rows) and a test split where 12 classes dominate."""
    folder = tmp_path_factory.mktemp("many_classes")
    rng = np.random.default_rng(0)
    ids = np.arange(CLASSES)
    splits = {
        "train": np.repeat(ids, 2),
        "validation": ids,
        "test": np.concatenate([ids, np.repeat(ids[:FREQUENT], 3)]),
    }
    paths = {}
    for name, labels in splits.items():
        paths[name] = folder / f"{name}.parquet"
        _frame(labels, rng).to_parquet(paths[name], index=False)
    config = TrainConfig(label="label", problem_type="multiclass",
                         hyperparameters=json.dumps({"RF": {"n_estimators": 5}}), time_limit_s=60)
    train(paths["train"], paths["validation"], folder / "model", config, folder / "leaderboard.md", verbosity=0,
          num_cpus=1)
    return folder / "model", paths["test"]


# --- pure functions -------------------------------------------------------------------------------


def test_few_classes_are_all_shown_in_class_order() -> None:
    classes = ["b", "a", "c"]
    assert shown_classes(["a", "a", "c"], ["a", "b", "c"], classes) == classes
    labels, matrix = bounded_confusion(["a", "a", "c"], ["a", "b", "c"], classes)
    assert labels == classes
    assert matrix == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_many_classes_keep_the_most_supported_and_sum_the_rest_in_other() -> None:
    classes = [f"k{i}" for i in range(10)]
    y_true = ["k9"] * 5 + ["k3"] * 4 + ["k0", "k1", "k2"]
    y_pred = ["k9", "k9", "k9", "k1", "k0", "k3", "k3", "k2", "k2", "k0", "k5", "k2"]
    shown = shown_classes(y_true, y_pred, classes, limit=2)
    assert shown == ["k3", "k9"]  # the two with the most test rows, in the predictor's class order
    labels, matrix = bounded_confusion(y_true, y_pred, classes, limit=2)
    assert labels == ["k3", "k9", OTHER_CLASSES]
    assert matrix == [[2, 0, 2], [0, 3, 2], [0, 0, 3]]
    assert sum(map(sum, matrix)) == len(y_true)


def test_other_bucket_never_takes_the_name_of_a_real_class() -> None:
    classes = [OTHER_CLASSES, "x", "y"]
    labels, _ = bounded_confusion([OTHER_CLASSES, OTHER_CLASSES, "x"], [OTHER_CLASSES, "y", "x"], classes, limit=1)
    assert labels[0] == OTHER_CLASSES and labels[-1] != OTHER_CLASSES and len(set(labels)) == 2


def test_balanced_accuracy_matches_sklearn_with_predicted_classes_absent_from_the_test_split() -> None:
    classes = ["a", "b", "c", "d"]
    y_true = ["a", "a", "b", "b", "b", "c"]
    y_pred = ["a", "d", "b", "a", "b", "d"]
    proba = np.full((len(y_true), len(classes)), 0.25)
    with pytest.warns(UserWarning):  # sklearn warns about "d"; ours must agree without computing K x K
        expected = skm.balanced_accuracy_score(y_true, y_pred)
    assert compute_metrics(y_true, y_pred, proba, "multiclass", classes)["balanced_accuracy"] == pytest.approx(expected)


# --- a real 300-class model -----------------------------------------------------------------------


def test_many_classes_evaluate_to_a_bounded_matrix_and_report(many_classes: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = many_classes
    report = tmp_path / "report.html"
    result = evaluate(model_dir, test_path, EvaluateConfig(), report)

    test = pd.read_parquet(test_path)
    assert len(result.class_names) == CLASSES
    assert len(result.confusion_labels) == MAX_CLASSES_SHOWN + 1 and result.confusion_labels[-1] == OTHER_CLASSES
    assert set(result.confusion_labels[:-1]) >= {f"c{i:03d}" for i in range(FREQUENT)}
    assert all(len(row) == MAX_CLASSES_SHOWN + 1 for row in result.confusion_matrix)
    assert np.array(result.confusion_matrix).sum() == len(test)
    assert result.metrics["test_rows"] == len(test)
    assert f"{CLASSES} classes" in result.truncation and OTHER_CLASSES in result.truncation
    assert len(result.per_class) == MAX_CLASSES_SHOWN

    html = report.read_text()
    assert result.truncation.replace("'", "&#x27;") in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 1
    assert html.count("<tr>") <= len(result.metrics) + 10 + MAX_CLASSES_SHOWN + 1
    shown = set(result.confusion_labels)
    hidden = next(name for name in result.class_names if name not in shown)
    assert f"<td>{hidden}</td>" not in html
    assert len(html) < 1_500_000


def test_component_shell_logs_the_bounded_matrix_and_says_what_was_cut(many_classes, tmp_path: Path) -> None:
    from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

    from kfp_tabular.components.evaluate_model.component import evaluate_model

    model_dir, test_path = many_classes
    classification = ClassificationMetrics(uri=str(tmp_path / "classification"))
    blessed = evaluate_model.python_func(
        model=Model(uri=str(model_dir)), test_data=Dataset(uri=str(test_path)),
        metrics=Metrics(uri=str(tmp_path / "metrics")), classification_metrics=classification,
        report=HTML(uri=str(tmp_path / "report.html")), reason=str(tmp_path / "reason.txt"),
    )

    assert blessed is True
    matrix = classification.metadata["confusionMatrix"]
    categories = [entry["displayName"] for entry in matrix["annotationSpecs"]]
    assert len(categories) == MAX_CLASSES_SHOWN + 1 and categories[-1] == OTHER_CLASSES
    assert len(matrix["rows"]) == MAX_CLASSES_SHOWN + 1
    assert classification.metadata["classes"] == CLASSES
    assert classification.metadata["classes_shown"] == MAX_CLASSES_SHOWN
    assert f"{CLASSES} classes" in classification.metadata["truncation"]
