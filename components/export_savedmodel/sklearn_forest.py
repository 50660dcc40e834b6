"""AutoGluon ``RFModel`` / ``XTModel`` children (scikit-learn random forests and extra trees) as tree tables.

What the child does at predict time (autogluon ``rf_model.py``, scikit-learn ``_forest.py`` / ``_tree.pyx``):

* category columns become their codes, -1 when missing (``_label_encode_categoricals``); NaN in numeric
  columns becomes 0 (``fillna(0)``); the matrix is cast to float32 (rounded to nearest), and scikit-learn's input
  check raises on infinity, so a value beyond the float32 range (|x| > ~3.4028235e38) makes AutoGluon raise;
* each tree sends ``x <= threshold`` left, comparing the float32 value with the float64 threshold. Here the
  threshold becomes the largest float32 not above it, then the largest double that rounds to at most that
  float32: the float64 value is compared with it directly, which is the same test without a float32 cast
  (TensorFlow flushes float32 subnormals a cast produces; see ``trees``);
* a classifier tree's leaf holds class fractions; the forest sums its trees in float64 and divides by their
  number (classification: probabilities, regression: the mean prediction). Gini, entropy and squared-error
  trees predict the same way; only how they were grown differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.numerics import exact_divide, sequential_sum
from kfp_tabular.components.export_savedmodel.trees import (
    DesignBlock,
    TreeChild,
    TreeTable,
    float32_at_most,
    float32_rounding_bound,
)
from kfp_tabular.errors import UnsupportedModelError


def _design_block(features: list[str], category_features: set[str]) -> DesignBlock:
    """Category codes with -1 for missing, numbers with 0 for NaN (AutoGluon's ``_preprocess``), in float64."""
    fill = np.array([-1.0 if f in category_features else 0.0 for f in features], dtype=np.float64)

    def compute(values: dict[str, Any]) -> Any:
        import tensorflow as tf

        design = tf.stack([values[f] for f in features], axis=1)
        return tf.where(tf.math.is_nan(design), tf.constant(fill[None, :], design.dtype), design)

    sources = tuple(None if f in category_features else f for f in features)
    return DesignBlock(key=("sklearn", tuple(features), tuple(fill.tolist())), compute=compute, sources=sources,
                       nan_free=True)


def _finisher(n_trees: int, problem_type: str) -> Any:
    def finish(leaves: Any) -> Any:
        mean = exact_divide(sequential_sum(leaves, axis=1), float(n_trees))
        return mean if problem_type == "multiclass" else mean[:, 0]

    return finish


def compile_child(child: Any, name: str, category_features: set[str]) -> TreeChild:
    """Turn one fitted ``RFModel`` / ``XTModel`` into a :class:`TreeChild`.

    Args:
        child: The AutoGluon child model (``child.model`` is a fitted scikit-learn forest).
        name: Label used in reports.
        category_features: AutoGluon category features (label-encoded by the child).
    """
    forest = child.model
    if not hasattr(forest, "estimators_"):
        raise UnsupportedModelError(f"{name}: {type(forest).__name__} is not a scikit-learn forest.")
    problem_type = child.problem_type
    if problem_type not in ("binary", "multiclass", "regression"):
        raise UnsupportedModelError(f"{name}: problem type {problem_type!r} is not exported.")
    if problem_type != "regression":
        classes = np.asarray(forest.classes_)
        if not np.array_equal(classes, np.arange(child.num_classes)):
            raise UnsupportedModelError(f"{name}: forest classes {classes.tolist()} do not cover every class.")
    if getattr(forest, "n_outputs_", 1) != 1:
        raise UnsupportedModelError(f"{name}: multi-output forests are not exported.")
    features = list(child.features)
    if forest.n_features_in_ != len(features):
        raise UnsupportedModelError(f"{name}: forest expects {forest.n_features_in_} columns, child has {len(features)}.")
    block = _design_block(features, category_features)
    # Binary: AutoGluon keeps only the positive class, so only that column of the leaves is stored.
    n_outputs = forest.n_classes_ if problem_type == "multiclass" else 1
    table = TreeTable(n_outputs=int(n_outputs))
    for estimator in forest.estimators_:
        tree = estimator.tree_
        values = tree.value[:, 0, :].astype(np.float64)
        values = values[:, 1:2] if problem_type == "binary" else values
        # float32(x) <= t  <=>  float32(x) <= (largest float32 <= t)  <=>  x <= (largest double rounding to it).
        thresholds = float32_rounding_bound(float32_at_most(tree.threshold))
        table.add_tree_arrays(
            feature=tree.feature, threshold=thresholds, left=tree.children_left, right=tree.children_right,
            values=values, depth=int(tree.max_depth),
        )
    finish = _finisher(len(forest.estimators_), problem_type)
    return TreeChild(name=name, blocks=[block], table=table, finish=finish, features=tuple(features),
                     float32_checked=tuple(f for f in features if f not in category_features))
