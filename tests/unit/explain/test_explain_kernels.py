"""The numba kernels and tree parsers on plain scikit-learn / LightGBM models (no AutoGluon)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components.explain_shap import kernels
from kfp_tabular.components.explain_shap.children import ChildGame, _lightgbm_matrix, apply_link
from kfp_tabular.components.explain_shap.trees import Forest, forest_from_lightgbm, forest_from_sklearn


def _identity_shap(forest: Forest, x: np.ndarray, b: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Both identity kernels (pair by pair, leaf by leaf) must agree; returns the first."""
    group = np.where(forest.left >= 0, groups[np.maximum(forest.feature, 0)], -1)
    n_groups = int(groups.max()) + 1
    w_pos, w_neg = kernels.leaf_weights(forest.max_depth + 1)
    pairs = kernels.tree_shap_identity(x, b, forest.feature, group, *forest.split_arrays(), n_groups,
                                       forest.max_depth, w_pos, w_neg)
    ends = forest.ends()
    width = int(kernels.tree_widths(group, forest.left, forest.right, forest.roots, ends).max())
    w_pos, w_neg = kernels.leaf_weights(width)
    leaves = kernels.tree_shap_identity_tables(x, b, forest.feature, group, *forest.split_arrays(), ends, n_groups,
                                               width, 2, w_pos, w_neg, kernels.popcounts(width))
    assert np.abs(pairs - leaves).max() < 1e-12
    return pairs


def _link_shap(forest: Forest, x, b, groups, link) -> np.ndarray:
    game = ChildGame("test", link, np.arange(forest.value.shape[1]), int(groups.max()) + 1, forest=forest,
                     groups=groups, x=x, b=b, offset=np.zeros(forest.value.shape[1]))
    return game.shapley()


