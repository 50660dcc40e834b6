"""AutoGluon ``XGBoostModel`` children as tree tables.

What the child does at predict time (autogluon ``xgboost_model.py`` / ``xgboost_utils.py``, xgboost 3.2):

* ``OheFeatureGenerator`` builds a scipy CSR matrix ``[one-hot(category codes) | numeric columns]``; CSR keeps
  only non-zero entries, and XGBoost reads an absent entry as *missing*: every exact 0.0, in numeric columns too,
  is missing, like NaN;
* values are stored as float32 (rounded to nearest); a split sends ``x < split_condition`` (float32) to ``yes``
  and missing values to ``default_left``. Here ``float32(x) < c`` becomes ``x <= b``, ``b`` the largest double
  that rounds to at most the float32 below ``c``, so the float64 value is compared without a cast (see ``trees``).
  A float64 subnormal is not 0: it is present in the CSR matrix and stored as 0.0f. TensorFlow would read it as
  0 (missing); the graph canonicalizes it first (``numerics.canonicalize_subnormals``);
* XGBoost accepts infinite and huge values (a value beyond the float32 range is stored as infinity);
* the sklearn wrapper predicts with ``best_iteration + 1`` rounds only (the booster keeps all rounds);
* the margin starts at the intercept (``base_score``, mapped to margin space: logit for ``binary:logistic``) and
  adds each tree's float32 leaf in tree order, in float32; the logistic / softmax transform is then applied.

Each tree adds to one class (``tree_info``), so a leaf holds one value. The float32 running sum of a class is
reproduced with a cumulative sum over [intercept, its first tree, its second tree, ...], which adds in exactly
that order (``trees.sum_by_output``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.encoders import (
    LookupBlock,
    group_lookups,
    lookup,
    probe_one_hot,
)
from kfp_tabular.components.export_savedmodel.numerics import exact_divide, sequential_sum
from kfp_tabular.components.export_savedmodel.trees import (
    DesignBlock,
    TreeChild,
    TreeTable,
    float32_less_than_as_le,
    float32_rounding_bound,
    sum_by_output,
)
from kfp_tabular.errors import UnsupportedModelError

_MARGIN_IDENTITY = {"reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "multi:softprob",
                    "multi:softmax"}


def _as_missing(value: Any) -> Any:
    """CSR semantics: an exact 0 (either sign) is missing, like NaN; other values stay float64."""
    import tensorflow as tf

    # The NaN constant keeps this a real Where in ONNX (tf2onnx would otherwise use cond * a + (1 - cond) * b).
    return tf.where(tf.equal(value, 0.0), tf.constant(np.nan, value.dtype), value)


def _lookup_block(block: LookupBlock) -> DesignBlock:
    def compute(features: dict[str, Any]) -> Any:
        return _as_missing(lookup(features, block))

    key = ("xgboost-onehot", block.feature, block.matrix.tobytes(), block.matrix.shape)
    return DesignBlock(key=key, compute=compute, sources=(None,) * len(block.positions))


def _numeric_block(features: list[str]) -> DesignBlock:
    def compute(values: dict[str, Any]) -> Any:
        import tensorflow as tf

        return _as_missing(tf.stack([values[f] for f in features], axis=1))

    return DesignBlock(key=("xgboost", tuple(features)), compute=compute, sources=tuple(features))


def _parse_floats(text: str) -> np.ndarray:
    return np.asarray([float(v) for v in str(text).strip("[]").split(",") if v.strip()], dtype=np.float32)


def _base_margin(objective: str, base_score: np.ndarray, n_outputs: int) -> np.ndarray:
    """Intercept in margin space, float32 like XGBoost's ``ProbToMargin``."""
    if objective in ("binary:logistic", "reg:logistic"):
        one = np.float32(1.0)
        margin = -np.log(one / base_score - one, dtype=np.float32)
    elif objective in _MARGIN_IDENTITY:
        margin = base_score
    else:
        raise UnsupportedModelError(f"XGBoost objective {objective!r} has no exact export yet.")
    margin = np.asarray(margin, dtype=np.float32).reshape(-1)
    return np.broadcast_to(margin, (n_outputs,)).astype(np.float32) if margin.size == 1 else margin


def _finisher(objective: str, base_margin: np.ndarray, tree_outputs: list[int]) -> Any:
    def finish(leaves: Any) -> Any:
        import tensorflow as tf

        # float64 leaves: the SavedModel, which rounds expf exactly; float32 leaves: the numeric graph, all float32
        exact = leaves.dtype == tf.float64
        leaves32 = tf.cast(leaves, tf.float32)  # leaf values are float32 already: exact
        # float32, per class: intercept first, then the class's trees in tree order
        margin = sum_by_output(leaves32, tree_outputs, len(base_margin), start=base_margin)
        if objective in ("binary:logistic", "reg:logistic"):
            return _sigmoid32(margin[:, 0], exact)
        if objective == "multi:softprob":
            return _softmax32(margin, exact)
        return margin[:, 0]

    return finish


def _expf(x: Any, exact: bool = True) -> Any:
    """float32 ``expf``: the exponential in double rounded once to float32 (glibc's expf is correctly rounded).

    ``exact=False``: the float32 exponential itself (within an ulp; the numeric graph has no float64).
    """
    import tensorflow as tf

    return tf.cast(tf.exp(tf.cast(x, tf.float64)), tf.float32) if exact else tf.exp(x)


