"""Native tree models (LightGBM, XGBoost, scikit-learn forests) as flat arrays with their exact split rules.

Each parser returns a ``Forest``: all trees of one fitted model, node arrays concatenated, leaf values as one
row per node and one column per margin output (a class for multiclass forests). A multiclass booster's tree
adds to one class only, so its leaves keep that one value (and the tree its class): one column, not one per
class (1000 classes x 250k nodes would be 2 GB of zeros). Split rules are
encoded per node (``kernels.KIND_*``) so that the numba kernels route a row exactly as the library does; the
caller feeds the kernels the same numeric matrix the library would see (see ``children.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_tabular.components.explain_shap import kernels
from kfp_tabular.errors import ModelError


@dataclass(frozen=True)
class Forest:
    """Flattened trees: node ``i`` splits column ``feature[i]``; ``left[i] < 0`` marks a leaf.

    ``leaf_value`` is ``(nodes, n_outputs)``, or ``(nodes, 1)`` when every tree adds to one output only:
    ``tree_output[t]`` (``-1``: tree t adds to every output, its row holds them all).
    """

    feature: np.ndarray
    kind: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    missing: np.ndarray
    cat_start: np.ndarray
    cat_end: np.ndarray
    cat_values: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_value: np.ndarray
    roots: np.ndarray
    max_depth: int
    tree_output: np.ndarray
    n_outputs: int

    @property
    def compact(self) -> bool:
        """Whether ``leaf_value`` holds one value per node (each tree adds to one output)."""
        return self.leaf_value.shape[1] != self.n_outputs

    @property
    def value(self) -> np.ndarray:
        """Leaf values as ``(nodes, n_outputs)``; built on demand (nodes x outputs floats) for compact forests."""
        if not self.compact:
            return self.leaf_value
        tree_of_node = np.searchsorted(self.roots, np.arange(len(self.left)), side="right") - 1
        dense = np.zeros((len(self.left), self.n_outputs))
        dense[np.arange(len(self.left)), self.tree_output[tree_of_node]] = self.leaf_value[:, 0]
        return dense

    def rules(self) -> tuple[np.ndarray, ...]:
        """Split-rule arrays, in the order the kernels take them after ``feature``."""
        return (self.kind, self.threshold, self.default_left, self.missing, self.cat_start, self.cat_end,
                self.cat_values)

    def split_arrays(self) -> tuple[np.ndarray, ...]:
        """Rule and structure arrays, with dense leaf values, in the order the identity kernels take them."""
        return (*self.rules(), self.left, self.right, self.value, self.roots)

    def ends(self) -> np.ndarray:
        """One past the last node of each tree (trees are stored one after the other)."""
        return np.append(self.roots[1:], len(self.left))

    def margins(self, X: np.ndarray) -> np.ndarray:
        """Sum of the leaf values each row of ``X`` reaches, shape ``(rows, outputs)``."""
        return kernels.forest_margins(np.ascontiguousarray(X, dtype=np.float64), self.feature, *self.rules(),
                                      self.left, self.right, self.leaf_value, self.roots, self.tree_output,
                                      self.n_outputs)

    def used_columns(self) -> np.ndarray:
        """Columns that at least one split reads."""
        return np.unique(self.feature[self.left >= 0])


class _Builder:
    """Accumulates nodes tree by tree; ``compact``: one value per node, each tree naming its output."""

    def __init__(self, n_outputs: int, compact: bool = False) -> None:
        self.n_outputs = n_outputs
        self.compact = compact and n_outputs > 1
        self.nodes: list[tuple[int, int, float, bool, int, int, int]] = []  # feature, kind, thr, dleft, miss, cs, ce
        self.left: list[int] = []
        self.right: list[int] = []
        self.values: list[Any] = []
        self.roots: list[int] = []
        self.tree_output: list[int] = []
        self.cat_values: list[int] = []
        self.max_depth = 0

    def start_tree(self, root: int, output: int = -1) -> None:
        """Record that the tree rooted at ``root`` adds to ``output`` only (``-1``: to every output)."""
        self.roots.append(root)
        self.tree_output.append(output if self.compact else -1)

    def add_leaf(self, output: int, value: float) -> int:
        """A leaf adding ``value`` to one output."""
        if self.compact:
            return self.add_node(value=np.asarray([value]))
        row = np.zeros(self.n_outputs)
        row[output] = value
        return self.add_node(value=row)

    def add_node(self, feature: int = -1, kind: int = 0, threshold: float = 0.0, default_left: bool = False,
                 missing: int = 0, categories: list[int] | None = None,
                 value: np.ndarray | None = None) -> int:
        start = len(self.cat_values)
        self.cat_values.extend(categories or [])
        self.nodes.append((feature, kind, threshold, default_left, missing, start, len(self.cat_values)))
        self.left.append(-1)
        self.right.append(-1)
        self.values.append(np.zeros(1 if self.compact else self.n_outputs) if value is None else value)
        return len(self.nodes) - 1

    def build(self) -> Forest:
        columns = list(zip(*self.nodes, strict=True)) if self.nodes else [[]] * 7
        return Forest(
            feature=np.asarray(columns[0], dtype=np.int64),
            kind=np.asarray(columns[1], dtype=np.int8),
            threshold=np.asarray(columns[2], dtype=np.float64),
            default_left=np.asarray(columns[3], dtype=np.bool_),
            missing=np.asarray(columns[4], dtype=np.int8),
            cat_start=np.asarray(columns[5], dtype=np.int64),
            cat_end=np.asarray(columns[6], dtype=np.int64),
            cat_values=np.asarray(self.cat_values or [0], dtype=np.int64),
            left=np.asarray(self.left, dtype=np.int64),
            right=np.asarray(self.right, dtype=np.int64),
            leaf_value=np.asarray(self.values, dtype=np.float64).reshape(len(self.nodes), -1),
            roots=np.asarray(self.roots, dtype=np.int64),
            max_depth=self.max_depth,
            tree_output=np.asarray(self.tree_output, dtype=np.int64),
            n_outputs=self.n_outputs,
        )


# --- LightGBM ---------------------------------------------------------------------------------------------

_LGBM_MISSING = {"None": kernels.MISSING_NONE, "Zero": kernels.MISSING_ZERO, "NaN": kernels.MISSING_NAN}


def lightgbm_link(objective: str) -> tuple[int, float]:
    """Output link of a LightGBM objective string and the factor that scales its margin."""
    name, *params = objective.split()
    if name in {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}:
        return kernels.LINK_IDENTITY, 1.0
    if name == "binary":
        scale = dict(p.split(":") for p in params).get("sigmoid", "1")
        return kernels.LINK_SIGMOID, float(scale)
    if name in {"multiclass", "softmax"}:
        return kernels.LINK_SOFTMAX, 1.0
    raise ModelError(f"LightGBM objective '{objective}' has no exact probability-space SHAP here.")


def forest_from_lightgbm(booster: Any) -> tuple[Forest, int]:
    """Parse a LightGBM ``Booster`` (the iterations its ``predict`` uses). Returns the forest and its link."""
    dump = booster.dump_model()  # like predict(): up to best_iteration when one is recorded
    if dump.get("average_output"):
        raise ModelError("LightGBM random-forest boosting (average_output) is not supported by the exact SHAP.")
    link, scale = lightgbm_link(dump["objective"])
    per_iteration = int(dump["num_tree_per_iteration"])
    builder = _Builder(per_iteration, compact=True)
    for info in dump["tree_info"]:
        if info.get("is_linear"):
            raise ModelError("LightGBM linear trees are not supported by the exact SHAP.")
        output = int(info["tree_index"]) % per_iteration
        builder.start_tree(len(builder.nodes), output)
        _lightgbm_node(builder, info["tree_structure"], output, scale, 0)
    return builder.build(), link


def _lightgbm_node(builder: _Builder, node: dict, output: int, scale: float, depth: int) -> int:
    builder.max_depth = max(builder.max_depth, depth)
    if "leaf_value" in node:
        return builder.add_leaf(output, float(node["leaf_value"]) * scale)
    if node["decision_type"] == "==":
        categories = [int(c) for c in str(node["threshold"]).split("||")]
        index = builder.add_node(node["split_feature"], kernels.KIND_LGBM_CATEGORY, categories=categories)
    else:
        index = builder.add_node(node["split_feature"], kernels.KIND_LGBM_NUMERIC, float(node["threshold"]),
                                 bool(node["default_left"]), _LGBM_MISSING[node["missing_type"]])
    left = _lightgbm_node(builder, node["left_child"], output, scale, depth + 1)
    right = _lightgbm_node(builder, node["right_child"], output, scale, depth + 1)
    builder.left[index], builder.right[index] = left, right
    return index


# --- XGBoost ----------------------------------------------------------------------------------------------

_XGB_LINKS = {
    "binary:logistic": kernels.LINK_SIGMOID,
    "multi:softprob": kernels.LINK_SOFTMAX,
    "multi:softmax": kernels.LINK_SOFTMAX,
    "reg:squarederror": kernels.LINK_IDENTITY,
    "reg:absoluteerror": kernels.LINK_IDENTITY,
    "reg:pseudohubererror": kernels.LINK_IDENTITY,
    "reg:quantileerror": kernels.LINK_IDENTITY,
}


def xgboost_rounds(model: Any) -> int:
    """Boosting rounds the scikit-learn wrapper predicts with: up to ``best_iteration`` after early stopping."""
    booster = model.get_booster()
    best = getattr(model, "best_iteration", None)
    if best is None:
        best = booster.attributes().get("best_iteration")
    return int(best) + 1 if best is not None else booster.num_boosted_rounds()


def forest_from_xgboost(model: Any, objective: str) -> tuple[Forest, int]:
    """Parse an ``XGBClassifier`` / ``XGBRegressor`` (gbtree, numeric splits) into a forest and its link.

    Thresholds are float32 and the rule is ``x < t``, so the caller passes float32-rounded inputs. Only the
    first ``xgboost_rounds`` rounds are kept: AutoGluon's boosters hold every round but predict with fewer.
    """
    if objective not in _XGB_LINKS:
        raise ModelError(f"XGBoost objective '{objective}' has no exact probability-space SHAP here.")
    booster = model.get_booster()
    document = json.loads(bytes(booster.save_raw(raw_format="json")))
    gbm = document["learner"]["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise ModelError(f"XGBoost booster '{gbm.get('name')}' is not supported by the exact SHAP (gbtree only).")
    trees, tree_info = gbm["model"]["trees"], gbm["model"]["tree_info"]
    n_classes = int(document["learner"]["learner_model_param"].get("num_class", "0"))
    n_outputs = max(n_classes, 1)
    per_round = len(trees) // booster.num_boosted_rounds()
    builder = _Builder(n_outputs, compact=True)
    for tree, output in list(zip(trees, tree_info, strict=True))[: xgboost_rounds(model) * per_round]:
        if any(int(t) != 0 for t in tree.get("split_type", [])):
            raise ModelError("XGBoost categorical splits are not supported by the exact SHAP (one-hot only).")
        offset = len(builder.nodes)
        builder.start_tree(offset, int(output))
        lefts, rights = tree["left_children"], tree["right_children"]
        conditions, indices, defaults = tree["split_conditions"], tree["split_indices"], tree["default_left"]
        depth = _depths(lefts, rights)
        builder.max_depth = max(builder.max_depth, int(depth.max()))
        for node, (lc, rc) in enumerate(zip(lefts, rights, strict=True)):
            if lc < 0:  # a leaf stores its weight in split_conditions
                builder.add_leaf(int(output), float(np.float32(conditions[node])))
            else:
                builder.add_node(int(indices[node]), kernels.KIND_LT, float(np.float32(conditions[node])),
                                 bool(defaults[node]))
                builder.left[-1], builder.right[-1] = offset + lc, offset + rc
    return builder.build(), _XGB_LINKS[objective]


def _depths(lefts: list[int], rights: list[int]) -> np.ndarray:
    depth = np.zeros(len(lefts), dtype=np.int64)
    for node in range(len(lefts)):  # XGBoost numbers children after their parent
        for child in (lefts[node], rights[node]):
            if child >= 0:
                depth[child] = depth[node] + 1
    return depth


# --- scikit-learn random forest / extra trees -------------------------------------------------------------


def forest_from_sklearn(estimator: Any, class_columns: list[int] | None) -> Forest:
    """Parse a fitted ``RandomForest*`` / ``ExtraTrees*``: the mean over trees of each leaf's output.

    ``class_columns`` picks (and orders) the class columns of a classifier; ``None`` means regression. The
    classifier's leaves hold class distributions, so the sum over trees of ``distribution / n_trees`` is
    exactly ``predict_proba``. Inputs must be float32-rounded: scikit-learn casts X to float32 and then
    compares ``x <= threshold`` in double.
    """
    trees = estimator.estimators_
    n_outputs = 1 if class_columns is None else len(class_columns)
    builder = _Builder(n_outputs)
    for est in trees:
        tree = est.tree_
        if tree.n_outputs != 1:
            raise ModelError("Multi-output scikit-learn forests are not supported by the exact SHAP.")
        offset = len(builder.nodes)
        builder.start_tree(offset)
        values = tree.value[:, 0, :]
        if class_columns is None:
            leaf_values = values[:, :1] / len(trees)
        else:
            totals = values.sum(axis=1, keepdims=True)
            leaf_values = (values / np.where(totals > 0, totals, 1.0))[:, class_columns] / len(trees)
        go_left_missing = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=bool))
        depth = _depths(list(tree.children_left), list(tree.children_right))
        builder.max_depth = max(builder.max_depth, int(depth.max()))
        for node in range(tree.node_count):
            if tree.children_left[node] < 0:
                builder.add_node(value=leaf_values[node])
            else:
                builder.add_node(int(tree.feature[node]), kernels.KIND_LE, float(tree.threshold[node]),
                                 bool(go_left_missing[node]))
                builder.left[-1] = offset + int(tree.children_left[node])
                builder.right[-1] = offset + int(tree.children_right[node])
    return builder.build()
