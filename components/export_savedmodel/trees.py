"""Tree ensembles as flat node arrays, evaluated in TensorFlow with gathers over a fixed number of levels.

Every family (LightGBM, XGBoost, scikit-learn forests) is turned into the same node table. One node decides

    go_left = value is missing ? default_left : value <= threshold        (numeric split)
    go_left = int(value) in category_set                                    (LightGBM categorical split)

where "missing" is per node: NaN (LightGBM ``missing_type=NaN``, XGBoost) and/or exact zero (LightGBM
``missing_type=Zero``). A NaN at a node that does not treat NaN as missing is read as 0, which is LightGBM's rule
(``Tree::NumericalDecision``); when no node of a table treats NaN as missing (LightGBM trained on data without
NaN: ``missing_type=None`` everywhere) the whole design is read that way once.

The walk always compares the float64 value. Families that compare in float32 (XGBoost, scikit-learn) first
round the value to float32; since rounding is monotone, ``float32(x) <= t`` is the same test as ``x <= b`` with
``b`` the largest double that rounds to at most ``t`` (:func:`float32_rounding_bound`), so no cast is needed.
That matters beyond speed: TensorFlow on CPU flushes float32 subnormal results of a cast to zero, and tf2onnx
folds ``Cast`` chains away. XGBoost's ``value < threshold`` becomes ``<=`` against the next float32 below the
threshold first; scikit-learn already uses ``<=``.

All trees of a model are walked at once: the state is a [rows, trees] matrix of node ids and each level is a
handful of gathers over per-node arrays. Nodes are renumbered so that a node's children are consecutive (next =
left + went_right); leaves point to themselves, so walking a fixed number of levels (the deepest root-to-leaf
path) leaves every row at its leaf, whatever the depth of its own tree. Large batches walk trees in groups of
similar depth (deep forests mix depths) and, every few levels, keep only the (row, tree) pairs not yet at a
leaf (``Where`` + gathers, scattered back at the end): most pairs of a deep forest stop far above its deepest
leaf. A few rows walk all trees in one group without compaction (fewer ops). No loops, no custom ops: tf2onnx
converts it.

How a level decides depends on the splits (``strategy`` of :func:`evaluate_trees`). Plain numeric splits (scikit-
learn, XGBoost) gather the node's arrays and compare: about 8 ops a level. LightGBM's rules (NaN at some nodes,
zero as missing, categorical sets) cost some 30 ops a level that way, most of them on the value alone; the
``rules`` strategy does that value-only work once per design cell (a small cell class: NaN / zero bits and the
category code) and each level looks up the node's rule for the cell's class in one table: about 14 ops a level,
the same routing by construction (``tests/unit/export/test_tree_strategies.py`` checks it on random trees).
Tried and dropped (2 shared cores, TF 2.21): deciding every node at once ([rows, nodes], one vectorized compare)
and hopping one gather per level, the dense formulation. At one row it was slower for a 10,919-node LightGBM
(1.84 vs 1.15 ms) and no better for a 2,471-node one (0.58 vs 0.62 ms): each of its ops touches every node. At
batch 1024 it decides rows x nodes cells, many times the (row, tree, level) steps a walk takes. Tried again in a
graph-mode Session (TF Serving's runtime) with the decisions turned into one [rows, nodes] successor table, so
that each level is a single gather: still slower for one row of the 11,610-node LightGBM (1.35 vs 1.15 ms).
Also dropped: two levels per step (decide at a node and at both its children at once, then one grandchild
lookup) ran 606 instead of 712 graph nodes for a GBM + extra-trees model but was 15 % slower (1.18 vs 1.00 ms):
ops on [rows, trees, 3] cost more than the ops they replace. TensorFlow's single-threaded executor was slower too
(1.41 vs 1.18 ms).

Leaves hold either a vector of ``n_outputs`` values (scikit-learn classifier forests: class fractions) or one
value (``scalar_leaves``: boosters, whose multiclass trees each add to one class). A K-class booster with
vector leaves would store, gather and sum K - 1 zeros per leaf and per (row, tree): 1000 classes x 5000 trees
made the [rows, trees, K] leaf tensor 40 MB a row. Scalar tables record each tree's output instead, and
:func:`sum_by_output` adds each output's leaves in tree order ([rows, trees] -> [rows, K]), the order of the
boosters' own loops.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from kfp_tabular.components.export_savedmodel.numerics import sequential_sum

# Up to this many rows, all trees are walked as one group (fewer ops); larger batches use depth groups
# and compaction.
SMALL_BATCH = 16
# Large batches drop the (row, tree) pairs already at a leaf from level COMPACT_START on, every COMPACT_EVERY
# levels. Measured at 1024 rows on AutoGluon's default models: RF 1.1x, XT 1.25x, LightGBM 1.5x faster; XGBoost
# (depth 6) unchanged. Starting later or compacting every 4 levels was slower for LightGBM, no better for XT.
COMPACT_START = 6
COMPACT_EVERY = 2
# Columns of the integer node rows a TreeTable collects while trees are added.
_FEATURE, _LEFT, _RIGHT, _DEFAULT_LEFT, _NAN_MISSING, _ZERO_MISSING, _CATEGORICAL, _CAT_ROW = range(8)


@dataclass
class TreeTable:
    """Nodes of several trees in flat arrays; ``roots[t]`` is the node id of tree ``t``'s root.

    Node rows are kept in numpy chunks (one per ``add_node`` call or per bulk-added tree) and joined by
    :meth:`arrays`. ``values[node]`` is the leaf output: a vector of length ``n_outputs``, or with
    ``scalar_leaves`` one value that tree ``t`` adds to output ``tree_outputs[t]``; internal nodes hold zeros.
    ``category_sets[row]`` lists the codes a categorical node with ``cat_row=row`` sends left (row 0: empty).
    """

    n_outputs: int
    scalar_leaves: bool = False
    ints: list[np.ndarray] = field(default_factory=list)
    thresholds: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    category_sets: list[set[int]] = field(default_factory=list)
    tree_outputs: list[int] = field(default_factory=list)
    n_nodes: int = 0

    @property
    def leaf_width(self) -> int:
        """Values per leaf: 1 with ``scalar_leaves``, else ``n_outputs``."""
        return 1 if self.scalar_leaves else self.n_outputs

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.roots)

    @property
    def depth(self) -> int:
        """Largest number of splits on a root-to-leaf path over all trees."""
        return max(self.depths, default=0)

    def add_node(
        self,
        feature: int = 0,
        threshold: float = 0.0,
        default_left: bool = False,
        nan_missing: bool = False,
        zero_missing: bool = False,
        category_set: set[int] | None = None,
        value: np.ndarray | None = None,
    ) -> int:
        """Append a node (children set later with :meth:`link`); returns its id. A node with ``value`` is a leaf.

        ``value`` has ``leaf_width`` entries (a plain number for scalar leaves).
        """
        node = self.n_nodes
        cat_row = 0
        if category_set is not None:
            self.category_sets.append(set(category_set))
            cat_row = len(self.category_sets)
        row = [feature, node, node, int(default_left), int(nan_missing), int(zero_missing),
               int(category_set is not None), cat_row]
        self.ints.append(np.asarray([row], dtype=np.int32))
        self.thresholds.append(np.asarray([threshold], dtype=np.float64))
        leaf = np.zeros(self.leaf_width) if value is None else np.asarray(value, dtype=np.float64)
        self.values.append(leaf.reshape(1, self.leaf_width))
        self.n_nodes += 1
        return node

    def link(self, node: int, left: int, right: int) -> None:
        """Set the children of a node added with :meth:`add_node`."""
        row = self._row(node)
        row[_LEFT] = left
        row[_RIGHT] = right

    def _row(self, node: int) -> np.ndarray:
        # add_node chunks hold one row each; find the chunk by walking back from the end (links are local).
        offset = self.n_nodes
        for chunk in reversed(self.ints):
            offset -= len(chunk)
            if node >= offset:
                return chunk[node - offset]
        raise IndexError(node)

    def add_tree(self, root: int, depth: int, output: int = 0) -> None:
        """Register a tree whose nodes were added with :meth:`add_node`; ``output``: what its scalar leaves add to."""
        if not 0 <= output < self.n_outputs or (output and not self.scalar_leaves):
            raise ValueError(f"Tree output {output} out of range for {self.n_outputs} output(s) "
                             f"({'scalar' if self.scalar_leaves else 'vector'} leaves).")
        self.roots.append(root)
        self.depths.append(depth)
        self.tree_outputs.append(output)

    def add_tree_arrays(
        self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
        values: np.ndarray, depth: int,
    ) -> None:
        """Append a whole tree of plain ``value <= threshold`` splits; ``left == -1`` marks a leaf (root = node 0)."""
        base = self.n_nodes
        count = len(feature)
        ids = np.arange(count, dtype=np.int64) + base
        is_leaf = left < 0
        rows = np.zeros((count, 8), dtype=np.int32)
        rows[:, _FEATURE] = np.where(is_leaf, 0, feature)
        rows[:, _LEFT] = np.where(is_leaf, ids, left + base)
        rows[:, _RIGHT] = np.where(is_leaf, ids, right + base)
        self.ints.append(rows)
        self.thresholds.append(np.asarray(threshold, dtype=np.float64))
        self.values.append(np.where(is_leaf[:, None], values, 0.0).astype(np.float64))
        self.n_nodes += count
        self.add_tree(base, depth)

    def split_thresholds(self) -> dict[int, list[float]]:
        """Thresholds of the numeric splits, keyed by feature index (for adversarial parity rows)."""
        ints = np.concatenate(self.ints) if self.ints else np.zeros((0, 8), np.int32)
        thresholds = np.concatenate(self.thresholds) if self.thresholds else np.zeros(0)
        internal = (ints[:, _LEFT] != ints[:, _RIGHT]) & (ints[:, _CATEGORICAL] == 0)
        out: dict[int, list[float]] = {}
        for feature, threshold in zip(ints[internal, _FEATURE], thresholds[internal], strict=True):
            out.setdefault(int(feature), []).append(float(threshold))
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as numpy arrays ready to become graph constants."""
        width = max((max(s) + 1 for s in self.category_sets if s), default=1)
        sets = np.zeros((len(self.category_sets) + 1, width), dtype=bool)
        for row, members in enumerate(self.category_sets, start=1):
            if members:
                sets[row, sorted(members)] = True
        return {
            "ints": np.concatenate(self.ints) if self.ints else np.zeros((1, 8), np.int32),
            "thresholds": np.concatenate(self.thresholds) if self.thresholds else np.zeros(1),
            "values": np.concatenate(self.values) if self.values else np.zeros((1, self.leaf_width)),
            "roots": np.asarray(self.roots, dtype=np.int32),
            "category_sets": sets,
        }


