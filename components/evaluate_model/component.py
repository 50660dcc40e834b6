"""KFP shell of ``evaluate_model``: test metrics, dashboard charts and the blessing gate."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output, OutputPath

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    reason: OutputPath(str),
    thresholds: str = "",
    baseline_metrics: str = "",
) -> bool:
    """Score the model on the test split and decide whether it is good enough to ship ("blessed").

    Args:
        model: Predictor folder from ``train_autogluon``.
        test_data: Held-out test split from ``ingest_data``.
        metrics: Test metrics. Classification: accuracy, balanced_accuracy, log_loss, f1_macro, roc_auc
            (binary). Regression: rmse, mae, r2.
        classification_metrics: Confusion matrix (and ROC curve for binary) drawn by the dashboard; with more
            than 30 classes, the 30 with the most test rows plus an "(other)" bucket. Metadata ``classes``,
            ``classes_shown`` and ``truncation`` (what was left out; empty when nothing).
        report: Self-contained HTML report.
        reason: One line saying why the model is (not) blessed.
        thresholds: Optional JSON of minimum (or, for error metrics, maximum) values, e.g. ``{"accuracy": 0.9}``.
        baseline_metrics: Optional JSON metrics of the model in production; the new model must not be worse on
            any metric named in ``thresholds`` (or on the primary metric when no thresholds are given).

    Returns:
        True ("blessed") when every threshold holds and the model is not worse than the baseline.
    """
    from pathlib import Path

    from kfp_tabular.components.evaluate_model.core import EvaluateConfig, evaluate

    result = evaluate(Path(model.path), Path(test_data.path), EvaluateConfig(thresholds, baseline_metrics),
                      Path(report.path))
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if result.confusion_matrix is not None:
        classification_metrics.log_confusion_matrix(result.confusion_labels, result.confusion_matrix)
        classification_metrics.metadata.update(classes=len(result.class_names),
                                               classes_shown=len(result.per_class), truncation=result.truncation)
    if result.roc_curve is not None:
        classification_metrics.log_roc_curve(*result.roc_curve)
    Path(reason).write_text(result.reason, encoding="utf-8")
    return result.blessed
