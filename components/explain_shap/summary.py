"""A plain-language Markdown summary of an explanation, in the spirit of ELI5.

Directions come from the data, not from the model's internals: for a numeric feature, the sign of the
correlation between its value and its SHAP value ("higher values push towards Gentoo"); for a categorical
feature, the categories with the highest and lowest mean SHAP value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.markdown import table
from kfp_tabular.components.explain_shap.explanation import Explanation

# |correlation| below this: no simple "higher means more" statement.
MONOTONE_CORRELATION = 0.3
# Base values named in "How to read this"; the SHAP values Parquet holds every class's.
MAX_SUMMARY_BASES = 10


def importance(explanation: Explanation) -> np.ndarray:
    """Mean |SHAP value| per feature and output, ``(features, outputs)``."""
    return np.abs(explanation.values).mean(axis=0)


def top_outputs(explanation: Explanation, limit: int) -> list[int]:
    """Indices of at most ``limit`` outputs (classes), largest total mean |SHAP| first."""
    return [int(k) for k in np.argsort(-importance(explanation).sum(axis=0), kind="stable")[:limit]]


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    known = ~np.isnan(x)
    if known.sum() < 3 or np.ptp(x[known]) == 0 or np.ptp(y[known]) == 0:
        return 0.0
    return float(np.corrcoef(x[known], y[known])[0, 1])


def _label(value: object) -> str:
    return "missing" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def describe_feature(explanation: Explanation, rows: pd.DataFrame, g: int, problem_type: str,
                     classes: list[str]) -> str:
    """One sentence on how feature ``g`` moves the prediction."""
    name = explanation.features[g]
    column = rows[name]
    values = explanation.values[:, g, :]
    outputs = explanation.outputs
    if _is_numeric(column):
        x = column.to_numpy(dtype=np.float64)
        corr = np.asarray([_correlation(x, values[:, k]) for k in range(values.shape[1])])
        if problem_type == "regression":
            if abs(corr[0]) < MONOTONE_CORRELATION:
                return f"**{name}**: no simple direction; its effect depends on the value and on other features."
            verb = "increase" if corr[0] > 0 else "decrease"
            return f"**{name}**: higher values {verb} the predicted {outputs[0]} (correlation {corr[0]:+.2f})."
        if problem_type == "binary":
            if abs(corr[0]) < MONOTONE_CORRELATION:
                return f"**{name}**: no simple direction; its effect depends on the value and on other features."
            target = outputs[0] if corr[0] > 0 else _other_class(classes, outputs[0])
            return f"**{name}**: higher values push towards {target} (correlation {corr[0]:+.2f})."
        strength = corr * np.abs(values).mean(axis=0)
        parts = []
        if corr[int(np.argmax(strength))] >= MONOTONE_CORRELATION:
            parts.append(f"towards {outputs[int(np.argmax(strength))]}")
        if corr[int(np.argmin(strength))] <= -MONOTONE_CORRELATION:
            parts.append(f"away from {outputs[int(np.argmin(strength))]}")
        if not parts:
            return f"**{name}**: no simple direction; its effect depends on the value and on other features."
        return f"**{name}**: higher values push {' and '.join(parts)}."
    labels = column.astype(object).map(_label)
    means = pd.DataFrame(values, columns=outputs).groupby(labels.to_numpy()).mean()
    if problem_type == "regression" or problem_type == "binary":
        top, bottom = means.iloc[:, 0].idxmax(), means.iloc[:, 0].idxmin()
        up = "raises the prediction" if problem_type == "regression" else f"pushes towards {outputs[0]}"
        down = "lowers it" if problem_type == "regression" else "pushes away from it"
        sentence = f"**{name}** = {top} {up} the most (mean SHAP {means.loc[top].iloc[0]:+.3g})"
        if bottom != top:
            sentence += f"; {bottom} {down} the most ({means.loc[bottom].iloc[0]:+.3g})"
        return sentence + "."
    pairs = []
    for output in outputs:
        best = means[output].idxmax()
        if means.loc[best, output] > 0:
            pairs.append((float(means.loc[best, output]), best, output))
    pairs.sort(reverse=True)
    if not pairs:
        return f"**{name}**: no category pushes clearly towards one class."
    said = "; ".join(f"{category} pushes towards {output} ({value:+.3g})" for value, category, output in pairs[:3])
    return f"**{name}**: {said}."


def _other_class(classes: list[str], positive: str) -> str:
    others = [c for c in classes if c != positive]
    return others[0] if others else f"not {positive}"


def summarize(explanation: Explanation, rows: pd.DataFrame, problem_type: str, classes: list[str],
              method_text: str, top: int = 5) -> str:
    """The Markdown summary: headline, method, per-feature directions, importance table, how to read it."""
    weights = importance(explanation).mean(axis=1)
    order = [int(g) for g in np.argsort(-weights, kind="stable")]  # ties keep column order
    total = float(weights.sum())
    # Only features that moved some prediction can be said to drive it: a constant model has none.
    leading = [g for g in order[:3] if weights[g] > 0]
    if leading:
        share = float(weights[leading].sum()) / total
        head = f"**{explanation.features[leading[0]]}**"
        if len(leading) > 1:
            head += ", then " + " and ".join(f"**{explanation.features[g]}**" for g in leading[1:])
        short = (f"**In short:** the model's predictions are driven mostly by {head} "
                 f"(together {share:.0%} of the total attribution).")
    else:
        short = ("**In short:** the model gives the same output for every explained row: no feature moves it "
                 "(every SHAP value is 0).")
    total = total or 1.0
    lines = [short, "", f"{method_text}", ""]
    moving = [g for g in order[:top] if weights[g] > 0]
    if moving:
        lines += ["## How the main features push the prediction", ""]
        lines += [f"- {describe_feature(explanation, rows, g, problem_type, classes)}" for g in moving]
    unused = [explanation.features[g] for g in order if weights[g] == 0]
    if unused and moving:  # a constant model: the headline already says so
        lines += ["", f"Features with no effect on these rows: {', '.join(unused)}."]
    headers = ["feature", "mean abs SHAP", "share"]
    lines += ["", "## Global importance", "", table(headers, [[explanation.features[g], float(weights[g]),
                                                               f"{weights[g] / total:.0%}"] for g in order])]
    named = top_outputs(explanation, MAX_SUMMARY_BASES)
    base = ", ".join(f"{explanation.outputs[k]} {explanation.base_values[k]:.4g}" for k in named)
    if len(explanation.outputs) > len(named):
        base += (f", and {len(explanation.outputs) - len(named)} more classes (every base value is in the SHAP "
                 "values Parquet)")
    lines += [
        "",
        "## How to read this",
        "",
        f"The base value is the model's average output over the background rows ({base}). A feature's SHAP value "
        "for one row is how far that feature moved the prediction away from the base value; the base value plus "
        "all SHAP values of a row equals the model's prediction for it. Importance is the mean absolute SHAP "
        "value over the explained rows" + (" and classes." if len(explanation.outputs) > 1 else "."),
        "",
    ]
    return "\n".join(lines)
