"""KFP shell of ``explain_shap``: SHAP values of the trained predictor, shown in the dashboard."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain_shap(
    model: Input[Model],
    background_data: Input[Dataset],
    explain_data: Input[Dataset],
    shap_values: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
    method: str = "auto",
    background_size: int = 100,
    max_rows: int = 500,
    seed: int = 0,
    sample_budget: int = 512,
    time_budget_s: float = 300.0,
    target_standard_error: float = 0.001,
):
    """Explain the model's predictions with SHAP values: exact or certified for tree and linear ensembles.

    Args:
        model: Predictor folder from ``train_autogluon``.
        background_data: Rows the SHAP background is sampled from (the train split).
        explain_data: Rows to explain (the test split); at most ``max_rows`` are sampled.
        shap_values: Parquet, one row per (row_id, feature, class): shap_value, base_value, feature_value,
            feature_value_numeric; ``class`` is absent for regression; method ``sampled_tree`` adds
            shap_standard_error (each value's standard error; exactly computed members add none). Metadata: method, reason, outputs,
            truncation (which classes the report, summary and metrics leave out; every class is in here).
        metrics: ``importance/<feature>`` (mean |SHAP|), ``base_value/<output>`` (at most 50 classes),
            ``rows_explained``, ``background_rows``, ``max_additivity_error`` (relative to the output's scale,
            max(1, largest |prediction|); probabilities: absolute), ``additivity_tolerance`` (its bound) and
            ``exact`` (1 when the values are exact); for the tree methods also max_standard_error,
            mean_standard_error, target_standard_error, max_differing_features and the estimated
            exact_operations / sampled_operations behind the exact-or-sampled choice.
        report: Self-contained HTML: importance bars, beeswarm, dependence and waterfall plots.
        summary: Plain-language Markdown summary of what drives the predictions.
        method: ``auto`` (ensemble TreeSHAP when every model is LightGBM, XGBoost, random forest, extra trees
            or linear: exact for forests, regression and linear regression at any width; for boosted and
            logistic classifiers exact or sampled to ``target_standard_error``, whichever costs less; otherwise
            shap's sampled Permutation explainer), ``exact_tree`` (exact whatever it costs), ``sampled_tree``,
            ``permutation`` or ``kernel`` (shap's Kernel explainer, slowest, only when named; exact when
            ``sample_budget`` covers all 2^features coalitions). The model-agnostic explainers cost about
            sample_budget × background_size predictions per explained row.
        background_size: Background rows sampled from ``background_data``.
        max_rows: Rows sampled from ``explain_data``.
        seed: Seed of the samples and of the sampling explainers.
        sample_budget: Model evaluations per explained row for ``permutation`` / ``kernel``.
        time_budget_s: Seconds ``permutation`` / ``kernel`` may take; the step logs rows done, rate and ETA, and
            fails (naming this setting) as soon as its projected time exceeds the budget.
        target_standard_error: Standard error each sampled tree value is driven to (probability scale).
    """
    from pathlib import Path

    from kfp_tabular.components.explain_shap.core import ExplainConfig, explain

    config = ExplainConfig(method=method, background_size=background_size, max_rows=max_rows, seed=seed,
                           sample_budget=sample_budget, time_budget_s=time_budget_s,
                           target_standard_error=target_standard_error)
    result = explain(Path(model.path), Path(background_data.path), Path(explain_data.path), config,
                     Path(shap_values.path), Path(report.path), Path(summary.path))
    shap_values.metadata.update({"method": result.method, "reason": result.reason, "outputs": result.outputs,
                                 "truncation": result.truncation})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