def float32_less_than_as_le(threshold: float) -> float:
    """``x < t`` on float32 values equals ``x <= t'`` with ``t'`` the next float32 below ``t`` (as float64)."""
    t32 = np.float32(threshold)
    return float(np.nextafter(t32, np.float32(-np.inf), dtype=np.float32))


def float32_at_most(thresholds: np.ndarray) -> np.ndarray:
    """Largest float32 not above each threshold (as float64): for float32 ``x``, ``x <= t`` iff ``x <= result``."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    t32 = thresholds.astype(np.float32)
    above = t32.astype(np.float64) > thresholds
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32.astype(np.float64)


# 2**128: the float32 grid point above the largest float32, where float32 rounding overflows to infinity.
_FLOAT32_OVERFLOW_STEP = 2.0**128


def float32_rounding_bound(values: np.ndarray) -> np.ndarray:
    """Largest double that rounds (to nearest, ties to even) to at most each float32 value ``t`` (given as float64).

    For every double ``x``: ``float32(x) <= t`` iff ``x <= bound``. The bound is the midpoint between ``t`` and the
    next float32 when the tie rounds down to ``t`` (even mantissa), else the double just below it; it is never a
    float64 subnormal (the smallest is 2**-150 next to zero), so flush-to-zero cannot change a comparison with it.
    """
    t = np.asarray(values, dtype=np.float64)
    t32 = t.astype(np.float32)
    if not np.array_equal(t32.astype(np.float64), t, equal_nan=True):
        raise ValueError("float32_rounding_bound takes float32 values.")
    with np.errstate(over="ignore", invalid="ignore"):
        up = np.nextafter(t32, np.float32(np.inf)).astype(np.float64)
        up = np.where(np.isinf(up) & np.isfinite(t), _FLOAT32_OVERFLOW_STEP, up)
        mid = (t + up) / 2  # exact: both are float32 values a grid step apart
        tie_rounds_down = mid.astype(np.float32) <= t32
    bound = np.where(tie_rounds_down, mid, np.nextafter(mid, -np.inf))
    return np.where(np.isposinf(t), np.inf, bound)


def _layout(table: TreeTable) -> dict[str, np.ndarray]:
    """Renumber nodes breadth-first so that every internal node's children are consecutive (right = left + 1).

    Then one gather of ``left`` plus "went right" (0 / 1) gives the next node. Leaves point to themselves and
    get a +inf threshold, so they never move. Also returns, per node, where a missing value goes.
    """
    arrays = table.arrays()
    ints = arrays["ints"]
    count = len(ints)
    new_id = np.full(count, -1, dtype=np.int64)
    frontier = np.asarray(table.roots, dtype=np.int64)
    new_id[frontier] = np.arange(len(frontier))
    next_free = len(frontier)
    while len(frontier):
        internal = frontier[ints[frontier, _LEFT] != ints[frontier, _RIGHT]]
        children = np.stack([ints[internal, _LEFT], ints[internal, _RIGHT]], axis=1).reshape(-1)
        new_id[children] = next_free + np.arange(len(children))
        next_free += len(children)
        frontier = children
    kept = new_id >= 0
    order = np.empty(next_free, dtype=np.int64)
    order[new_id[kept]] = np.flatnonzero(kept)
    rows = ints[order]
    is_leaf = rows[:, _LEFT] == rows[:, _RIGHT]
    own = np.arange(next_free, dtype=np.int64)
    left = np.where(is_leaf, own, new_id[rows[:, _LEFT]])
    thresholds = np.where(is_leaf, np.inf, arrays["thresholds"][order])
    default_next = np.where(is_leaf, own, left + 1 - rows[:, _DEFAULT_LEFT])
    return {
        "feature": np.where(is_leaf, 0, rows[:, _FEATURE]).astype(np.int32),
        "threshold": thresholds,
        "left": left.astype(np.int32),
        "default_next": default_next.astype(np.int32),
        "nan_missing": rows[:, _NAN_MISSING] != 0,
        "zero_missing": rows[:, _ZERO_MISSING] != 0,
        "categorical": rows[:, _CATEGORICAL] != 0,
        "cat_row": rows[:, _CAT_ROW].astype(np.int32),
        "values": arrays["values"][order],
        "roots": new_id[np.asarray(table.roots, dtype=np.int64)].astype(np.int32),
        "internal": ~is_leaf,
        "category_sets": arrays["category_sets"],
    }


def _depth_groups(depths: np.ndarray, groups: int) -> list[np.ndarray]:
    """Split tree indices, sorted by depth, into up to ``groups`` runs; each run walks only its own depth."""
    order = np.argsort(depths, kind="stable")
    bounds = np.unique(np.linspace(0, len(order), groups + 1).round().astype(int))
    runs: list[np.ndarray] = []
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        if runs and depths[runs[-1][-1]] == depths[order[b - 1]]:  # same walk length: one group is cheaper
            runs[-1] = np.concatenate([runs[-1], order[a:b]])
        else:
            runs.append(order[a:b])
    return runs


def cell_classes(design: object, nan_free: bool, uses_categories: bool, set_width: int) -> tuple[object, object]:
    """The design with NaN read as 0, and each cell's class for :func:`rule_tables` (TensorFlow ops).

    Class ``m * (set_width + 1) + code`` (``m`` alone without categorical splits): ``m`` has bit 0 for NaN and
    bit 1 for a value of 0 once NaN reads as 0 (so NaN sets both); ``code`` is the category code ``int(value)`` of
    a value in ``[0, set_width)``, else ``set_width`` (NaN, negative, beyond every set).
    """
    import tensorflow as tf

    zero = tf.constant(0.0, design.dtype)
    is_nan = None if nan_free else tf.math.is_nan(design)
    values = design if is_nan is None else tf.where(is_nan, tf.zeros_like(design), design)
    classes = tf.cast(tf.equal(values, zero), tf.int32) * 2
    if is_nan is not None:
        classes = classes + tf.cast(is_nan, tf.int32)
    if uses_categories:
        valid = tf.logical_and(tf.greater_equal(values, zero), tf.less(values, tf.constant(float(set_width), design.dtype)))
        if is_nan is not None:
            valid = tf.logical_and(valid, tf.logical_not(is_nan))
        code = tf.cast(tf.where(valid, values, tf.zeros_like(values)), tf.int32)
        code = tf.where(valid, code, tf.fill(tf.shape(code), tf.constant(set_width, tf.int32)))
        classes = classes * (set_width + 1) + code
    return values, classes


def rule_tables(layout: dict[str, np.ndarray], nan_is_missing: bool, uses_zero: bool,
                uses_categories: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per node kind and cell class (:func:`cell_classes`): -1 = compare with the threshold, 0 = left, 1 = right.

    The same decision as the walk's ``advance``: a missing value (NaN at a node treating NaN as missing, or 0 / NaN
    at a node treating zero as missing) follows the default side; otherwise a categorical node sends a member code
    left and everything else right; a numeric node compares. Returns the table [kinds, classes] and, per node,
    the offset of its kind's row in the flattened table.
    """
    internal = layout["internal"]
    all_nan = bool(layout["nan_missing"][internal].all())
    sets = layout["category_sets"]
    set_width = sets.shape[1]
    codes = set_width + 1 if uses_categories else 1
    default_left = layout["left"] + 1 - layout["default_next"]  # leaves: 1 (they point to themselves)
    nan_rule = np.full(len(internal), all_nan) if nan_is_missing and all_nan else layout["nan_missing"] & nan_is_missing
    categorical = layout["categorical"] & uses_categories
    kinds = np.stack([categorical, np.where(categorical, layout["cat_row"], 0), nan_rule,
                      layout["zero_missing"] & uses_zero, default_left == 1], axis=1).astype(np.int64)
    unique, kind_of = np.unique(kinds, axis=0, return_inverse=True)
    classes = np.arange(4 * codes)
    m, code = classes // codes, classes % codes
    table = np.empty((len(unique), len(classes)), dtype=np.int32)
    for row, (is_categorical, cat_row, nan_rule_k, zero_rule_k, left_default) in enumerate(unique):
        missing = (nan_rule_k & (m & 1 != 0)) | (zero_rule_k & (m & 2 != 0))
        if is_categorical:
            member = np.zeros(len(classes), dtype=bool)
            inside = code < set_width
            member[inside] = sets[cat_row, code[inside]]
            decided = np.where(member, 0, 1)
        else:
            decided = np.full(len(classes), -1)
        table[row] = np.where(missing, 0 if left_default else 1, decided)
    return table, (kind_of.reshape(-1) * len(classes)).astype(np.int32)


