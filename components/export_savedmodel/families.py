"""Which AutoGluon model families export exactly, and the dispatch from a model to its compiler."""

from __future__ import annotations

from typing import Any

from kfp_tabular.components.export_savedmodel.features import CATEGORY, FeaturePlan
from kfp_tabular.components.export_savedmodel.graph import CompiledMember
from kfp_tabular.errors import UnsupportedModelError

# AutoGluon ag_key -> (model class name it must be, what the export does with it)
SUPPORTED_FAMILIES = {
    "GBM": "LightGBM",
    "XGB": "XGBoost",
    "RF": "scikit-learn RandomForest",
    "XT": "scikit-learn ExtraTrees",
    "LR": "scikit-learn linear model",
}


def blocking_reason(member: Any) -> str | None:
    """Why a member cannot be exported exactly, or None when it can."""
    if member.level >= 2:
        return f"stack level {member.level} (it reads other models' predictions)"
    if member.family not in SUPPORTED_FAMILIES:
        return f"family {member.family} has no exact TensorFlow export"
    for child in member.children:
        if getattr(child, "temperature_scalar", None) is not None:
            return "temperature-scaled probabilities (calibrate=True)"
        if getattr(child, "conformalize", None) is not None:
            return "conformalized predictions"
    return None


def unsupported_members(structure: Any) -> dict[str, str]:
    """Members of an ensemble structure that block an exact export, with the reason."""
    reasons = {member.name: blocking_reason(member) for member in structure.members}
    return {name: reason for name, reason in reasons.items() if reason}


def compile_members(structure: Any, plan: FeaturePlan, probe_frame: Any) -> list[CompiledMember]:
    """Compile every member of ``structure`` (from ``describe_ensemble``) for the TensorFlow graph.

    Args:
        structure: ``EnsembleStructure`` of the model to export.
        plan: Feature plan of the predictor.
        probe_frame: A few rows of AutoGluon-transformed features (``predictor.transform_features``); families
            with fitted encoders probe them with it.

    Raises:
        UnsupportedModelError: a member cannot be exported exactly.
    """
    from kfp_tabular.components.export_savedmodel import lightgbm, linear, sklearn_forest, xgboost

    blocking = unsupported_members(structure)
    if blocking:
        raise UnsupportedModelError(_blocking_message(structure.model_name, blocking))
    category_counts = {name: len(spec.categories) for name, spec in plan.features.items() if spec.kind == CATEGORY}
    members = []
    for member in structure.members:
        children = []
        for index, child in enumerate(member.children):
            label = f"{member.name}/{getattr(child, 'name', index)}"
            if member.family == "GBM":
                children.append(lightgbm.compile_child(child, label, category_counts))
            elif member.family == "XGB":
                children.append(xgboost.compile_child(child, label, probe_frame, category_counts))
            elif member.family in ("RF", "XT"):
                children.append(sklearn_forest.compile_child(child, label, set(category_counts)))
            elif member.family == "LR":
                children.append(linear.compile_child(child, label, probe_frame, category_counts))
            else:
                raise UnsupportedModelError(_blocking_message(structure.model_name, {member.name: "not implemented"}))
        members.append(CompiledMember(name=member.name, family=member.family, weight=member.weight, children=children))
    return members


def _blocking_message(model_name: str, blocking: dict[str, str]) -> str:
    listed = "; ".join(f"{name}: {reason}" for name, reason in blocking.items())
    return (
        f"Model {model_name} cannot be exported exactly to TensorFlow because of {listed}. Either retrain with "
        "presets='deployable' (only GBM, XGB, RF, XT and LR models), or export with refit_ensemble=True to refit "
        "the weighted ensemble over the supported base models only (its validation score change is reported)."
    )
