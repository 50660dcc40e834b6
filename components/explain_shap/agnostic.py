"""Model-agnostic SHAP (shap's Permutation or Kernel explainer) on the whole predictor: any ensemble, approximate.

shap's maskers and KernelExplainer work on numeric matrices, while AutoGluon wants raw frames with string
categoricals. Non-numeric columns are therefore passed to shap as integer codes into a per-column table of the
values seen in the background and explained rows, and decoded back to the raw values before each prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components.explain_shap.explanation import Explanation, model_outputs, output_names
from kfp_tabular.errors import ConfigError

AGNOSTIC_METHODS = ("permutation", "kernel")


class _Codec:
    """Raw frame ⇄ float matrix: numeric columns as they are, other columns as codes into their values."""

    def __init__(self, *frames: pd.DataFrame) -> None:
        template = pd.concat(frames)
        self.columns = list(template.columns)
        self.dtypes = template.dtypes.to_dict()
        self.tables: dict[str, list[Any]] = {}
        for column in self.columns:
            if not pd.api.types.is_numeric_dtype(template[column]) or pd.api.types.is_bool_dtype(template[column]):
                values = pd.concat([f[column] for f in frames]).astype(object)
                self.tables[column] = list(dict.fromkeys(None if pd.isna(v) else v for v in values))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = np.empty((len(frame), len(self.columns)))
        for index, column in enumerate(self.columns):
            if column in self.tables:
                lookup = {v: code for code, v in enumerate(self.tables[column])}
                matrix[:, index] = [lookup[None if pd.isna(v) else v] for v in frame[column].astype(object)]
            else:
                matrix[:, index] = frame[column].to_numpy(dtype=np.float64)
        return matrix

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        data = {}
        for index, column in enumerate(self.columns):
            if column in self.tables:
                table = np.asarray(self.tables[column], dtype=object)
                data[column] = table[np.rint(matrix[:, index]).astype(np.int64)]
            else:
                data[column] = matrix[:, index]
        return pd.DataFrame(data).astype(self.dtypes)


def explain_agnostic(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame, method: str = "permutation",
                     sample_budget: int | None = None, seed: int = 0, model: str | None = None) -> Explanation:
    """SHAP values of the predictor's outputs with shap's Permutation or Kernel explainer.

    Args:
        predictor: A loaded ``TabularPredictor``.
        background: Raw background rows (the features only).
        rows: Raw rows to explain, same columns.
        method: ``permutation`` or ``kernel``.
        sample_budget: Model evaluations per explained row (each over the whole background); ``None`` uses
            shap's default (Kernel: ``2 * features + 2048``; Permutation: ``10 * features``, at least 500).
        seed: Seed of shap's sampling.
        model: Model to explain; defaults to the predictor's best model.
    """
    import shap

    if method not in AGNOSTIC_METHODS:
        raise ConfigError(f"method must be one of {AGNOSTIC_METHODS}, got {method!r}")
    codec = _Codec(background, rows)
    outputs = output_names(predictor)

    def f(matrix: np.ndarray) -> np.ndarray:
        values = model_outputs(predictor, codec.decode(np.atleast_2d(matrix)), model)
        return values[:, 0] if len(outputs) == 1 else values

    data, explained = codec.encode(background), codec.encode(rows)
    n_features = data.shape[1]
    if method == "kernel":
        explainer = shap.KernelExplainer(f, data)
        state = np.random.get_state()
        np.random.seed(seed)  # KernelExplainer samples coalitions with numpy's global generator
        try:
            # l1_reg=False: keep every feature (shap's default keeps at most 10 by regularisation).
            raw = explainer.shap_values(explained, nsamples=sample_budget or "auto", l1_reg=False, silent=True)
        finally:
            np.random.set_state(state)
        base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    else:
        masker = shap.maskers.Independent(data, max_samples=len(data))
        explainer = shap.PermutationExplainer(f, masker, seed=seed)
        budget = max(sample_budget or max(500, 10 * n_features), 2 * n_features + 1)
        result = explainer(explained, max_evals=budget, silent=True)
        raw = result.values
        base = np.atleast_1d(np.asarray(result.base_values, dtype=np.float64).reshape(len(rows), -1)[0])
    values = np.asarray(raw, dtype=np.float64)
    if isinstance(raw, list):  # older shap: one array per output
        values = np.stack(raw, axis=-1)
    values = values.reshape(len(rows), n_features, len(outputs))
    # Kernel SHAP with a budget covering every coalition solves the Shapley equations exactly.
    exact = method == "kernel" and sample_budget is not None and sample_budget >= 2**n_features - 2
    return Explanation(values=values, base_values=base.reshape(len(outputs)), features=list(rows.columns),
                       outputs=outputs, method=method, exact=exact)

