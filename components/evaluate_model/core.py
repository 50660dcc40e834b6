"""Core of ``evaluate_model``: score a trained predictor on the test split and decide its blessing.

Plain Python (no kfp). Metrics come from scikit-learn (``metrics.py``), the gate from ``blessing.py``, the
HTML report from ``report.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp_tabular.components._shared.files import all_or_nothing, write_text_atomic
from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components._shared.splits import read_split
from kfp_tabular.components.evaluate_model.blessing import (
    PRIMARY_METRIC,
    decide_blessing,
    parse_baseline,
    parse_thresholds,
)
from kfp_tabular.components.evaluate_model.metrics import (
    bounded_confusion,
    compute_metrics,
    per_class_metrics,
    roc_points,
    shown_classes,
)
from kfp_tabular.components.evaluate_model.report import render_report
from kfp_tabular.errors import DataValidationError, ModelError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EvaluateConfig", "EvaluationResult", "compute_metrics", "decide_blessing", "evaluate"]


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of the blessing gate, validated on construction.

    Attributes:
        thresholds: JSON object ``{metric: bound}``; ``rmse``, ``mae`` and ``log_loss`` are upper bounds, the
            other metrics lower bounds. Empty: no thresholds.
        baseline_metrics: JSON object of the production model's metrics; the new model must not be worse.
    """

    thresholds: str = ""
    baseline_metrics: str = ""
    _thresholds: dict[str, float] = field(init=False, repr=False, compare=False)
    _baseline: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_thresholds", parse_thresholds(self.thresholds))
        object.__setattr__(self, "_baseline", parse_baseline(self.baseline_metrics))

    @property
    def threshold_map(self) -> dict[str, float]:
        """The parsed thresholds."""
        return dict(self._thresholds)

    @property
    def baseline_map(self) -> dict[str, float]:
        """The parsed baseline metrics."""
        return dict(self._baseline)


@dataclass
class EvaluationResult:
    """Test metrics, the data of the dashboard charts, and the verdict.

    Attributes:
        metrics: Test metrics (see ``metrics.compute_metrics``) and ``test_rows``.
        problem_type: ``binary``, ``multiclass`` or ``regression``.
        class_names: Classes as strings in the predictor's order; ``None`` for regression.
        confusion_matrix: Rows are true classes, columns predicted ones, in ``confusion_labels`` order.
        roc_curve: ``(fpr, tpr, thresholds)`` for binary tasks, finite, at most ~200 points.
        blessed: Whether every threshold holds and the model is not worse than the baseline.
        reason: Why, in one line.
        confusion_labels: Rows and columns of ``confusion_matrix``: ``class_names`` when there are at most
            ``metrics.MAX_CLASSES_SHOWN`` classes, else that many with the most test rows and an ``(other)``
            bucket summing the rest.
        per_class: ``[class, precision, recall, f1, test rows]`` of the named classes of the matrix.
        truncation: What was left out of the matrix and the per-class table, in one sentence; empty if nothing.
    """

    metrics: dict[str, float]
    problem_type: str
    class_names: list[str] | None
    confusion_matrix: list[list[int]] | None
    roc_curve: tuple[list[float], list[float], list[float]] | None
    blessed: bool
    reason: str
    confusion_labels: list[str] | None = None
    per_class: list[list[Any]] = field(default_factory=list)
    truncation: str = ""


def _check_test(frame: pd.DataFrame, predictor: Any, path: Path) -> None:
    label = predictor.label
    if label not in frame.columns:
        raise DataValidationError(
            f"The test split {path} has no label column {label!r} (the model predicts {label!r}). "
            f"Columns: {', '.join(map(str, frame.columns))}."
        )
    missing = [name for name in predictor.features() if name not in frame.columns]
    if missing:
        raise DataValidationError(
            f"The test split {path} lacks feature columns the model was trained on: {', '.join(missing)}. "
            "Evaluate on the test split of the same ingest_data run."
        )
    nulls = frame[label].isna()
    if nulls.any():
        raise DataValidationError(
            f"The test split {path} has {int(nulls.sum())} rows without a label {label!r} (first at row "
            f"{int(nulls.to_numpy().argmax())}); drop them before evaluating."
        )
    if predictor.problem_type in ("binary", "multiclass"):
        unseen = sorted(map(str, set(frame[label].unique()) - set(predictor.class_labels)))
        if unseen:
            raise DataValidationError(
                f"The test split {path} has label values the model never saw in training: "
                f"{', '.join(unseen)}. Re-split the data so that every class is in the train split."
            )


