"""The structure of a trained AutoGluon predictor, flattened for exact re-implementation (export, SHAP).

AutoGluon predicts with its best model. That model is either one base model or a ``WeightedEnsemble`` whose
output is the weighted sum of its base models' probabilities (regression: predictions). A base model fitted
with bagging is a ``StackerEnsembleModel`` whose output is the mean of its children; without bagging it is a
single model. Both export and SHAP need exactly this tree: members with weights, each member's children.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# AutoGluon's ``ag_key`` of each model family, as used in ``hyperparameters`` dicts.
ENSEMBLE_KEYS = frozenset({"ENS_WEIGHTED", "SIMPLE_ENS_WEIGHTED"})


@dataclass(frozen=True)
class Member:
    """One base model of the ensemble.

    Attributes:
        name: AutoGluon model name, e.g. ``LightGBM_BAG_L1``.
        weight: Its weight in the ensemble (1.0 when the best model is this model alone).
        family: AutoGluon ``ag_key`` of the children: ``GBM``, ``XGB``, ``RF``, ``XT``, ``LR``, ``CAT``, ``KNN``...
        level: Stack level; level ≥ 2 means it consumes other models' predictions as features.
        children: The fitted child models whose outputs are averaged (one when not bagged).
    """

    name: str
    weight: float
    family: str
    level: int
    children: tuple[Any, ...]


@dataclass(frozen=True)
class EnsembleStructure:
    """The best model of a predictor as a weighted sum of bag-averaged children."""

    model_name: str
    problem_type: str
    members: tuple[Member, ...]

    @property
    def families(self) -> list[str]:
        """Distinct families in the ensemble, sorted."""
        return sorted({member.family for member in self.members})


def _children(model: Any) -> tuple[Any, ...]:
    """Fitted children of a bagged model, or the model itself when it is not bagged."""
    if hasattr(model, "models") and hasattr(model, "load_child"):
        return tuple(model.load_child(child) for child in model.models)
    return (model,)


def _family(model: Any) -> str:
    return str(getattr(type(model), "ag_key", None) or type(model).__name__)


def describe_ensemble(predictor: Any, model_name: str | None = None) -> EnsembleStructure:
    """Flatten ``model_name`` (default: the predictor's best model) into weighted, bag-averaged members.

    Args:
        predictor: A loaded ``TabularPredictor``.
        model_name: Model to describe; defaults to ``predictor.model_best``.
    """
    trainer = predictor._trainer
    name = model_name or predictor.model_best
    top = trainer.load_model(name)
    top_children = _children(top)
    if _family(top_children[0]) in ENSEMBLE_KEYS:
        # A weighted ensemble is itself bagged with one child holding the greedy weights.
        greedy = top_children[0]
        weighted = list(zip(greedy.base_model_names, (float(w) for w in greedy.weights_), strict=True))
    else:
        weighted = [(name, 1.0)]
    members = []
    for member_name, weight in weighted:
        children = _children(trainer.load_model(member_name))
        members.append(
            Member(
                name=member_name,
                weight=weight,
                family=_family(children[0]),
                level=int(trainer.get_model_attribute(member_name, "level")),
                children=children,
            )
        )
    return EnsembleStructure(model_name=name, problem_type=predictor.problem_type, members=tuple(members))
