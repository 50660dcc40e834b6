"""evaluate_model core: metrics against scikit-learn, ROC data for KFP, the HTML report, real tiny models."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from penguin_splits import write_splits
from sklearn import metrics as skm

from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components.evaluate_model.core import (
    EvaluateConfig,
    EvaluationResult,
    compute_metrics,
    evaluate,
)
from kfp_tabular.components.evaluate_model.metrics import MAX_ROC_POINTS, bounded_confusion, roc_points
from kfp_tabular.components.train_autogluon.core import TrainConfig, train
from kfp_tabular.errors import ConfigError, DataValidationError, ModelError

TINY = json.dumps({"GBM": {"num_boost_round": 20}, "LR": {}})

def trained(tmp: Path, csv: Path, label: str) -> tuple[Path, Path]:
    """Fit a tiny model with the train core; return (model folder, test split)."""
    train_path, validation_path, test_path = write_splits(csv, tmp / "data", label, seed=1)
    model_dir = tmp / "model"
    config = TrainConfig(label=label, hyperparameters=TINY, time_limit_s=30)
    train(train_path, validation_path, model_dir, config, tmp / "leaderboard.md", verbosity=0, num_cpus=1)
    return model_dir, test_path


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> tuple[Path, Path]:
    return trained(tmp_path_factory.mktemp("binary"), penguins_csv, "sex")


@pytest.fixture(scope="module")
def multiclass_model(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> tuple[Path, Path]:
    return trained(tmp_path_factory.mktemp("multiclass"), penguins_csv, "species")


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> tuple[Path, Path]:
    return trained(tmp_path_factory.mktemp("regression"), penguins_csv, "body_mass_g")


def assert_self_contained(html: str) -> None:
    assert "<script src=" not in html
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html


# --- pure metric functions ------------------------------------------------------------------------


def test_binary_metrics_match_sklearn_on_hand_made_predictions() -> None:
    classes = ["no", "yes"]
    y_true = ["no", "yes", "yes", "no", "yes", "no", "yes", "no"]
    p_yes = np.array([0.1, 0.8, 0.4, 0.3, 0.9, 0.6, 0.7, 0.2])
    proba = np.column_stack([1 - p_yes, p_yes])
    y_pred = np.where(p_yes >= 0.5, "yes", "no")
    got = compute_metrics(y_true, y_pred, proba, "binary", classes, "yes")
    assert got == pytest.approx({
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "log_loss": skm.log_loss(y_true, proba, labels=classes),
        "f1_macro": skm.f1_score(y_true, y_pred, average="macro"),
        "roc_auc": skm.roc_auc_score([label == "yes" for label in y_true], p_yes),
        "test_rows": 8.0,
    })
    assert got["accuracy"] == 0.75  # two mistakes out of eight


def test_roc_auc_uses_the_positive_class_column() -> None:
    y_true = [0, 1, 1, 0, 1]
    p_one = np.array([0.2, 0.9, 0.3, 0.4, 0.8])
    proba = np.column_stack([1 - p_one, p_one])
    y_pred = (p_one >= 0.5).astype(int)
    as_one = compute_metrics(y_true, y_pred, proba, "binary", [0, 1], 1)["roc_auc"]
    as_zero = compute_metrics(y_true, y_pred, proba, "binary", [0, 1], 0)["roc_auc"]
    assert as_one == pytest.approx(skm.roc_auc_score(y_true, p_one))
    assert as_zero == pytest.approx(as_one)  # AUC is symmetric when the score flips with the class


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_log_loss_counts_classes_absent_from_the_test_split() -> None:
    classes = ["a", "b", "c"]
    y_true = ["a", "b", "a", "b"]  # no "c" in the test split
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    y_pred = ["a", "b", "a", "c"]
    got = compute_metrics(y_true, y_pred, proba, "multiclass", classes, None)
    assert "roc_auc" not in got
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=classes))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))


def test_regression_metrics_match_sklearn() -> None:
    y_true = [3.0, 5.0, 2.5, 7.0, 4.0]
    y_pred = [2.5, 5.5, 2.0, 8.0, 4.0]
    got = compute_metrics(y_true, y_pred, None, "regression", None, None)
    assert got == pytest.approx({
        "rmse": math.sqrt(skm.mean_squared_error(y_true, y_pred)),
        "mae": skm.mean_absolute_error(y_true, y_pred),
        "r2": skm.r2_score(y_true, y_pred),
        "test_rows": 5.0,
    })
    assert got["mae"] == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_single_class_test_split_has_no_auc_and_no_roc() -> None:
    proba = np.array([[0.2, 0.8], [0.4, 0.6]])
    got = compute_metrics(["yes", "yes"], ["yes", "yes"], proba, "binary", ["no", "yes"], "yes")
    assert "roc_auc" not in got and got["accuracy"] == 1.0
    assert roc_points(["yes", "yes"], proba[:, 1], "yes") is None


def test_roc_points_are_finite_bounded_and_span_the_curve() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=5000)
    scores = np.clip(y_true * 0.3 + rng.random(5000) * 0.7, 0, 1)
    fpr, tpr, thresholds = roc_points(y_true, scores, 1)
    assert len(fpr) == len(tpr) == len(thresholds) <= MAX_ROC_POINTS
    assert all(math.isfinite(v) for v in (*fpr, *tpr, *thresholds))
    assert all(0.0 <= t <= 1.0 for t in thresholds)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y_true, scores), abs=0.01)


def test_confusion_rows_are_true_classes_in_class_order() -> None:
    labels, matrix = bounded_confusion(["b", "a", "a", "c"], ["a", "a", "c", "c"], ["c", "b", "a"])
    assert labels == ["c", "b", "a"]
    assert matrix == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_evaluate_config_validates_json() -> None:
    config = EvaluateConfig(thresholds='{"accuracy": 0.9}', baseline_metrics='{"accuracy": 0.85}')
    assert config.threshold_map == {"accuracy": 0.9} and config.baseline_map == {"accuracy": 0.85}
    with pytest.raises(ConfigError, match="Valid metrics: accuracy, balanced_accuracy, log_loss"):
        EvaluateConfig(thresholds='{"precision": 0.9}')
    with pytest.raises(ConfigError, match=r"baseline_metrics is not valid JSON: .* line 1 column 2"):
        EvaluateConfig(baseline_metrics="{accuracy: 0.9}")


# --- real models ----------------------------------------------------------------------------------


def test_binary_evaluation_matches_sklearn_and_renders(binary_model: tuple, tmp_path: Path) -> None:
    model_dir, test_path = binary_model
    report = tmp_path / "report.html"
    result = evaluate(model_dir, test_path, EvaluateConfig(), report)

    predictor = load_predictor(model_dir)
    test = pd.read_parquet(test_path)
    y_true, features = test["sex"], test.drop(columns=["sex"])
    y_pred = predictor.predict(features)
    p_positive = predictor.predict_proba(features, as_multiclass=True)[predictor.positive_class]
    assert result.problem_type == "binary"
    assert result.class_names == [str(c) for c in predictor.class_labels]
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result.metrics["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_true == predictor.positive_class, p_positive), abs=1e-6
    )
    assert result.metrics["test_rows"] == len(test)
    assert np.array(result.confusion_matrix).sum() == len(test)
    assert np.trace(result.confusion_matrix) == round(result.metrics["accuracy"] * len(test))
    fpr, tpr, thresholds = result.roc_curve
    assert all(math.isfinite(v) for v in (*fpr, *tpr, *thresholds))
    json.dumps(result.roc_curve)  # KFP stores it as JSON
    assert result.blessed and result.reason == "no thresholds or baseline given"

    html = report.read_text()
    assert "BLESSED" in html and "NOT BLESSED" not in html
    assert "roc_auc" in html and "ROC curve" in html and "Confusion matrix" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2
    assert_self_contained(html)


def test_threshold_blocks_the_blessing(binary_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = binary_model
    report = tmp_path / "report.html"
    result = evaluate(model_dir, test_path, EvaluateConfig(thresholds='{"accuracy": 1.01}'), report)
    assert not result.blessed
    assert re.fullmatch(r"accuracy [0-9.]+ < required 1\.01", result.reason)
    assert "NOT BLESSED" in report.read_text()


def test_multiclass_evaluation(multiclass_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = multiclass_model
    result = evaluate(model_dir, test_path, EvaluateConfig(baseline_metrics='{"accuracy": 0.5}'),
                      tmp_path / "report.html")
    predictor = load_predictor(model_dir)
    test = pd.read_parquet(test_path)
    proba = predictor.predict_proba(test.drop(columns=["species"]), as_multiclass=True)
    assert result.class_names == list(predictor.class_labels)
    assert len(result.confusion_matrix) == 3 and all(len(row) == 3 for row in result.confusion_matrix)
    assert result.roc_curve is None and "roc_auc" not in result.metrics
    assert result.metrics["log_loss"] == pytest.approx(
        skm.log_loss(test["species"], proba.to_numpy(), labels=list(predictor.class_labels)), rel=1e-5
    )
    assert result.blessed
    assert result.reason.startswith("accuracy") and "not worse than baseline 0.5" in result.reason
    assert_self_contained((tmp_path / "report.html").read_text())


def test_regression_evaluation_and_baseline_regression(regression_model: tuple, tmp_path: Path) -> None:
    model_dir, test_path = regression_model
    report = tmp_path / "report.html"
    result = evaluate(model_dir, test_path, EvaluateConfig(baseline_metrics='{"rmse": 1.0}'), report)
    predictor = load_predictor(model_dir)
    test = pd.read_parquet(test_path)
    y_pred = predictor.predict(test.drop(columns=["body_mass_g"]))
    rmse = math.sqrt(skm.mean_squared_error(test["body_mass_g"], y_pred))
    assert result.metrics["rmse"] == pytest.approx(rmse)
    assert result.metrics["r2"] == pytest.approx(skm.r2_score(test["body_mass_g"], y_pred))
    assert result.confusion_matrix is None and result.roc_curve is None and result.class_names is None
    assert not result.blessed
    assert re.fullmatch(r"rmse [0-9.]+ worse than baseline 1", result.reason)
    html = report.read_text()
    assert "Predicted vs actual" in html and "Residuals" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2
    assert_self_contained(html)


def test_result_type_is_the_documented_dataclass(regression_model: tuple[Path, Path], tmp_path: Path) -> None:
    result = evaluate(*regression_model, EvaluateConfig(), tmp_path / "r.html")
    assert isinstance(result, EvaluationResult)
    assert all(isinstance(value, float) for value in result.metrics.values())


# --- input errors leave no report -----------------------------------------------------------------


def test_missing_label_column_in_test_split(binary_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = binary_model
    unlabeled = tmp_path / "test.parquet"
    pd.read_parquet(test_path).drop(columns=["sex"]).to_parquet(unlabeled)
    report = tmp_path / "report.html"
    with pytest.raises(DataValidationError, match=r"no label column 'sex'.*Columns: species, island"):
        evaluate(model_dir, unlabeled, EvaluateConfig(), report)
    assert not report.exists()


def test_missing_feature_column_in_test_split(binary_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = binary_model
    partial = tmp_path / "test.parquet"
    pd.read_parquet(test_path).drop(columns=["island"]).to_parquet(partial)
    with pytest.raises(DataValidationError, match="lacks feature columns the model was trained on: island"):
        evaluate(model_dir, partial, EvaluateConfig(), tmp_path / "report.html")


def test_unseen_class_in_test_split(multiclass_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, test_path = multiclass_model
    odd = tmp_path / "test.parquet"
    frame = pd.read_parquet(test_path)
    frame.loc[0, "species"] = "Emperor"
    frame.to_parquet(odd)
    with pytest.raises(DataValidationError, match="never saw in training: Emperor"):
        evaluate(model_dir, odd, EvaluateConfig(), tmp_path / "report.html")


def test_missing_model_folder(tmp_path: Path, binary_model: tuple[Path, Path]) -> None:
    report = tmp_path / "report.html"
    with pytest.raises(ModelError, match="does not exist"):
        evaluate(tmp_path / "no-model", binary_model[1], EvaluateConfig(), report)
    assert not report.exists()