def _add_class_tables(result: EvaluationResult, y_true: Any, y_pred: Any, classes: list[Any]) -> None:
    """Fill the bounded confusion matrix, the per-class table and the truncation note."""
    shown = shown_classes(y_true, y_pred, classes)
    labels, matrix = bounded_confusion(y_true, y_pred, classes)
    result.confusion_labels, result.confusion_matrix = labels, matrix
    result.per_class = per_class_metrics(y_true, y_pred, shown)
    if len(shown) < len(classes):
        result.truncation = (
            f"{len(classes)} classes: the confusion matrix and the per-class table show the {len(shown)} with the "
            f"most test rows; the other {len(classes) - len(shown)} classes ({sum(matrix[-1])} test rows) are "
            f"summed in '{labels[-1]}' (the table leaves them out). The test metrics cover all classes."
        )


def evaluate(model_dir: Path, test_path: Path, config: EvaluateConfig, report_path: Path) -> EvaluationResult:
    """Score the predictor in ``model_dir`` on the test split, decide the blessing and write the HTML report.

    Args:
        model_dir: Predictor folder written by ``train_autogluon``.
        test_path: Parquet test split from ``ingest_data``; must hold the label column.
        config: Thresholds and baseline of the gate.
        report_path: Output HTML report.

    Raises:
        ModelError: the model folder is missing or unusable, or its problem type is not supported.
        DataSourceError: the test split is missing.
        DataValidationError: the test split is unreadable or empty, lacks the label or a feature, has rows
            without a label, or has classes the model never saw.
    """
    model_dir, test_path, report_path = Path(model_dir), Path(test_path), Path(report_path)
    with all_or_nothing(report_path):
        predictor = load_predictor(model_dir)
        problem_type = predictor.problem_type
        if problem_type not in PRIMARY_METRIC:
            raise ModelError(f"The model in {model_dir} solves {problem_type!r}; evaluate_model supports "
                             "binary, multiclass and regression.")
        test = read_split(test_path, "test split")
        _check_test(test, predictor, test_path)
        y_true = test[predictor.label]
        features = test.drop(columns=[predictor.label])
        y_pred = predictor.predict(features)
        classes = list(predictor.class_labels) if problem_type != "regression" else None
        positive_class = predictor.positive_class if problem_type == "binary" else None
        proba = None
        if classes is not None:
            table = predictor.predict_proba(features, as_multiclass=True)
            # By position: a list of boolean classes ([False, True]) would index the frame as a row mask.
            proba = table.iloc[:, table.columns.get_indexer(classes)].to_numpy()
        metrics = compute_metrics(y_true, y_pred, proba, problem_type, classes, positive_class)
        roc = None
        if positive_class is not None:
            roc = roc_points(y_true, proba[:, classes.index(positive_class)], positive_class)
        blessed, reason = decide_blessing(
            metrics, config.threshold_map, config.baseline_map, PRIMARY_METRIC[problem_type]
        )
        result = EvaluationResult(
            metrics=metrics,
            problem_type=problem_type,
            class_names=[str(name) for name in classes] if classes is not None else None,
            confusion_matrix=None,
            roc_curve=roc,
            blessed=blessed,
            reason=reason,
        )
        if classes is not None:
            _add_class_tables(result, y_true, y_pred, classes)
        details: dict[str, Any] = {
            "label": predictor.label,
            "problem type": problem_type,
            "best model": predictor.model_best,
            "test split": str(test_path),
        }
        if positive_class is not None:
            details["positive class"] = positive_class
            details["decision threshold"] = predictor.decision_threshold
        write_text_atomic(report_path, render_report(result, details, list(y_true), list(y_pred)))
    return result
