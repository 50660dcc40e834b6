"""The self-contained HTML report of an explanation (figures inlined as PNG by ``_shared/html_report.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.html_report import HtmlReport
from kfp_tabular.components.explain_shap import plots
from kfp_tabular.components.explain_shap.explanation import Explanation
from kfp_tabular.components.explain_shap.summary import importance, top_outputs

MAX_BEESWARMS = 4
# Classes with their own column in the importance table and their own segment in the bars.
MAX_CLASS_COLUMNS = 10
DEPENDENCE_FEATURES = 3
WATERFALL_ROWS = 3


def waterfall_picks(explanation: Explanation, predictions: np.ndarray) -> list[tuple[int, int]]:
    """(row, output) pairs worth a waterfall: highest, median and lowest prediction, or one row per class."""
    n_rows = predictions.shape[0]
    if predictions.shape[1] == 1:
        order = np.argsort(predictions[:, 0])
        picks = [order[-1], order[n_rows // 2], order[0]]
        return list(dict.fromkeys((int(r), 0) for r in picks))[:WATERFALL_ROWS]
    return [(int(np.argmax(predictions[:, k])), k) for k in range(min(WATERFALL_ROWS, predictions.shape[1]))]


def render_report(explanation: Explanation, rows: pd.DataFrame, predictions: np.ndarray, problem_type: str,
                  method_text: str, truncation: str = "") -> str:
    """The whole HTML page: method, importance table and bars, beeswarms, dependence and waterfall plots.

    With many classes only the top ones get a column, a bar segment or a beeswarm; ``truncation`` says so.
    """
    report = HtmlReport("SHAP explanation")
    name = "ensemble TreeSHAP" if explanation.method == "exact_tree" else explanation.method
    if explanation.exact:
        report.badge(f"EXACT ({name})", ok=True)
    elif explanation.method == "sampled_tree":
        worst = float(explanation.standard_errors.max(initial=0.0))
        report.badge(f"SAMPLED (ensemble TreeSHAP, standard error ≤ {worst:.1g})", ok=True)
    else:
        report.badge(f"APPROXIMATE ({name})", ok=False)
    report.paragraph(method_text)
    if truncation:
        report.paragraph(truncation)
    weights = importance(explanation)
    order = list(np.argsort(weights.mean(axis=1))[::-1])
    outputs, features = explanation.outputs, explanation.features
    many = len(outputs) > MAX_CLASS_COLUMNS
    columns = top_outputs(explanation, MAX_CLASS_COLUMNS) if many else list(range(len(outputs)))
    report.heading("Global importance")
    if len(outputs) == 1:
        headers, cells = ["feature", "mean |SHAP|"], [[features[g], float(weights[g, 0])] for g in order]
    else:  # with many classes: one column over all of them, then the top ones
        overall = [f"mean |SHAP| (mean over {len(outputs)} classes)"] if many else []
        headers = ["feature", *overall, *(f"mean |SHAP| {outputs[k]}" for k in columns)]
        cells = [[features[g], *([float(weights[g].mean())] if many else []), *map(float, weights[g, columns])]
                 for g in order]
    report.table(headers, cells)
    report.figure(plots.importance_bars(weights, features, outputs, columns),
                  "Mean absolute SHAP value per feature")
    report.heading("Beeswarm")
    report.paragraph("Each dot is one explained row: its position is the feature's SHAP value for that row, its "
                     "colour the feature's value (blue low, red high; categories in alphabetical order).")
    for k in top_outputs(explanation, MAX_BEESWARMS):
        title = explanation.outputs[k] if problem_type != "regression" else f"predicted {explanation.outputs[k]}"
        report.figure(plots.beeswarm(explanation.values[:, :, k], rows, explanation.features, title),
                      f"SHAP values for {title}")
    report.heading("Dependence on the top features")
    for g in order[:DEPENDENCE_FEATURES]:
        k = int(np.argmax(weights[g]))
        feature = explanation.features[g]
        report.figure(plots.dependence(explanation.values[:, g, k], rows[feature], feature, explanation.outputs[k]),
                      f"SHAP value of {feature} against its value ({explanation.outputs[k]})")
    report.heading("Single predictions")
    for row, k in waterfall_picks(explanation, predictions):
        report.figure(
            plots.waterfall(explanation.values[row, :, k], float(explanation.base_values[k]), explanation.features,
                            rows.iloc[row], explanation.outputs[k]),
            f"Row {rows.index[row]}: {explanation.outputs[k]} = {predictions[row, k]:.4g}",
        )
    return report.render()
