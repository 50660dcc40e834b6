"""``explain_shap`` core: SHAP values of an AutoGluon predictor → Parquet, metrics, HTML report, Markdown summary.

``auto`` uses the ensemble TreeSHAP (``exact_tree.py``) when every model of the ensemble is a supported tree or
linear family and its reconstruction matches the predictor: exact for identity-output members at any width, and
for sigmoid / softmax members exact or sampled to ``target_standard_error``, whichever the estimated cost favours
(``sampled_tree``: per-value standard errors in the Parquet, metrics and report). Otherwise it falls back to shap's
Permutation explainer (sampled, within ``time_budget_s``, with progress lines), and says why. shap's Kernel explainer runs only
when asked for by name (``method="kernel"``): it is the slowest of all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.files import all_or_nothing, atomic_path, write_text_atomic
from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components.explain_shap.agnostic import DEFAULT_TIME_BUDGET_S, quiet_libraries
from kfp_tabular.components.explain_shap.data import align_dtypes, read_rows, sample
from kfp_tabular.components.explain_shap.explanation import (
    DEFAULT_TARGET_SE,
    Explanation,
    model_outputs,
    relative_gap,
)
from kfp_tabular.components.explain_shap.report import MAX_BEESWARMS, MAX_CLASS_COLUMNS, render_report
from kfp_tabular.components.explain_shap.shards import Shard, ShardInfo, merge_shards, shard_range
from kfp_tabular.components.explain_shap.summary import MAX_SUMMARY_BASES, importance, summarize, top_outputs
from kfp_tabular.errors import ConfigError, ModelError
from kfp_tabular.text import clause

LOGGER = logging.getLogger(__name__)
METHODS = ("auto", "exact_tree", "sampled_tree", "permutation", "kernel")
# How ``explain_exact`` treats sigmoid / softmax members for each tree method.
TREE_MODES = {"auto": "auto", "exact_tree": "exact", "sampled_tree": "sampled"}
# ``base_value/<class>`` metrics logged at most (the classes with the largest mean |SHAP|); KFP shows every
# metric in one table. The SHAP values Parquet holds every class's base value.
MAX_OUTPUT_METRICS = 50


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of one explanation.

    Attributes:
        method: ``auto`` (ensemble TreeSHAP when possible, exact or sampled by cost; else permutation),
            ``exact_tree`` (exact whatever it costs), ``sampled_tree`` (sigmoid / softmax members sampled),
            ``permutation`` or ``kernel`` (only by name; exact when ``sample_budget`` covers every coalition).
        background_size: Background rows sampled (seeded) from the background data.
        max_rows: Rows sampled (seeded) from the data to explain.
        seed: Seed of both samples and of the model-agnostic explainers.
        sample_budget: Model evaluations per explained row for ``permutation`` / ``kernel`` (each evaluation
            averages over the background rows).
        time_budget_s: Seconds the ``permutation`` / ``kernel`` explainer may take; the step fails, naming this
            setting, as soon as its projected time exceeds it (the tree methods are not limited).
        target_standard_error: Standard error every sampled tree value is driven to, on the output scale
            (probabilities); at most ``MAX_UNITS`` antithetic permutations per (row, background row) pair.
    """

    method: str = "auto"
    background_size: int = 100
    max_rows: int = 500
    seed: int = 0
    sample_budget: int = 512
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    target_standard_error: float = DEFAULT_TARGET_SE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}.")
        for name in ("background_size", "max_rows", "sample_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer; got {self.seed!r}.")
        budget = self.time_budget_s
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < float("inf"):
            raise ConfigError(f"time_budget_s must be a positive number of seconds; got {budget!r}.")
        target = self.target_standard_error
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
            raise ConfigError(f"target_standard_error must be a number between 0 and 1 (probability scale); got "
                              f"{target!r}.")


