"""Model-agnostic fallbacks against brute force, and the plain-language summary on known SHAP values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kfp_tabular.components.explain_shap.agnostic import explain_agnostic
from kfp_tabular.components.explain_shap.brute_force import explain_brute_force
from kfp_tabular.components.explain_shap.explanation import Explanation, model_outputs
from kfp_tabular.components.explain_shap.summary import describe_feature, summarize


def test_kernel_with_a_budget_covering_every_coalition_is_exact(fit_penguins, background_and_rows):
    predictor = fit_penguins("binary")
    background, rows = background_and_rows(predictor)
    background, rows = background.iloc[:10], rows.iloc[[0, 3, 4]]  # incl. unseen category and all-missing row

    kernel = explain_agnostic(predictor, background, rows, "kernel", sample_budget=2 ** len(rows.columns))
    brute = explain_brute_force(predictor, background, rows)

    assert kernel.exact and np.abs(kernel.values - brute.values).max() < 1e-6


def test_permutation_adds_up_and_ranks_like_brute_force(fit_penguins, background_and_rows):
    predictor = fit_penguins("multiclass")
    background, rows = background_and_rows(predictor)
    background, rows = background.iloc[:8], rows.iloc[:2]

    sampled = explain_agnostic(predictor, background, rows, "permutation", sample_budget=64, seed=3)
    brute = explain_brute_force(predictor, background, rows)

    assert np.abs(sampled.reconstruction() - model_outputs(predictor, rows)).max() < 1e-6
    assert np.abs(sampled.values - brute.values).max() < 0.1
    assert np.corrcoef(sampled.values.ravel(), brute.values.ravel())[0, 1] > 0.9


def _synthetic(problem_type: str) -> tuple[Explanation, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"length": rng.normal(size=60), "colour": rng.choice(["red", "blue", None], size=60),
                         "noise": rng.normal(size=60)})
    centred = rows["length"].to_numpy() - rows["length"].mean()
    red = (rows["colour"] == "red").to_numpy() * 1.0
    if problem_type == "multiclass":
        outputs = ["Adelie", "Gentoo", "Chinstrap"]
        values = np.zeros((60, 3, 3))
        values[:, 0, 0], values[:, 0, 1] = -centred, centred  # longer → Gentoo, away from Adelie
        values[:, 1, 2] = red - 0.3
    else:
        outputs = ["yes"] if problem_type == "binary" else ["price"]
        values = np.zeros((60, 3, 1))
        values[:, 0, 0] = -centred
        values[:, 1, 0] = red - 0.3
    values[:, 2, :] = rng.normal(size=(60, values.shape[2])) * 1e-3
    explanation = Explanation(values=values, base_values=np.full(len(outputs), 0.5),
                              features=["length", "colour", "noise"], outputs=outputs, method="exact_tree")
    return explanation, rows


def test_numeric_directions_follow_the_correlation_of_value_and_shap():
    explanation, rows = _synthetic("multiclass")
    assert describe_feature(explanation, rows, 0, "multiclass", explanation.outputs) == (
        "**length**: higher values push towards Gentoo and away from Adelie.")
    explanation, rows = _synthetic("regression")
    assert "higher values decrease the predicted price" in describe_feature(explanation, rows, 0, "regression", [])
    explanation, rows = _synthetic("binary")
    assert "higher values push towards no" in describe_feature(explanation, rows, 0, "binary", ["no", "yes"])
    assert "no simple direction" in describe_feature(explanation, rows, 2, "binary", ["no", "yes"])


def test_categorical_directions_name_the_categories_with_the_highest_mean_shap():
    explanation, rows = _synthetic("multiclass")
    assert describe_feature(explanation, rows, 1, "multiclass", explanation.outputs).startswith(
        "**colour**: red pushes towards Chinstrap")
    explanation, rows = _synthetic("regression")
    sentence = describe_feature(explanation, rows, 1, "regression", [])
    assert sentence.startswith("**colour** = red raises the prediction the most") and "lowers it" in sentence


def test_summary_leads_with_the_most_important_features():
    explanation, rows = _synthetic("multiclass")
    text = summarize(explanation, rows, "multiclass", explanation.outputs, "Method: test.")
    first = text.splitlines()[0]
    assert first.startswith("**In short:**") and "**length**, then **colour**" in first
    assert "| length |" in text and "Method: test." in text
