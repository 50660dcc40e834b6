"""The parity gate: the reloaded SavedModel must reproduce ``predict_proba`` / ``predict`` of the predictor.

Rows checked: the whole test split, plus adversarial rows built from it, one changed cell each:

* every column missing at once, and every numeric column at exact 0.0 at once;
* per numeric column, also columns that had no missing value in training: NaN, 0.0, -0.0, values LightGBM reads
  as zero (+-1e-36, +-1e-35 and its neighbours), float64 subnormals (+-5e-324, the largest, and the smallest normal
  number next to them: TensorFlow reads subnormals as 0, AutoGluon's models do not), values whose float32
  rounding is a subnormal or zero (+-1e-40, 1.4e-45 and half of it); and every split threshold the exported
  trees compare that column with, together with its float64 and float32 neighbours (one ulp below and above)
  and the float32 rounding boundaries next to it (the midpoints to the neighbouring float32 values and the
  doubles on either side), since the families compare in different precisions;
* per text / categorical column: every fitted category, the empty string, ``None``, an unseen value and the test
  values AutoGluon treats as rare; per boolean column: true, false and missing.

Infinite values are not checked here: the SavedModel refuses them (tests check that); values beyond the
float32 range neither, since AutoGluon's scikit-learn models raise on them.

Tolerance: classification compares probabilities with ``|delta| <= tolerance`` and requires 100 % label agreement.
Regression targets can be large and AutoGluon rounds every model output to float32 (one ulp of 1e4 is ~1e-3),
so regression uses ``|delta| <= tolerance * max(1, |y|)``: absolute near zero, relative for large targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.features import BOOLEAN, NUMERIC, FeaturePlan
from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_KEY, SignatureInfo, frame_to_inputs

UNSEEN = "__kfp_tabular_unseen__"
MAX_VALUES_PER_COLUMN = 600
BATCH_ROWS = 4096
SMALL_SAMPLE = 256  # rows also checked through small batches
SMALL_BATCH_ROWS = 4


@dataclass
class ParityResult:
    """Outcome of the parity gate.

    Attributes:
        rows_checked: Test rows plus adversarial rows compared.
        adversarial_rows: How many of them were generated.
        max_abs_diff: Largest |SavedModel - AutoGluon| over all outputs and rows.
        max_scaled_diff: Regression: largest |delta| / max(1, |y|); classification: equals ``max_abs_diff``.
        label_agreement: Share of rows with the same label (classification; 1.0 for regression).
        worst_row: Index (in the checked frame) of the row with the largest difference.
        worst_row_values: That row's input values.
        member_diffs: Max |delta| of each member's own output against AutoGluon's ``predict_proba(model=member)``.
        passed: Whether the gate passed.
    """

    rows_checked: int
    adversarial_rows: int
    max_abs_diff: float
    max_scaled_diff: float
    label_agreement: float
    worst_row: int
    worst_row_values: dict[str, Any]
    member_diffs: dict[str, float] = field(default_factory=dict)
    passed: bool = False


_SMALLEST_NORMAL = 2.0**-1022
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32
_FLOAT32_SUBNORMAL = float(np.float32(1.4e-45))  # smallest float32 subnormal, 2**-149
# Values next to zero, with both signs: LightGBM's zero threshold (1e-35f) and around it, float64 subnormals and
# the smallest normal double, values rounding to float32 subnormals or to zero.
_TINY = sorted({
    sign * value
    for value in (1e-36, float(np.float32(1e-35)), float(np.nextafter(np.float32(1e-35), np.float32(1.0))),
                  5e-324, 1e-323, 1e-310, float(np.nextafter(_SMALLEST_NORMAL, 0.0)), _SMALLEST_NORMAL, 1e-300,
                  1e-40, _FLOAT32_SUBNORMAL, _FLOAT32_SUBNORMAL / 2, float(np.nextafter(_FLOAT32_SUBNORMAL / 2, 1.0)),
                  float(np.nextafter(np.float32(_FLOAT32_TINY), np.float32(0.0))), _FLOAT32_TINY)
    for sign in (1.0, -1.0)
})


def _float_neighbours(threshold: float) -> list[float]:
    """The threshold, its float64 and float32 neighbours, and the float32 rounding boundaries on both sides."""
    with np.errstate(over="ignore"):
        t32 = np.float32(threshold)
    below = np.nextafter(t32, np.float32(-np.inf))
    above = np.nextafter(t32, np.float32(np.inf))
    values = [threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf),
              float(t32), float(below), float(above)]
    for neighbour in (below, above):
        boundary = (float(t32) + float(neighbour)) / 2  # exact: a float32 grid step in float64
        values += [boundary, np.nextafter(boundary, -np.inf), np.nextafter(boundary, np.inf)]
    return [float(v) for v in values if np.isfinite(v) and abs(v) <= float(np.finfo(np.float32).max)]


def is_subnormal(values: np.ndarray) -> np.ndarray:
    """Element-wise: a float64 subnormal (0 < |x| < 2**-1022), which TensorFlow reads as 0."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    return (magnitude > 0) & (magnitude < _SMALLEST_NORMAL)


