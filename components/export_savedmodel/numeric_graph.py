"""The numeric graph: the exported ensemble on float32 numbers and int32 category codes, for TensorRT.

TensorRT's ONNX parser takes neither strings nor ONNX-ML ops (``CategoryMapper``), and it casts float64 down to
float32 with round-to-nearest, which would move tree thresholds. The ``numeric`` signature of the SavedModel
therefore takes one tensor per AutoGluon feature, already encoded by :func:`encode_numeric` (the one encoding
every client uses; its vocabulary ships in the signature file, ``SignatureInfo.numeric``):

* numeric feature: float32; NaN is the missing value. The encoder applies AutoGluon's column cast (integer
  columns: NaN -> 0, truncated) in float64, then rounds to float32. A nonzero value that float32 would make 0 or
  subnormal becomes the smallest normal float32 of its sign (GPUs may flush subnormals; the SavedModel keeps such
  values nonzero too). +-inf and values beyond the float32 range are refused, like the SavedModel refuses inf;
* boolean feature: int32 0 / 1 (AutoGluon's ``value == true_value``: missing and anything else is 0);
* category feature: int32 code into the vocabulary; missing, unseen and rare values are -1 (or the fitted fill
  code), exactly the SavedModel's lookup table (``features.make_lookup_tables``). Codes outside the vocabulary
  are read as missing.

The graph reuses the export's compiled members (``graph.member_output``) on float32 features: every tree
compares ``x <= t'`` with ``t'`` the largest float32 not above the SavedModel's float64 threshold, the same test
for every float32 ``x`` (``trees.evaluate_trees``), so a row routes exactly as in the SavedModel fed the same
numbers; leaves, linear members and the ensemble sum are float32 (differences ~1e-7). The trees are walked as
one static group (no ``cond``, no compaction). Outputs: ``prediction`` (regression), or ``probabilities`` and
``label_index`` (int32 into ``SignatureInfo.class_labels``). There is no ``Assert``: the encoder refuses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.features import BOOLEAN, CATEGORY, NUMERIC, FeaturePlan
from kfp_tabular.components.export_savedmodel.signature import FLOAT, SignatureInfo, resolve_keys
from kfp_tabular.errors import DataValidationError

NUMERIC_SIGNATURE_KEY = "numeric"
MISSING_CODE = -1
FLOAT32 = "float32"
INT32 = "int32"
_SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class NumericInput:
    """One input of the numeric graph (one AutoGluon feature).

    Attributes:
        name: Tensor name (the signature's sanitized input name of the column).
        column: Original column name.
        kind: ``numeric``, ``boolean`` or ``category``.
        dtype: ``float32`` (numeric) or ``int32`` (boolean, category).
        cast: Numeric features: the dtype AutoGluon casts the column to.
        true_values: Boolean features: the input values that mean 1 (as sent: strings or numbers).
        categories: Category features: the vocabulary in code order (as text, like the SavedModel's table).
        missing_is_category: Category features: missing text is looked up as ``""``.
        fill_code: Category features: the code that replaces a missing category, else None (-1).
    """

    name: str
    column: str
    kind: str
    dtype: str
    cast: str = "float64"
    true_values: tuple[Any, ...] = ()
    categories: tuple[str, ...] = ()
    missing_is_category: bool = True
    fill_code: int | None = None

    def code_of(self) -> dict[str, int]:
        """Text -> code, as the SavedModel's lookup table: the first of duplicate spellings wins."""
        codes: dict[str, int] = {}
        for code, text in enumerate(self.categories):
            if text == "" and not self.missing_is_category:
                continue  # "" is the missing value of category-dtype columns, never looked up
            codes.setdefault(text, code)
        return codes


def numeric_inputs(plan: FeaturePlan) -> tuple[NumericInput, ...]:
    """The numeric graph's inputs, one per AutoGluon feature, in feature order."""
    out = []
    for name, spec in plan.features.items():
        column = plan.input_for(name)
        dtype = FLOAT32 if spec.kind == NUMERIC else INT32
        true_values = tuple(float(v) if spec.input_dtype == FLOAT else str(v) for v in spec.true_values)
        out.append(NumericInput(column.name, column.column, spec.kind, dtype, spec.cast, true_values,
                                tuple(spec.categories), spec.missing_is_category, spec.fill_code))
    return tuple(out)


def numeric_description(plan: FeaturePlan, problem_type: str) -> dict[str, Any]:
    """What the signature file records about the numeric graph (``SignatureInfo.numeric``)."""
    outputs = ({"prediction": "float32 [N]"} if problem_type == "regression" else
               {"probabilities": "float32 [N, classes]", "label_index": "int32 [N] (into class_labels)"})
    return {
        "signature_name": NUMERIC_SIGNATURE_KEY,
        "encoding": "kfp_tabular.components.export_savedmodel.numeric_graph.encode_numeric",
        "missing_code": MISSING_CODE,
        "inputs": [asdict(item) for item in numeric_inputs(plan)],
        "outputs": outputs,
    }


def read_numeric_inputs(signature: SignatureInfo) -> tuple[NumericInput, ...]:
    """The numeric inputs recorded in a signature file.

    Raises:
        DataValidationError: the SavedModel was exported before the numeric graph existed.
    """
    if not signature.numeric:
        raise DataValidationError(
            f"The signature of {signature.model_name or 'this model'} has no numeric graph: the SavedModel was "
            "exported by an older kfp-tabular. Export it again with export_savedmodel."
        )
    return tuple(NumericInput(**{**item, "true_values": tuple(item["true_values"]),
                                 "categories": tuple(item["categories"])})
                 for item in signature.numeric["inputs"])


def _encode_numeric_values(values: np.ndarray, item: NumericInput) -> np.ndarray:
    cast = np.dtype(item.cast)
    if cast.kind in "iu":  # AsTypeFeatureGenerator: NaN -> 0, then truncated to the integer dtype
        values = np.where(np.isnan(values), 0.0, values).astype(cast).astype(np.float64)
    elif cast == np.float32:
        values = values.astype(np.float32).astype(np.float64)
    bad = np.isinf(values) | (np.abs(np.nan_to_num(values)) > _FLOAT32_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"Column {item.column!r} row {row} holds {values[row]!r}: the numeric graph takes finite float32 "
            f"numbers (|x| <= {_FLOAT32_MAX:.9g}); send NaN for a missing value."
        )
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    flushed = (values != 0) & (np.abs(rounded) < _SMALLEST_NORMAL)
    return np.where(flushed, np.copysign(_SMALLEST_NORMAL, values), rounded).astype(np.float32)


def encode_numeric(frame: Any, signature: SignatureInfo) -> dict[str, np.ndarray]:
    """THE encoding of a table for the numeric graph (ONNX / TensorRT / Triton): tensor name -> array.

    Columns are named as in any request (original or tensor names, ``signature.resolve_keys``); cells are read
    as for the SavedModel (``InputColumn.encode``), then encoded as the module docstring says.

    Raises:
        DataValidationError: a column is missing, a numeric cell is not a number, infinite or beyond float32.
    """
    items = read_numeric_inputs(signature)
    keys = {column.name: key for key, column in resolve_keys(frame.columns, signature, "The input table").items()}
    by_name = signature.by_name
    out: dict[str, np.ndarray] = {}
    for item in items:
        raw = by_name[item.name].encode(frame[keys[item.name]].tolist())
        if item.kind == NUMERIC:
            out[item.name] = _encode_numeric_values(np.asarray(raw, dtype=np.float64), item)
        elif item.kind == BOOLEAN:
            if raw.dtype == object:
                hits = [value in item.true_values for value in raw]
            else:
                hits = [not math.isnan(value) and value in item.true_values for value in raw]
            out[item.name] = np.asarray(hits, dtype=np.int32)
        elif item.kind == CATEGORY:
            codes = item.code_of()
            missing = MISSING_CODE if item.fill_code is None else item.fill_code
            out[item.name] = np.asarray([codes.get(text, missing) if text != "" or item.missing_is_category
                                         else missing for text in raw], dtype=np.int32)
    return out


def numeric_features(items: tuple[NumericInput, ...], inputs: dict[str, Any]) -> dict[str, Any]:
    """AutoGluon's features as float32 tensors from the numeric inputs (category codes: NaN when missing)."""
    import tensorflow as tf

    features = {}
    for item in items:
        value = inputs[item.name]
        if item.kind == NUMERIC:
            features[item.column] = value
        elif item.kind == BOOLEAN:
            features[item.column] = tf.cast(value, tf.float32)
        else:
            valid = tf.logical_and(value >= 0, value < len(item.categories))
            features[item.column] = tf.where(valid, tf.cast(value, tf.float32), tf.constant(np.nan, tf.float32))
    return features


def numeric_predict(items: tuple[NumericInput, ...], members: list[Any], spec: Any,
                    inputs: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's outputs on numeric inputs: float32 / int32 TensorFlow ops only (module docstring)."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.graph import member_output

    features = numeric_features(items, inputs)
    values = [member_output(member, features, single_walk=True) for member in members]
    if spec.is_ensemble:  # AutoGluon adds w_i * p_i in member order (in float64; float32 here)
        prediction = values[0] * np.float32(members[0].weight)
        for member, value in zip(members[1:], values[1:], strict=True):
            prediction = prediction + value * np.float32(member.weight)
    else:
        prediction = values[0]
    if spec.problem_type == "regression":
        return {"prediction": prediction}
    if spec.problem_type == "binary":
        probabilities = tf.stack([1.0 - prediction, prediction], axis=1)
        label = tf.cast(tf.greater(prediction, np.float32(spec.decision_threshold)), tf.int32)
        return {"probabilities": probabilities, "label_index": label}
    internal = tf.argmax(prediction, axis=1, output_type=tf.int32)
    label = tf.gather(tf.constant(list(spec.internal_class_index), tf.int32), internal)
    if len(spec.internal_class_index) == len(spec.class_labels):
        return {"probabilities": prediction, "label_index": label}
    position = {full: i for i, full in enumerate(spec.internal_class_index)}
    zeros = tf.zeros_like(prediction[:, 0])  # classes dropped at fit get probability 0
    columns = [prediction[:, position[full]] if full in position else zeros for full in range(len(spec.class_labels))]
    return {"probabilities": tf.stack(columns, axis=1), "label_index": label}


def numeric_input_specs(items: tuple[NumericInput, ...]) -> list[Any]:
    """``tf.TensorSpec`` of every numeric input, in order."""
    import tensorflow as tf

    return [tf.TensorSpec([None], tf.float32 if item.dtype == FLOAT32 else tf.int32, name=item.name)
            for item in items]
