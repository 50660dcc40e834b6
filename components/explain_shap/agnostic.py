"""Model-agnostic SHAP (shap's Permutation or Kernel explainer) on the whole predictor: any ensemble, approximate.

shap's maskers and KernelExplainer work on numeric matrices, while AutoGluon wants raw frames with string
categoricals. Non-numeric columns are therefore passed to shap as integer codes into a per-column table of the
values seen in the background and explained rows, and decoded back to the raw values before each prediction.

Rows are explained one at a time so the step can log its progress (rows done, rate, ETA) and stop within its
time budget; shap's and numba's own log lines and prints stay out of the step log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components.explain_shap.explanation import Explanation, model_outputs, output_names
from kfp_tabular.errors import ConfigError, KfpTabularError

LOGGER = logging.getLogger(__name__)
AGNOSTIC_METHODS = ("permutation", "kernel")
# Seconds the model-agnostic explainers may take by default (``time_budget_s``).
DEFAULT_TIME_BUDGET_S = 300.0
# At most one progress line per this many seconds.
PROGRESS_EVERY_S = 5.0
# Libraries whose INFO / DEBUG lines are not the step's (shap's KernelExplainer logs every ``phi = array(...)``
# at INFO; numba logs its compiler passes at DEBUG).
QUIET_LOGGERS = ("shap", "numba")


class TimeBudgetError(KfpTabularError):
    """A model-agnostic explainer would run past its ``time_budget_s``."""


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Raise shap's and numba's loggers to WARNING and swallow their prints for the duration."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    printed = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if printed.getvalue():
            LOGGER.debug("Dropped %d lines the SHAP libraries printed.", printed.getvalue().count("\n") + 1)


class _Progress:
    """Rows done, rate and ETA every ``every_s`` seconds; fails once the projected time exceeds the budget."""

    def __init__(self, total: int, method: str, budget_s: float | None, every_s: float) -> None:
        self.total, self.method, self.budget_s, self.every_s = total, method, budget_s, every_s
        self.start = self.last = time.monotonic()

    def row_done(self, done: int) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - done) / rate
        if self.budget_s is not None and done < self.total and elapsed + eta > self.budget_s:
            raise TimeBudgetError(
                f"shap's {self.method} explainer would take about {elapsed + eta:.0f} s for {self.total} rows "
                f"({elapsed / done:.2f} s a row, {done} done in {elapsed:.1f} s), over time_budget_s="
                f"{self.budget_s:g}. Raise time_budget_s, or lower max_rows, background_size or sample_budget, or cut "
                f"the rows into more shards with rows_per_shard (each shard has its own budget).")
        if done == self.total:
            LOGGER.info("SHAP (%s): %d/%d rows in %.1f s (%.2f rows/s).", self.method, done, self.total, elapsed,
                        rate)
        elif now - self.last >= self.every_s:
            self.last = now
            LOGGER.info("SHAP (%s): %d/%d rows, %.2f rows/s, ETA %.0f s.", self.method, done, self.total, rate, eta)


class _Codec:
    """Raw frame ⇄ float matrix: numeric columns as they are, other columns as codes into their values."""

    def __init__(self, *frames: pd.DataFrame) -> None:
        template = pd.concat(frames)
        self.columns = list(template.columns)
        self.dtypes = template.dtypes.to_dict()
        self.tables: dict[str, list[Any]] = {}
        for column in self.columns:
            if not pd.api.types.is_numeric_dtype(template[column]) or pd.api.types.is_bool_dtype(template[column]):
                values = pd.concat([f[column] for f in frames]).astype(object)
                self.tables[column] = list(dict.fromkeys(None if pd.isna(v) else v for v in values))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = np.empty((len(frame), len(self.columns)))
        for index, column in enumerate(self.columns):
            if column in self.tables:
                lookup = {v: code for code, v in enumerate(self.tables[column])}
                matrix[:, index] = [lookup[None if pd.isna(v) else v] for v in frame[column].astype(object)]
            else:
                matrix[:, index] = frame[column].to_numpy(dtype=np.float64)
        return matrix

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        data = {}
        for index, column in enumerate(self.columns):
            if column in self.tables:
                table = np.asarray(self.tables[column], dtype=object)
                data[column] = table[np.rint(matrix[:, index]).astype(np.int64)]
            else:
                data[column] = matrix[:, index]
        return pd.DataFrame(data).astype(self.dtypes)


def explain_agnostic(predictor: Any, background: pd.DataFrame, rows: pd.DataFrame, method: str = "permutation",
                     sample_budget: int | None = None, seed: int = 0, model: str | None = None, *,
                     time_budget_s: float | None = DEFAULT_TIME_BUDGET_S,
                     progress_every_s: float = PROGRESS_EVERY_S) -> Explanation:
    """SHAP values of the predictor's outputs with shap's Permutation or Kernel explainer.

    Args:
        predictor: A loaded ``TabularPredictor``.
        background: Raw background rows (the features only).
        rows: Raw rows to explain, same columns.
        method: ``permutation`` or ``kernel``.
        sample_budget: Model evaluations per explained row (each over the whole background); ``None`` uses
            shap's default (Kernel: ``2 * features + 2048``; Permutation: ``10 * features``, at least 500).
        seed: Seed of shap's sampling.
        model: Model to explain; defaults to the predictor's best model.
        time_budget_s: Seconds the explanation may take (``None``: no limit).
        progress_every_s: At most one progress line (rows done, rate, ETA) per this many seconds.

    Raises:
        TimeBudgetError: after any row, the time spent plus the projected time of the other rows exceeds
            ``time_budget_s`` (it fails early rather than at the limit).
    """
    import shap

    if method not in AGNOSTIC_METHODS:
        raise ConfigError(f"method must be one of {AGNOSTIC_METHODS}, got {method!r}")
    codec = _Codec(background, rows)
    outputs = output_names(predictor)

    def f(matrix: np.ndarray) -> np.ndarray:
        values = model_outputs(predictor, codec.decode(np.atleast_2d(matrix)), model)
        return values[:, 0] if len(outputs) == 1 else values

    data, explained = codec.encode(background), codec.encode(rows)
    n_features = data.shape[1]
    progress = _Progress(len(rows), method, time_budget_s, progress_every_s)
    LOGGER.info("SHAP (%s): explaining %d rows against %d background rows (time budget %s).", method, len(rows),
                len(data), "none" if time_budget_s is None else f"{time_budget_s:g} s")
    parts = []
    with quiet_libraries():
        if method == "kernel":
            explainer = shap.KernelExplainer(f, data)
            state = np.random.get_state()
            np.random.seed(seed)  # KernelExplainer samples coalitions with numpy's global generator
            try:
                for index in range(len(explained)):
                    # l1_reg=False: keep every feature (shap's default keeps at most 10 by regularisation).
                    raw = explainer.shap_values(explained[index : index + 1], nsamples=sample_budget or "auto",
                                                l1_reg=False, silent=True)
                    parts.append(_as_values(raw, n_features, len(outputs)))
                    progress.row_done(index + 1)
            finally:
                np.random.set_state(state)
            base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        else:
            masker = shap.maskers.Independent(data, max_samples=len(data))
            explainer = shap.PermutationExplainer(f, masker, seed=seed)  # seeds numpy's generator once
            budget = max(sample_budget or max(500, 10 * n_features), 2 * n_features + 1)
            base = np.zeros(len(outputs))
            for index in range(len(explained)):
                result = explainer(explained[index : index + 1], max_evals=budget, silent=True)
                parts.append(_as_values(result.values, n_features, len(outputs)))
                base = np.atleast_1d(np.asarray(result.base_values, dtype=np.float64).reshape(-1))
                progress.row_done(index + 1)
    values = np.concatenate(parts) if parts else np.zeros((0, n_features, len(outputs)))
    # Kernel SHAP with a budget covering every coalition solves the Shapley equations exactly.
    exact = method == "kernel" and sample_budget is not None and sample_budget >= 2**n_features - 2
    return Explanation(values=values, base_values=base.reshape(len(outputs)), features=list(rows.columns),
                       outputs=outputs, method=method, exact=exact)


def _as_values(raw: Any, n_features: int, n_outputs: int) -> np.ndarray:
    """One row's SHAP values (an array, or older shap's list of one array per output) as ``(1, F, outputs)``."""
    values = np.stack(raw, axis=-1) if isinstance(raw, list) else np.asarray(raw, dtype=np.float64)
    return values.reshape(1, n_features, n_outputs)
