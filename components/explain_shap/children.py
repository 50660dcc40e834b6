"""One fitted AutoGluon child model as an exact interventional Shapley game over the raw features.

The players are the predictor's raw input columns. AutoGluon's global feature generator works column by column
(a raw column becomes one transformed column, or several for datetimes and text), and each child's own
preprocessing does too (LightGBM: pandas categoricals; XGBoost: one-hot into CSR; forests: label codes,
``fillna(0)``, float32; linear model: one-hot, impute, scale). So the child's input for a hybrid row (some raw
columns from the explained row, the rest from a background row) is the hybrid of the two encoded rows, taken
per group of encoded columns. Each child is therefore explained on its OWN encoding of the data, with every
encoded column labelled by the raw feature it comes from. Encoded columns of one raw feature (XGBoost's
one-hot columns, datetime parts) form one player: summing per-column SHAP values instead would not give the
Shapley value of the raw feature.

Why feed each child its own encoding: AutoGluon's random forest fills NaN with 0 and casts to float32 before
predicting. ``shap.TreeExplainer`` given the global transform's output instead (NaN kept, float64) routes NaN
through scikit-learn's missing-value branch and compares unrounded values, so its values stop adding up to the
child's probability (reproduced: additivity error 0.2-0.3 on penguins rows with missing measurements, 0.15 on a
2k-row toy with 10% NaN; below 1e-7 on the child's own encoding; see ``test_explain_rf_additivity.py``). The
float32 cast matters too for large integers and datetimes (nanoseconds), whose float32 grid is coarse. Here a
child's reconstruction is always checked against its own ``predict_proba``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kfp_tabular.components.explain_shap import kernels
from kfp_tabular.components.explain_shap.explanation import (
    DEFAULT_TARGET_SE,
    FLOAT32_EPS,
    output_scale,
    relative_gap,
)
from kfp_tabular.components.explain_shap.trees import (
    Forest,
    forest_from_lightgbm,
    forest_from_sklearn,
    forest_from_xgboost,
    xgboost_rounds,
)
from kfp_tabular.errors import ModelError

# A child's own reconstruction must match its predict_proba this closely, relative to the per-output scale
# max(1, max |output|) (probabilities: absolute): AutoGluon returns float32 regression predictions. A child that
# sums n terms in float32 itself (XGBoost: its trees) may be off by up to n × FLOAT32_EPS of the scale more.
CHILD_PARITY_TOLERANCE = 1e-6
# Sigmoid / softmax children: the exact kernel's coalition tables (2^d margins and outputs per thread) may take
# this much memory, which bounds d; within it, exact or sampled is chosen by estimated cost.
LINK_TABLE_BYTES = 256 * 2**20
# Antithetic units per (row, background row) pair of the pilot pass, most units per pair, and sampling passes.
PILOT_UNITS = 4
MAX_UNITS = 4096
MAX_PASSES = 4
# Units asked for beyond the pilot's projection (its variance estimate is itself noisy).
SAFETY = 1.2
# One operation of a sampled walk (a leaf's (P, N) entry, a link or prefix-sum step) takes about this many times
# the time of one coalition-table operation of the exact kernel (measured: 16 players, 3 classes, LightGBM).
WALK_OP_COST = 4.0
# Identity-output trees whose paths use at most this many distinct features are explained leaf by leaf
# (tables of 2^width entries per leaf); wider trees pair by pair.
TABLE_MAX_WIDTH = 8
# Memory for the explained rows' per-node decisions of sigmoid / softmax trees, per chunk of rows; and for the
# path patterns of the leaf-by-leaf kernel, over all its parallel chunks (fewer chunks than threads if needed).
DECISION_BYTES = 64 * 2**20
PATTERN_BYTES = 1 * 2**30


@dataclass(frozen=True)
class Decision:
    """How one child's values were computed: exact or sampled, and the cost estimates behind the choice."""

    exact: bool
    players: int  # most features that differ (lead to different decisions) in any (row, background row) pair
    exact_operations: float  # estimated cost of exact enumeration (0: polynomial identity kernel)
    sampled_operations: float  # estimated cost of sampling to the target (nan: not estimated)
    why: str