@dataclass
class ExplainResult:
    """What ``explain`` produced besides its files.

    Attributes:
        method: Method actually used (``exact_tree``, ``permutation`` or ``kernel``).
        metrics: ``importance/<feature>`` (mean |SHAP|), ``base_value/<output>`` (at most
            ``MAX_OUTPUT_METRICS`` outputs), ``rows_explained``, ``background_rows``, ``max_additivity_error``
            (relative to the per-output scale ``max(1, max |output|)``; probabilities: absolute),
            ``additivity_tolerance`` (the bound the method guarantees on it), ``exact`` (1.0 when the values are
            exact Shapley values, 0.0 when sampled); tree methods also ``max_standard_error``,
            ``mean_standard_error``, ``target_standard_error``, ``max_differing_features``, and the estimated
            ``exact_operations`` / ``sampled_operations`` behind the exact-or-sampled choice.
        base_values: Base value per output (class probability, or the regression prediction).
        summary_markdown: The plain-language summary also written to ``summary_path``.
        reason: Why this method was used (e.g. why ``auto`` fell back to a model-agnostic explainer).
        outputs: Every explained output (class names, the positive class, or the label).
        truncation: Which classes the report, summary and metrics leave out, in one sentence; empty if none.
    """

    method: str
    metrics: dict[str, float]
    base_values: list[float]
    summary_markdown: str
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    truncation: str = ""


def additivity_error(explanation: Explanation, predictions: np.ndarray) -> float:
    """Largest |base + sum(SHAP) - prediction| over rows and outputs, relative to the output's scale.

    The scale is ``max(1, max over rows |prediction|)`` per output (``explanation.output_scale``): 1 for
    probabilities, the largest predicted magnitude for regression, whose float32 outputs round relative to it.
    """
    return relative_gap(explanation.reconstruction(), predictions)


def run_method(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame, predictions: np.ndarray,
               config: ExplainConfig, row_offset: int = 0) -> tuple[Explanation, str]:
    """Explain with the configured method; returns the explanation and why that method was used.

    ``row_offset``: position of ``rows[0]`` among all rows explained (a shard's), for the per-row sampling seeds.
    """
    if config.method in TREE_MODES:
        from kfp_tabular.components.explain_shap.exact_tree import explain_exact

        try:
            with quiet_libraries():  # numba logs its compiler passes at DEBUG
                explanation = explain_exact(predictor, background, rows, mode=TREE_MODES[config.method],
                                            target_se=config.target_standard_error, seed=config.seed,
                                            row_offset=row_offset)
            error = additivity_error(explanation, predictions)
            if not error <= explanation.tolerance:
                raise ModelError(f"Exact SHAP does not add up to the predictor's output (error {error:.3g} of the "
                                 f"output scale, bound {explanation.tolerance:.3g}); the ensemble has a step this "
                                 "method does not model.")
            notes = "; ".join(explanation.notes)
            return explanation, f"every model of the ensemble is a supported tree or linear family ({notes})"
        except ModelError as exc:
            if config.method != "auto":
                raise
            reason = f"exact SHAP is not available: {exc}"
        except Exception as exc:  # auto: an unexpected model layout must not cost the user the explanation
            if config.method != "auto":
                raise ModelError(f"Exact SHAP failed on this model: {type(exc).__name__}: {exc}") from exc
            reason = f"exact SHAP failed on this model ({type(exc).__name__}: {exc})"
    else:
        reason = f"method '{config.method}' was requested"
    from kfp_tabular.components.explain_shap.agnostic import explain_agnostic

    # Never Kernel SHAP unless asked for by name: it is far slower than permutation at the same error.
    method = "permutation" if config.method == "auto" else config.method
    LOGGER.warning("Explaining with shap's %s explainer: %s", method, reason)
    explanation = explain_agnostic(predictor, background, rows, method, config.sample_budget, config.seed,
                                   time_budget_s=config.time_budget_s)
    return explanation, reason


