"""The HTML report of ``evaluate_model``: verdict, metrics and charts in one self-contained page.

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas, never through ``pyplot`` state, so the
report renders the same in a headless container and inside a notebook that uses another backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kfp_tabular.components._shared.html_report import HtmlReport
from kfp_tabular.components.evaluate_model.metrics import ERROR_METRICS

MAX_SCATTER_POINTS = 5000

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kfp_tabular.components.evaluate_model.core import EvaluationResult


def _figure(width: float = 5.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Figure:
    """Heatmap of the confusion matrix with the count in each cell (pass a bounded matrix: one label per cell)."""
    import numpy as np

    counts = np.asarray(matrix)
    size = min(16.0, max(4.0, 1.0 + 0.6 * len(class_names)))
    figure = _figure(size, size * 0.85)
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    middle = counts.max() / 2 if counts.size else 0
    for row in ticks:
        for col in ticks:
            colour = "white" if counts[row, col] > middle else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", color=colour,
                      fontsize=10 if len(class_names) <= 15 else 7)
    return figure


def roc_figure(fpr: Sequence[float], tpr: Sequence[float], auc: float | None) -> Figure:
    """ROC curve with the chance diagonal."""
    figure = _figure()
    axes = figure.subplots()
    label = f"model (AUC {auc:.3f})" if auc is not None else "model"
    axes.plot(fpr, tpr, color="#0969da", label=label)
    axes.plot([0, 1], [0, 1], color="#8c959f", linestyle="--", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right")
    return figure


def regression_figures(y_true: Sequence[float], y_pred: Sequence[float]) -> tuple[Figure, Figure]:
    """Predicted-vs-actual scatter with the identity line, and the histogram of the residuals.

    The scatter shows a random sample of at most ``MAX_SCATTER_POINTS`` rows; the histogram uses all of them.
    """
    import numpy as np

    actual = np.asarray(y_true, dtype=float)
    predicted = np.asarray(y_pred, dtype=float)
    shown = np.arange(len(actual))
    if len(shown) > MAX_SCATTER_POINTS:  # a denser cloud shows nothing more and slows the report down
        shown = np.random.default_rng(0).choice(shown, MAX_SCATTER_POINTS, replace=False)
    scatter = _figure()
    axes = scatter.subplots()
    axes.scatter(actual[shown], predicted[shown], s=12, alpha=0.7, color="#0969da")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="#8c959f", linestyle="--")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    histogram = _figure()
    axes = histogram.subplots()
    axes.hist(predicted - actual, bins=min(30, max(5, len(actual) // 5)), color="#0969da", alpha=0.8)
    axes.axvline(0, color="#8c959f", linestyle="--")
    axes.set_xlabel("residual (predicted - actual)")
    axes.set_ylabel("rows")
    return scatter, histogram


def render_report(
    result: EvaluationResult, details: dict[str, Any], y_true: Sequence[Any], y_pred: Sequence[Any]
) -> str:
    """The whole HTML page.

    Args:
        result: Metrics, charts' data and the blessing.
        details: Extra facts shown under "Model", e.g. label, best model, test file.
        y_true: Test labels or values (regression charts).
        y_pred: Predictions (regression charts).
    """
    report = HtmlReport("Model evaluation")
    report.badge("BLESSED" if result.blessed else "NOT BLESSED", result.blessed)
    report.paragraph(result.reason)
    report.heading("Test metrics")
    rows = [
        [name, value, "lower" if name in ERROR_METRICS else ("" if name == "test_rows" else "higher")]
        for name, value in result.metrics.items()
    ]
    report.table(["metric", "value", "better when"], rows)
    report.heading("Model")
    report.table(["property", "value"], [[key, str(value)] for key, value in details.items()])
    if result.confusion_matrix is not None and result.confusion_labels is not None:
        report.heading("Confusion matrix")
        if result.truncation:
            report.paragraph(result.truncation)
        report.figure(confusion_figure(result.confusion_matrix, result.confusion_labels),
                      "rows: true class, columns: predicted class")
        report.heading("Per-class metrics")
        report.table(["class", "precision", "recall", "f1", "test rows"], result.per_class)
    if result.roc_curve is not None:
        report.heading("ROC curve")
        fpr, tpr, _ = result.roc_curve
        report.figure(roc_figure(fpr, tpr, result.metrics.get("roc_auc")),
                      f"positive class: {details.get('positive class', '')}")
    if result.problem_type == "regression":
        scatter, histogram = regression_figures(y_true, y_pred)
        report.heading("Predicted vs actual")
        report.figure(scatter, "dashed: perfect prediction")
        report.heading("Residuals")
        report.figure(histogram, "predicted minus actual")
    return report.render()
