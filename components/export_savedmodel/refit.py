"""Refit the weighted ensemble over the exportable base models only (the ``refit_ensemble=True`` way out).

AutoGluon's ``fit_weighted_ensemble(base_models=...)`` fits a new greedy ensemble on the cached out-of-fold
predictions. It writes into the predictor folder, and the input ``Model`` artifact must stay untouched, so the
predictor is cloned into a scratch folder first. The validation score of the old and new model is reported, so
the cost of dropping the blocking families is visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp_tabular.components._shared.ensemble import ENSEMBLE_KEYS, describe_ensemble
from kfp_tabular.components.export_savedmodel.families import blocking_reason
from kfp_tabular.errors import UnsupportedModelError
from kfp_tabular.text import clause

SUFFIX = "Exportable"


def exportable_base_models(predictor: Any) -> list[str]:
    """Level-1 models of the predictor that export exactly."""
    names = []
    for name in predictor.model_names():
        member = describe_ensemble(predictor, name).members[0]
        if member.name == name and member.family not in ENSEMBLE_KEYS and blocking_reason(member) is None:
            names.append(name)
    return names


def _score(predictor: Any, name: str) -> float:
    board = predictor.leaderboard(silent=True)
    return float(board.loc[board["model"] == name, "score_val"].iloc[0])


def refit_exportable_ensemble(predictor: Any, structure: Any, blocking: dict[str, str],
                              path: Path) -> tuple[Any, str, dict[str, Any]]:
    """Clone the predictor to ``path`` and fit a weighted ensemble over its exportable base models.

    Returns:
        (cloned predictor, name of the new ensemble, refit summary for metrics and report).

    Raises:
        UnsupportedModelError: no exportable base model, or AutoGluon could not fit the ensemble.
    """
    clone = predictor.clone(path=str(path), return_clone=True)
    candidates = exportable_base_models(clone)
    if not candidates:
        raise UnsupportedModelError(
            f"refit_ensemble=True cannot help: no base model of {structure.model_name} exports exactly "
            f"(blocking: {blocking}). Retrain with presets='deployable'."
        )
    try:
        names = clone.fit_weighted_ensemble(base_models=candidates, name_suffix=SUFFIX)
    except Exception as exc:  # AutoGluon raises plain exceptions (e.g. cache_data=False at fit)
        raise UnsupportedModelError(
            f"AutoGluon could not refit the weighted ensemble over {candidates}: {clause(exc)}. Retrain with "
            "presets='deployable' (or with cache_data=True)."
        ) from exc
    if not names:
        raise UnsupportedModelError(f"AutoGluon fitted no ensemble over {candidates}; retrain with presets='deployable'.")
    name = names[0]
    old, new = _score(clone, structure.model_name), _score(clone, name)
    summary = {
        "refit_model_old": structure.model_name,
        "refit_model_new": name,
        "refit_blocking_models": ", ".join(f"{k} ({v})" for k, v in blocking.items()),
        "refit_base_models": ", ".join(candidates),
        "refit_score_val_old": old,
        "refit_score_val_new": new,
        "refit_score_val_delta": new - old,
        "refit_eval_metric": str(clone.eval_metric.name),
    }
    return clone, name, summary
