"""KFP shells of the explanation: plan the shards, explain each shard, merge them into what the dashboard shows.

The pipeline runs ``plan_explain_shards``, then ``explain_shap_shard`` once per shard (``dsl.ParallelFor``), then
``explain_shap``, which merges the shards into the SHAP values, the report, the summary and the metrics.
"""


from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_explain_shards(explain_data: Input[Dataset], max_rows: int = 500, rows_per_shard: int = 2000) -> list[dict]:
    """The shards of the rows to explain: ``{"index": i, "count": n}`` for each, ``rows_per_shard`` rows at most.

    Args:
        explain_data: Rows to explain (the test split); ``max_rows`` of them are explained.
        max_rows: Rows sampled from ``explain_data``.
        rows_per_shard: Most rows one ``explain_shap_shard`` pod explains.
    """
    from pathlib import Path

    from kfp_tabular.components._shared.splits import split_rows
    from kfp_tabular.components.explain_shap.shards import shard_count

    count = shard_count(min(max_rows, split_rows(Path(explain_data.path), "explain_data")), rows_per_shard)
    return [{"index": index, "count": count} for index in range(count)]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain_shap_shard(
    model: Input[Model],
    background_data: Input[Dataset],
    explain_data: Input[Dataset],
    shard: dict,
    explanation: Output[Dataset],
    method: str = "auto",
    background_size: int = 100,
    max_rows: int = 500,
    seed: int = 0,
    sample_budget: int = 512,
    time_budget_s: float = 300.0,
    target_standard_error: float = 0.001,
):
    """SHAP values of one shard of the rows to explain, against the background; ``explain_shap`` merges them.

    Args:
        model: Predictor folder from ``train_autogluon``.
        background_data: Rows the SHAP background is sampled from (the train split).
        explain_data: Rows to explain (the test split); at most ``max_rows`` are sampled, and this shard
            explains its contiguous part of them.
        shard: ``{"index": i, "count": n}``, one item of ``plan_explain_shards``.
        explanation: Folder (rows, arrays, settings) for ``explain_shap``.
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
        time_budget_s: Seconds ``permutation`` / ``kernel`` may take in this shard; the step logs rows done, rate
            and ETA, and fails (naming this setting) as soon as its projected time exceeds the budget.
        target_standard_error: Standard error each sampled tree value is driven to (probability scale).
    """
    from pathlib import Path

    from kfp_tabular.components.explain_shap.core import ExplainConfig, explain_shard
    from kfp_tabular.components.explain_shap.shards import write_shard

    config = ExplainConfig(method=method, background_size=background_size, max_rows=max_rows, seed=seed,
                           sample_budget=sample_budget, time_budget_s=time_budget_s,
                           target_standard_error=target_standard_error)
    # Parameters pass through JSON: the shard's numbers may arrive as floats.
    index, count = int(shard["index"]), int(shard["count"])
    result = explain_shard(Path(model.path), Path(background_data.path), Path(explain_data.path), config, index,
                           count)
    write_shard(result, Path(explanation.path))
    explanation.metadata.update({"method": result.explanation.method, "shard": index, "shards": count,
                                 "rows": len(result.rows)})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain_shap(
    shards: Input[list[Dataset]],
    shap_values: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
):
    """Explain the model's predictions with SHAP values: exact or certified for tree and linear ensembles.

    Merges the ``explain_shap_shard`` outputs of one run (one shard when the rows fit one pod).

    Args:
        shards: The ``explain_shap_shard`` outputs (``dsl.Collected``), in any order.
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
    """
    from pathlib import Path

    from kfp_tabular.components.explain_shap.core import write_explanation
    from kfp_tabular.components.explain_shap.shards import read_shard

    result = write_explanation([read_shard(Path(part.path)) for part in shards], Path(shap_values.path),
                               Path(report.path), Path(summary.path))
    shap_values.metadata.update({"method": result.method, "reason": result.reason, "outputs": result.outputs,
                                 "truncation": result.truncation})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
