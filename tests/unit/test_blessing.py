"""The blessing gate: thresholds (lower and upper bounds), baseline comparison and the reason strings."""

from __future__ import annotations

import math

import pytest

from kfp_tabular.components.evaluate_model.blessing import (
    NO_GATE_REASON,
    decide_blessing,
    parse_baseline,
    parse_thresholds,
)
from kfp_tabular.errors import ConfigError

CLASSIFICATION = {"accuracy": 0.912, "balanced_accuracy": 0.9, "log_loss": 0.31, "f1_macro": 0.905}
REGRESSION = {"rmse": 3.2, "mae": 2.5, "r2": 0.81}


def test_nothing_to_check_blesses() -> None:
    assert decide_blessing(CLASSIFICATION, {}, {}, "accuracy") == (True, NO_GATE_REASON)
    assert decide_blessing({}, None, None, "accuracy") == (True, "no thresholds or baseline given")


def test_lower_bound_fails_with_a_concrete_reason() -> None:
    blessed, reason = decide_blessing(CLASSIFICATION, {"accuracy": 0.95}, {}, "accuracy")
    assert not blessed
    assert reason == "accuracy 0.912 < required 0.95"


def test_upper_bound_on_an_error_metric() -> None:
    assert decide_blessing(REGRESSION, {"rmse": 3.5}, {}, "rmse") == (True, "rmse 3.2 <= 3.5")
    blessed, reason = decide_blessing(REGRESSION, {"rmse": 3.0, "r2": 0.8}, {}, "rmse")
    assert not blessed
    assert reason == "rmse 3.2 > allowed 3"


def test_every_threshold_must_hold() -> None:
    blessed, reason = decide_blessing(CLASSIFICATION, {"accuracy": 0.9, "log_loss": 0.3}, {}, "accuracy")
    assert not blessed
    assert "log_loss 0.31 > allowed 0.3" in reason and "accuracy" not in reason
    assert decide_blessing(CLASSIFICATION, {"accuracy": 0.9, "log_loss": 0.4}, {}, "accuracy")[0]


def test_bound_equal_to_the_value_holds() -> None:
    assert decide_blessing({"accuracy": 0.9}, {"accuracy": 0.9}, {}, "accuracy")[0]


def test_close_values_are_printed_with_enough_digits_to_differ() -> None:
    blessed, reason = decide_blessing({"accuracy": 0.949999}, {"accuracy": 0.95}, {}, "accuracy")
    assert not blessed
    assert reason == "accuracy 0.949999 < required 0.95"


def test_baseline_on_primary_metric_when_no_thresholds() -> None:
    blessed, reason = decide_blessing(REGRESSION, {}, {"rmse": 2.9, "mae": 9.0}, "rmse")
    assert not blessed
    assert reason == "rmse 3.2 worse than baseline 2.9"
    blessed, reason = decide_blessing(REGRESSION, {}, {"rmse": 3.4}, "rmse")
    assert blessed
    assert reason == "rmse 3.2 not worse than baseline 3.4"


def test_baseline_compares_each_threshold_metric() -> None:
    blessed, reason = decide_blessing(
        CLASSIFICATION, {"accuracy": 0.9, "f1_macro": 0.8}, {"accuracy": 0.93, "f1_macro": 0.85}, "accuracy"
    )
    assert not blessed
    assert reason == "accuracy 0.912 worse than baseline 0.93"


def test_metric_missing_from_baseline_is_ignored_with_a_note() -> None:
    blessed, reason = decide_blessing(CLASSIFICATION, {"accuracy": 0.9, "f1_macro": 0.8}, {"accuracy": 0.9},
                                      "accuracy")
    assert blessed
    assert "baseline has no f1_macro, not compared" in reason
    assert "accuracy 0.912 not worse than baseline 0.9" in reason


def test_threshold_on_a_metric_the_model_lacks_does_not_bless() -> None:
    blessed, reason = decide_blessing({"accuracy": 0.95}, {"roc_auc": 0.9}, {}, "accuracy")
    assert not blessed
    assert "roc_auc is not computed" in reason


def test_nan_metric_never_passes() -> None:
    assert not decide_blessing({"rmse": math.nan}, {"rmse": 10.0}, {}, "rmse")[0]
    assert not decide_blessing({"rmse": math.nan}, {}, {"rmse": 10.0}, "rmse")[0]


def test_threshold_parsing_validates_names_and_values() -> None:
    assert parse_thresholds(' {"accuracy": 0.9, "rmse": 3} ') == {"accuracy": 0.9, "rmse": 3.0}
    assert parse_thresholds("") == {}
    with pytest.raises(ConfigError, match=r"unknown metrics: acc, auc\. Valid metrics: accuracy, .*rmse"):
        parse_thresholds('{"acc": 0.9, "auc": 0.8}')
    with pytest.raises(ConfigError, match="finite number"):
        parse_thresholds('{"accuracy": "high"}')
    with pytest.raises(ConfigError, match="line 1 column 14"):
        parse_thresholds('{"accuracy": }')


def test_baseline_parsing_accepts_any_name_but_only_numbers() -> None:
    assert parse_baseline('{"accuracy": 0.9, "test_rows": 70}') == {"accuracy": 0.9, "test_rows": 70.0}
    with pytest.raises(ConfigError, match=r"baseline_metrics\['accuracy'\] must be a finite number"):
        parse_baseline('{"accuracy": null}')
    with pytest.raises(ConfigError, match="baseline_metrics must be a JSON object"):
        parse_baseline("0.9")
