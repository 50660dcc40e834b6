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
    DEFAULT_TARGET_SE,
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


def explain_exact(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame, model: str | None = None,
                  mode: str = "exact", target_se: float = DEFAULT_TARGET_SE, seed: int = 0,
                  row_offset: int = 0) -> Explanation:
    """Interventional SHAP values of ``rows`` against ``background`` (raw frames with the same columns).

    Args:
        predictor: A loaded ``TabularPredictor``.
        background: Raw background rows (the features only).
        rows: Raw rows to explain, same columns.
        model: Model to explain; defaults to the predictor's best model.
        mode: For sigmoid / softmax members: ``exact`` (enumerate coalitions), ``sampled`` (antithetic
            permutation sampling through the same kernels, to ``target_se``) or ``auto`` (by estimated cost).
            Identity-output members (forests, regression, linear regression) are exact in every mode.
        target_se: Standard error each sampled value is driven to, on the output scale (probabilities).
        seed: Seed of the sampling.
        row_offset: Position of ``rows[0]`` among all rows explained: a shard of the rows draws the same
            samples, row by row, as one call on all of them.

    Raises:
        ModelError: the ensemble is not supported, a child cannot be reproduced exactly, or ``exact`` was asked
            for more differing features than the coalition tables hold.
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
    variances = np.zeros_like(values)
    rounding = np.zeros(len(outputs))
    total_weight = sum(m.weight for m in structure.members)
    notes: dict[str, list[str]] = {}
    stats = {"max_differing_features": 0.0, "exact_operations": 0.0, "sampled_operations": 0.0}
    exact = True
    for index, member in enumerate(structure.members):
        share = member.weight / total_weight / len(member.children)
        for number, child in enumerate(member.children):
            game = build_game(child, member.family, predictor.problem_type, len(outputs), group_of, len(features),
                              x, b)
            native_x = native_outputs(child, x, len(outputs))
            native_b = native_outputs(child, b, len(outputs))
            result = explain_child(game, native_x, native_b, len(outputs), mode, target_se,
                                   seed * 1000 + index * 100 + number, row_offset)
            values += share * result.values
            variances += share**2 * result.variances  # children are sampled independently
            base += share * result.base
            rounding += share * result.rounding
            exact &= result.decision.exact
            notes.setdefault(result.decision.why, []).append(member.name)
            decision = result.decision
            stats["max_differing_features"] = max(stats["max_differing_features"], decision.players)
            stats["exact_operations"] += decision.exact_operations
            if not np.isnan(decision.sampled_operations):
                stats["sampled_operations"] += decision.sampled_operations
    explanation = Explanation(values=values, base_values=base, features=features, outputs=outputs,
                              method="exact_tree" if exact else "sampled_tree", exact=exact,
                              standard_errors=np.sqrt(variances),
                              notes=[f"{', '.join(dict.fromkeys(names))}: {why}" for why, names in notes.items()],
                              stats=stats)
    # The members' own float32 sums pass into the ensemble's output with their weights.
    explanation.tolerance = ADDITIVITY_TOLERANCE + float((rounding / output_scale(explanation.reconstruction())).max())
    return explanation

