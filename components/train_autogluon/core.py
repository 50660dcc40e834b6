"""Core of ``train_autogluon``: fit an AutoGluon ``TabularPredictor`` on the train split, tune on validation.

Plain Python (no kfp). ``train`` reads the Parquet splits written by ``ingest_data``, fits, saves the
predictor in ``model_dir`` (loadable with ``_shared/predictor.py::load_predictor``) and writes a Markdown
leaderboard.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp_tabular.components._shared.ensemble import ENSEMBLE_KEYS
from kfp_tabular.components._shared.files import all_or_nothing, write_text_atomic
from kfp_tabular.components._shared.jsonargs import parse_json_object
from kfp_tabular.components._shared.markdown import format_value, frame_table
from kfp_tabular.components._shared.splits import read_split
from kfp_tabular.components._shared.table_schema import read_table_schema
from kfp_tabular.components.train_autogluon.presets import (
    DEPLOYABLE_PRESET,
    deployable_fit_kwargs,
    known_presets,
    preset_hyperparameters,
)
from kfp_tabular.errors import ConfigError, DataValidationError, ModelError
from kfp_tabular.text import clause

if TYPE_CHECKING:
    import pandas as pd

PROBLEM_TYPES = ("auto", "binary", "multiclass", "regression")
LEADERBOARD_COLUMNS = ("model", "score_val", "pred_time_val", "fit_time", "stack_level")
# Verbosity of AutoGluon's log when the caller does not pass one; tests set 0 to stay quiet.
VERBOSITY_ENV = "KFP_TABULAR_AG_VERBOSITY"
_HYPERPARAMETERS_EXAMPLE = '{"GBM": {"num_boost_round": 200}, "RF": {}}'


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one AutoGluon fit, validated on construction.

    Attributes:
        label: Column to predict.
        problem_type: ``auto``, ``binary``, ``multiclass`` or ``regression``.
        eval_metric: AutoGluon metric name, or ``auto`` to let AutoGluon choose from the problem type.
        presets: ``deployable`` or any AutoGluon preset name (``medium_quality``, ``best_quality``...).
        time_limit_s: Wall-clock budget of the fit in seconds.
        hyperparameters: Optional AutoGluon ``hyperparameters`` as a JSON object; replaces the preset's.
        seed: Seed of AutoGluon's data splits and of every model.
    """

    label: str
    problem_type: str = "auto"
    eval_metric: str = "auto"
    presets: str = DEPLOYABLE_PRESET
    time_limit_s: int = 120
    hyperparameters: str = ""
    seed: int = 0
    _hyperparameters: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError("label must name the column to predict, got an empty string.")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}.")
        _check_eval_metric(self.eval_metric, self.problem_type)
        presets = known_presets()
        if self.presets not in presets:
            raise ConfigError(f"presets {self.presets!r} is unknown. Valid presets: {', '.join(presets)}.")
        if not _is_int(self.time_limit_s) or self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s must be a positive integer, got {self.time_limit_s!r}.")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}.")
        parsed = parse_json_object(self.hyperparameters, "hyperparameters", _HYPERPARAMETERS_EXAMPLE)
        _check_hyperparameters(parsed)
        if self.presets == DEPLOYABLE_PRESET:
            deployable_fit_kwargs(parsed)  # raises ConfigError on non-deployable families
        object.__setattr__(self, "_hyperparameters", parsed)

    @property
    def hyperparameters_dict(self) -> dict[str, Any]:
        """The parsed ``hyperparameters`` (``{}`` when none were given)."""
        return copy.deepcopy(self._hyperparameters)


@dataclass
class TrainResult:
    """What a fit produced.

    Attributes:
        metrics: ``validation_score`` (AutoGluon ``score_val`` of the best model, higher is better),
            ``fit_time_s`` and ``num_models``.
        metadata: ``best_model``, ``problem_type``, ``eval_metric`` (the validation score's metric),
            ``classes``, ``features``, ``label``, ``autogluon_version``, ``presets``, ``model_types``; binary
            tasks also ``positive_class`` and ``decision_threshold``.
        leaderboard: AutoGluon's leaderboard on the validation split.
    """

    metrics: dict[str, float]
    metadata: dict[str, Any]
    leaderboard: pd.DataFrame