@dataclass
class ChildShapley:
    """Shapley values of one child in AutoGluon's output space (``outputs`` columns)."""

    values: np.ndarray  # (rows, features, outputs)
    base: np.ndarray  # (outputs,) mean output over the background
    predictions: np.ndarray  # (rows, outputs) the child's own output on the explained rows
    rounding: np.ndarray  # (outputs,) how far the model's own float32 sums may be off them (absolute)
    variances: np.ndarray | None = None  # (rows, features, outputs) of sampled values; 0 where exact
    decision: Decision | None = None


@dataclass
class ChildGame:
    """What the kernels need to explain one child; built by ``build_game``."""

    name: str
    link: int
    output_columns: np.ndarray  # AutoGluon output column of each kernel output
    n_features: int
    forest: Forest | None = None
    groups: np.ndarray | None = None  # raw feature of every encoded column (forests)
    x: np.ndarray | None = None
    b: np.ndarray | None = None
    offset: np.ndarray | None = None  # constant margin added to the trees / the linear terms
    hx: np.ndarray | None = None  # additive models: per-feature margin terms (rows, features, margins)
    hb: np.ndarray | None = None
    float32_terms: int = 0  # terms the model itself sums in float32 per output (XGBoost: rounds + base score)

    def players_used(self) -> int:
        """Raw features whose value can change this child's output."""
        if self.forest is not None:
            return len(np.unique(self.groups[self.forest.used_columns()]))
        varies = np.any(self.hx != 0, axis=(0, 2)) | np.any(self.hb != 0, axis=(0, 2))
        return int(varies.sum())

    def margins(self, which: str) -> np.ndarray:
        """Margin (before the link) of the explained rows (``"x"``) or the background rows (``"b"``)."""
        if self.forest is not None:
            return self.forest.margins(self.x if which == "x" else self.b) + self.offset
        h = self.hx if which == "x" else self.hb
        return h.sum(axis=1) + self.offset

    def outputs(self, which: str) -> np.ndarray:
        """The child's output in probability (or regression) space, one column per kernel output."""
        return apply_link(self.margins(which), self.link)

    def _identity_shapley(self, group: np.ndarray) -> np.ndarray:
        """Trees whose paths use few distinct features go leaf by leaf (tables), the others pair by pair."""
        import numba

        forest = self.forest
        ends = forest.ends()
        widths = kernels.tree_widths(group, forest.left, forest.right, forest.roots, ends)
        narrow = widths <= TABLE_MAX_WIDTH
        dense = forest.value  # identity-output forests (regression, random forests) are never compact
        values = np.zeros((len(self.x), self.n_features, forest.n_outputs))
        if narrow.any():
            width = int(widths[narrow].max())
            w_pos, w_neg = kernels.leaf_weights(width)
            # Each parallel chunk holds every row's path pattern at every node of one tree (int64).
            per_chunk = 8 * (len(self.x) + len(self.b)) * int((ends - forest.roots).max())
            chunks = max(1, min(numba.get_num_threads(), int(PATTERN_BYTES // per_chunk)))
            values += kernels.tree_shap_identity_tables(
                self.x, self.b, forest.feature, group, *forest.rules(), forest.left, forest.right, dense,
                forest.roots[narrow], ends[narrow], self.n_features, width, chunks, w_pos, w_neg,
                kernels.popcounts(width))
        if not narrow.all():
            w_pos, w_neg = kernels.leaf_weights(forest.max_depth + 1)
            values += kernels.tree_shap_identity(
                self.x, self.b, forest.feature, group, *forest.rules(), forest.left, forest.right, dense,
                forest.roots[~narrow], self.n_features, forest.max_depth, w_pos, w_neg)
        return values

    def _link_trees(self, group: np.ndarray) -> _LinkTrees:
        """Background decisions (deduplicated: rows with one decision pattern play the same game) and tree outputs."""
        forest = self.forest
        splits = (forest.feature, *forest.rules(), forest.left)
        go_b = kernels.node_decisions(self.b, *splits)
        _, first, counts = np.unique(go_b, axis=0, return_index=True, return_counts=True)
        go_b = np.ascontiguousarray(go_b[first])
        leaf_b = kernels.leaves_reached(go_b, forest.left, forest.right, forest.roots)
        # A tree that adds to one margin only (a class of a multiclass booster) is updated on that margin alone.
        if forest.compact:
            tree_out = forest.tree_output
        else:
            spans = zip(forest.roots, forest.ends(), strict=True)
            touched = [np.flatnonzero(np.any(forest.leaf_value[start:end] != 0, axis=0)) for start, end in spans]
            tree_out = np.asarray([t[0] if len(t) == 1 else -1 for t in touched], dtype=np.int64)
        chunk = max(1, int(DECISION_BYTES // max(1, len(forest.left))))
        return _LinkTrees(group, splits, go_b, leaf_b, counts / counts.sum(), tree_out, chunk)

    def _x_chunks(self, trees: _LinkTrees, rows: np.ndarray):
        """Decisions and leaves of the explained rows ``rows``, in chunks (their decisions take memory)."""
        forest = self.forest
        for first in range(0, len(rows), trees.chunk):
            part = rows[first : first + trees.chunk]
            go_x = kernels.node_decisions(np.ascontiguousarray(self.x[part]), *trees.splits)
            yield part, go_x, kernels.leaves_reached(go_x, forest.left, forest.right, forest.roots)

    def _pair_costs(self, trees: _LinkTrees | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per pair (explained row, distinct background row): players d, exact operations, operations per unit."""
        n_margin, n_out = len(self.offset), 1 if self.link == kernels.LINK_SIGMOID else len(self.offset)
        if trees is None:  # additive: the players are the features whose terms differ
            hb = self._unique_hb()[0]
            d = np.stack([np.any(self.hx[i][None] != hb, axis=2).sum(axis=1) for i in range(len(self.hx))])
            expansion, walk = np.zeros_like(d), d.astype(np.float64) * n_margin
        else:
            forest = self.forest
            sizes = np.concatenate([kernels.pair_sizes(go_x, trees.go_b, leaf_x, trees.leaf_b, trees.group,
                                                       forest.left, forest.right, forest.roots, self.n_features,
                                                       forest.max_depth)
                                    for _, go_x, leaf_x in self._x_chunks(trees, np.arange(len(self.x)))])
            d = sizes[..., kernels.PAIR_PLAYERS]
            expansion = sizes[..., kernels.PAIR_EXPANSION].astype(np.float64)
            walk = (sizes[..., kernels.PAIR_MEMBERS] + sizes[..., kernels.PAIR_LEAVES]).astype(np.float64)
            if not forest.compact:  # each Möbius term then updates every margin
                expansion = expansion * n_margin
        exact = expansion + np.exp2(d) * (d + 1) * (n_margin + n_out)
        per_unit = 2 * WALK_OP_COST * (walk + (d + 1) * (n_margin + n_out))
        return d, exact, per_unit

    def _unique_hb(self) -> tuple[np.ndarray, np.ndarray]:
        flat = self.hb.reshape(len(self.hb), -1)
        _, first, counts = np.unique(flat, axis=0, return_index=True, return_counts=True)
        return np.ascontiguousarray(self.hb[first]), counts / counts.sum()

    def _exact_link(self, trees: _LinkTrees | None, players: int) -> np.ndarray:
        """Exact values by enumerating the ``2^d`` coalitions of every pair (``players`` ≥ every pair's d)."""
        weights, counts = kernels.coalition_weights(players), kernels.popcounts(players)
        if trees is None:
            hb, weight_b = self._unique_hb()
            values, overflow = kernels.additive_shap_link(self.hx, hb, weight_b, self.offset, self.link, players,
                                                          weights, counts)
        else:
            forest = self.forest
            parts, flags = [], []
            for _, go_x, leaf_x in self._x_chunks(trees, np.arange(len(self.x))):
                part, flag = kernels.tree_shap_link(
                    go_x, trees.go_b, leaf_x, trees.leaf_b, trees.weight_b, trees.group, forest.left, forest.right,
                    forest.leaf_value, forest.roots, trees.tree_out, self.offset, self.link, self.n_features,
                    forest.max_depth, players, weights, counts)
                parts.append(part)
                flags.append(flag)
            values, overflow = np.concatenate(parts), np.concatenate(flags)
        if overflow.any():  # players was measured on every pair, so this is a defect, not a limit
            raise ModelError(f"{self.name}: a pair has more than {players} differing features.")
        return values

    def _sampled_link(self, trees: _LinkTrees | None, rows: np.ndarray, units: np.ndarray,
                      seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass of antithetic permutation sampling on ``rows``: ``units[r]`` units per pair for row r."""
        if trees is None:
            hb, weight_b = self._unique_hb()
            return kernels.additive_shap_link_sampled(np.ascontiguousarray(self.hx[rows]), hb, weight_b, self.offset,
                                                      self.link, units, seeds)
        forest = self.forest
        estimates, variances = [], []
        offset = 0
        for part, go_x, leaf_x in self._x_chunks(trees, rows):
            sizes = kernels.pair_sizes(go_x, trees.go_b, leaf_x, trees.leaf_b, trees.group, forest.left,
                                       forest.right, forest.roots, self.n_features, forest.max_depth)
            span = slice(offset, offset + len(part))
            offset += len(part)
            phi, var = kernels.tree_shap_link_sampled(
                go_x, trees.go_b, leaf_x, trees.leaf_b, trees.weight_b, trees.group, forest.left, forest.right,
                forest.leaf_value, forest.roots, trees.tree_out, self.offset, self.link, self.n_features,
                forest.max_depth, int(sizes[..., kernels.PAIR_LEAVES].max()),
                int(sizes[..., kernels.PAIR_MEMBERS].max()), units[span], seeds[span])
            estimates.append(phi)
            variances.append(var)
        return np.concatenate(estimates), np.concatenate(variances)

    def _max_exact_players(self) -> int:
        """Most players whose coalition tables (margins and outputs, float64) fit ``LINK_TABLE_BYTES`` per thread."""
        per_coalition = 8 * (2 * len(self.offset))
        return int(np.floor(np.log2(LINK_TABLE_BYTES / per_coalition)))

    def estimate(self, mode: str = "exact", target_se: float = DEFAULT_TARGET_SE, seed: int = 0,
                 row_offset: int = 0) -> tuple[np.ndarray, np.ndarray, Decision]:
        """Shapley values ``(rows, features, kernel outputs)``, their variances, and how they were computed.

        ``mode``: ``exact`` (enumerate coalitions whatever it costs, within memory), ``sampled`` (antithetic
        permutation sampling until every value's standard error is at most ``target_se``, or ``MAX_UNITS``
        units per pair) or ``auto`` (whichever the estimated cost says is cheaper). Identity-output children
        are always exact: their interventional TreeSHAP is polynomial. ``row_offset``: position of the first
        row among all rows explained (a shard's rows draw the same samples as in one run over all rows).
        """
        if self.link == kernels.LINK_IDENTITY:
            values = self.shapley()
            return values, np.zeros_like(values), Decision(True, self.players_used(), 0.0, float("nan"),
                                                           "identity output: exact interventional TreeSHAP")
        trees = None
        if self.forest is not None:
            forest = self.forest
            trees = self._link_trees(np.where(forest.left >= 0, self.groups[np.maximum(forest.feature, 0)], -1))
        d, exact_ops, per_unit = self._pair_costs(trees)
        players = int(d.max()) if d.size else 0
        exact_total = float(exact_ops.sum())
        fits = players <= self._max_exact_players()
        coalitions = f"2^{players} coalitions at most per (row, background row) pair"
        if mode == "exact" or (mode == "auto" and fits and exact_total <= PILOT_UNITS * float(per_unit.sum())):
            if not fits:
                raise ModelError(f"{self.name}: {players} features differ between a row and a background row; "
                                 f"exact probability-space SHAP enumerates 2^{players} coalitions per pair, beyond "
                                 f"{self._max_exact_players()} for this model. Use method='auto' (certified "
                                 "sampling).")
            values = self._exact_link(trees, max(players, 1))
            return values, np.zeros_like(values), Decision(True, players, exact_total, float("nan"),
                                                           f"exact: {coalitions}")
        rows = np.arange(len(self.x) if self.forest is not None else len(self.hx))
        units = np.full(len(rows), PILOT_UNITS, dtype=np.int64)
        values, variances = self._sampled_link(trees, rows, units, _seeds(seed, 0, rows + row_offset))
        done = units.copy()
        needed = _units_needed(variances, done, target_se)
        sampled_total = float((needed[:, None] * per_unit).sum())
        if mode == "auto" and fits and exact_total <= sampled_total:
            values = self._exact_link(trees, max(players, 1))
            return values, np.zeros_like(values), Decision(
                True, players, exact_total, sampled_total,
                f"exact: {coalitions}, about {exact_total:.2g} operations against {sampled_total:.2g} to sample")
        for step in range(1, MAX_PASSES):
            more = needed - done
            todo = np.flatnonzero(more > 0)
            if not len(todo):
                break
            extra, part_variances = self._sampled_link(trees, todo, more[todo],
                                                      _seeds(seed, step, todo + row_offset))
            old, new = done[todo][:, None, None], more[todo][:, None, None]
            values[todo] = (old * values[todo] + new * extra) / (old + new)
            variances[todo] = (old**2 * variances[todo] + new**2 * part_variances) / (old + new) ** 2
            done[todo] += more[todo]
            needed = np.maximum(done, _units_needed(variances, done, target_se))
        why = (f"sampled: {coalitions} would take about {exact_total:.2g} operations exactly, sampling about "
               f"{sampled_total:.2g}" if fits else
               f"sampled: {coalitions}, beyond the {self._max_exact_players()} that exact enumeration holds")
        return values, variances, Decision(False, players, exact_total, sampled_total, why)

    def shapley(self) -> np.ndarray:
        """Exact interventional Shapley values, shape ``(rows, features, kernel outputs)``."""
        if self.link == kernels.LINK_IDENTITY:
            if self.forest is None:
                return self.hx - self.hb.mean(axis=0, keepdims=True)
            forest = self.forest
            return self._identity_shapley(np.where(forest.left >= 0, self.groups[np.maximum(forest.feature, 0)], -1))
        return self.estimate("exact")[0]


@dataclass(frozen=True)
class _LinkTrees:
    """A sigmoid / softmax forest's per-node groups, background decisions and per-tree outputs."""

    group: np.ndarray
    splits: tuple[np.ndarray, ...]
    go_b: np.ndarray
    leaf_b: np.ndarray
    weight_b: np.ndarray
    tree_out: np.ndarray
    chunk: int


def _seeds(seed: int, step: int, rows: np.ndarray) -> np.ndarray:
    """One generator seed per explained row and sampling pass (independent of threads and chunks)."""
    mixed = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint32)[0]
    return ((int(mixed) + rows.astype(np.int64) * 7919) % (2**31 - 1)).astype(np.int64)


def _units_needed(variances: np.ndarray, done: np.ndarray, target_se: float) -> np.ndarray:
    """Units per pair that bring each row's largest standard error to ``target_se`` (at most ``MAX_UNITS``)."""
    worst = variances.reshape(len(variances), -1).max(axis=1) if variances.size else np.zeros(len(done))
    wanted = np.ceil(done * worst / target_se**2 * SAFETY)
    return np.clip(wanted, done, MAX_UNITS).astype(np.int64)


def apply_link(margin: np.ndarray, link: int) -> np.ndarray:
    """Vectorised link: identity, sigmoid (one margin) or softmax (one margin per class)."""
    if link == kernels.LINK_IDENTITY:
        return margin
    if link == kernels.LINK_SIGMOID:
        return 1.0 / (1.0 + np.exp(-margin))
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def explain_child(game: ChildGame, native_x: np.ndarray, native_b: np.ndarray, n_outputs: int, mode: str = "exact",
                  target_se: float = DEFAULT_TARGET_SE, seed: int = 0, row_offset: int = 0) -> ChildShapley:
    """Check the game reproduces the child, then compute its Shapley values in AutoGluon's output columns.

    ``mode``, ``target_se``, ``seed`` and ``row_offset``: see ``ChildGame.estimate``.
    """
    own_x, own_b = _to_outputs(game, game.outputs("x"), n_outputs), _to_outputs(game, game.outputs("b"), n_outputs)
    rounding = game.float32_terms * FLOAT32_EPS
    tolerance = CHILD_PARITY_TOLERANCE + rounding
    for own, native, rows in ((own_x, native_x, "explained"), (own_b, native_b, "background")):
        gap = relative_gap(own, native)
        if not gap <= tolerance:
            raise ModelError(
                f"{game.name}: the exact SHAP re-implementation differs from the model's own prediction by "
                f"{gap:.3g} of the output scale on the {rows} rows (bound {tolerance:.3g}); this model variant is "
                "not supported exactly. Use method='permutation'."
            )
    values, variances, decision = game.estimate(mode, target_se, seed, row_offset)
    scale = np.maximum(output_scale(native_x), output_scale(native_b))
    return ChildShapley(values=_to_outputs(game, values, n_outputs), base=own_b.mean(axis=0), predictions=own_x,
                        rounding=rounding * scale, variances=_to_outputs(game, variances, n_outputs),
                        decision=decision)


def _to_outputs(game: ChildGame, array: np.ndarray, n_outputs: int) -> np.ndarray:
    """Place kernel outputs (last axis) into AutoGluon's output columns; absent classes stay 0."""
    placed = np.zeros((*array.shape[:-1], n_outputs))
    placed[..., game.output_columns] = array
    return placed


def native_outputs(child: Any, frame: pd.DataFrame, n_outputs: int) -> np.ndarray:
    """The child's own ``predict_proba`` on transformed features, as ``(rows, outputs)``."""
    return np.asarray(child.predict_proba(frame), dtype=np.float64).reshape(len(frame), n_outputs)


# --- building games ---------------------------------------------------------------------------------------


def build_game(child: Any, family: str, problem_type: str, n_outputs: int, group_of: dict[str, int],
               n_features: int, x: pd.DataFrame, b: pd.DataFrame) -> ChildGame:
    """Turn one AutoGluon child (GBM, XGB, RF, XT, LR) into a ``ChildGame`` on transformed rows x and b."""
    name = getattr(child, "name", family)
    if family == "GBM":
        return _lightgbm_game(child, name, problem_type, group_of, n_features, x, b)
    if family == "XGB":
        return _xgboost_game(child, name, problem_type, group_of, n_features, x, b)
    if family in {"RF", "XT"}:
        return _forest_game(child, name, problem_type, n_outputs, group_of, n_features, x, b)
    if family == "LR":
        return _linear_game(child, name, problem_type, n_outputs, group_of, n_features, x, b)
    raise ModelError(f"{name}: family {family} has no exact SHAP.")


def _groups(names: list[str], group_of: dict[str, int], name: str) -> np.ndarray:
    unknown = [n for n in names if n not in group_of]
    if unknown:
        raise ModelError(f"{name}: cannot trace encoded columns {unknown} back to raw features.")
    return np.asarray([group_of[n] for n in names], dtype=np.int64)


def _default_columns(problem_type: str, n_margins: int) -> np.ndarray:
    return np.arange(n_margins) if problem_type == "multiclass" else np.zeros(1, dtype=np.int64)


def _lightgbm_matrix(frame: pd.DataFrame, booster: Any) -> np.ndarray:
    """The numeric matrix LightGBM builds from a DataFrame (same steps as ``lightgbm.basic._data_from_pandas``)."""
    frame = frame.copy(deep=False)
    categories = iter(booster.pandas_categorical or [])
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            codes = frame[column].cat.set_categories(next(categories)).cat.codes
            frame[column] = codes.replace({-1: np.nan})
    # LightGBM keeps float32 when every column fits in it, so does this (it changes the <= comparisons).
    dtype = np.result_type(*[d.type for d in frame.dtypes], np.float32)
    return frame.to_numpy(dtype=dtype).astype(np.float64)


def _lightgbm_game(child, name, problem_type, group_of, n_features, x, b) -> ChildGame:
    booster = child.model
    forest, link = forest_from_lightgbm(booster)
    features = list(child.features)
    if len(features) != booster.num_feature():
        raise ModelError(f"{name}: {booster.num_feature()} booster columns but {len(features)} features.")
    px, pb = child.preprocess(x), child.preprocess(b)
    game = ChildGame(name, link, _default_columns(problem_type, forest.n_outputs), n_features, forest=forest,
                     groups=_groups(features, group_of, name), x=_lightgbm_matrix(px, booster),
                     b=_lightgbm_matrix(pb, booster), offset=np.zeros(forest.n_outputs))
    return game


def _csr_to_dense(matrix: Any) -> np.ndarray:
    """Dense float32-rounded copy of a CSR matrix where every entry NOT stored is missing (NaN), as XGBoost sees it."""
    coo = matrix.tocoo()
    dense = np.full(matrix.shape, np.nan, dtype=np.float64)
    dense[coo.row, coo.col] = coo.data
    return dense.astype(np.float32).astype(np.float64)


def _xgboost_game(child, name, problem_type, group_of, n_features, x, b) -> ChildGame:
    model = child.model
    objective = model.get_xgb_params().get("objective") or ""
    if problem_type == "multiclass":
        objective = "multi:softprob"  # what AutoGluon predicts with (it resets the objective before predict)
    ohe = getattr(child, "_ohe_generator", None)
    if ohe is None:
        raise ModelError(f"{name}: XGBoost without one-hot encoding is not supported by the exact SHAP.")
    source = [c for c in ohe.cat_cols for _ in ohe.labels[c]] + list(ohe.other_cols)
    forest, link = forest_from_xgboost(model, objective)
    sx, sb = child.preprocess(x), child.preprocess(b)
    if sx.shape[1] != len(source):
        raise ModelError(f"{name}: {sx.shape[1]} encoded columns but {len(source)} expected from the encoder.")
    game = ChildGame(name, link, _default_columns(problem_type, forest.n_outputs), n_features, forest=forest,
                     groups=_groups(source, group_of, name), x=_csr_to_dense(sx), b=_csr_to_dense(sb),
                     offset=np.zeros(forest.n_outputs), float32_terms=xgboost_rounds(model) + 1)
    # The intercept (base_score, in margin space, per class in XGBoost 3) is read off the booster's own margins
    # on the background rows: the same for every shard of the explained rows.
    import xgboost

    rounds = (0, xgboost_rounds(model))
    native = model.get_booster().predict(xgboost.DMatrix(sb, missing=np.nan), output_margin=True,
                                         iteration_range=rounds)
    native = np.asarray(native, dtype=np.float64).reshape(len(b), -1)
    gap = native - forest.margins(game.b)
    game.offset = np.median(gap, axis=0)
    return game


def _forest_game(child, name, problem_type, n_outputs, group_of, n_features, x, b) -> ChildGame:
    estimator = child.model
    features = list(child.features)
    if estimator.n_features_in_ != len(features):
        raise ModelError(f"{name}: forest has {estimator.n_features_in_} inputs but {len(features)} features.")
    if problem_type == "regression":
        kernel_columns, output_columns = None, np.zeros(1, dtype=np.int64)
    else:
        classes = [int(c) for c in estimator.classes_]
        if problem_type == "binary":
            kernel_columns, output_columns = [classes.index(1)], np.zeros(1, dtype=np.int64)
        else:
            kernel_columns, output_columns = list(range(len(classes))), np.asarray(classes, dtype=np.int64)
    forest = forest_from_sklearn(estimator, kernel_columns)
    return ChildGame(name, kernels.LINK_IDENTITY, output_columns, n_features, forest=forest,
                     groups=_groups(features, group_of, name),
                     x=np.asarray(child.preprocess(x), dtype=np.float32).astype(np.float64),
                     b=np.asarray(child.preprocess(b), dtype=np.float32).astype(np.float64),
                     offset=np.zeros(forest.n_outputs))


def _linear_margins(child: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The margin ``x @ coef.T + intercept`` in float64, and per row how far the model's own one may be from it.

    A linear model fitted on float32 columns keeps float32 coefficients, so scikit-learn sums ``c_j x_j`` in
    float32: its margin is off by at most ``(k + 1) u M`` (``M = sum |c_j x_j| + |intercept|``, ``u = 2^-24``).
    The bound is zero when the model computes in float64, or has no coefficients (its own margin is used).
    """
    encoded = child.preprocess(frame)
    model = child.model
    if not hasattr(model, "coef_"):
        margin = model.decision_function(encoded) if hasattr(model, "predict_proba") else model.predict(encoded)
        return np.asarray(margin, dtype=np.float64).reshape(len(frame), -1), np.zeros(len(frame))
    coef = np.atleast_2d(np.asarray(model.coef_))
    intercept = np.asarray(getattr(model, "intercept_", 0.0), dtype=np.float64)
    values = np.asarray(encoded)
    margin = values.astype(np.float64) @ coef.astype(np.float64).T + intercept
    rounding = np.zeros(len(frame))
    if np.result_type(values.dtype, coef.dtype) == np.float32:
        magnitude = np.abs(values.astype(np.float64)) @ np.abs(coef.astype(np.float64)).T + np.abs(intercept)
        rounding = (coef.shape[1] + 1) * FLOAT32_EPS * magnitude.max(axis=1)
    return margin.reshape(len(frame), -1), rounding


def _linear_game(child, name, problem_type, n_outputs, group_of, n_features, x, b) -> ChildGame:
    """A linear model's margin is a sum of one term per raw feature: h_g(v) = m(ref with g := v) - m(ref)."""
    model = child.model
    ref = b.iloc[[0]]
    ref_margin = _linear_margins(child, ref)[0][0]
    both = pd.concat([x, b], ignore_index=True)
    columns_of: dict[int, list[str]] = {}
    for column in ref.columns:
        if column in group_of:
            columns_of.setdefault(group_of[column], []).append(column)
    used = [g for g, cols in columns_of.items() if any(c in set(child.features) for c in cols)]
    h = np.zeros((len(both), n_features, ref_margin.shape[0]))
    if used:
        hybrid = ref.iloc[np.zeros(len(both) * len(used), dtype=np.int64)].reset_index(drop=True)
        for index, g in enumerate(used):  # block `index` of the rows: the reference with feature g from `both`
            block = slice(index * len(both), (index + 1) * len(both))
            for column in columns_of[g]:
                position = hybrid.columns.get_loc(column)
                hybrid.iloc[block, position] = both[column].to_numpy()
        margins = _linear_margins(child, hybrid)[0].reshape(len(used), len(both), -1)
        for index, g in enumerate(used):
            h[:, g, :] = margins[index] - ref_margin
    full, rounding = _linear_margins(child, both)
    full = full - ref_margin
    gap = float(np.max(np.abs(full - h.sum(axis=1)))) if len(both) else 0.0
    if gap > 1e-8 * max(1.0, float(np.max(np.abs(full)))):
        raise ModelError(f"{name}: the linear model's margin is not a sum of per-feature terms (gap {gap:.3g}).")
    scale = max(1.0, float(np.max(np.abs(full + ref_margin)))) if problem_type == "regression" else 1.0
    float32_terms = int(np.ceil(float(np.max(rounding, initial=0.0)) / scale / FLOAT32_EPS))
    if problem_type == "regression":
        link, columns = kernels.LINK_IDENTITY, np.zeros(1, dtype=np.int64)
    elif problem_type == "binary":
        link, columns = kernels.LINK_SIGMOID, np.zeros(1, dtype=np.int64)
    else:
        link, columns = kernels.LINK_SOFTMAX, np.asarray([int(c) for c in model.classes_], dtype=np.int64)
    return ChildGame(name, link, columns, n_features, hx=h[: len(x)], hb=h[len(x):], offset=ref_margin,
                     float32_terms=float32_terms)

