"""Presets of ``train_autogluon``: AutoGluon's own, plus ``deployable``.

``deployable`` trains only what ``export_savedmodel`` can rebuild exactly as a TensorFlow graph:

* model families LightGBM (``GBM``), XGBoost (``XGB``), RandomForest (``RF``), ExtraTrees (``XT``) with the
  gini / entropy / squared-error criteria, and the linear model (``LR``), with AutoGluon's default
  hyperparameters for those keys (``hyperparameter_configs.py``, ``default``; ``LR`` uses its own defaults);
* one stack level (``num_stack_levels=0``, no dynamic stacking), so the best model is a base model or a
  ``WeightedEnsemble_L2``: a weighted sum of base-model probabilities (regression: predictions);
* no temperature scaling (``calibrate=False``): it would apply a softmax on top of that weighted sum. The
  binary decision threshold may still be calibrated; it is recorded in ``predictor.decision_threshold``;
* no text n-gram features (AutoGluon's ``ignore_text`` preset): a count vectorizer has no exact graph port;
* otherwise AutoGluon's ``medium_quality`` preset (no bagging).

User ``hyperparameters`` replace the default ones but may only name the families above.
"""

from __future__ import annotations

import copy
from typing import Any

from kfp_tabular.errors import ConfigError

DEPLOYABLE_PRESET = "deployable"
DEPLOYABLE_MODEL_TYPES = ("GBM", "XGB", "RF", "XT", "LR")
# The AutoGluon presets that `deployable` builds on: quality level, and no text n-gram featurization.
DEPLOYABLE_BASE_PRESETS = ("medium_quality", "ignore_text")


def known_presets() -> list[str]:
    """Every accepted ``presets`` value: ``deployable``, AutoGluon's presets and their aliases."""
    from autogluon.tabular.configs.presets_configs import tabular_presets_alias, tabular_presets_dict

    return [DEPLOYABLE_PRESET, *sorted(set(tabular_presets_dict) | set(tabular_presets_alias))]


def preset_hyperparameters(preset: str) -> dict[str, Any] | None:
    """The ``hyperparameters`` an AutoGluon preset fits with, or ``None`` when AutoGluon decides at fit time.

    Resolving it lets ``train`` pass the same models explicitly, with the seed set in each of them.
    """
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config
    from autogluon.tabular.configs.presets_configs import tabular_presets_alias, tabular_presets_dict

    settings = tabular_presets_dict[tabular_presets_alias.get(preset, preset)]
    # AutoGluon fits the "default" portfolio when a preset names no hyperparameters.
    name = settings.get("hyperparameters", "default")
    return get_hyperparameter_config(name) if isinstance(name, str) else None


def default_deployable_hyperparameters() -> dict[str, Any]:
    """AutoGluon's default hyperparameters of the deployable families, plus ``LR`` with its defaults."""
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config

    defaults = get_hyperparameter_config("default")
    chosen = {key: value for key, value in defaults.items() if key in DEPLOYABLE_MODEL_TYPES}
    chosen.setdefault("LR", {})
    return chosen


def non_deployable_keys(hyperparameters: dict[str, Any]) -> list[str]:
    """Keys of a ``hyperparameters`` dict that name a family the export cannot convert exactly."""
    return sorted(key for key in hyperparameters if key not in DEPLOYABLE_MODEL_TYPES)


def deployable_fit_kwargs(hyperparameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """``TabularPredictor.fit`` keyword arguments of the ``deployable`` preset.

    Args:
        hyperparameters: Optional user ``hyperparameters``; they replace the defaults.

    Raises:
        ConfigError: ``hyperparameters`` names a family outside ``DEPLOYABLE_MODEL_TYPES``.
    """
    if hyperparameters:
        rejected = non_deployable_keys(hyperparameters)
        if rejected:
            raise ConfigError(
                f"presets='deployable' only trains model families that export exactly to TensorFlow "
                f"({', '.join(DEPLOYABLE_MODEL_TYPES)}), but hyperparameters names {', '.join(rejected)}. "
                "Remove those keys, or choose another preset (the model then cannot be exported)."
            )
        chosen = copy.deepcopy(hyperparameters)
    else:
        chosen = default_deployable_hyperparameters()
    return {
        "presets": list(DEPLOYABLE_BASE_PRESETS),
        "hyperparameters": chosen,
        "num_stack_levels": 0,
        "dynamic_stacking": False,
        "calibrate": False,
    }
