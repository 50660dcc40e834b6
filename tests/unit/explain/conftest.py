"""Small real AutoGluon ensembles on penguins (one per problem type), fitted once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Every family the exact method covers, kept tiny; two bagging folds so bags have several children.
HYPERPARAMETERS = {
    "GBM": {"num_boost_round": 20},
    "XGB": {"n_estimators": 20},
    "RF": {"n_estimators": 10},
    "XT": {"n_estimators": 10},
    "LR": {},
}
LABELS = {"binary": "sex", "multiclass": "island", "regression": "body_mass_g"}
BACKGROUND_ROWS = 20


@pytest.fixture(scope="session")
def penguins(penguins_csv: Path) -> pd.DataFrame:
    return pd.read_csv(penguins_csv)


@pytest.fixture(scope="session")
def fit_penguins(tmp_path_factory: pytest.TempPathFactory, penguins: pd.DataFrame):
    """``fit_penguins(problem_type)`` → a TabularPredictor fitted on all penguins, cached per problem type."""
    cache: dict[str, object] = {}

    def fit(problem_type: str):
        if problem_type not in cache:
            from autogluon.tabular import TabularPredictor

            label = LABELS[problem_type]
            data = penguins.dropna(subset=[label])
            cache[problem_type] = TabularPredictor(
                label=label, problem_type=problem_type, path=str(tmp_path_factory.mktemp(f"ag_{problem_type}")),
                verbosity=0,
            ).fit(data, hyperparameters=HYPERPARAMETERS, num_bag_folds=2, num_cpus=1, time_limit=60,
                  fit_weighted_ensemble=True)
        return cache[problem_type]

    return fit


@pytest.fixture(scope="session")
def knn_predictor(tmp_path_factory: pytest.TempPathFactory, penguins: pd.DataFrame):
    """A family the exact method does not cover (k-nearest neighbours), for the fallback paths."""
    from autogluon.tabular import TabularPredictor

    return TabularPredictor(label="species", path=str(tmp_path_factory.mktemp("ag_knn")), verbosity=0).fit(
        penguins, hyperparameters={"KNN": {}}, num_cpus=1, time_limit=30)


@pytest.fixture(scope="session")
def splits(tmp_path_factory: pytest.TempPathFactory, penguins: pd.DataFrame) -> tuple[Path, Path]:
    """Parquet train / test splits of penguins as ingest_data writes them (string categoricals, nulls, label)."""
    folder = tmp_path_factory.mktemp("splits")
    shuffled = penguins.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, test = folder / "train.parquet", folder / "test.parquet"
    shuffled.iloc[:260].to_parquet(train, index=False)
    shuffled.iloc[260:].to_parquet(test, index=False)
    return train, test


@pytest.fixture(scope="session")
def background_and_rows(penguins: pd.DataFrame):
    """``background_and_rows(predictor)`` → 20 background rows and 5 rows to explain (raw features)."""
    return lambda predictor: _background_and_rows(predictor, penguins)


def _background_and_rows(predictor, penguins: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two of the explained rows are awkward: an unseen category, and every value missing."""
    features = list(predictor.original_features)
    background = penguins[features].sample(BACKGROUND_ROWS, random_state=0).reset_index(drop=True)
    rows = penguins[features].iloc[[0, 120, 250]].reset_index(drop=True)
    odd = rows.iloc[:2].copy()
    categorical = [c for c in features if penguins[c].dtype == object]
    odd.loc[0, categorical[0]] = "Atlantis"  # never seen in training
    odd.iloc[1] = np.nan
    rows = pd.concat([rows, odd], ignore_index=True)
    common = pd.concat([background, rows]).dtypes.to_dict()
    return background.astype(common), rows.astype(common)


# Many boosting rounds: XGBoost sums its trees in float32, so on large targets its own prediction is off the
# real-number sum of its trees by more than 1e-6 of the output (the defect of issue 10: exact SHAP rejected).
LARGE_TARGET_HYPERPARAMETERS = {"XGB": {"n_estimators": 1000, "learning_rate": 0.02},
                                "GBM": {"num_boost_round": 200, "learning_rate": 0.05}}


@pytest.fixture(scope="session")
def large_targets(tmp_path_factory: pytest.TempPathFactory):
    """``large_targets(scale)`` → (predictor, train Parquet, test Parquet) of a regression on targets ≈ 3-8 × scale."""
    cache: dict[float, tuple[object, Path, Path]] = {}

    def fit(scale: float):
        if scale not in cache:
            from autogluon.tabular import TabularPredictor

            rng = np.random.default_rng(0)
            n = 400
            table = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 10, n),
                                  "c": rng.choice(list("pqrs"), n), "d": rng.integers(0, 100, n).astype(float)})
            table.loc[rng.random(n) < 0.05, "a"] = np.nan
            signal = 3 + table["a"].fillna(0) + 0.2 * table["b"] + 1.5 * (table["c"] == "q") + 0.01 * table["d"]
            table["price"] = scale * (signal + rng.normal(0, 0.3, n))
            folder = tmp_path_factory.mktemp(f"large_{int(scale)}")
            train, test = folder / "train.parquet", folder / "test.parquet"
            table.iloc[:300].to_parquet(train, index=False)
            table.iloc[300:].to_parquet(test, index=False)
            predictor = TabularPredictor(label="price", problem_type="regression", path=str(folder / "ag"),
                                         verbosity=0).fit(table.iloc[:300], hyperparameters=LARGE_TARGET_HYPERPARAMETERS,
                                                          num_cpus=1, time_limit=60)
            cache[scale] = (predictor, train, test)
        return cache[scale]

    return fit


def wide_table(n_features: int, problem_type: str, rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numeric features (a few missing values), a label driven by several of them with an interaction."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({f"f{k:02d}": rng.normal(size=rows) for k in range(n_features)})
    table.loc[rng.random(rows) < 0.03, "f01"] = np.nan
    signal = (table.iloc[:, :6].fillna(0).sum(axis=1) + table["f00"] * table["f02"]
              + 0.3 * table.iloc[:, 6:].sum(axis=1) / np.sqrt(n_features))
    noisy = signal + rng.normal(0, 0.5, rows)
    if problem_type == "regression":
        table["label"] = 100 * noisy
    elif problem_type == "binary":
        table["label"] = np.where(noisy > 0, "yes", "no")
    else:
        table["label"] = np.asarray(["low", "mid", "high"])[np.digitize(noisy, [-0.8, 0.8])]
    return table


@pytest.fixture(scope="session")
def fit_wide(tmp_path_factory: pytest.TempPathFactory):
    """``fit_wide(n_features, problem_type, families)`` → (predictor, table), cached; families from HYPERPARAMETERS."""
    cache: dict[tuple, tuple[object, pd.DataFrame]] = {}

    def fit(n_features: int, problem_type: str, families: tuple[str, ...]):
        key = (n_features, problem_type, families)
        if key not in cache:
            from autogluon.tabular import TabularPredictor

            table = wide_table(n_features, problem_type)
            folder = tmp_path_factory.mktemp(f"wide_{n_features}_{problem_type}")
            predictor = TabularPredictor(label="label", problem_type=problem_type, path=str(folder),
                                         verbosity=0).fit(table, hyperparameters={f: HYPERPARAMETERS[f]
                                                                                  for f in families},
                                                          num_cpus=1, time_limit=60)
            cache[key] = (predictor, table)
        return cache[key]

    return fit