def without_subnormals(frame: Any, signature: SignatureInfo) -> Any:
    """The rows of ``frame`` without a float64 subnormal in any numeric input."""
    import pandas as pd

    keep = np.ones(len(frame), dtype=bool)
    for item in signature.inputs:
        if item.dtype == "float64" and item.column in frame:
            keep &= ~is_subnormal(pd.to_numeric(frame[item.column], errors="coerce").to_numpy(dtype=np.float64))
    return frame[keep]


def _spread(values: list[Any], limit: int) -> list[Any]:
    """Up to ``limit`` values spread evenly over the (deterministically ordered) list."""
    if len(values) <= limit:
        return values
    picks = np.linspace(0, len(values) - 1, limit).round().astype(int)
    return [values[i] for i in sorted(set(picks.tolist()))]


def adversarial_rows(frame: Any, plan: FeaturePlan, thresholds: dict[str, list[float]]) -> Any:
    """Rows of ``frame`` with one cell replaced by an edge value each (see module docstring).

    Args:
        frame: Test rows with the original feature columns.
        plan: Feature plan of the predictor.
        thresholds: AutoGluon feature -> split thresholds of the exported trees.
    """
    import pandas as pd

    base = frame.reset_index(drop=True).copy()
    for column in base.columns:
        if isinstance(base[column].dtype, pd.CategoricalDtype) or base[column].dtype == bool:
            base[column] = base[column].astype(object)
    edits: list[tuple[str | None, Any]] = []
    all_missing = {item.column: None if item.dtype == "string" else math.nan for item in plan.inputs}
    all_zero = {item.column: 0.0 for item in plan.inputs if item.dtype != "string"}
    for item in plan.inputs:
        spec = plan.features.get(item.column)
        if spec is None:
            values: list[Any] = [None if item.dtype == "string" else math.nan]
        elif spec.kind == NUMERIC:
            values = [math.nan, 0.0, -0.0, *_TINY]
            candidates = sorted({v for t in thresholds.get(item.column, []) for v in _float_neighbours(t)})
            values += _spread(candidates, MAX_VALUES_PER_COLUMN)
        elif spec.kind == BOOLEAN:
            values = ([True, False, None] if item.raw_type == "bool" else
                      [*spec.true_values, "", None, UNSEEN] if item.dtype == "string" else
                      [*spec.true_values, 0.0, -1.0, math.nan])
        else:
            seen = [v for v in frame[item.column].dropna().unique().tolist() if str(v) not in spec.categories]
            # The categories as AutoGluon holds them: a boolean column with missing values is a category column of
            # Python bools, and the text "True" is an unseen value to AutoGluon (clients send JSON true).
            values = [*(spec.category_values or spec.categories), "", None, UNSEEN, *_spread(seen, 20)]
        edits += [(item.column, value) for value in values]
    rows = []
    for index, (column, value) in enumerate(edits):
        row = base.iloc[index % len(base)].to_dict()
        row[column] = value
        rows.append(row)
    special = [dict(base.iloc[0].to_dict(), **all_missing), dict(base.iloc[min(1, len(base) - 1)].to_dict(), **all_zero)]
    out = pd.DataFrame(special + rows, columns=base.columns)
    for item in plan.inputs:  # keep numeric columns numeric so AutoGluon casts them as it would at serving
        if item.dtype != "string":
            out[item.column] = pd.to_numeric(out[item.column], errors="coerce").astype(np.float64)
    return out


def refused_rows(frame: Any, plan: FeaturePlan, members: list[Any]) -> np.ndarray:
    """Rows the SavedModel refuses by design (``graph.input_checks``), which the gate therefore cannot compare.

    That is +-inf in a numeric input the model uses, or a value beyond the float32 range in a column a random
    forest / extra trees member reads (AutoGluon raises on those rows too).
    """
    import pandas as pd

    from kfp_tabular.components.export_savedmodel.graph import FLOAT32_LIMIT

    checked = {f for member in members for child in member.children for f in getattr(child, "float32_checked", ())}
    refused = np.zeros(len(frame), dtype=bool)
    for item in plan.inputs:
        if item.dtype != "float64" or not item.used or item.column not in frame:
            continue
        values = pd.to_numeric(frame[item.column], errors="coerce").to_numpy(dtype=np.float64)
        refused |= np.isinf(values)
        if item.column in checked:
            refused |= np.abs(values) > FLOAT32_LIMIT
    return refused


def run_signature(function: Any, signature: SignatureInfo, frame: Any, batch_rows: int = BATCH_ROWS) -> dict:
    """Call a loaded ``serving_default`` function on a frame, in batches; returns numpy outputs."""
    import tensorflow as tf

    inputs = frame_to_inputs(frame, signature)
    dtypes = {item.name: tf.float64 if item.dtype == "float64" else tf.string for item in signature.inputs}
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(frame), batch_rows):
        batch = {k: tf.constant(v[start:start + batch_rows], dtype=dtypes[k]) for k, v in inputs.items()}
        for key, value in function(**batch).items():
            parts.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def reference_outputs(predictor: Any, model_name: str, frame: Any) -> dict[str, np.ndarray]:
    """AutoGluon's own outputs for a frame, shaped like the signature outputs."""
    if predictor.problem_type == "regression":
        return {"prediction": predictor.predict(frame, model=model_name).to_numpy()}
    probabilities = predictor.predict_proba(frame, model=model_name).to_numpy()
    labels = predictor.predict(frame, model=model_name).astype(str).to_numpy()
    return {"probabilities": probabilities, "label": labels}


