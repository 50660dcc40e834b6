"""train_autogluon core: config validation, the deployable preset, real tiny AutoGluon fits on penguins."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from penguin_splits import write_splits

from kfp_tabular.components._shared.ensemble import describe_ensemble
from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components.train_autogluon.core import (
    LEADERBOARD_COLUMNS,
    TrainConfig,
    TrainResult,
    fit_kwargs,
    train,
    with_seed,
)
from kfp_tabular.components.train_autogluon.presets import (
    DEPLOYABLE_MODEL_TYPES,
    default_deployable_hyperparameters,
    deployable_fit_kwargs,
    known_presets,
)
from kfp_tabular.errors import ConfigError, DataSourceError, DataValidationError, ModelError

# Two cheap families keep every fit around a second on one core.
TINY = json.dumps({"GBM": {"num_boost_round": 20}, "LR": {}})
QUIET = {"verbosity": 0, "num_cpus": 1}

@dataclass
class Fit:
    result: TrainResult
    model_dir: Path
    leaderboard: Path
    splits: tuple[Path, Path, Path]


def fit(tmp: Path, csv: Path, label: str, **config: object) -> Fit:
    splits = write_splits(csv, tmp / "data", label)
    model_dir, leaderboard = tmp / "model", tmp / "leaderboard.md"
    settings = {"time_limit_s": 30, "hyperparameters": TINY, **config}
    config = TrainConfig(label=label, **settings)
    result = train(splits[0], splits[1], model_dir, config, leaderboard, **QUIET)
    return Fit(result, model_dir, leaderboard, splits)


@pytest.fixture(scope="module")
def binary_fit(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Fit:
    return fit(tmp_path_factory.mktemp("binary"), penguins_csv, "sex")


@pytest.fixture(scope="module")
def multiclass_fit(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Fit:
    return fit(tmp_path_factory.mktemp("multiclass"), penguins_csv, "species", problem_type="multiclass")


@pytest.fixture(scope="module")
def regression_fit(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Fit:
    return fit(tmp_path_factory.mktemp("regression"), penguins_csv, "body_mass_g")


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"problem_type": "ordinal"}, "binary, multiclass, regression"),
        ({"presets": "fastest"}, "medium_quality"),
        ({"time_limit_s": 0}, "time_limit_s must be a positive integer"),
        ({"time_limit_s": -5}, "time_limit_s must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"label": " "}, "label must name the column"),
        ({"hyperparameters": '{"GBM": {'}, "line 1 column 10"),
        ({"hyperparameters": "[1, 2]"}, "must be a JSON object"),
        ({"hyperparameters": '{"GBM": 3}'}, "must be an object or a list of objects"),
        ({"presets": "medium_quality", "hyperparameters": '{"NOPE": {}}'}, "unknown model families: NOPE"),
        ({"eval_metric": "rmse", "problem_type": "binary"}, "not an AutoGluon metric"),
    ],
)
def test_invalid_config_is_rejected_with_a_specific_message(overrides: dict, expected: str) -> None:
    settings = {"label": "species", **overrides}
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        TrainConfig(**settings)


def test_deployable_rejects_non_deployable_families_and_names_them() -> None:
    with pytest.raises(ConfigError) as error:
        TrainConfig(label="sex", hyperparameters='{"GBM": {}, "CAT": {}, "NN_TORCH": {}}')
    message = str(error.value)
    assert "CAT, NN_TORCH" in message
    assert "GBM," not in message.split("names")[-1]


def test_other_presets_accept_any_family_and_known_values() -> None:
    config = TrainConfig(label="sex", presets="best_quality", eval_metric="roc_auc", problem_type="binary",
                         hyperparameters='{"CAT": {"iterations": 10}}')
    assert config.hyperparameters_dict == {"CAT": {"iterations": 10}}
    assert {"deployable", "medium_quality", "best_quality", "high", "extreme_quality"} <= set(known_presets())


def test_deployable_preset_uses_autogluon_defaults_of_the_deployable_families_only() -> None:
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config

    kwargs = deployable_fit_kwargs()
    hyperparameters = kwargs["hyperparameters"]
    assert set(hyperparameters) == set(DEPLOYABLE_MODEL_TYPES)
    defaults = get_hyperparameter_config("default")
    for key in ("GBM", "XGB", "RF", "XT"):
        assert hyperparameters[key] == defaults[key]
    criteria = {config["criterion"] for config in hyperparameters["RF"]}
    assert criteria == {"gini", "entropy", "squared_error"}
    assert kwargs["num_stack_levels"] == 0
    assert kwargs["dynamic_stacking"] is False
    assert kwargs["calibrate"] is False  # temperature scaling would break the weighted sum of probabilities
    assert "medium_quality" in kwargs["presets"]


def test_user_hyperparameters_replace_the_deployable_defaults() -> None:
    kwargs = deployable_fit_kwargs({"XGB": {"n_estimators": 5}})
    assert kwargs["hyperparameters"] == {"XGB": {"n_estimators": 5}}
    assert default_deployable_hyperparameters()["LR"] == {}


def test_seed_reaches_every_model_config_without_overriding_an_explicit_one() -> None:
    config = TrainConfig(label="sex", seed=7)
    kwargs = fit_kwargs(config)
    gbm_configs = kwargs["hyperparameters"]["GBM"]
    assert all(entry["seed"] == 7 for entry in gbm_configs)
    assert all(entry["random_state"] == 7 for entry in kwargs["hyperparameters"]["RF"])
    assert kwargs["hyperparameters"]["LR"]["random_state"] == 7
    assert kwargs["ag_args_ensemble"] == {"model_random_seed": 7}
    assert kwargs["use_bag_holdout"] is True  # AutoGluon refuses tuning_data with bagging otherwise
    assert kwargs["time_limit"] == 120
    assert with_seed({"GBM": {"seed": 3}, "KNN": {}}, 7) == {"GBM": {"seed": 3}, "KNN": {}}


def test_named_preset_is_resolved_to_its_hyperparameters_so_it_can_be_seeded() -> None:
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config

    kwargs = fit_kwargs(TrainConfig(label="sex", presets="good_quality", seed=1))
    assert kwargs["presets"] == "good_quality"
    assert set(kwargs["hyperparameters"]) == set(get_hyperparameter_config("light"))
    assert kwargs["hyperparameters"]["CAT"]["random_seed"] == 1


# --- real fits ------------------------------------------------------------------------------------


def test_binary_fit_reports_metadata_and_metrics(binary_fit: Fit) -> None:
    import autogluon.tabular

    metadata, metrics = binary_fit.result.metadata, binary_fit.result.metrics
    predictor = load_predictor(binary_fit.model_dir)
    assert metadata["problem_type"] == "binary"
    assert metadata["best_model"] == predictor.model_best
    assert metadata["eval_metric"] == "accuracy"
    assert metadata["classes"] == [str(label) for label in predictor.class_labels] == ["female", "male"]
    assert metadata["positive_class"] in metadata["classes"]
    assert 0.0 < metadata["decision_threshold"] < 1.0
    assert metadata["label"] == "sex"
    assert metadata["autogluon_version"] == autogluon.tabular.__version__
    assert metadata["presets"] == "deployable"
    assert metadata["model_types"] == ["GBM", "LR"]
    names = [feature["name"] for feature in metadata["features"]]
    assert "sex" not in names and {"species", "island", "bill_length_mm"} <= set(names)
    island = next(feature for feature in metadata["features"] if feature["name"] == "island")
    assert island["type_group"] == "object"
    json.dumps(metadata)  # KFP stores metadata as JSON
    leaderboard = binary_fit.result.leaderboard
    assert set(metrics) == {"validation_score", "fit_time_s", "num_models"}
    assert metrics["num_models"] == len(leaderboard) == len(predictor.model_names())
    best_row = leaderboard[leaderboard["model"] == predictor.model_best]
    assert metrics["validation_score"] == pytest.approx(float(best_row["score_val"].iloc[0]))
    assert 0.5 < metrics["validation_score"] <= 1.0
    assert metrics["fit_time_s"] > 0


def test_markdown_leaderboard_has_headline_and_every_model(binary_fit: Fit) -> None:
    text = binary_fit.leaderboard.read_text()
    best = binary_fit.result.metadata["best_model"]
    assert f"**Best model:** `{best}`: validation accuracy" in text
    assert "| " + " | ".join(LEADERBOARD_COLUMNS) + " |" in text
    for model in binary_fit.result.leaderboard["model"]:
        assert f"| {model} |" in text


def test_saved_predictor_loads_and_predicts_known_classes(binary_fit: Fit) -> None:
    predictor = load_predictor(binary_fit.model_dir)
    validation = pd.read_parquet(binary_fit.splits[1])
    predictions = predictor.predict(validation.drop(columns=["sex"]))
    assert set(predictions) <= {"female", "male"}
    assert (predictions == validation["sex"]).mean() > 0.6


def test_same_seed_gives_the_same_model(binary_fit: Fit, tmp_path: Path, penguins_csv: Path) -> None:
    again = fit(tmp_path, penguins_csv, "sex")
    validation = pd.read_parquet(binary_fit.splits[1]).drop(columns=["sex"])
    first = load_predictor(binary_fit.model_dir).predict_proba(validation)
    second = load_predictor(again.model_dir).predict_proba(validation)
    pd.testing.assert_frame_equal(first, second)


def test_multiclass_fit_lists_classes_in_predictor_order(multiclass_fit: Fit) -> None:
    metadata = multiclass_fit.result.metadata
    predictor = load_predictor(multiclass_fit.model_dir)
    assert metadata["problem_type"] == "multiclass"
    assert metadata["classes"] == [str(label) for label in predictor.class_labels]
    assert sorted(metadata["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert "positive_class" not in metadata


def test_regression_fit_has_no_classes_and_a_negated_error_score(regression_fit: Fit) -> None:
    metadata, metrics = regression_fit.result.metadata, regression_fit.result.metrics
    assert metadata["problem_type"] == "regression"
    assert metadata["classes"] == []
    assert metadata["eval_metric"] == "root_mean_squared_error"
    assert metrics["validation_score"] < 0  # AutoGluon reports -RMSE so that higher is better
    assert "validation root_mean_squared_error" in regression_fit.leaderboard.read_text()


def test_deployable_preset_trains_only_deployable_families(tmp_path: Path, penguins_csv: Path) -> None:
    done = fit(tmp_path, penguins_csv, "species", hyperparameters="", time_limit_s=25)
    predictor = load_predictor(done.model_dir)
    assert set(done.result.metadata["model_types"]) <= set(DEPLOYABLE_MODEL_TYPES)
    assert len(done.result.metadata["model_types"]) >= 3
    structure = describe_ensemble(predictor)
    assert set(structure.families) <= set(DEPLOYABLE_MODEL_TYPES)
    assert all(member.level == 1 for member in structure.members)  # one stack level only
    assert done.result.leaderboard["stack_level"].max() <= 2
    assert predictor._trainer.load_model(predictor.model_best).temperature_scalar is None


# --- failures leave nothing behind ----------------------------------------------------------------


def _outputs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "out" / "model", tmp_path / "out" / "leaderboard.md"


def test_label_missing_from_validation_is_reported_with_columns(tmp_path: Path, penguins_csv: Path) -> None:
    train_path, validation_path, _ = write_splits(penguins_csv, tmp_path, "sex")
    pd.read_parquet(validation_path).drop(columns=["sex"]).to_parquet(validation_path)
    model_dir, leaderboard = _outputs(tmp_path)
    with pytest.raises(DataValidationError, match=r"'sex' is missing from the validation split.*island"):
        train(train_path, validation_path, model_dir, TrainConfig(label="sex", hyperparameters=TINY),
              leaderboard, **QUIET)
    assert not model_dir.exists() and not leaderboard.exists()


def test_splits_with_different_columns_are_rejected(tmp_path: Path, penguins_csv: Path) -> None:
    train_path, validation_path, _ = write_splits(penguins_csv, tmp_path, "sex")
    pd.read_parquet(validation_path).assign(extra=1).to_parquet(validation_path)
    model_dir, leaderboard = _outputs(tmp_path)
    with pytest.raises(DataValidationError, match=r"only in validation: \['extra'\]"):
        train(train_path, validation_path, model_dir, TrainConfig(label="sex", hyperparameters=TINY),
              leaderboard, **QUIET)


def test_binary_problem_type_with_three_classes_is_rejected(tmp_path: Path, penguins_csv: Path) -> None:
    train_path, validation_path, _ = write_splits(penguins_csv, tmp_path, "species")
    model_dir, leaderboard = _outputs(tmp_path)
    config = TrainConfig(label="species", problem_type="binary", hyperparameters=TINY)
    with pytest.raises(DataValidationError, match="exactly 2 label values"):
        train(train_path, validation_path, model_dir, config, leaderboard, **QUIET)


def test_missing_split_file_is_a_data_source_error(tmp_path: Path) -> None:
    model_dir, leaderboard = _outputs(tmp_path)
    with pytest.raises(DataSourceError, match=r"train split .* does not exist"):
        train(tmp_path / "nope.parquet", tmp_path / "nope2.parquet", model_dir, TrainConfig(label="sex"),
              leaderboard, **QUIET)


def test_failed_fit_removes_the_partial_model(tmp_path: Path, penguins_csv: Path) -> None:
    train_path, validation_path, _ = write_splits(penguins_csv, tmp_path, "sex")
    model_dir, leaderboard = _outputs(tmp_path)
    broken = json.dumps({"GBM": {"num_boost_round": 5, "objective": "no_such_objective"}})
    with pytest.raises(ModelError, match="AutoGluon could not train"):
        train(train_path, validation_path, model_dir, TrainConfig(label="sex", hyperparameters=broken),
              leaderboard, **QUIET)
    assert not model_dir.exists() and not leaderboard.exists()


def test_non_empty_model_folder_is_refused_and_kept(tmp_path: Path, penguins_csv: Path) -> None:
    train_path, validation_path, _ = write_splits(penguins_csv, tmp_path, "sex")
    model_dir, leaderboard = _outputs(tmp_path)
    model_dir.mkdir(parents=True)
    (model_dir / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        train(train_path, validation_path, model_dir, TrainConfig(label="sex", hyperparameters=TINY),
              leaderboard, **QUIET)
    assert (model_dir / "keep.txt").read_text() == "precious"
