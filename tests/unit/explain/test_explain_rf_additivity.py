"""Why interventional TreeExplainer "failed additivity" on AutoGluon's random forest, and that the fix holds.

AutoGluon's RF child fills NaN with 0 (after label-encoding categoricals) and casts to float32 before
predicting. Fed the global feature generator's output instead (NaN kept), TreeExplainer routes NaN through
scikit-learn's missing-value branch, so its values explain a different function than the one that predicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.ensemble import describe_ensemble
from kfp_tabular.components.explain_shap.exact_tree import explain_exact
from kfp_tabular.components.explain_shap.explanation import model_outputs


def _numeric(frame: pd.DataFrame) -> np.ndarray:
    """Global-transform output as numbers: category codes, NaN kept (what a naive caller would pass)."""
    codes = {c: frame[c].cat.codes.replace(-1, np.nan) for c in frame.columns
             if isinstance(frame[c].dtype, pd.CategoricalDtype)}
    return frame.assign(**codes).to_numpy(dtype=np.float64)


def _additivity_gap(model, x: np.ndarray, b: np.ndarray, target: np.ndarray) -> np.ndarray:
    import shap

    explainer = shap.TreeExplainer(model, data=b, feature_perturbation="interventional")
    values = np.asarray(explainer.shap_values(x, check_additivity=False))[..., 1]
    return np.abs(values.sum(axis=1) + np.atleast_1d(explainer.expected_value)[1] - target)


def test_tree_explainer_adds_up_only_on_the_forests_own_encoding(fit_penguins, penguins):
    predictor = fit_penguins("binary")
    forest_child = describe_ensemble(predictor, "RandomForest_BAG_L1").members[0].children[0]
    features = list(predictor.original_features)
    nan_rows = penguins[features].iloc[[3, 271]]  # numeric measurements missing
    assert nan_rows.isna().any(axis=1).all()
    x = predictor.transform_features(nan_rows)
    b = predictor.transform_features(penguins[features].sample(20, random_state=0))
    child_output = forest_child.predict_proba(x).reshape(len(x))

    naive = _additivity_gap(forest_child.model, _numeric(x), _numeric(b), child_output)
    own = _additivity_gap(forest_child.model, forest_child.preprocess(x), forest_child.preprocess(b), child_output)

    assert naive.max() > 0.05
    assert own.max() < 1e-6
    exact = explain_exact(predictor, penguins[features].sample(20, random_state=0), nan_rows,
                          model="RandomForest_BAG_L1")
    target = model_outputs(predictor, nan_rows, "RandomForest_BAG_L1")
    assert np.abs(exact.reconstruction() - target).max() < 1e-6