def values_table(explanation: Explanation, rows: pd.DataFrame, with_class: bool) -> pd.DataFrame:
    """Long format: one row per (explained row, feature[, class]) with SHAP value, base value, feature value.

    Sampled tree values (``sampled_tree``) also get ``shap_standard_error``, after ``shap_value``.
    """
    n_rows, n_features, n_outputs = explanation.values.shape
    row_ids = np.repeat(rows.index.to_numpy(dtype=np.int64), n_features * n_outputs)
    features = np.tile(np.repeat(np.asarray(explanation.features, dtype=object), n_outputs), n_rows)
    raw = rows.to_numpy(dtype=object).reshape(-1)
    table = {"row_id": row_ids, "feature": features}
    if with_class:
        table["class"] = np.tile(np.asarray(explanation.outputs, dtype=object), n_rows * n_features)
    table["shap_value"] = explanation.values.reshape(-1)
    if explanation.method == "sampled_tree":  # exact values have none; shap's explainers do not estimate it
        table["shap_standard_error"] = explanation.standard_errors.reshape(-1)
    table["base_value"] = np.tile(explanation.base_values, n_rows * n_features)
    # Converted once per (row, feature), then repeated per class.
    table["feature_value"] = np.repeat(np.asarray([None if _missing(v) else str(v) for v in raw], dtype=object),
                                       n_outputs)
    table["feature_value_numeric"] = np.repeat(np.asarray([_as_float(v) for v in raw], dtype=np.float64),
                                               n_outputs)
    return pd.DataFrame(table)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _as_float(value: Any) -> float:
    if _missing(value) or isinstance(value, str | bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def truncation_note(n_outputs: int) -> str:
    """What the report, summary and metrics leave out for ``n_outputs`` classes; empty when nothing."""
    limits = [(MAX_CLASS_COLUMNS, f"the importance table and bars show the {MAX_CLASS_COLUMNS} classes with the "
                                  "largest mean |SHAP| (the bars sum the others in one segment)"),
              (MAX_BEESWARMS, f"beeswarms are drawn for the top {MAX_BEESWARMS} classes only"),
              (MAX_SUMMARY_BASES, f"the summary names the base values of the top {MAX_SUMMARY_BASES}"),
              (MAX_OUTPUT_METRICS, f"the metrics hold the base values of the top {MAX_OUTPUT_METRICS}")]
    cuts = [text for limit, text in limits if n_outputs > limit]
    if not cuts:
        return ""
    return f"{n_outputs} classes: {'; '.join(cuts)}. The SHAP values Parquet holds every class."


def method_text(explanation: Explanation, problem_type: str, reason: str, n_background: int, error: float,
                sample_budget: int) -> str:
    """One paragraph saying what was computed, on what, and how exact it is."""
    reason = clause(reason)  # it may end in a period of its own (an exception's message)
    if problem_type == "regression":
        space = f"the predicted {explanation.outputs[0]}"
    elif problem_type == "binary":
        space = f"the probability of {explanation.outputs[0]}"
    else:
        space = "the probability of each class"
    rows = explanation.values.shape[0]
    scale = " of its largest magnitude" if problem_type == "regression" else ""
    if explanation.method == "exact_tree":
        how = ("exact ensemble TreeSHAP: exact interventional Shapley values of the whole AutoGluon ensemble "
               "(every bagged child explained on its own encoding of the data, combined with the ensemble weights)")
    elif explanation.method == "sampled_tree":
        errors = explanation.standard_errors
        how = ("sampled ensemble TreeSHAP: interventional Shapley values of the whole AutoGluon ensemble, exact for "
               "the members whose coalitions are cheap to enumerate and estimated by antithetic permutation "
               "sampling through the same tree and linear kernels for the others, each value with its standard "
               f"error (largest {errors.max():.2g}, mean {errors.mean():.2g}; column shap_standard_error; the "
               "sampled walks add up exactly)")
    elif explanation.exact:
        how = (f"shap KernelExplainer on the whole predictor, exact here because its budget ({sample_budget} "
               f"model evaluations per row) covers all 2^{len(explanation.features)} feature coalitions; used "
               f"because {reason}")
    else:
        name = "Permutation" if explanation.method == "permutation" else "Kernel"
        how = (f"shap {name}Explainer on the whole predictor, approximate ({sample_budget} model evaluations per "
               f"row), because {reason}")
    if explanation.notes:
        how += f" [{'; '.join(explanation.notes)}]"
    return (f"Method: {how}. Output explained: {space}. {rows} rows explained against {n_background} background "
            f"rows; base value + SHAP values reproduce the model's output within {error:.1g}{scale}.")


def explain_shard(model_dir: Path, background_path: Path, rows_path: Path, config: ExplainConfig, index: int = 0,
                  count: int = 1) -> Shard:
    """Explain shard ``index`` of ``count`` of the sampled rows (``shards.shard_range``) against the background.

    Raises: as :func:`explain`.
    """
    predictor = load_predictor(Path(model_dir))
    features = [str(f) for f in predictor.original_features]
    background = sample(read_rows(Path(background_path), features, "background_data"), config.background_size,
                        config.seed)
    rows = sample(read_rows(Path(rows_path), features, "explain_data"), config.max_rows, config.seed)
    background, rows = align_dtypes(background, rows)
    start, stop = shard_range(len(rows), index, count)
    if count > 1:
        LOGGER.info("Shard %d of %d: sampled rows %d to %d of %d.", index + 1, count, start, stop - 1, len(rows))
    rows = rows.iloc[start:stop]
    predictions = model_outputs(predictor, rows)
    explanation, reason = run_method(predictor, background, rows, predictions, config, row_offset=start)
    classes = [str(c) for c in getattr(predictor, "class_labels", None) or []]
    info = ShardInfo(index=index, count=count, problem_type=predictor.problem_type, classes=classes,
                     background_rows=len(background), reason=reason, sample_budget=config.sample_budget,
                     target_standard_error=float(config.target_standard_error))
    return Shard(explanation, rows, predictions, info)


def write_explanation(shards: list[Shard], values_path: Path, report_path: Path,
                      summary_path: Path) -> ExplainResult:
    """Merge the shards of one run and write the SHAP values Parquet, the HTML report and the summary.

    Raises:
        DataValidationError: the shards are not the complete set of one run.
        ModelError: the shards used methods that do not combine.
    """
    values_path, report_path, summary_path = Path(values_path), Path(report_path), Path(summary_path)
    with all_or_nothing(values_path, report_path, summary_path):
        shard = merge_shards(shards)
        explanation, rows, predictions, info = shard.explanation, shard.rows, shard.predictions, shard.info
        error = additivity_error(explanation, predictions)
        LOGGER.info("%s SHAP of %d rows against %d background rows; additivity error %.2g", explanation.method,
                    len(rows), info.background_rows, error)
        text = method_text(explanation, info.problem_type, info.reason, info.background_rows, error,
                           info.sample_budget)
        summary = summarize(explanation, rows, info.problem_type, info.classes, text)
        mean_abs = importance(explanation).mean(axis=1)
        metrics = {f"importance/{f}": float(v) for f, v in zip(explanation.features, mean_abs, strict=True)}
        metrics.update({f"base_value/{explanation.outputs[k]}": float(explanation.base_values[k])
                        for k in sorted(top_outputs(explanation, MAX_OUTPUT_METRICS))})
        metrics.update(rows_explained=float(len(rows)), background_rows=float(info.background_rows),
                       max_additivity_error=error, additivity_tolerance=float(explanation.tolerance),
                       exact=float(explanation.exact), shards=float(len(shards)))
        if explanation.standard_errors is not None:
            metrics.update(max_standard_error=float(explanation.standard_errors.max(initial=0.0)),
                           mean_standard_error=float(explanation.standard_errors.mean()) if explanation.values.size
                           else 0.0, target_standard_error=info.target_standard_error)
        metrics.update({name: float(value) for name, value in explanation.stats.items()})
        _write_parquet(values_table(explanation, rows, info.problem_type != "regression"), values_path)
        write_text_atomic(summary_path, summary)
        truncation = truncation_note(len(explanation.outputs))
        write_text_atomic(report_path, render_report(explanation, rows, predictions, info.problem_type, text,
                                                     truncation))
    return ExplainResult(method=explanation.method, metrics=metrics, base_values=[float(b) for b in
                         explanation.base_values], summary_markdown=summary, reason=info.reason,
                         outputs=list(explanation.outputs), truncation=truncation)


def explain(model_dir: Path, background_path: Path, rows_path: Path, config: ExplainConfig, values_path: Path,
            report_path: Path, summary_path: Path) -> ExplainResult:
    """Explain a saved AutoGluon predictor on sampled rows against a sampled background, in one shard.

    Args:
        model_dir: Predictor folder from ``train_autogluon``.
        background_path: Parquet rows the background is sampled from (the train split).
        rows_path: Parquet rows to explain (the test split), sampled to ``config.max_rows``.
        config: Method, sample sizes, seed, sample budget.
        values_path: Output Parquet of SHAP values in long format.
        report_path: Output self-contained HTML report.
        summary_path: Output Markdown summary.

    Raises:
        TimeBudgetError: the ``permutation`` / ``kernel`` explainer would run past ``config.time_budget_s``.
        DataSourceError: an input file is missing.
        DataValidationError: an input is not Parquet, empty, or lacks model feature columns.
        ModelError: the model cannot be loaded, or ``exact_tree`` was asked for an unsupported ensemble.
    """
    with all_or_nothing(Path(values_path), Path(report_path), Path(summary_path)):
        shard = explain_shard(model_dir, background_path, rows_path, config)
    return write_explanation([shard], values_path, report_path, summary_path)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
