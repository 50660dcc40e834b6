"""Exact SHAP of an AutoGluon ensemble of tree and linear models, in the predictor's own output space.

Shapley values are linear in the game. AutoGluon's best model is a weighted sum of bagged models, each the mean
of its children, all in probability space (regression: prediction space). With ONE shared background, the
ensemble's interventional Shapley values are therefore ``sum_m w_m * mean_c phi(child c of m)``, where each
child's values are exact in probability space (``children.py``, ``kernels.py``). Families: LightGBM, XGBoost
(one-hot), scikit-learn random forest and extra trees, linear models. Stacked (level ≥ 2) members, calibrated
(temperature-scaled) models and other families are not linear in their inputs' probabilities, so ``auto``
hands those to a model-agnostic explainer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.ensemble import EnsembleStructure, describe_ensemble
from kfp_tabular.components.explain_shap.children import (
    MAX_LINK_PLAYERS,
    build_game,
    explain_child,
    native_outputs,
)
from kfp_tabular.components.explain_shap.explanation import (
    ADDITIVITY_TOLERANCE,
    Explanation,
    output_names,
    output_scale,
)
from kfp_tabular.errors import ModelError
from kfp_tabular.text import clause

EXACT_FAMILIES = frozenset({"GBM", "XGB", "RF", "XT", "LR"})
PROBLEM_TYPES = frozenset({"binary", "multiclass", "regression"})


def unsupported_reason(predictor: Any, structure: EnsembleStructure | None = None) -> str | None:
    """Why the exact method cannot explain this predictor, or ``None`` when it can (before building games)."""
    if predictor.problem_type not in PROBLEM_TYPES:
        return f"problem type '{predictor.problem_type}' is not binary, multiclass or regression"
    structure = structure or describe_ensemble(predictor)
    others = sorted({m.family for m in structure.members} - EXACT_FAMILIES)
    if others:
        covered = ", ".join(sorted(EXACT_FAMILIES))
        return f"the ensemble contains {', '.join(others)} models (exact SHAP covers {covered})"
    stacked = [m.name for m in structure.members if m.level > 1]
    if stacked:
        return f"{', '.join(stacked)} are stacked on other models' predictions"
    trainer = predictor._trainer
    for name in [structure.model_name, *(m.name for m in structure.members)]:
        model = trainer.load_model(name)
        if getattr(model, "temperature_scalar", None) is not None or getattr(model, "conformalize", None) is not None:
            return f"{name} is calibrated (temperature scaling / conformalization is not linear in probabilities)"
    if predictor.problem_type != "regression":
        link_features = len(predictor.original_features)
        has_link = any(m.family in {"GBM", "XGB", "LR"} for m in structure.members)
        if has_link and link_features > MAX_LINK_PLAYERS:
            return (f"{link_features} features: exact probability-space SHAP of boosted or linear classifiers "
                    f"enumerates feature coalitions and is limited to {MAX_LINK_PLAYERS} features")
    return None


def raw_feature_groups(predictor: Any, features: list[str]) -> dict[str, int]:
    """Map every transformed column of AutoGluon's feature generator to the index of its raw feature."""
    links = predictor._learner.feature_generator.get_feature_links()
    group_of: dict[str, int] = {}
    for index, raw in enumerate(features):
        for column in links.get(raw, []):
            if column in group_of:
                raise ModelError(f"Transformed column {column} comes from several raw features; cannot split it.")
            group_of[column] = index
    return group_of


def explain_exact(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame,
                  model: str | None = None) -> Explanation:
    """Exact interventional SHAP values of ``rows`` against ``background`` (raw frames with the same columns).

    Args:
        predictor: A loaded ``TabularPredictor``.
        background: Raw background rows (the features only).
        rows: Raw rows to explain, same columns.
        model: Model to explain; defaults to the predictor's best model.

    Raises:
        ModelError: the ensemble is not supported, or a child cannot be reproduced exactly.
    """
    structure = describe_ensemble(predictor, model)
    reason = unsupported_reason(predictor, structure)
    if reason:
        raise ModelError(f"Exact SHAP is not available: {clause(reason)}. Use method='permutation' or 'kernel'.")
    features = list(rows.columns)
    outputs = output_names(predictor)
    group_of = raw_feature_groups(predictor, features)
    x, b = predictor.transform_features(rows), predictor.transform_features(background)
    values = np.zeros((len(rows), len(features), len(outputs)))
    base = np.zeros(len(outputs))
    rounding = np.zeros(len(outputs))
    total_weight = sum(m.weight for m in structure.members)
    for member in structure.members:
        share = member.weight / total_weight / len(member.children)
        for child in member.children:
            game = build_game(child, member.family, predictor.problem_type, len(outputs), group_of, len(features),
                              x, b)
            native_x = native_outputs(child, x, len(outputs))
            native_b = native_outputs(child, b, len(outputs))
            result = explain_child(game, native_x, native_b, len(outputs))
            values += share * result.values
            base += share * result.base
            rounding += share * result.rounding
    explanation = Explanation(values=values, base_values=base, features=features, outputs=outputs,
                              method="exact_tree", exact=True)
    # The members' own float32 sums pass into the ensemble's output with their weights.
    explanation.tolerance = ADDITIVITY_TOLERANCE + float((rounding / output_scale(explanation.reconstruction())).max())
    return explanation

