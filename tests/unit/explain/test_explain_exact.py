"""The exact ensemble method equals brute-force Shapley values of the whole predictor and adds up to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components._shared.ensemble import describe_ensemble
from kfp_tabular.components.explain_shap.brute_force import explain_brute_force
from kfp_tabular.components.explain_shap.exact_tree import explain_exact, unsupported_reason
from kfp_tabular.components.explain_shap.explanation import model_outputs
from kfp_tabular.errors import ModelError

TOLERANCE = 1e-6


def _scale(outputs: np.ndarray) -> np.ndarray:
    """Regression outputs are float32 grams (~4000): compare relative to max(1, |output|)."""
    return np.maximum(1.0, np.abs(outputs))


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_exact_equals_brute_force_and_adds_up_to_the_predictor(problem_type, fit_penguins, background_and_rows):
    predictor = fit_penguins(problem_type)
    structure = describe_ensemble(predictor)
    assert len({m.family for m in structure.members}) >= 2, "the ensemble should mix families to test the sum"
    background, rows = background_and_rows(predictor)

    exact = explain_exact(predictor, background, rows)
    brute = explain_brute_force(predictor, background, rows)
    predicted = model_outputs(predictor, rows)

    assert exact.values.shape == (len(rows), len(rows.columns), 3 if problem_type == "multiclass" else 1)
    assert np.all(np.abs(exact.reconstruction() - predicted) <= TOLERANCE * _scale(predicted))
    assert np.all(np.abs(exact.values - brute.values) <= TOLERANCE * _scale(predicted)[:, None, :])
    assert np.allclose(exact.base_values, model_outputs(predictor, background).mean(axis=0), rtol=1e-6, atol=1e-7)
    assert np.abs(exact.values).max() > 0.01 * np.abs(predicted).max()  # not trivially zero


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_every_family_alone_is_exact(problem_type, fit_penguins, background_and_rows):
    predictor = fit_penguins(problem_type)
    background, rows = background_and_rows(predictor)
    families = set()
    for name in predictor.model_names():
        exact = explain_exact(predictor, background, rows, model=name)
        brute = explain_brute_force(predictor, background, rows, model=name)
        scale = _scale(model_outputs(predictor, rows, name))[:, None, :]
        assert np.all(np.abs(exact.values - brute.values) <= TOLERANCE * scale), name
        families |= {m.family for m in describe_ensemble(predictor, name).members}
    assert {"GBM", "XGB", "RF", "XT", "LR"} <= families


def test_datetime_parts_form_one_player_and_dropped_columns_get_zero(tmp_path):
    """A datetime becomes 5 encoded columns (one player); a constant column is dropped by AutoGluon (φ = 0)."""
    from autogluon.tabular import TabularPredictor

    rng = np.random.default_rng(0)
    n = 300
    data = pd.DataFrame({
        "amount": rng.normal(size=n) * 1000,
        "account": rng.integers(10**9, 2 * 10**9, size=n),  # not exactly representable in float32
        "when": (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10**8, size=n), unit="s")).astype(str),
        "constant": 1,
    })
    score = data["amount"] / 1000 + (data["account"] > 1.5e9) + (pd.to_datetime(data["when"]) > "2021-06-01")
    data["label"] = np.where(score + rng.normal(size=n) > 1, "yes", "no")
    predictor = TabularPredictor(label="label", path=str(tmp_path / "ag"), verbosity=0).fit(
        data, hyperparameters={"GBM": {"num_boost_round": 20}, "XGB": {"n_estimators": 20},
                               "RF": {"n_estimators": 10}}, num_cpus=1, time_limit=60)
    links = predictor._learner.feature_generator.get_feature_links()
    assert len(links["when"]) > 1 and not links.get("constant")
    features = list(predictor.original_features)
    background, rows = data[features].iloc[:12], data[features].iloc[100:103].copy()
    rows.iloc[0, features.index("when")] = "2030-05-05 10:00:00"  # outside the training range
    for name in predictor.model_names():
        exact = explain_exact(predictor, background, rows, model=name)
        brute = explain_brute_force(predictor, background, rows, model=name)
        assert np.abs(exact.values - brute.values).max() <= TOLERANCE, name
        assert np.all(exact.values[:, features.index("constant")] == 0)
        assert np.abs(exact.values[:, features.index("when")]).max() > 0, name


def test_unsupported_family_is_refused_with_the_reason(knn_predictor, penguins):
    predictor = knn_predictor
    assert "KNN" in unsupported_reason(predictor)
    features = list(predictor.original_features)
    with pytest.raises(ModelError, match="KNN"):
        explain_exact(predictor, penguins[features].iloc[:5], penguins[features].iloc[5:7])
