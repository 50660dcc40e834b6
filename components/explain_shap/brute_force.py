"""Exact interventional Shapley values by enumerating every coalition of raw features.

The reference the fast methods are checked against (tests, benchmark). Cost: ``2^features × background`` model
evaluations per explained row, through ``predictor.predict_proba`` on hybrid rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components.explain_shap.explanation import Explanation, model_outputs, output_names
from kfp_tabular.errors import ConfigError

MAX_BRUTE_FORCE_FEATURES = 14


def hybrid_rows(row: pd.DataFrame, background: pd.DataFrame, masks: np.ndarray) -> pd.DataFrame:
    """All rows ``(x_S, b_rest)``: for each coalition mask (``(coalitions, features)`` bool), each background row."""
    n_masks, n_b = masks.shape[0], len(background)
    columns = {}
    for g, column in enumerate(background.columns):
        from_x = np.repeat(masks[:, g], n_b)
        b_values = np.tile(background[column].to_numpy(dtype=object), n_masks)
        x_value = row[column].to_numpy(dtype=object)[0]
        columns[column] = np.where(from_x, np.asarray([x_value] * len(from_x), dtype=object), b_values)
    dtypes = pd.concat([row, background]).dtypes.to_dict()  # common dtypes of both (see data.align_dtypes)
    return pd.DataFrame(columns).astype(dtypes)


def explain_brute_force(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame,
                        model: str | None = None) -> Explanation:
    """Exact Shapley values of ``predictor``'s outputs on ``rows`` by full enumeration of coalitions.

    Args:
        predictor: A loaded ``TabularPredictor``.
        background: Raw background rows (the features only).
        rows: Raw rows to explain, same columns.
        model: Model to explain; defaults to the predictor's best model.
    """
    features = list(rows.columns)
    m = len(features)
    if m > MAX_BRUTE_FORCE_FEATURES:
        raise ConfigError(f"Brute force enumerates 2^{m} coalitions; it is limited to {MAX_BRUTE_FORCE_FEATURES} "
                          "features.")
    codes = np.arange(1 << m)
    masks = ((codes[:, None] >> np.arange(m)[None, :]) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    weights = np.asarray([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) if s < m else 0.0
                          for s in range(m + 1)])
    outputs = output_names(predictor)
    values = np.zeros((len(rows), m, len(outputs)))
    for i in range(len(rows)):
        frame = hybrid_rows(rows.iloc[[i]], background, masks)
        game = model_outputs(predictor, frame, model).reshape(len(codes), len(background), -1).mean(axis=1)
        for g in range(m):
            without = codes[~masks[:, g]]
            values[i, g] = (weights[sizes[without]][:, None] * (game[without | (1 << g)] - game[without])).sum(axis=0)
    base = model_outputs(predictor, background, model).mean(axis=0)
    return Explanation(values=values, base_values=base, features=features, outputs=outputs, method="brute_force",
                       exact=True)
