"""The serving graph: raw columns -> AutoGluon features -> each model -> bag means -> weighted sum -> outputs.

AutoGluon's own arithmetic between models is reproduced operation by operation, including its float32 steps,
so that the exported outputs equal ``predict_proba`` to the last bit in almost every row:

* every child's ``predict_proba`` is cast to float32 (``AbstractModel._predict_proba_internal``);
* a bag sums its children's float32 outputs in order, in float32, then divides by the number of children;
* the weighted ensemble computes ``sum(w_i * p_i)`` in float64 in member order, then casts to float32;
* binary probabilities are ``[1 - p, p]``; the label is positive when ``p > decision_threshold`` (NumPy compares
  the float32 ``p`` with the threshold rounded to float32); multiclass labels are the first argmax.

Two signatures share that graph:

* ``serving_default`` (TF Serving, ``tf.saved_model.load``) first replaces subnormal numeric inputs by the
  smallest normal number of their sign, decided on their bit pattern (``numerics.canonicalize_subnormals``):
  TensorFlow's CPU kernels read subnormals as 0, AutoGluon's models do not (XGBoost: a present 0.0f, not a
  missing zero);
* ``onnx`` is the same graph without that step, for converters and runtimes that keep subnormals: tf2onnx has
  no ``Bitcast`` conversion, and onnxruntime does not flush them. Convert it by name
  (``python -m tf2onnx.convert --saved-model DIR --signature_def onnx``); it is also saved first, tf2onnx's
  choice when no ``--signature_def`` is given. Called through TensorFlow it reads subnormal inputs as 0.

Inputs AutoGluon refuses are refused, and the refusal names the input columns and the first offending row:

* +-inf in any numeric input column the model uses (scikit-learn members raise on it; one rule for every
  model, also when only LightGBM / XGBoost members would accept it). NaN is the missing value and is fine;
* a value beyond the float32 range (|x| > ~3.4028235e38) in a column that a random forest / extra trees member
  reads: scikit-learn casts to float32 and raises on the resulting infinity;
* a request whose outputs are not finite (e.g. the linear model overflows on a huge value).

TensorFlow raises ``InvalidArgumentError`` (``tf.debugging.Assert``); TF Serving answers the whole request with
that one error (HTTP 400 / gRPC INVALID_ARGUMENT), never per row: a Predict call has one status. Send the other
rows again without the refused one. tf2onnx drops ``Assert`` ops, so the converted ONNX graph cannot refuse;
there the refused rows come back as NaN probabilities / prediction and an empty label instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.features import (
    FeaturePlan,
    make_lookup_tables,
    transform_features,
)
from kfp_tabular.components.export_savedmodel.numerics import (
    canonicalize_subnormals,
    exact_divide,
    sequential_sum,
)
from kfp_tabular.components.export_savedmodel.signature import FLOAT, SignatureInfo
from kfp_tabular.components.export_savedmodel.trees import (
    TreeChild,
    evaluate_trees,
    float32_rounding_bound,
    merge_tables,
)

# The signature to convert with tf2onnx (``--signature_def onnx``): the graph without the subnormal guard.
PORTABLE_SIGNATURE_KEY = "onnx"
# Largest double that float32 rounding keeps finite (FLT_MAX + half an ulp, the tie rounding to infinity, excluded).
FLOAT32_LIMIT = float(float32_rounding_bound(np.array([np.finfo(np.float32).max]))[0])


@dataclass
class CompiledMember:
    """One base model of the exported ensemble, compiled to TensorFlow-ready pieces.

    Attributes:
        name: AutoGluon model name.
        family: AutoGluon family key (GBM, XGB, RF, XT, LR).
        weight: Ensemble weight.
        children: ``TreeChild`` objects (tree families) or objects with ``output(features)`` (linear).
    """

    name: str
    family: str
    weight: float
    children: list[Any]

    @property
    def features(self) -> set[str]:
        """AutoGluon features read by any child."""
        names: set[str] = set()
        for child in self.children:
            names |= set(child.features) if hasattr(child, "features") else set()
        return names


@dataclass(frozen=True)
class OutputSpec:
    """How the final float32 prediction becomes the signature outputs."""

    problem_type: str
    class_labels: tuple[str, ...] = ()
    internal_class_index: tuple[int, ...] = ()
    decision_threshold: float = 0.5
    is_ensemble: bool = False


def member_output(member: CompiledMember, features: dict[str, Any], single_walk: bool = False) -> Any:
    """The member's ``predict_proba`` as AutoGluon computes it: float32, children summed in order then averaged.

    ``features`` are float64 (the SavedModel) or float32 (the numeric graph, ``numeric_graph``); ``single_walk``
    walks the trees without ``cond`` or compaction (``trees.evaluate_trees``).
    """
    import tensorflow as tf

    outputs = []
    tree_children = [child for child in member.children if isinstance(child, TreeChild)]
    if tree_children:
        offsets: dict[tuple, int] = {}
        computed = []
        width = 0
        feature_maps = []
        for child in tree_children:
            mapping = []
            for block in child.blocks:
                if block.key not in offsets:  # bag children usually read identical blocks: compute once
                    offsets[block.key] = width
                    computed.append(block.compute(features))
                    width += len(block.sources)
                mapping += [offsets[block.key] + k for k in range(len(block.sources))]
            feature_maps.append(mapping)
        table, ranges = merge_tables([child.table for child in tree_children], feature_maps)
        if computed:
            design = computed[0] if len(computed) == 1 else tf.concat(computed, axis=1)
        else:  # trees without splits read nothing; give the traversal a one-column design
            any_feature = next(iter(features.values()))
            design = tf.zeros_like(tf.expand_dims(any_feature, 1))
        nan_free = all(block.nan_free for child in tree_children for block in child.blocks)
        leaves = evaluate_trees(table, design, nan_free=nan_free, single_walk=single_walk)
        by_child = {id(child): leaves[:, start:stop] for child, (start, stop) in zip(tree_children, ranges, strict=True)}
    for child in member.children:
        value = child.finish(by_child[id(child)]) if isinstance(child, TreeChild) else child.output(features)
        outputs.append(tf.cast(value, tf.float32))
    total = sequential_sum(tf.stack(outputs, axis=0), axis=0) if len(outputs) > 1 else outputs[0]
    # AutoGluon divides by the number of children even when it is 1; the division also keeps tf2onnx from
    # folding the float32 rounding cast into the ensemble's float64 cast (Cast->Cast chains are merged).
    return exact_divide(total, float(len(outputs)))


def ensemble_output(members: list[CompiledMember], member_values: list[Any], is_ensemble: bool) -> Any:
    """Weighted sum in float64, member by member, cast to float32 (``EnsembleSelection.weight_pred_probas``)."""
    import tensorflow as tf

    if not is_ensemble:
        return member_values[0]
    terms = [tf.cast(value, tf.float64) * tf.constant(member.weight, tf.float64)
             for member, value in zip(members, member_values, strict=True)]
    return tf.cast(sequential_sum(tf.stack(terms, axis=0), axis=0), tf.float32)


def final_outputs(prediction: Any, spec: OutputSpec) -> dict[str, Any]:
    """Signature outputs from the final float32 prediction."""
    import tensorflow as tf

    if spec.problem_type == "regression":
        return {"prediction": prediction}
    labels = tf.constant(list(spec.class_labels), tf.string)
    if spec.problem_type == "binary":
        probabilities = tf.stack([1.0 - prediction, prediction], axis=1)
        positive = tf.greater(prediction, tf.constant(np.float32(spec.decision_threshold), tf.float32))
        label = tf.gather(labels, tf.cast(positive, tf.int32))
        return {"probabilities": probabilities, "label": label}
    internal = tf.argmax(prediction, axis=1, output_type=tf.int32)
    index = tf.constant(list(spec.internal_class_index), tf.int32)
    label = tf.gather(labels, tf.gather(index, internal))
    if len(spec.internal_class_index) == len(spec.class_labels):
        probabilities = prediction
    else:  # classes dropped at fit (too rare) get probability 0, like LabelCleanerMulticlass
        columns = []
        position = {full: i for i, full in enumerate(spec.internal_class_index)}
        zeros = tf.zeros_like(prediction[:, 0])
        for full in range(len(spec.class_labels)):
            columns.append(prediction[:, position[full]] if full in position else zeros)
        probabilities = tf.stack(columns, axis=1)
    return {"probabilities": probabilities, "label": label}


def _label(column: str, name: str) -> str:
    # Backticks: tf.debugging.Assert escapes quotes in the strings it prints.
    return f"`{column}`" if column == name else f"`{column}` (input {name})"


def _refusal(bad: Any, labels: list[str], message: str, kind: str = "Column(s)") -> tuple[Any, Any]:
    """An Assert failing when any cell of ``bad`` [rows, columns] is set, naming the columns and the first row."""
    import tensorflow as tf

    bad_rows = tf.reduce_any(bad, axis=1)
    offending = tf.gather(tf.constant(labels), tf.reshape(tf.where(tf.reduce_any(bad, axis=0)), [-1]))
    first_row = tf.argmax(tf.cast(bad_rows, tf.int32), output_type=tf.int32)
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad_rows)),
        [f"kfp-tabular: {message} {kind}:", offending, "First such row (0-based):", first_row],
        summarize=max(len(labels), 1),
    )
    return check, bad_rows


def input_checks(plan: FeaturePlan, members: list[CompiledMember], inputs: dict[str, Any],
                 features: dict[str, Any]) -> tuple[list[Any], Any]:
    """Asserts refusing the inputs AutoGluon refuses (see module docstring), and the refused rows."""
    import tensorflow as tf

    checks, refused = [], []
    numeric = [item for item in plan.inputs if item.dtype == FLOAT and item.used]
    if numeric:
        values = tf.stack([inputs[item.name] for item in numeric], axis=1)
        check, rows = _refusal(
            tf.math.is_inf(values), [_label(item.column, item.name) for item in numeric],
            "infinite value (inf / -inf) in a numeric input; AutoGluon refuses it. Send NaN for a missing value.",
        )
        checks.append(check)
        refused.append(rows)
    readers: dict[str, list[str]] = {}
    for member in members:
        for child in member.children:
            for feature in getattr(child, "float32_checked", ()):
                if member.name not in readers.setdefault(feature, []):
                    readers[feature].append(member.name)
    if readers:
        names = sorted(readers)
        by_column = {item.column: item for item in plan.inputs}
        magnitude = tf.abs(tf.stack([features[name] for name in names], axis=1))
        models = sorted({model for feature in names for model in readers[feature]})
        check, rows = _refusal(
            tf.greater(magnitude, FLOAT32_LIMIT), [_label(name, by_column[name].name) for name in names],
            f"value beyond the float32 range (|x| > {FLOAT32_LIMIT:.9g}) read by {', '.join(models)}; AutoGluon's "
            "scikit-learn models refuse it (\"Input X contains infinity or a value too large for dtype('float32')\").",
        )
        checks.append(check)
        refused.append(rows)
    if not refused:
        return checks, None
    return checks, refused[0] if len(refused) == 1 else tf.reduce_any(tf.stack(refused, axis=1), axis=1)


def guard_outputs(outputs: dict[str, Any], checks: list[Any], refused: Any) -> dict[str, Any]:
    """Outputs that exist only once the input checks passed, then checked to be finite.

    ``refused`` rows get NaN numbers and an empty label: that is what a runtime without ``Assert`` (ONNX) returns.
    """
    import tensorflow as tf

    def per_row(value: Any, mask: Any) -> Any:
        return mask if value.shape.rank == 1 else tf.expand_dims(mask, 1)

    if refused is not None:
        # The NaN constant keeps this a real Where in ONNX (tf2onnx would otherwise multiply by the mask).
        outputs = {key: tf.where(per_row(value, refused), tf.constant("" if value.dtype == tf.string else np.nan,
                                                                     value.dtype), value)
                   for key, value in outputs.items()}
    with tf.control_dependencies(checks):  # an input refusal is reported before the output check below
        outputs = {key: tf.identity(value) for key, value in outputs.items()}
    numbers = {key: value for key, value in outputs.items() if value.dtype.is_floating}
    finite = [tf.math.is_finite(value) if value.shape.rank == 1 else
              tf.reduce_all(tf.math.is_finite(value), axis=1) for value in numbers.values()]
    check, _ = _refusal(
        tf.logical_not(tf.stack(finite, axis=1)), [f"`{key}`" for key in numbers],
        "the model's output is not finite (an input is too large: AutoGluon returns inf or NaN for it).",
        kind="Output(s)",
    )
    with tf.control_dependencies([check]):
        return {key: tf.identity(value) for key, value in outputs.items()}


def predict_graph(plan: FeaturePlan, members: list[CompiledMember], spec: OutputSpec, inputs: dict[str, Any],
                  tables: dict[str, Any]) -> dict:
    """The whole prediction from signature inputs (TensorFlow ops); ``tables`` from ``make_lookup_tables``."""
    needed: set[str] = set()
    for member in members:
        needed |= member.features
        for child in member.children:
            needed |= set(getattr(child, "float32_checked", ()))
    features = transform_features(plan, inputs, tables, needed)
    checks, refused = input_checks(plan, members, inputs, features)
    values = [member_output(member, features) for member in members]
    outputs = final_outputs(ensemble_output(members, values, spec.is_ensemble), spec)
    return guard_outputs(outputs, checks, refused)


def canonicalize_inputs(signature: SignatureInfo, inputs: dict[str, Any]) -> dict[str, Any]:
    """Signature inputs with subnormal numbers replaced by the smallest normal number (one pass over all)."""
    import tensorflow as tf

    numeric = [item.name for item in signature.inputs if item.dtype == FLOAT]
    if not numeric:
        return dict(inputs)
    columns = tf.unstack(canonicalize_subnormals(tf.stack([inputs[name] for name in numeric], axis=1)),
                         num=len(numeric), axis=1)
    return {**inputs, **dict(zip(numeric, columns, strict=True))}


def build_module(plan: FeaturePlan, members: list[CompiledMember], spec: OutputSpec, signature: SignatureInfo) -> Any:
    """A ``tf.Module``: ``serve`` is the ``serving_default`` signature, ``serve_portable`` the ``onnx`` one.

    Both call one shared ``predict`` function, so the SavedModel holds the trees' constants once.
    ``serve_numeric`` is the ``numeric`` signature (float32 / int32 inputs, for TensorRT: ``numeric_graph``).
    """
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.numeric_graph import (
        numeric_input_specs,
        numeric_inputs,
        numeric_predict,
    )

    items = numeric_inputs(plan)
    numeric_specs = numeric_input_specs(items)

    input_specs = [
        tf.TensorSpec([None], tf.float64 if column.dtype == FLOAT else tf.string, name=column.name)
        for column in signature.inputs
    ]
    names = [column.name for column in signature.inputs]

    class TabularModel(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="kfp_tabular_model")
            self.tables = make_lookup_tables(plan)

        @tf.function(input_signature=input_specs)
        def predict(self, *args: Any) -> dict:
            return predict_graph(plan, members, spec, dict(zip(names, args, strict=True)), self.tables)

        @tf.function(input_signature=input_specs)
        def serve(self, *args: Any) -> dict:
            inputs = canonicalize_inputs(signature, dict(zip(names, args, strict=True)))
            return self.predict(*[inputs[name] for name in names])

        @tf.function(input_signature=input_specs)
        def serve_portable(self, *args: Any) -> dict:
            return self.predict(*args)

        @tf.function(input_signature=numeric_specs)
        def serve_numeric(self, *args: Any) -> dict:
            return numeric_predict(items, members, spec, dict(zip([item.name for item in items], args, strict=True)))

    return TabularModel()
