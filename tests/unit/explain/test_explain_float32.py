"""float32 columns: AutoGluon's linear model then computes in float32, and stays explainable exactly.

Its margin is a sum of per-feature terms only up to float32 rounding (a few 1e-6 at margins of about 10); the
exact method must allow that rounding, bounded from the model's own coefficients, instead of falling back to
shap's permutation explainer, and report it in the additivity tolerance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components.explain_shap.brute_force import explain_brute_force
from kfp_tabular.components.explain_shap.exact_tree import explain_exact
from kfp_tabular.components.explain_shap.explanation import model_outputs


@pytest.fixture(scope="module")
def float32_linear(tmp_path_factory):
    from autogluon.tabular import TabularPredictor

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(rng.normal(size=(n, 7)) * [1, 3, 10, 0.5, 2, 30, 1], columns=[f"f{i}" for i in range(7)])
    signal = frame.f0 + 0.3 * frame.f1 - 0.1 * frame.f2 + rng.normal(scale=0.5, size=n)
    frame = frame.astype("float32").mask(rng.random(frame.shape) < 0.1)
    frame["k"] = np.digitize(signal, [-1, 0, 1])
    predictor = TabularPredictor(label="k", problem_type="multiclass", verbosity=0,
                                 path=str(tmp_path_factory.mktemp("ag_f32"))).fit(
        frame, hyperparameters={"LR": {}, "GBM": {"num_boost_round": 20}}, num_cpus=1, time_limit=60)
    return predictor, frame.drop(columns=["k"])


def test_float32_linear_model_is_explained_exactly(float32_linear):
    predictor, features = float32_linear
    assert predictor.transform_features(features).dtypes.eq("float32").all()
    background, rows = features.iloc[:30].reset_index(drop=True), features.iloc[30:40].reset_index(drop=True)
    for model in (None, "LinearModel"):
        exact = explain_exact(predictor, background, rows, model=model)  # raised ModelError (gap 4e-6) before
        predicted = model_outputs(predictor, rows, model)
        assert np.max(np.abs(exact.reconstruction() - predicted)) <= 1e-5
        assert 0 < exact.tolerance <= 1e-4
        brute = explain_brute_force(predictor, background, rows, model=model)
        assert np.max(np.abs(exact.values - brute.values)) <= 1e-5
        assert np.abs(exact.values).max() > 0.01