def _check_eval_metric(eval_metric: str, problem_type: str) -> None:
    if eval_metric == "auto":
        return
    from autogluon.core.metrics import METRICS

    types = ("binary", "multiclass", "regression") if problem_type == "auto" else (problem_type,)
    valid = sorted({name for kind in types for name in METRICS[kind]})
    if eval_metric not in valid:
        raise ConfigError(
            f"eval_metric {eval_metric!r} is not an AutoGluon metric for problem_type {problem_type!r}. "
            f"Valid: auto, {', '.join(valid)}."
        )


def _check_hyperparameters(hyperparameters: dict[str, Any]) -> None:
    from autogluon.tabular.registry import ag_model_registry

    unknown = sorted(key for key in hyperparameters if key not in ag_model_registry.keys)
    if unknown:
        raise ConfigError(
            f"hyperparameters names unknown model families: {', '.join(unknown)}. "
            f"Valid keys: {', '.join(ag_model_registry.keys)}."
        )
    for key, value in hyperparameters.items():
        configs = value if isinstance(value, list) else [value]
        if not configs or not all(isinstance(config, dict) for config in configs):
            raise ConfigError(
                f"hyperparameters[{key!r}] must be an object or a list of objects, got {value!r}. "
                f"Example: {_HYPERPARAMETERS_EXAMPLE}."
            )


def with_seed(hyperparameters: dict[str, Any], seed: int) -> dict[str, Any]:
    """Copy of ``hyperparameters`` with ``seed`` set in every model config that does not already set one.

    AutoGluon seeds a model from its own seed hyperparameter (``seed`` for LightGBM and XGBoost,
    ``random_state`` for the sklearn models...) and falls back to 0 otherwise.
    """
    from autogluon.tabular.registry import ag_model_registry

    seeded: dict[str, Any] = {}
    for key, value in hyperparameters.items():
        model_cls = ag_model_registry.key_to_cls(key) if key in ag_model_registry.keys else None
        seed_name = getattr(model_cls, "seed_name", None)
        if seed_name is None:
            seeded[key] = copy.deepcopy(value)
            continue
        names = {seed_name, *getattr(model_cls, "seed_name_alt", [])}
        configs = []
        for config in value if isinstance(value, list) else [value]:
            config = copy.deepcopy(config)
            if isinstance(config, dict) and not names & set(config):
                config[seed_name] = seed
            configs.append(config)
        seeded[key] = configs if isinstance(value, list) else configs[0]
    return seeded


