"""AutoGluon ``LGBModel`` children (LightGBM boosters) as tree tables.

What the child does at predict time (autogluon ``lgb_model.py`` + lightgbm ``basic.py`` / ``tree.h``):

* the DataFrame of the child's features goes to ``Booster.predict``; category columns become their pandas codes
  (re-based on the ``pandas_categorical`` stored at fit, missing -> NaN), every value is read as a double;
* the C API skips values with ``|x| <= 1e-35`` (kZeroThreshold), so those reach the trees as exactly 0; that
  includes every float64 subnormal, which TensorFlow reads as 0 anyway;
* numeric split (``Tree::NumericalDecision``): NaN becomes 0 unless ``missing_type`` is NaN; NaN (type NaN) or
  zero (type Zero) follows ``default_left``; otherwise ``x <= threshold`` in double (``dump_model`` writes
  infinite thresholds as 1e300). A column without NaN at fit gets ``missing_type`` None (or Zero) at every split,
  so a NaN sent at serving time is compared as 0 there, not sent to the default side;
* infinite and huge values are accepted (they pass every threshold);
* categorical split: NaN or a negative code goes right, a code in the split's set goes left;
* raw score = sum of the leaves of the best iterations (the dump and ``predict`` both stop at
  ``best_iteration``); binary applies ``1 / (1 + exp(-sigmoid * raw))``, multiclass a softmax, regression none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.numerics import exact_divide, sequential_sum
from kfp_tabular.components.export_savedmodel.trees import DesignBlock, TreeChild, TreeTable, sum_by_output
from kfp_tabular.errors import UnsupportedModelError

# LightGBM's kZeroThreshold is the float 1e-35f, compared in double.
ZERO_THRESHOLD = float(np.float32(1e-35))
# Common::AvoidInf clips dumped thresholds to +-1e300.
DUMP_LIMIT = 1e300
_IDENTITY_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}


def _design_block(features: list[str], lgb_codes: dict[str, list[Any]], category_counts: dict[str, int]) -> DesignBlock:
    """The values LightGBM reads: numbers, or re-based category codes (NaN if missing); |x| <= 1e-35 -> 0."""
    remaps: dict[str, np.ndarray] = {}
    for feature, codes in lgb_codes.items():
        # AutoGluon code c is the category value c; LightGBM uses its position in pandas_categorical.
        position = {value: i for i, value in enumerate(codes)}
        count = category_counts.get(feature, 0)
        remap = np.array([position.get(c, np.nan) for c in range(count)] + [np.nan], dtype=np.float64)
        if not np.array_equal(remap[:-1], np.arange(count)):
            remaps[feature] = remap

    def compute(values: dict[str, Any]) -> Any:
        import tensorflow as tf

        columns = []
        for feature in features:
            value = values[feature]
            if feature in remaps:
                remap = remaps[feature]
                index = tf.where(tf.math.is_nan(value), float(len(remap) - 1), value)
                value = tf.gather(tf.constant(remap, value.dtype), tf.cast(index, tf.int32))
            columns.append(value)
        design = tf.stack(columns, axis=1)
        # The C API drops |x| <= kZeroThreshold from the row, so the tree sees 0.
        return tf.where(tf.abs(design) <= ZERO_THRESHOLD, tf.zeros_like(design), design)

    key = ("lightgbm", tuple(features), tuple((f, tuple(r.tolist())) for f, r in sorted(remaps.items())))
    sources = tuple(None if feature in lgb_codes else feature for feature in features)
    return DesignBlock(key=key, compute=compute, sources=sources)


def _threshold(dumped: float) -> float:
    """The split threshold LightGBM compares with.

    ``dump_model`` writes thresholds >= 1e300 (in practice +inf, LightGBM's "everything goes left" bound) as
    1e300 (``Common::AvoidInf``), and thresholds <= -1e300 as -1e300.
    """
    if dumped >= DUMP_LIMIT:
        return math.inf
    if dumped <= -DUMP_LIMIT:
        return -math.inf
    return dumped


def _add_tree(table: TreeTable, node: dict[str, Any]) -> tuple[int, int]:
    """Add one dumped tree (recursively); returns (node id, depth below it)."""
    if "leaf_value" in node or "split_feature" not in node:
        return table.add_node(value=float(node.get("leaf_value", 0.0))), 0
    if node["decision_type"] == "==":
        members = {int(code) for code in str(node["threshold"]).split("||") if code != ""}
        node_id = table.add_node(feature=int(node["split_feature"]), category_set=members)
    elif node["decision_type"] == "<=":
        node_id = table.add_node(
            feature=int(node["split_feature"]),
            threshold=_threshold(float(node["threshold"])),
            default_left=bool(node["default_left"]),
            nan_missing=node["missing_type"] == "NaN",
            zero_missing=node["missing_type"] == "Zero",
        )
    else:
        raise UnsupportedModelError(f"Unknown LightGBM decision type {node['decision_type']!r}.")
    left, left_depth = _add_tree(table, node["left_child"])
    right, right_depth = _add_tree(table, node["right_child"])
    table.link(node_id, left, right)
    return node_id, 1 + max(left_depth, right_depth)


def _finisher(objective: str, average_over: int, tree_outputs: list[int], n_outputs: int) -> Any:
    name, *params = objective.split()
    options = dict(param.split(":", 1) for param in params if ":" in param)
    if name == "binary" or name == "cross_entropy":
        sigmoid = float(options.get("sigmoid", 1.0))
    elif name not in ("multiclass", "multiclassova") and name not in _IDENTITY_OBJECTIVES:
        raise UnsupportedModelError(f"LightGBM objective {objective!r} has no exact export yet.")
    if name == "multiclassova":
        raise UnsupportedModelError("LightGBM objective 'multiclassova' has no exact export yet.")

    def finish(leaves: Any) -> Any:
        import tensorflow as tf

        # [rows, outputs]: each class in double, iteration by iteration, like LightGBM's PredictRaw
        raw = sum_by_output(leaves, tree_outputs, n_outputs)
        if average_over > 1:
            raw = exact_divide(raw, float(average_over))
        if name in ("binary", "cross_entropy"):
            return exact_divide(1.0, 1.0 + tf.exp(-sigmoid * raw[:, 0]))
        if name == "multiclass":
            shifted = tf.exp(raw - tf.reduce_max(raw, axis=1, keepdims=True))
            return exact_divide(shifted, tf.expand_dims(sequential_sum(shifted, axis=1), 1))
        return raw[:, 0]

    return finish


def compile_child(child: Any, name: str, category_counts: dict[str, int]) -> TreeChild:
    """Turn one fitted ``LGBModel`` into a :class:`TreeChild`.

    Args:
        child: The AutoGluon child model (``child.model`` is a ``lightgbm.Booster``).
        name: Label used in reports.
        category_counts: Number of categories of each AutoGluon category feature.
    """
    booster = child.model
    dump = booster.dump_model()
    if any(tree.get("is_linear") for tree in dump["tree_info"]) or "linear" in str(dump.get("version", "")):
        raise UnsupportedModelError(f"{name}: LightGBM linear trees have no exact export yet.")
    features = list(child.features)
    if len(features) != len(dump["feature_names"]):
        raise UnsupportedModelError(f"{name}: feature list does not match the booster ({len(features)} vs "
                                    f"{len(dump['feature_names'])}).")
    pandas_categorical = list(dump.get("pandas_categorical") or [])
    category_features = [f for f in features if f in category_counts]
    if len(pandas_categorical) != len(category_features):
        raise UnsupportedModelError(f"{name}: categorical columns do not match the booster's pandas_categorical.")
    lgb_codes = dict(zip(category_features, pandas_categorical, strict=True))
    block = _design_block(features, lgb_codes, category_counts)
    n_outputs = int(dump["num_tree_per_iteration"])
    # Tree i of a multiclass booster adds to class i % n_outputs only: one value per leaf.
    table = TreeTable(n_outputs=n_outputs, scalar_leaves=True)
    for index, tree in enumerate(dump["tree_info"]):
        root, depth = _add_tree(table, tree["tree_structure"])
        table.add_tree(root, depth, output=index % n_outputs)
    iterations = max(1, len(dump["tree_info"]) // n_outputs)
    average_over = iterations if dump.get("average_output") else 1
    finish = _finisher(dump["objective"], average_over, list(table.tree_outputs), n_outputs)
    return TreeChild(name=name, blocks=[block], table=table, finish=finish, features=tuple(features))