def _brute_force(f, x: np.ndarray, b: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Shapley values of v(S) = mean_b f(hybrid) with players = groups of columns, by enumeration."""
    players = int(groups.max()) + 1
    out = []
    for row in x:
        game = {}
        for size in range(players + 1):
            for coalition in itertools.combinations(range(players), size):
                take = np.isin(groups, coalition)
                game[frozenset(coalition)] = f(np.where(take[None, :], row[None, :], b)).mean(axis=0)
        phi = np.zeros((players, len(game[frozenset()])))
        for g in range(players):
            for coalition, value in game.items():
                if g not in coalition:
                    weight = math.factorial(len(coalition)) * math.factorial(players - len(coalition) - 1)
                    phi[g] += weight / math.factorial(players) * (game[coalition | {g}] - value)
        out.append(phi)
    return np.asarray(out)


def test_identity_kernel_matches_shap_tree_explainer_on_a_random_forest():
    import shap
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 5)).astype(np.float32).astype(np.float64)
    target = data[:, 0] * 2 + data[:, 1] * data[:, 2] + rng.normal(size=200) * 0.1
    model = RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0).fit(data, target)
    forest = forest_from_sklearn(model, None)
    x, b = data[:10], data[100:130]

    ours = _identity_shap(forest, x, b, np.arange(5))[:, :, 0]
    exact = _brute_force(lambda z: model.predict(z)[:, None], x, b, np.arange(5))[:, :, 0]
    reference = shap.TreeExplainer(model, data=b, feature_perturbation="interventional").shap_values(x)

    assert np.abs(ours - exact).max() < 1e-12
    assert np.abs(ours - reference).max() < 1e-6  # shap keeps leaf values in float32
    assert np.abs(forest.margins(x)[:, 0] - model.predict(x)).max() < 1e-12


def test_one_hot_columns_of_one_feature_are_one_player():
    """Summing per-column SHAP values of one-hot columns is not the Shapley value of the source feature."""
    import shap
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(1)
    colour = rng.integers(0, 3, size=300)
    numbers = rng.normal(size=(300, 2))
    encoded = np.column_stack([colour == 0, colour == 1, colour == 2, numbers]).astype(np.float64)
    target = (colour == 1) * numbers[:, 0] * 3 + numbers[:, 1] + (colour == 2)
    model = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(encoded, target)
    groups = np.asarray([0, 0, 0, 1, 2])
    forest = forest_from_sklearn(model, None)
    x, b = encoded[:6], encoded[50:70]

    ours = _identity_shap(forest, x, b, groups)[:, :, 0]
    exact = _brute_force(lambda z: model.predict(z)[:, None], x, b, groups)[:, :, 0]
    per_column = shap.TreeExplainer(model, data=b, feature_perturbation="interventional").shap_values(x)
    summed = np.column_stack([per_column[:, :3].sum(axis=1), per_column[:, 3], per_column[:, 4]])

    assert np.abs(ours - exact).max() < 1e-9
    assert np.abs(summed - exact).max() > 1e-3


def test_float32_rounding_of_inputs_routes_rows_like_scikit_learn():
    """scikit-learn compares float32(x) <= threshold: 1e9 + 70 rounds to 1e9 + 64, the threshold itself."""
    from sklearn.tree import DecisionTreeRegressor

    train = np.asarray([[1e9], [1e9 + 128]])
    model = DecisionTreeRegressor().fit(train, [0.0, 1.0])
    forest = forest_from_sklearn(type("One", (), {"estimators_": [model]})(), None)
    value = np.asarray([[1e9 + 70]])

    assert model.tree_.threshold[0] == 1e9 + 64
    assert model.predict(value)[0] == 0.0
    assert forest.margins(value.astype(np.float32).astype(np.float64))[0, 0] == 0.0
    assert forest.margins(value)[0, 0] == 1.0  # unrounded input: the other branch


def _lightgbm_data(rows: int = 400):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "shade": pd.Categorical(rng.choice(["red", "green", "blue", "grey"], size=rows)),
        "size": rng.normal(size=rows),
        "weight": rng.normal(size=rows),
        "zeroes": rng.choice([0.0, 1.0, 2.0], size=rows),
    })
    frame.loc[rng.random(rows) < 0.15, "size"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "shade"] = np.nan
    signal = (frame["shade"] == "red") * 2 + frame["size"].fillna(1) + (frame["zeroes"] == 0) - frame["weight"]
    return frame, signal.to_numpy() + rng.normal(size=rows) * 0.3


def test_lightgbm_categorical_and_missing_splits_match_the_booster():
    import lightgbm

    frame, signal = _lightgbm_data()
    model = lightgbm.LGBMClassifier(n_estimators=15, min_child_samples=5, cat_smooth=1, min_data_per_group=5,
                                    verbose=-1).fit(frame, signal > 1)
    booster = model.booster_
    forest, link = forest_from_lightgbm(booster)
    assert link == kernels.LINK_SIGMOID
    assert (forest.kind == kernels.KIND_LGBM_CATEGORY).any()
    probe = frame.iloc[:60].copy()
    probe.loc[probe.index[:5], "shade"] = np.nan
    probe["shade"] = probe["shade"].cat.add_categories(["violet"])
    probe.loc[probe.index[5:8], "shade"] = "violet"  # unseen: LightGBM maps it to missing
    matrix = _lightgbm_matrix(probe, booster)

    assert np.abs(forest.margins(matrix)[:, 0] - booster.predict(probe, raw_score=True)).max() < 1e-9


@pytest.mark.parametrize("classes", [2, 3])
def test_link_kernel_is_the_exact_shapley_value_in_probability_space(classes):
    import lightgbm

    frame, signal = _lightgbm_data(300)
    labels = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1]))
    model = lightgbm.LGBMClassifier(n_estimators=10, min_child_samples=5, verbose=-1).fit(frame, labels)
    booster = model.booster_
    forest, link = forest_from_lightgbm(booster)
    matrix = _lightgbm_matrix(frame, booster)
    x, b = matrix[:4], matrix[100:112]
    groups = np.arange(matrix.shape[1])

    ours = _link_shap(forest, x, b, groups, link)
    exact = _brute_force(lambda z: apply_link(forest.margins(z), link), x, b, groups)

    assert np.abs(ours - exact).max() < 1e-12
    assert np.allclose(ours.sum(axis=1), apply_link(forest.margins(x), link)
                       - apply_link(forest.margins(b), link).mean(axis=0))