def fit_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``TabularPredictor.fit`` keyword arguments for ``config``, apart from the data.

    ``use_bag_holdout=True`` is always passed: AutoGluon refuses ``tuning_data`` with a bagging preset
    otherwise, and ignores the flag when it does not bag.
    """
    user_hyperparameters = config.hyperparameters_dict
    if config.presets == DEPLOYABLE_PRESET:
        kwargs = deployable_fit_kwargs(user_hyperparameters)
    else:
        kwargs = {"presets": config.presets}
        hyperparameters = user_hyperparameters or preset_hyperparameters(config.presets)
        if hyperparameters is not None:
            kwargs["hyperparameters"] = hyperparameters
    if "hyperparameters" in kwargs:
        kwargs["hyperparameters"] = with_seed(kwargs["hyperparameters"], config.seed)
    kwargs.update(
        time_limit=config.time_limit_s,
        use_bag_holdout=True,
        # Bagged children take their seed from here when a model config sets none.
        ag_args_ensemble={"model_random_seed": config.seed},
    )
    return kwargs


def _check_splits(
    train: pd.DataFrame, validation: pd.DataFrame, config: TrainConfig, paths: tuple[Path, Path]
) -> None:
    for frame, split, path in ((train, "train", paths[0]), (validation, "validation", paths[1])):
        if config.label not in frame.columns:
            raise DataValidationError(
                f"Label column {config.label!r} is missing from the {split} split {path}. "
                f"Columns: {', '.join(map(str, frame.columns))}. Fix the 'label' parameter."
            )
    only_train = [c for c in train.columns if c not in validation.columns]
    only_validation = [c for c in validation.columns if c not in train.columns]
    if only_train or only_validation:
        raise DataValidationError(
            f"The train split {paths[0]} and the validation split {paths[1]} have different columns "
            f"(only in train: {only_train or 'none'}; only in validation: {only_validation or 'none'}). "
            "Produce both with the same ingest_data run."
        )
    labels = train[config.label].dropna()
    if config.problem_type == "binary" and labels.nunique() != 2:
        raise DataValidationError(
            f"problem_type='binary' needs exactly 2 label values in the train split {paths[0]}, "
            f"found {labels.nunique()}: use 'multiclass' or 'auto'."
        )
    if config.problem_type == "regression" and not _is_numeric(labels):
        raise DataValidationError(
            f"problem_type='regression' needs a numeric label, but {config.label!r} in {paths[0]} has dtype "
            f"{labels.dtype}: use 'binary', 'multiclass' or 'auto'."
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_numeric(series: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series) and not is_bool_dtype(series)


def resolved_problem_type(config: TrainConfig, train_path: Path) -> str | None:
    """The problem type to fit: the one ingest_data decided and stored in the split, unless one is requested.

    None (AutoGluon infers it) only for splits that ingest_data did not write.
    """
    if config.problem_type != "auto":
        return config.problem_type
    schema = read_table_schema(train_path)
    if schema is None or schema.label != config.label:
        return None
    return schema.problem_type


def _fit(train: pd.DataFrame, validation: pd.DataFrame, model_dir: Path, config: TrainConfig,
         verbosity: int, num_cpus: int | str, problem_type: str | None) -> Any:
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor(
        label=config.label,
        problem_type=problem_type,
        eval_metric=None if config.eval_metric == "auto" else config.eval_metric,
        path=str(model_dir),
        verbosity=verbosity,
        # Seeds the holdout and k-fold splits AutoGluon makes.
        learner_kwargs={"random_state": config.seed},
    )
    try:
        predictor.fit(train, tuning_data=validation, num_cpus=num_cpus, **fit_kwargs(config))
    except Exception as exc:  # AutoGluon raises plain RuntimeError/ValueError/AssertionError
        raise ModelError(
            f"AutoGluon could not train on {config.label!r} with presets={config.presets!r}: {clause(exc)}. "
            "Check the hyperparameters, raise time_limit_s, or read the AutoGluon log above."
        ) from exc
    return predictor


def _model_types(predictor: Any) -> list[str]:
    """AutoGluon family keys (``GBM``, ``RF``...) of every fitted base model; weighted ensembles left out."""
    trainer = predictor._trainer
    families = set()
    for name in predictor.model_names():
        inner = trainer.get_model_attribute(name, "type_inner")
        key = getattr(inner, "ag_key", None) or inner.__name__
        if key not in ENSEMBLE_KEYS:
            families.add(str(key))
    return sorted(families)


def _features(predictor: Any, train: pd.DataFrame) -> list[dict[str, str]]:
    """Input columns the predictor uses (constant or useless ones were dropped by AutoGluon)."""
    metadata = predictor.feature_metadata_in
    return [
        {"name": name, "dtype": str(train[name].dtype), "type_group": metadata.get_feature_type_raw(name)}
        for name in metadata.get_features()
    ]


def _metadata(predictor: Any, train: pd.DataFrame, config: TrainConfig) -> dict[str, Any]:
    import autogluon.tabular

    classification = predictor.problem_type in ("binary", "multiclass")
    metadata: dict[str, Any] = {
        "best_model": predictor.model_best,
        "problem_type": predictor.problem_type,
        "eval_metric": predictor.eval_metric.name,
        "classes": [str(label) for label in predictor.class_labels] if classification else [],
        "features": _features(predictor, train),
        "label": config.label,
        "autogluon_version": autogluon.tabular.__version__,
        "presets": config.presets,
        "model_types": _model_types(predictor),
    }
    if predictor.problem_type == "binary":
        metadata["positive_class"] = str(predictor.positive_class)
        metadata["decision_threshold"] = float(predictor.decision_threshold)
    return metadata


def render_leaderboard(leaderboard: pd.DataFrame, best_model: str, eval_metric: str) -> str:
    """Markdown leaderboard: a headline with the best model and its validation score, then a row per model."""
    best = leaderboard.loc[leaderboard["model"] == best_model, "score_val"].iloc[0]
    headline = (
        f"**Best model:** `{best_model}`: validation {eval_metric} {format_value(float(best))}\n\n"
        "Scores are AutoGluon's `score_val` on the validation split: higher is better "
        "(error metrics such as RMSE are negated). Times are in seconds."
    )
    return f"# AutoGluon leaderboard\n\n{headline}\n\n{frame_table(leaderboard[list(LEADERBOARD_COLUMNS)])}\n"


def train(
    train_path: Path,
    validation_path: Path,
    model_dir: Path,
    config: TrainConfig,
    leaderboard_path: Path,
    *,
    verbosity: int | None = None,
    num_cpus: int | str = "auto",
) -> TrainResult:
    """Fit AutoGluon on the train split with the validation split as tuning data; save it to ``model_dir``.

    Args:
        train_path: Parquet train split from ``ingest_data``.
        validation_path: Parquet validation split, passed to AutoGluon as ``tuning_data``.
        model_dir: Output folder of the saved predictor; must not exist yet or be empty.
        config: Validated settings.
        leaderboard_path: Output Markdown leaderboard.
        verbosity: AutoGluon log verbosity (0 quiet ... 4); defaults to ``$KFP_TABULAR_AG_VERBOSITY`` or 2.
        num_cpus: CPUs AutoGluon may use (``auto``: all).

    Raises:
        DataSourceError: a split file is missing.
        DataValidationError: a split is unreadable or empty, lacks the label, or the splits' columns differ.
        ConfigError: ``model_dir`` already holds files.
        ModelError: AutoGluon could not fit any model.
    """
    model_dir, leaderboard_path = Path(model_dir), Path(leaderboard_path)
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise ConfigError(f"Output folder {model_dir} is not empty; give train_autogluon a fresh model path.")
    if verbosity is None:
        verbosity = int(os.environ.get(VERBOSITY_ENV, "2"))
    with all_or_nothing(model_dir, leaderboard_path):
        train_frame = read_split(Path(train_path), "train split")
        validation_frame = read_split(Path(validation_path), "validation split")
        _check_splits(train_frame, validation_frame, config, (Path(train_path), Path(validation_path)))
        started = time.perf_counter()
        problem_type = resolved_problem_type(config, Path(train_path))
        predictor = _fit(train_frame, validation_frame, model_dir, config, verbosity, num_cpus, problem_type)
        fit_time_s = time.perf_counter() - started
        leaderboard = predictor.leaderboard(silent=True)
        metadata = _metadata(predictor, train_frame, config)
        best_score = leaderboard.loc[leaderboard["model"] == predictor.model_best, "score_val"].iloc[0]
        metrics = {
            "validation_score": float(best_score),
            "fit_time_s": round(fit_time_s, 3),
            "num_models": float(len(leaderboard)),
        }
        write_text_atomic(
            leaderboard_path, render_leaderboard(leaderboard, predictor.model_best, metadata["eval_metric"])
        )
    return TrainResult(metrics=metrics, metadata=metadata, leaderboard=leaderboard)
