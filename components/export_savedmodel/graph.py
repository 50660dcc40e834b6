"""The serving graph: raw columns -> AutoGluon features -> each model -> bag means -> weighted sum -> outputs.

AutoGluon's own arithmetic between models is reproduced operation by operation, including its float32 steps,
so that the exported outputs equal ``predict_proba`` to the last bit in almost every row:

* every child's ``predict_proba`` is cast to float32 (``AbstractModel._predict_proba_internal``);
* a bag sums its children's float32 outputs in order, in float32, then divides by the number of children;
* the weighted ensemble computes ``sum(w_i * p_i)`` in float64 in member order, then casts to float32;
* binary probabilities are ``[1 - p, p]``; the label is positive when ``p > decision_threshold`` (NumPy compares
  the float32 ``p`` with the threshold rounded to float32); multiclass labels are the first argmax.
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
from kfp_tabular.components.export_savedmodel.numerics import exact_divide, sequential_sum
from kfp_tabular.components.export_savedmodel.signature import FLOAT, SignatureInfo
from kfp_tabular.components.export_savedmodel.trees import TreeChild, evaluate_trees, merge_tables


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


def member_output(member: CompiledMember, features: dict[str, Any]) -> Any:
    """The member's ``predict_proba`` as AutoGluon computes it: float32, children summed in order then averaged."""
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
        leaves = evaluate_trees(table, design)
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


def predict_graph(plan: FeaturePlan, members: list[CompiledMember], spec: OutputSpec, inputs: dict[str, Any],
                  tables: dict[str, Any]) -> dict:
    """The whole prediction from signature inputs (TensorFlow ops); ``tables`` from ``make_lookup_tables``."""
    needed: set[str] = set()
    for member in members:
        needed |= member.features
    features = transform_features(plan, inputs, tables, needed)
    values = [member_output(member, features) for member in members]
    return final_outputs(ensemble_output(members, values, spec.is_ensemble), spec)


def build_module(plan: FeaturePlan, members: list[CompiledMember], spec: OutputSpec, signature: SignatureInfo) -> Any:
    """A ``tf.Module`` whose ``serve`` function is the ``serving_default`` signature."""
    import tensorflow as tf

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
        def serve(self, *args: Any) -> dict:
            return predict_graph(plan, members, spec, dict(zip(names, args, strict=True)), self.tables)

    return TabularModel()
