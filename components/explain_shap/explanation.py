"""What every explainer returns, and the model output it explains.

Output space: regression → the prediction; binary → AutoGluon's ``predict_proba`` of the positive class;
multiclass → the probability of every class. SHAP values of all methods live in this space, so they are
comparable and add up to ``predict_proba`` (plus the base value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Unit roundoff of float32: XGBoost sums its trees in float32 and AutoGluon returns float32 regression outputs.
FLOAT32_EPS = 2.0**-24
# base + sum(SHAP) must equal the model output within this, relative to ``output_scale`` (probabilities: absolute),
# plus what the model's own float32 sums may add (``Explanation.tolerance``).
ADDITIVITY_TOLERANCE = 1e-6
# Default target standard error of a sampled value (``sampled_tree``), on the output scale (probabilities).
DEFAULT_TARGET_SE = 1e-3


@dataclass
class Explanation:
    """SHAP values of some rows against one background set.

    Attributes:
        values: ``(rows, features, outputs)`` SHAP values.
        base_values: ``(outputs,)`` expected output over the background rows.
        features: Raw feature names (the players), in column order.
        outputs: Class names (binary: the positive class only) or the label name (regression).
        method: ``exact_tree``, ``sampled_tree`` (our tree and linear kernels, some members sampled),
            ``permutation``, ``kernel`` or ``brute_force``.
        exact: Whether the values are the exact Shapley values (not sampled estimates).
        standard_errors: ``(rows, features, outputs)`` standard error of each value: 0 where exact, estimated
            for ``sampled_tree``; ``None`` where the method does not estimate it (shap's explainers).
        notes: How each part was computed (``sampled_tree`` / ``exact_tree``: per member family, exact or
            sampled and why).
        stats: Cost figures of the choice (``max_differing_features``, estimated ``exact_operations`` and
            ``sampled_operations``), for the metrics.
        tolerance: Bound on ``relative_gap(reconstruction(), model output)`` that the method guarantees; above the
            default only where the model itself rounds in float32 (see ``children.explain_child``).
    """

    values: np.ndarray
    base_values: np.ndarray
    features: list[str]
    outputs: list[str]
    method: str
    exact: bool = False
    tolerance: float = ADDITIVITY_TOLERANCE
    standard_errors: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def reconstruction(self) -> np.ndarray:
        """``base + sum of SHAP values`` per row and output; equals the model output when additive."""
        return self.base_values[None, :] + self.values.sum(axis=1)


def output_scale(reference: np.ndarray) -> np.ndarray:
    """Per-output scale of ``(rows, outputs)`` values: ``max(1, max over rows of |value|)``.

    Probabilities get 1 (an absolute bound); regression outputs their largest magnitude, so a bound relative to it
    tolerates float32 rounding of large targets, also on rows whose own output is near 0.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if not reference.size:
        return np.ones(reference.shape[-1:])
    return np.maximum(1.0, np.abs(reference).max(axis=0))


def relative_gap(values: np.ndarray, reference: np.ndarray) -> float:
    """Largest ``|values - reference|`` over rows and outputs, divided by the output's ``output_scale``."""
    if not np.size(reference):
        return 0.0
    return float((np.abs(values - reference) / output_scale(reference)).max())


def output_names(predictor: Any) -> list[str]:
    """Names of the explained outputs (see module docstring)."""
    if predictor.problem_type == "regression":
        return [str(predictor.label)]
    if predictor.problem_type == "binary":
        return [str(predictor.positive_class)]
    return [str(c) for c in predictor.class_labels]


def model_outputs(predictor: Any, frame: pd.DataFrame, model: str | None = None) -> np.ndarray:
    """The predictor's output on raw rows, ``(rows, outputs)`` in float64 (``model``: default the best one)."""
    if predictor.problem_type == "regression":
        return predictor.predict(frame, model=model).to_numpy(dtype=np.float64).reshape(-1, 1)
    proba = predictor.predict_proba(frame, model=model, as_multiclass=True)
    if predictor.problem_type == "binary":
        return proba[predictor.positive_class].to_numpy(dtype=np.float64).reshape(-1, 1)
    return proba[list(predictor.class_labels)].to_numpy(dtype=np.float64)