def _sigmoid32(x: Any, exact: bool = True) -> Any:
    """``common::Sigmoid(float)``: ``1 / (expf(min(-x, 88.7)) + 1 + 1e-16)`` in float32."""
    import tensorflow as tf

    denominator = _expf(tf.minimum(-x, tf.constant(88.7, tf.float32)), exact) + 1.0
    denominator = denominator + tf.constant(np.float32(1e-16))
    return exact_divide(1.0, denominator)


def _softmax32(margin: Any, exact: bool = True) -> Any:
    """``common::Softmax``: float32 max and ``expf``, the sum in double (class order), float32 division."""
    import tensorflow as tf

    largest = tf.reduce_max(margin, axis=1, keepdims=True)
    exps = _expf(margin - largest, exact)
    total = sequential_sum(tf.cast(exps, tf.float64) if exact else exps, axis=1)
    return exact_divide(exps, tf.expand_dims(tf.cast(total, tf.float32), 1))


def compile_child(child: Any, name: str, template: Any, category_counts: dict[str, int]) -> TreeChild:
    """Turn one fitted AutoGluon ``XGBoostModel`` into a :class:`TreeChild`.

    Args:
        child: The AutoGluon child model (``child.model`` is an ``XGBClassifier`` / ``XGBRegressor``).
        name: Label used in reports.
        template: One row of AutoGluon-transformed features (for probing the one-hot encoder).
        category_counts: Number of categories of each AutoGluon category feature.
    """
    if not getattr(child, "_ohe", True) or child._ohe_generator is None:
        raise UnsupportedModelError(f"{name}: XGBoost native categorical splits (enable_categorical) are not "
                                    "exported; train XGB with its default one-hot encoding.")
    booster = child.model.get_booster()
    config = json.loads(booster.save_config())
    learner = config["learner"]
    if learner["gradient_booster"]["name"] != "gbtree":
        raise UnsupportedModelError(f"{name}: XGBoost booster {learner['gradient_booster']['name']!r} is not exported.")
    objective = learner["objective"]["name"]
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]
    n_outputs = max(1, int(learner["learner_model_param"].get("num_class", "0")))
    base_margin = _base_margin(objective, _parse_floats(learner["learner_model_param"]["base_score"]), n_outputs)

    generator = child._ohe_generator
    blocks: list[DesignBlock] = []
    positions: list[int] = []  # encoder output column of each design column, in block order
    n_encoded = 0
    if generator.cat_cols:
        counts = {c: category_counts[c] for c in generator.cat_cols}
        probe = probe_one_hot(lambda frame: generator.ohe_encs.transform(frame[generator.cat_cols]), template, counts)
        n_encoded = len(probe)
        for block in group_lookups(probe):
            blocks.append(_lookup_block(block))
            positions += block.positions
    if generator.other_cols:
        blocks.append(_numeric_block(list(generator.other_cols)))
        positions += [n_encoded + i for i in range(len(generator.other_cols))]
    n_features = int(learner["learner_model_param"]["num_feature"])
    if n_features != len(positions):
        raise UnsupportedModelError(f"{name}: booster expects {n_features} columns, the encoder gives {len(positions)}.")
    design_index = np.empty(len(positions), dtype=np.int64)
    design_index[np.asarray(positions, dtype=np.int64)] = np.arange(len(positions))

    per_round = max(1, int(model["gbtree_model_param"].get("num_parallel_tree", "1"))) * n_outputs
    rounds = len(model["trees"]) // per_round
    best = getattr(child.model, "best_iteration", None)
    if best is not None:
        rounds = min(rounds, int(best) + 1)
    # Each tree adds to one class (tree_info): one value per leaf.
    table = TreeTable(n_outputs=n_outputs, scalar_leaves=True)
    for tree, output in zip(model["trees"][: rounds * per_round], model["tree_info"], strict=False):
        root, depth = _add_tree(table, tree, design_index)
        table.add_tree(root, depth, output=int(output))
    features = tuple(generator.cat_cols) + tuple(generator.other_cols)
    return TreeChild(name=name, blocks=blocks, table=table,
                     finish=_finisher(objective, base_margin, list(table.tree_outputs)), features=features)


def _add_tree(table: TreeTable, tree: dict[str, Any], design_index: np.ndarray) -> tuple[int, int]:
    if any(int(t) != 0 for t in tree.get("split_type", [])):
        raise UnsupportedModelError("XGBoost categorical splits are not exported.")
    left, right = tree["left_children"], tree["right_children"]
    conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
    ids: dict[int, int] = {}
    depth_of = {0: 0}
    order = [0]
    for node in order:  # breadth first, so parents get ids before children
        if left[node] != -1:
            depth_of[left[node]] = depth_of[right[node]] = depth_of[node] + 1
            order += [left[node], right[node]]
    for node in order:
        if left[node] == -1:
            ids[node] = table.add_node(value=float(conditions[node]))
        else:
            ids[node] = table.add_node(
                feature=int(design_index[int(tree["split_indices"][node])]),
                threshold=float(float32_rounding_bound(float32_less_than_as_le(conditions[node]))),
                default_left=bool(tree["default_left"][node]),
                nan_missing=True,
            )
    for node in order:
        if left[node] != -1:
            table.link(ids[node], ids[left[node]], ids[right[node]])
    leaf_depths = [depth_of[n] for n in order if left[n] == -1]
    return ids[0], max(leaf_depths)