def evaluate_trees(table: TreeTable, design: object, groups: int = 4, nan_free: bool = False,
                   single_walk: bool = False, strategy: str = "auto") -> object:
    """Leaf output of every tree for every row: [rows, trees, table.leaf_width] in the design's dtype (TensorFlow ops).

    A float32 design (the numeric graph, ``numeric_graph``) compares with the largest float32 not above each
    threshold, the same test as the float64 comparison for every float32 value; leaves are rounded to float32.

    Args:
        table: The trees; their thresholds have the design's dtype once cast.
        design: float64 [rows, features] matrix the trees' feature indices refer to (float32 works the same).
        groups: Trees are walked in up to this many groups of similar depth (deep forests mix depths).
        nan_free: The design holds no NaN (scikit-learn fills it); skips the missing-value ops.
        single_walk: Walk all trees as one group at any batch size: no ``cond``, no compaction (static graph).
        strategy: How a node decides. ``rules``: the value-only work (NaN read as 0, NaN / zero bits, category
            code) once per design cell, then per level one lookup of the node's rule for the cell's class (about
            half the ops per level of ``nodes``). ``nodes``: each level computes the whole decision from the
            node's arrays (fewest ops for plain numeric splits). ``auto``: ``rules`` where some split treats zero
            or only some splits treat NaN as missing, or some split is categorical (LightGBM), else ``nodes``.
    """
    import tensorflow as tf

    layout = _layout(table)
    internal = layout["internal"]
    uses_nan = bool(layout["nan_missing"][internal].any())
    all_nan = bool(layout["nan_missing"][internal].all())
    uses_zero = bool(layout["zero_missing"][internal].any())
    uses_categories = bool(layout["categorical"][internal].any())
    dtype = design.dtype
    zero = tf.constant(0.0, dtype)
    if not (nan_free or uses_nan or uses_categories):
        # No split treats NaN as missing, so every split reads it as 0 (LightGBM ``missing_type`` None / Zero):
        # replace it once. Selecting on IsNan keeps this a real Where in ONNX (tf2onnx turns other float selects
        # into cond * a + (1 - cond) * b, which NaN poisons).
        design = tf.where(tf.math.is_nan(design), tf.zeros_like(design), design)
        nan_free = True

    rows = tf.shape(design)[0]
    n_features = tf.shape(design)[1]
    flat = tf.reshape(design, [-1])
    row_base = tf.expand_dims(tf.range(rows) * n_features, 1)  # [rows, 1]
    # Only the node arrays a family needs become graph constants (they dominate the SavedModel's size).
    feature = tf.constant(layout["feature"])
    thresholds = layout["threshold"] if dtype == tf.float64 else float32_at_most(layout["threshold"])
    threshold = tf.constant(thresholds.astype(dtype.as_numpy_dtype))
    left = tf.constant(layout["left"])
    nan_is_missing = uses_nan and not nan_free
    if strategy not in ("auto", "rules", "nodes"):
        raise ValueError(f"Unknown tree strategy {strategy!r}: use auto, rules or nodes.")
    by_rules = strategy == "rules" or (
        strategy == "auto" and (uses_categories or uses_zero or (nan_is_missing and not all_nan)))
    walk_arrays = not by_rules
    default_next = tf.constant(layout["default_next"]) if walk_arrays and (nan_is_missing or uses_zero) else None
    nan_missing = tf.constant(layout["nan_missing"]) if walk_arrays and nan_is_missing and not all_nan else None
    zero_missing = tf.constant(layout["zero_missing"]) if walk_arrays and uses_zero else None
    sets = layout["category_sets"]
    set_width = sets.shape[1]
    if walk_arrays and uses_categories:
        categorical = tf.constant(layout["categorical"])
        cat_row = tf.constant(layout["cat_row"])
        flat_sets = tf.constant(sets.reshape(-1))
    is_internal = tf.constant(internal)
    depths = np.asarray(table.depths, dtype=np.int64)

    def advance(node: object, base: object) -> object:
        """One level down for every (row, tree) pair; ``base`` is the pair's row offset in ``flat``."""
        raw = tf.gather(flat, base + tf.gather(feature, node))
        is_nan = None if nan_free else tf.math.is_nan(raw)
        # NaN reads as 0 where it is not "missing" (LightGBM); a real Where in ONNX, as above.
        value = raw if is_nan is None else tf.where(is_nan, zero, raw)
        went_right = tf.greater(value, tf.gather(threshold, node))
        missing = None
        if nan_is_missing:
            missing = is_nan if all_nan else tf.logical_and(is_nan, tf.gather(nan_missing, node))
        if uses_zero:
            zero_hit = tf.logical_and(tf.gather(zero_missing, node), tf.equal(value, zero))
            missing = zero_hit if missing is None else tf.logical_or(missing, zero_hit)
        if uses_categories:
            # LightGBM: NaN and negative codes go right; codes beyond the bitset are not members.
            valid = tf.logical_and(tf.greater_equal(value, zero), tf.less(value, tf.constant(float(set_width), dtype)))
            if is_nan is not None:
                valid = tf.logical_and(valid, tf.logical_not(is_nan))
            code = tf.cast(tf.where(valid, value, zero), tf.int32)
            member = tf.gather(flat_sets, tf.gather(cat_row, node) * set_width + code)
            member = tf.logical_and(member, valid)
            went_right = tf.where(tf.gather(categorical, node), tf.logical_not(member), went_right)
        step = tf.gather(left, node) + tf.cast(went_right, tf.int32)
        return step if missing is None else tf.where(missing, tf.gather(default_next, node), step)

    def advance_by_rules(node: object, base: object) -> object:
        """``advance`` with the value-only work done once per cell (``cell_classes``) and one rule lookup."""
        position = base + tf.gather(feature, node)
        forced = tf.gather(rules, tf.gather(rule_of, node) + tf.gather(flat_classes, position))
        compared = tf.cast(tf.greater(tf.gather(flat, position), tf.gather(threshold, node)), tf.int32)
        return tf.gather(left, node) + tf.where(forced < 0, compared, forced)

    if by_rules:
        flat_values, classes = cell_classes(design, nan_free, uses_categories, set_width)
        flat = tf.reshape(flat_values, [-1])
        flat_classes = tf.reshape(classes, [-1])
        rule_table, rule_offset = rule_tables(layout, nan_is_missing, uses_zero, uses_categories)
        rules = tf.constant(rule_table.reshape(-1))
        rule_of = tf.constant(rule_offset)
        advance = advance_by_rules

    def walk(trees: np.ndarray, compact: bool) -> object:
        depth = int(depths[trees].max(initial=0))
        roots = tf.constant(layout["roots"][trees])
        if not compact or depth <= COMPACT_START:
            node = tf.tile(tf.expand_dims(roots, 0), tf.stack([rows, 1]))
            for _ in range(depth):
                node = advance(node, row_base)
            return tf.gather(values, node)
        # Deep trees: most (row, tree) pairs reach a leaf long before the deepest path ends. Every few
        # levels, keep only the pairs still at an internal node, then scatter their leaves back at the end.
        node = tf.reshape(tf.tile(tf.expand_dims(roots, 0), tf.stack([rows, 1])), [-1])
        base = tf.reshape(tf.tile(row_base, [1, len(trees)]), [-1])
        kept = []
        for level in range(depth):
            if level >= COMPACT_START and (level - COMPACT_START) % COMPACT_EVERY == 0:
                active = tf.where(tf.gather(is_internal, node))  # [pairs left, 1] positions
                kept.append((node, active))
                node = tf.gather(node, tf.reshape(active, [-1]))
                base = tf.gather(base, tf.reshape(active, [-1]))
            node = advance(node, base)
        for before, active in reversed(kept):
            node = tf.tensor_scatter_nd_update(before, active, node)
        return tf.gather(values, tf.reshape(node, tf.stack([rows, len(trees)])))

    def walk_groups(tree_groups: list[np.ndarray], compact: bool) -> object:
        outputs = [walk(trees, compact) for trees in tree_groups]
        leaves = outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1)
        order = np.concatenate(tree_groups)
        if not np.array_equal(order, np.arange(len(order))):
            leaves = tf.gather(leaves, tf.constant(np.argsort(order).astype(np.int32)), axis=1)
        return leaves

    values = tf.constant(layout["values"].astype(dtype.as_numpy_dtype))
    tree_groups = _depth_groups(depths, groups)
    everything = [np.arange(len(depths))]
    if single_walk or (len(tree_groups) == 1 and int(depths.max(initial=0)) <= COMPACT_START):
        return walk_groups(everything, compact=False)
    # Depth groups and compaction save work on large batches; for a few rows the number of ops dominates, and
    # one group (fewest levels in total) is faster. Both walks share the node constants.
    return unlowered_cond(rows <= SMALL_BATCH, lambda: walk_groups(everything, compact=False),
                          lambda: walk_groups(tree_groups, compact=True))


