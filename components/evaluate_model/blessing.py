"""The blessing gate of ``evaluate_model``: absolute thresholds and a no-regression check against a baseline.

A model is *blessed* (fit to ship) when every threshold holds and, if the production model's metrics are
given, it is not worse than them. Error metrics (``rmse``, ``mae``, ``log_loss``) are upper bounds and better
when lower; all others are lower bounds and better when higher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kfp_tabular.components._shared.jsonargs import parse_json_object
from kfp_tabular.components.evaluate_model.metrics import (
    CLASSIFICATION_METRICS,
    ERROR_METRICS,
    REGRESSION_METRICS,
)
from kfp_tabular.errors import ConfigError

GATE_METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
# Compared with the baseline when no thresholds name the metrics to compare.
PRIMARY_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse"}
NO_GATE_REASON = "no thresholds or baseline given"


def _number(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}[{key!r}] must be a finite number, got {value!r}.")
    return float(value)


def parse_thresholds(text: str) -> dict[str, float]:
    """Parse the ``thresholds`` parameter, a JSON object ``{metric: bound}``.

    Raises:
        ConfigError: invalid JSON, a metric name that ``evaluate_model`` does not compute, or a bound that is
            not a finite number.
    """
    thresholds = parse_json_object(text, "thresholds", '{"accuracy": 0.9, "log_loss": 0.4}')
    unknown = sorted(name for name in thresholds if name not in GATE_METRICS)
    if unknown:
        raise ConfigError(
            f"thresholds names unknown metrics: {', '.join(unknown)}. "
            f"Valid metrics: {', '.join(GATE_METRICS)} "
            f"({', '.join(sorted(ERROR_METRICS))} are upper bounds, the others lower bounds)."
        )
    return {name: _number("thresholds", name, bound) for name, bound in thresholds.items()}


def parse_baseline(text: str) -> dict[str, float]:
    """Parse the ``baseline_metrics`` parameter, a JSON object of the production model's metrics.

    Names are not restricted (a copy of a whole metrics artifact is fine); only compared metrics matter.

    Raises:
        ConfigError: invalid JSON or a value that is not a finite number.
    """
    baseline = parse_json_object(text, "baseline_metrics", '{"accuracy": 0.93}')
    return {name: _number("baseline_metrics", name, value) for name, value in baseline.items()}


def _at_least_as_good(name: str, value: float, reference: float) -> bool:
    # Written so that a NaN value never passes.
    return value <= reference if name in ERROR_METRICS else value >= reference


def _pair(value: float, reference: float) -> tuple[str, str]:
    """Both numbers with 4 significant digits, or more when 4 would print two different numbers alike."""
    for digits in (4, 8, 17):
        shown = f"{value:.{digits}g}", f"{reference:.{digits}g}"
        if shown[0] != shown[1] or value == reference:
            return shown
    return shown


def decide_blessing(
    metrics: Mapping[str, float],
    thresholds: Mapping[str, float] | None,
    baseline: Mapping[str, float] | None,
    primary_metric: str,
) -> tuple[bool, str]:
    """Decide whether the model is blessed and say why in one line.

    Args:
        metrics: The new model's test metrics.
        thresholds: ``{metric: bound}``; error metrics are upper bounds, the others lower bounds.
        baseline: The production model's metrics. The new model must not be worse on any metric in
            ``thresholds``, or on ``primary_metric`` when there are no thresholds. Metrics missing from the
            baseline are skipped with a note.
        primary_metric: Metric compared with the baseline when no thresholds are given.

    Returns:
        ``(blessed, reason)``, e.g. ``(False, "accuracy 0.912 < required 0.95")``.
    """
    thresholds = dict(thresholds or {})
    baseline = dict(baseline or {})
    if not thresholds and not baseline:
        return True, NO_GATE_REASON
    failures: list[str] = []
    passes: list[str] = []
    notes: list[str] = []
    for name, bound in thresholds.items():
        if name not in metrics:
            failures.append(f"{name} is not computed for this model, so its threshold {bound:g} cannot hold")
            continue
        value, limit = _pair(metrics[name], bound)
        if name in ERROR_METRICS:
            ok, relation = _at_least_as_good(name, metrics[name], bound), ("<=", "> allowed")
        else:
            ok, relation = _at_least_as_good(name, metrics[name], bound), (">=", "< required")
        (passes if ok else failures).append(f"{name} {value} {relation[0] if ok else relation[1]} {limit}")
    if baseline:
        for name in thresholds or [primary_metric]:
            if name not in baseline:
                notes.append(f"baseline has no {name}, not compared")
                continue
            if name not in metrics:
                continue  # already reported as a failed threshold
            value, reference = _pair(metrics[name], baseline[name])
            if _at_least_as_good(name, metrics[name], baseline[name]):
                passes.append(f"{name} {value} not worse than baseline {reference}")
            else:
                failures.append(f"{name} {value} worse than baseline {reference}")
    reason = "; ".join(failures or passes or ["nothing to compare"])
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return not failures, reason
