"""KFP shell of ``train_autogluon``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_autogluon(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    label: str,
    model: Output[Model],
    leaderboard: Output[Markdown],
    metrics: Output[Metrics],
    problem_type: str = "auto",
    eval_metric: str = "auto",
    presets: str = "deployable",
    time_limit_s: int = 120,
    hyperparameters: str = "",
    seed: int = 0,
):
    """Fit an AutoGluon ``TabularPredictor`` on the train split, tuning on the validation split.

    Args:
        train_data: Training split from ``ingest_data``.
        validation_data: Validation split, passed to AutoGluon as ``tuning_data``.
        label: Column to predict.
        model: The saved predictor folder; metadata has the best model, problem type, classes, features and
            AutoGluon version.
        leaderboard: Markdown leaderboard of every fitted model.
        metrics: Validation score, fit time and number of models.
        problem_type: ``auto``, ``binary``, ``multiclass`` or ``regression``.
        eval_metric: AutoGluon metric name (e.g. ``accuracy``, ``roc_auc``, ``rmse``) or ``auto``.
        presets: AutoGluon preset, or ``deployable`` (only model families that export exactly to TensorFlow).
        time_limit_s: Wall-clock budget of the fit in seconds.
        hyperparameters: Optional AutoGluon ``hyperparameters`` as JSON, e.g. ``{"GBM": {}}``.
        seed: Random seed for reproducible fits.
    """
    from pathlib import Path

    from kfp_tabular.components.train_autogluon.core import TrainConfig, train

    config = TrainConfig(
        label=label, problem_type=problem_type, eval_metric=eval_metric, presets=presets,
        time_limit_s=time_limit_s, hyperparameters=hyperparameters, seed=seed,
    )
    result = train(Path(train_data.path), Path(validation_data.path), Path(model.path), config,
                   Path(leaderboard.path))
    model.framework = "autogluon"
    model.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