def _row_errors(got: dict, ref: dict, regression: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: max |delta|, max |delta| / max(1, |y|) (regression) and label equality."""
    if regression:
        expected = ref["prediction"].astype(np.float64)
        diff = np.abs(got["prediction"].astype(np.float64) - expected)
        return diff, diff / np.maximum(1.0, np.abs(expected)), np.ones(len(diff), dtype=bool)
    diff = np.abs(got["probabilities"].astype(np.float64) - ref["probabilities"].astype(np.float64)).max(axis=1)
    return diff, diff, got["label"].astype(str) == ref["label"]


def compare(
    predictor: Any,
    model_name: str,
    function: Any,
    signature: SignatureInfo,
    frame: Any,
    adversarial: int,
    tolerance: float,
) -> ParityResult:
    """Compare SavedModel and AutoGluon outputs on ``frame``; does not raise.

    Every row goes through large batches; a spread-out sample also goes through batches of a few rows, because
    the graph walks trees in one group for small batches and in depth groups for large ones.
    """
    regression = predictor.problem_type == "regression"
    ref = reference_outputs(predictor, model_name, frame)
    diff, scaled, same = _row_errors(run_signature(function, signature, frame), ref, regression)
    sample = np.unique(np.linspace(0, len(frame) - 1, min(len(frame), SMALL_SAMPLE)).round().astype(int))
    small = run_signature(function, signature, frame.iloc[sample], batch_rows=SMALL_BATCH_ROWS)
    small_diff, small_scaled, small_same = _row_errors(small, {k: v[sample] for k, v in ref.items()}, regression)
    diff[sample] = np.fmax(diff[sample], small_diff)
    scaled[sample] = np.fmax(scaled[sample], small_scaled)
    same[sample] &= small_same

    nan_mismatch = bool(np.isnan(diff).any())
    ranking = np.where(np.isnan(scaled), np.inf, scaled) + (~same) * 1.0  # a wrong label ranks a row worst
    worst = int(np.argmax(ranking)) if len(frame) else 0
    max_abs = math.inf if nan_mismatch else float(np.max(diff, initial=0.0))
    max_scaled = math.inf if nan_mismatch else float(np.max(scaled, initial=0.0))
    return ParityResult(
        rows_checked=len(frame),
        adversarial_rows=adversarial,
        max_abs_diff=max_abs,
        max_scaled_diff=max_scaled,
        label_agreement=float(same.mean()) if len(same) else 1.0,
        worst_row=worst,
        worst_row_values={k: _plain(v) for k, v in frame.iloc[worst].to_dict().items()} if len(frame) else {},
        passed=bool(same.all()) and not nan_mismatch and max_scaled <= tolerance,
    )


def member_differences(predictor: Any, members: list[Any], plan: FeaturePlan, signature: SignatureInfo,
                       frame: Any, internal_class_index: tuple[int, ...] = ()) -> dict[str, float]:
    """Max |delta| of each exported member against AutoGluon's ``predict_proba(model=member)`` (eager TF)."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.features import make_lookup_tables, transform_features
    from kfp_tabular.components.export_savedmodel.graph import canonicalize_inputs, member_output

    inputs = frame_to_inputs(frame, signature)
    tensors = {
        item.name: tf.constant(inputs[item.name], tf.float64 if item.dtype == "float64" else tf.string)
        for item in signature.inputs
    }
    tensors = canonicalize_inputs(signature, tensors)  # what serving_default does first
    features = transform_features(plan, tensors, make_lookup_tables(plan))
    out = {}
    for member in members:
        mine = member_output(member, features).numpy().astype(np.float64)
        if predictor.problem_type == "regression":
            ref = predictor.predict(frame, model=member.name).to_numpy()
        else:
            ref = predictor.predict_proba(frame, model=member.name).to_numpy()
            ref = ref[:, 1] if predictor.problem_type == "binary" else ref[:, list(internal_class_index)]
        out[member.name] = float(np.max(np.abs(mine - ref.astype(np.float64)))) if len(frame) else 0.0
    return out


def threshold_values(members: list[Any]) -> dict[str, list[float]]:
    """AutoGluon feature -> every numeric split threshold the exported trees compare it with."""
    from kfp_tabular.components.export_savedmodel.trees import TreeChild

    out: dict[str, list[float]] = {}
    for member in members:
        for child in member.children:
            if not isinstance(child, TreeChild):
                continue
            sources = child.sources
            for index, values in child.table.split_thresholds().items():
                source = sources[index]
                if source is not None:
                    out.setdefault(source, []).extend(values)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


__all__ = ["SIGNATURE_KEY", "ParityResult", "adversarial_rows", "compare", "member_differences", "refused_rows",
           "threshold_values", "without_subnormals"]