def unlowered_cond(predicate: object, true_fn: object, false_fn: object) -> object:
    """``tf.cond`` kept as one ``If`` op that runs only the branch taken (TensorFlow ops).

    By default TensorFlow lowers a ``cond`` inside a function to ``Switch`` / ``Merge`` nodes, and the executor
    then visits every node of the branch not taken as a dead node. Here that branch is the whole other walk
    (hundreds of ops): marking the ``If`` as not to be lowered (the attribute ``tf.cond`` itself sets) made one
    row of a GBM + extra-trees model 1.84 -> 1.42 ms (TF 2.21, 2 cores), batches unchanged. tf2onnx converts the
    ``If`` either way.
    """
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2

    if tf.executing_eagerly():  # eager code runs one branch anyway
        return tf.cond(predicate, true_fn, false_fn)
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    result = tf.cond(predicate, true_fn, false_fn)
    for op in graph.get_operations()[before:]:
        if op.type in ("If", "StatelessIf"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return result


def sum_by_output(leaves: object, tree_outputs: list[int] | np.ndarray, n_outputs: int,
                  start: np.ndarray | None = None) -> object:
    """Scalar leaves [rows, trees, 1] summed per output in tree order: [rows, n_outputs] (TensorFlow ops).

    Output ``k`` is ``start[k]`` (if given) plus the leaves of the trees with ``tree_outputs[t] == k``, added one
    by one in tree order in the leaves' dtype, as a booster's C loop ``out[output_of[t]] += leaf[t]`` does. Trees
    laid out round by round (tree ``t`` adds to ``t % n_outputs``, LightGBM and XGBoost without parallel trees)
    are a reshape to [rows, rounds, n_outputs]; other layouts gather each output's trees, padding outputs with
    fewer trees by a trailing 0 (``x + 0 == x``).
    """
    import tensorflow as tf

    outputs = np.asarray(tree_outputs, dtype=np.int64)
    n_trees = len(outputs)
    if n_outputs == 1:
        terms = leaves  # [rows, trees, 1] already (no extra ops: binary and regression graphs stay as they were)
    elif n_trees % n_outputs == 0 and np.array_equal(outputs, np.arange(n_trees) % n_outputs):
        terms = tf.reshape(leaves, [-1, n_trees // n_outputs, n_outputs])
    else:
        per_output = [np.flatnonzero(outputs == k) for k in range(n_outputs)]
        length = max((len(trees) for trees in per_output), default=0)
        index = np.full((length, n_outputs), n_trees, dtype=np.int32)  # n_trees: the appended zero
        for k, trees in enumerate(per_output):
            index[: len(trees), k] = trees
        flat = tf.reshape(leaves, [-1, n_trees])
        padded = tf.concat([flat, tf.zeros_like(flat[:, :1])], axis=1)
        terms = tf.gather(padded, tf.constant(index), axis=1)  # [rows, length, n_outputs]
    if start is not None:
        first = tf.constant(np.asarray(start).reshape(1, 1, n_outputs), leaves.dtype)
        terms = tf.concat([tf.tile(first, tf.stack([tf.shape(leaves)[0], 1, 1])), terms], axis=1)
    return sequential_sum(terms, axis=1)


@dataclass(frozen=True)
class DesignBlock:
    """Some input columns of a tree model, computed together from AutoGluon's features with TensorFlow ops.

    Attributes:
        key: Hashable description; children of a bag that read the same block share one computation.
        compute: Function of the AutoGluon feature tensors returning [rows, len(sources)] (the family's dtype).
        sources: Per column, the AutoGluon feature whose value it carries; the parity rows probe its split
            thresholds. None for derived columns (one-hot indicators, category codes).
        nan_free: The block never outputs NaN (the family fills missing values itself).
    """

    key: tuple
    compute: object
    sources: tuple[str | None, ...]
    nan_free: bool = False


@dataclass
class TreeChild:
    """One fitted tree model: the columns it reads, its trees, and how summed leaf outputs become its output.

    Attributes:
        name: Human-readable label, e.g. ``LightGBM_BAG_L1/S1F1``.
        blocks: Design blocks; the trees' feature indices refer to their columns, concatenated in order.
        table: The trees.
        finish: Function of the child's leaf outputs float64 [rows, trees, leaf width] returning the model's
            ``predict_proba`` (binary: [rows]; multiclass: [rows, classes]; regression: [rows]).
        features: AutoGluon features the blocks read.
        float32_checked: Numeric features the model casts to float32 and then checks for infinity
            (scikit-learn): a value beyond the float32 range makes AutoGluon raise, so the export refuses it too.
    """

    name: str
    blocks: list[DesignBlock]
    table: TreeTable
    finish: object
    features: tuple[str, ...] = ()
    float32_checked: tuple[str, ...] = ()

    @property
    def sources(self) -> tuple[str | None, ...]:
        """Source feature of every design column, in tree feature-index order."""
        return tuple(source for block in self.blocks for source in block.sources)


def merge_tables(tables: list[TreeTable], feature_maps: list[list[int]]) -> tuple[TreeTable, list[tuple[int, int]]]:
    """Concatenate tree tables, remapping each table's feature indices; returns the table and tree ranges."""
    merged = TreeTable(n_outputs=tables[0].n_outputs, scalar_leaves=tables[0].scalar_leaves)
    ranges = []
    for table, feature_map in zip(tables, feature_maps, strict=True):
        if (table.n_outputs, table.scalar_leaves) != (merged.n_outputs, merged.scalar_leaves):
            raise ValueError("merge_tables takes tables with the same outputs and leaf layout.")
        arrays = table.arrays()
        rows = arrays["ints"][: table.n_nodes].copy()
        internal = rows[:, _LEFT] != rows[:, _RIGHT]
        mapping = np.asarray([*feature_map, 0], dtype=np.int32)
        rows[:, _FEATURE] = np.where(internal, mapping[rows[:, _FEATURE]], 0)
        rows[:, _LEFT] += merged.n_nodes
        rows[:, _RIGHT] += merged.n_nodes
        rows[:, _CAT_ROW] = np.where(rows[:, _CATEGORICAL] != 0, rows[:, _CAT_ROW] + len(merged.category_sets), 0)
        merged.ints.append(rows)
        merged.thresholds.append(arrays["thresholds"][: table.n_nodes])
        merged.values.append(arrays["values"][: table.n_nodes])
        merged.category_sets.extend(table.category_sets)
        start = merged.n_trees
        merged.roots.extend(root + merged.n_nodes for root in table.roots)
        merged.depths.extend(table.depths)
        merged.tree_outputs.extend(table.tree_outputs)
        merged.n_nodes += table.n_nodes
        ranges.append((start, merged.n_trees))
    return merged, ranges
