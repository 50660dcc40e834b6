"""Tiny real AutoGluon predictors and their exports, shared by the export tests (session-scoped, fitted once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# One configuration per exportable family; two random-forest criteria for classification.
CLASSIFICATION_MODELS = {
    "GBM": {"num_boost_round": 40},
    "XGB": {"n_estimators": 40},
    "RF": [{"criterion": "gini", "n_estimators": 12},
           {"criterion": "entropy", "n_estimators": 12, "ag_args": {"name_suffix": "Entr"}}],
    "XT": {"n_estimators": 12},
    "LR": {},
}
REGRESSION_MODELS = {**CLASSIFICATION_MODELS, "RF": {"n_estimators": 12}}


def make_frame(n: int, seed: int, task: str) -> pd.DataFrame:
    """Numeric, integer, categorical, boolean, constant and skewed columns with missing values and exact zeros."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.1] = np.nan
    a[rng.random(n) < 0.1] = 0.0
    b = rng.uniform(-2, 2, size=n)
    b[rng.random(n) < 0.05] = 0.0
    c = rng.integers(0, 20, size=n)
    d = rng.choice(["red", "green", "blue", "black"], size=n).astype(object)
    d[rng.random(n) < 0.1] = None
    d[0] = "rare"
    e = rng.choice(["left", "right"], size=n)
    f = rng.random(n) < 0.3
    h = rng.exponential(size=n) ** 2
    h[rng.random(n) < 0.05] = np.nan
    score = (np.nan_to_num(a) + 0.8 * b + c / 10 + (d == "red") * 1.0 - (e == "left") * 0.5 + 0.7 * f
             + 0.2 * np.nan_to_num(h) + rng.normal(scale=0.5, size=n))
    frame = pd.DataFrame({"num a": a, "num_b": b, "int_c": c, "cat_d": d, "cat_e": e, "bool_f": f,
                          "const_g": "same", "skew_h": h})
    if task == "binary":
        frame["label"] = np.where(score > 0.8, "yes", "no")
    elif task == "multiclass":
        frame["label"] = pd.cut(score, [-np.inf, 0.2, 1.4, np.inf], labels=["lo", "mid", "hi"]).astype(str)
    else:
        frame["label"] = score * 100.0
    return frame


def fit_predictor(path: Path, task: str, hyperparameters: dict, **kwargs) -> Path:
    """Fit a small bagged AutoGluon predictor on 400 rows (seconds on one core)."""
    from autogluon.tabular import TabularPredictor

    TabularPredictor("label", path=str(path), problem_type=task, verbosity=0).fit(
        make_frame(400, 0, task), hyperparameters=hyperparameters, num_bag_folds=2, num_cpus=1,
        time_limit=60, **kwargs,
    )
    return path


@pytest.fixture(scope="session")
def predictor_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``predictor_dir(task)``: folder of a predictor with every exportable family (fitted on first use)."""
    cache: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in cache:
            models = REGRESSION_MODELS if task == "regression" else CLASSIFICATION_MODELS
            cache[task] = fit_predictor(tmp_path_factory.mktemp(f"ag-{task}"), task, models)
        return cache[task]

    return get


@pytest.fixture(scope="session")
def test_split(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``test_split(task)``: a 150-row Parquet test split for the task."""
    folder = tmp_path_factory.mktemp("splits")

    def get(task: str) -> Path:
        path = folder / f"{task}.parquet"
        if not path.exists():
            make_frame(150, 1, task).to_parquet(path)
        return path

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, predictor_dir, test_split) -> Callable:
    """``exported(task, model_name="")``: (ExportResult, SavedModel folder), exported once per session."""
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    cache: dict[tuple[str, str], tuple] = {}

    def get(task: str, model_name: str = "") -> tuple:
        key = (task, model_name)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"export-{task}")
            result = export(predictor_dir(task), test_split(task), out / "savedmodel",
                            ExportConfig(model_name=model_name), out / "parity.md")
            cache[key] = (result, out / "savedmodel")
        return cache[key]

    return get


@pytest.fixture(scope="session")
def fit_small() -> Callable[..., Path]:
    """The predictor fitting helper, for tests that need their own model families."""
    return fit_predictor


@pytest.fixture(scope="session")
def frame_factory() -> Callable[[int, int, str], pd.DataFrame]:
    """The synthetic table generator, for tests that need their own rows."""
    return make_frame
