"""Numba kernels for exact interventional Shapley values, with raw features (groups of columns) as players.

Interventional Shapley values against a background set are the average, over background rows ``b``, of the
Shapley values of the game ``v(S) = f(x_S, b_rest)``. For one tree and one pair ``(x, b)`` every leaf is reached
by the hybrid row of coalition ``S`` exactly when each feature ``g`` on the leaf's path is "allowed": ``g`` in
``S`` and ``x`` follows the path at all of ``g``'s splits, or ``g`` outside ``S`` and ``b`` does. So a leaf is a
product of per-feature conditions: a set ``P`` of features that must come from ``x`` and a set ``N`` that must
come from ``b`` (features where ``x`` and ``b`` agree impose nothing). Walking the tree once per pair and
branching only where ``x`` and ``b`` part ways enumerates every reachable leaf with its ``(P, N)``.

* Identity output (regression, forest probabilities): the game is a sum of such leaf games, each with the
  closed-form Shapley value ``+v (|P|-1)! |N|! / (|P|+|N|)!`` for members of ``P`` and
  ``-v |P|! (|N|-1)! / (|P|+|N|)!`` for members of ``N`` (Lundberg et al., interventional TreeSHAP:
  ``tree_shap_identity``, pair by pair). ``tree_shap_identity_tables`` computes the same sum leaf by leaf from
  histograms of the background rows' path patterns, so its cost adds explained and background rows instead of
  multiplying them; it needs tables of ``2^d`` entries per leaf (d = distinct features on the path).
* Sigmoid / softmax output (boosted trees and logistic models in probability space): the margin is such a sum,
  but the probability is not linear in it, so no closed form exists. The kernel builds the margin of every
  coalition of the features that differ for this pair (at most ``max_players``) from the leaves' Möbius
  coefficients, applies the link and sums the Shapley formula over all ``2^d`` coalitions: exact, exponential
  only in the number of features where ``x`` and ``b`` lead to different decisions (``tree_shap_link``). Past
  that, ``tree_shap_link_sampled`` walks antithetic permutations of the same players over the same leaves
  (section at the end).

Matching the branch direction bit for bit is what makes the result exact; the split rules below copy those of
scikit-learn (float32 input, ``x <= t``), XGBoost (float32, ``x < t``, missing → default) and LightGBM (double
``x <= t`` with its missing-type rules and categorical bitsets).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


def _compiled(parallel: bool = False):
    """``njit`` with an on-disk cache: compiling every kernel takes ~30 s, loading them well under a second."""

    def wrap(function):
        try:
            return njit(parallel=parallel, cache=True, nogil=True)(function)
        except RuntimeError:  # no writable cache location (read-only install, no home): compile on every run
            return njit(parallel=parallel, nogil=True)(function)

    return wrap


LINK_IDENTITY, LINK_SIGMOID, LINK_SOFTMAX = 0, 1, 2
KIND_LE, KIND_LT, KIND_LGBM_NUMERIC, KIND_LGBM_CATEGORY = 0, 1, 2, 3
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
# LightGBM's kZeroThreshold is the float 1e-35f; compare against the same value in double.
_LGBM_ZERO = float(np.float32(1e-35))


def leaf_weights(max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapley weight tables of a leaf game: ``pos[p, n]`` for members of P, ``neg[p, n]`` for members of N."""
    pos = np.zeros((max_size + 1, max_size + 1))
    neg = np.zeros((max_size + 1, max_size + 1))
    for p in range(max_size + 1):
        for n in range(max_size + 1):
            total = math.lgamma(p + n + 1)
            if p:
                pos[p, n] = math.exp(math.lgamma(p) + math.lgamma(n + 1) - total)
            if n:
                neg[p, n] = math.exp(math.lgamma(p + 1) + math.lgamma(n) - total)
    return pos, neg


def coalition_weights(max_players: int) -> np.ndarray:
    """``w[d, s] = s! (d - s - 1)! / d!``: weight of a coalition of size s in a game of d players."""
    w = np.zeros((max_players + 1, max_players + 1))
    for d in range(1, max_players + 1):
        for s in range(d):
            w[d, s] = math.exp(math.lgamma(s + 1) + math.lgamma(d - s) - math.lgamma(d + 1))
    return w


def popcounts(max_players: int) -> np.ndarray:
    """Number of set bits of every mask below ``2**max_players``."""
    masks = np.arange(1 << max_players, dtype=np.int64)
    return sum((masks >> bit) & 1 for bit in range(max_players)) if max_players else np.zeros(1, np.int64)


@_compiled()
def _goes_left(v, node, kind, threshold, default_left, missing, cat_start, cat_end, cat_values):
    k = kind[node]
    if k == KIND_LE or k == KIND_LT:  # noqa: SIM109 (numba: plain comparisons)
        if math.isnan(v):
            return default_left[node]
        if k == KIND_LE:
            return v <= threshold[node]
        return v < threshold[node]
    if k == KIND_LGBM_NUMERIC:
        m = missing[node]
        if math.isnan(v) and m != MISSING_NAN:
            v = 0.0
        if (m == MISSING_ZERO and -_LGBM_ZERO <= v <= _LGBM_ZERO) or (m == MISSING_NAN and math.isnan(v)):
            return default_left[node]
        return v <= threshold[node]
    # LightGBM categorical split: listed codes go left; NaN and negative codes go right.
    if math.isnan(v) or v < 0:
        return False
    code = int(v)
    for t in range(cat_start[node], cat_end[node]):  # noqa: SIM110 (numba has no any() over generators)
        if cat_values[t] == code:
            return True
    return False


@_compiled()
def _apply_link(margin, link, out):
    if link == LINK_IDENTITY:
        for k in range(margin.shape[0]):
            out[k] = margin[k]
    elif link == LINK_SIGMOID:
        m = margin[0]
        if m >= 0:
            out[0] = 1.0 / (1.0 + math.exp(-m))
        else:
            e = math.exp(m)
            out[0] = e / (1.0 + e)
    else:
        top = margin[0]
        for k in range(1, margin.shape[0]):
            top = max(top, margin[k])
        total = 0.0
        for k in range(margin.shape[0]):
            out[k] = math.exp(margin[k] - top)
            total += out[k]
        for k in range(margin.shape[0]):
            out[k] /= total


@_compiled(parallel=True)
def forest_margins(X, feature, kind, threshold, default_left, missing, cat_start, cat_end, cat_values,
                   left, right, value, roots, tree_out, n_out):
    """Sum of the leaf values every row reaches (the ensemble margin without its constant offset).

    ``value`` has ``n_out`` columns, or one when each tree t adds to output ``tree_out[t]`` only.
    """
    compact = value.shape[1] != n_out
    out = np.zeros((X.shape[0], n_out))
    for i in prange(X.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] >= 0:
                v = X[i, feature[node]]
                if _goes_left(v, node, kind, threshold, default_left, missing, cat_start, cat_end, cat_values):
                    node = left[node]
                else:
                    node = right[node]
            if compact:
                out[i, tree_out[t]] += value[node, 0]
            else:
                for k in range(n_out):
                    out[i, k] += value[node, k]
    return out


@_compiled(parallel=True)
def tree_shap_identity(X, B, feature, group, kind, threshold, default_left, missing, cat_start, cat_end,
                       cat_values, left, right, value, roots, n_groups, max_depth, w_pos, w_neg):
    """Exact interventional Shapley values of a tree ensemble whose output is the plain sum of leaf values.

    Returns an array ``(rows of X, n_groups, outputs)``, averaged over the background rows ``B``.
    """
    n_x, n_b, n_out = X.shape[0], B.shape[0], value.shape[1]
    phi = np.zeros((n_x, n_groups, n_out))
    for i in prange(n_x):
        side = np.zeros(n_groups, dtype=np.int8)  # +1: taken from x, -1: taken from b, 0: not yet fixed
        assigned = np.empty(max_depth + 1, dtype=np.int64)
        st_node = np.empty(max_depth + 2, dtype=np.int64)
        st_len = np.empty(max_depth + 2, dtype=np.int64)
        st_group = np.empty(max_depth + 2, dtype=np.int64)
        st_side = np.empty(max_depth + 2, dtype=np.int8)
        acc = np.zeros((n_groups, n_out))
        for j in range(n_b):
            for t in range(roots.shape[0]):
                top = 1
                st_node[0], st_len[0], st_group[0], st_side[0] = roots[t], 0, -1, 0
                n_assigned, p, q = 0, 0, 0
                while top > 0:
                    top -= 1
                    node, length, new_group, new_side = st_node[top], st_len[top], st_group[top], st_side[top]
                    while n_assigned > length:  # back to the state of this frame's parent
                        n_assigned -= 1
                        a = assigned[n_assigned]
                        if side[a] == 1:
                            p -= 1
                        else:
                            q -= 1
                        side[a] = 0
                    if new_group >= 0:
                        side[new_group] = new_side
                        assigned[n_assigned] = new_group
                        n_assigned += 1
                        if new_side == 1:
                            p += 1
                        else:
                            q += 1
                    if left[node] < 0:
                        if n_assigned > 0:
                            wp, wn = w_pos[p, q], w_neg[p, q]
                            for ai in range(n_assigned):
                                a = assigned[ai]
                                if side[a] == 1:
                                    for k in range(n_out):
                                        acc[a, k] += value[node, k] * wp
                                else:
                                    for k in range(n_out):
                                        acc[a, k] -= value[node, k] * wn
                        continue
                    g = group[node]
                    col = feature[node]
                    if side[g] == 1:
                        lx = _goes_left(X[i, col], node, kind, threshold, default_left, missing,
                                        cat_start, cat_end, cat_values)
                        st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, -1
                        top += 1
                    elif side[g] == -1:
                        lb = _goes_left(B[j, col], node, kind, threshold, default_left, missing,
                                        cat_start, cat_end, cat_values)
                        st_node[top], st_len[top], st_group[top] = left[node] if lb else right[node], n_assigned, -1
                        top += 1
                    else:
                        lx = _goes_left(X[i, col], node, kind, threshold, default_left, missing,
                                        cat_start, cat_end, cat_values)
                        lb = _goes_left(B[j, col], node, kind, threshold, default_left, missing,
                                        cat_start, cat_end, cat_values)
                        if lx == lb:
                            st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, -1
                            top += 1
                        else:
                            st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, g
                            st_side[top] = 1
                            top += 1
                            st_node[top], st_len[top], st_group[top] = left[node] if lb else right[node], n_assigned, g
                            st_side[top] = -1
                            top += 1
                while n_assigned > 0:
                    n_assigned -= 1
                    side[assigned[n_assigned]] = 0
        for g in range(n_groups):
            for k in range(n_out):
                phi[i, g, k] = acc[g, k] / n_b
    return phi


@_compiled()
def _tree_structure(start, end, group, left, right, parent, local, depth):
    """Per node of one tree (local numbering): parent, local index of its split feature, distinct features above.

    Local indices number the distinct features on a root-to-leaf path in order of first use, so every node of a
    subtree agrees on them. Returns the largest number of distinct features on any path.
    """
    n = end - start
    for u in range(n):
        parent[u] = -1
    depth[0] = 0
    widest = 0
    for u in range(n):
        node = start + u
        if left[node] < 0:
            widest = max(widest, depth[u])
            continue
        parent[left[node] - start] = u
        parent[right[node] - start] = u
        g = group[node]
        found = -1
        a = parent[u]
        while a >= 0:
            if group[start + a] == g:
                found = local[a]
                break
            a = parent[a]
        if found >= 0:
            local[u] = found
            below = depth[u]
        else:
            local[u] = depth[u]
            below = depth[u] + 1
        depth[left[node] - start] = below
        depth[right[node] - start] = below
    return widest


@_compiled()
def tree_widths(group, left, right, roots, ends):
    """Largest number of distinct features on a root-to-leaf path, per tree."""
    widths = np.zeros(roots.shape[0], dtype=np.int64)
    for t in range(roots.shape[0]):
        n = ends[t] - roots[t]
        parent = np.empty(n, dtype=np.int64)
        local = np.zeros(n, dtype=np.int64)
        depth = np.zeros(n, dtype=np.int64)
        widths[t] = _tree_structure(roots[t], ends[t], group, left, right, parent, local, depth)
    return widths


@_compiled()
def _path_patterns(rows, start, end, feature, kind, threshold, default_left, missing, cat_start, cat_end,
                   cat_values, left, right, local, out):
    """``out[r, u]``: bit k set while row r has followed the path at every split on the path's k-th feature."""
    for r in range(rows.shape[0]):
        out[r, 0] = -1
        for u in range(end - start):
            node = start + u
            if left[node] < 0:
                continue
            bit = np.int64(1) << local[u]
            goes = _goes_left(rows[r, feature[node]], node, kind, threshold, default_left, missing, cat_start,
                              cat_end, cat_values)
            out[r, left[node] - start] = out[r, u] if goes else out[r, u] & ~bit
            out[r, right[node] - start] = out[r, u] & ~bit if goes else out[r, u]


@_compiled(parallel=True)
def tree_shap_identity_tables(X, B, feature, group, kind, threshold, default_left, missing, cat_start, cat_end,
                              cat_values, left, right, value, roots, ends, n_groups, max_width, n_chunks,
                              w_pos, w_neg, counts):
    """Same values as ``tree_shap_identity``, computed leaf by leaf instead of pair by pair.

    For a leaf whose path uses d distinct features, each row has a d-bit pattern (which features' conditions it
    meets). An explained row with pattern s pairs with background patterns u ⊇ ~s only, and its Shapley weights
    depend on |u| alone, so ranked superset sums of the background patterns' histogram give every explained
    row's contribution in O(d) once the leaf's table is built (O(d² 2^d)). The cost no longer multiplies
    explained and background rows; it suits trees whose paths use few distinct features (``max_width``).
    """
    n_x, n_b, n_out = X.shape[0], B.shape[0], value.shape[1]
    n_trees = roots.shape[0]
    parts = np.zeros((n_chunks, n_x, n_groups, n_out))
    size = np.int64(1) << max_width
    for c in prange(n_chunks):
        ranked = np.zeros((max_width + 1, size))
        stamp = np.full(size, -1, dtype=np.int64)
        table = np.zeros((size, max_width + 1))
        owner = np.zeros(max_width + 1, dtype=np.int64)
        leaf_id = 0
        for t in range(c, n_trees, n_chunks):
            start, end = roots[t], ends[t]
            n = end - start
            parent = np.empty(n, dtype=np.int64)
            local = np.zeros(n, dtype=np.int64)
            depth = np.zeros(n, dtype=np.int64)
            _tree_structure(start, end, group, left, right, parent, local, depth)
            pat_x = np.empty((n_x, n), dtype=np.int64)
            pat_b = np.empty((n_b, n), dtype=np.int64)
            _path_patterns(X, start, end, feature, kind, threshold, default_left, missing, cat_start, cat_end,
                           cat_values, left, right, local, pat_x)
            _path_patterns(B, start, end, feature, kind, threshold, default_left, missing, cat_start, cat_end,
                           cat_values, left, right, local, pat_b)
            for u in range(n):
                leaf = start + u
                d = depth[u]
                if left[leaf] >= 0 or d == 0:
                    continue
                full = (np.int64(1) << d) - 1
                a = parent[u]
                while a >= 0:
                    owner[local[a]] = group[start + a]
                    a = parent[a]
                span = np.int64(1) << d
                for r in range(d + 1):
                    for f in range(span):
                        ranked[r, f] = 0.0
                for j in range(n_b):
                    pattern = pat_b[j, u] & full
                    ranked[counts[pattern], pattern] += 1.0
                for bit in range(d):  # superset sums, per rank
                    step = np.int64(1) << bit
                    for f in range(span):
                        if not f & step:
                            for r in range(d + 1):
                                ranked[r, f] += ranked[r, f | step]
                leaf_id += 1  # stamps which failed-feature sets already have their table row for this leaf
                for i in range(n_x):
                    failed = full ^ (pat_x[i, u] & full)
                    if stamp[failed] != leaf_id:
                        stamp[failed] = leaf_id
                        n_failed = counts[failed]
                        negative = 0.0
                        if n_failed > 0:
                            for r in range(d + 1):
                                negative += ranked[r, failed] * w_neg[d - r, n_failed]
                        for k in range(d):
                            step = np.int64(1) << k
                            if failed & step:
                                table[failed, k] = -negative
                            else:
                                positive = 0.0
                                for r in range(d + 1):
                                    missed = ranked[r, failed] - ranked[r, failed | step]  # k not met by b
                                    positive += missed * w_pos[d - r, n_failed]
                                table[failed, k] = positive
                    for k in range(d):
                        weight = table[failed, k]
                        if weight != 0.0:
                            for o in range(n_out):
                                parts[c, i, owner[k], o] += weight * value[leaf, o]
    phi = np.zeros((n_x, n_groups, n_out))
    for c in range(n_chunks):
        phi += parts[c]
    return phi / n_b


@_compiled()
def _accumulate_shapley(coef, d, offset, link, n_out, weights, counts, outputs, margin, players, acc, scale):
    """Margins of all ``2^d`` coalitions from Möbius coefficients, link, then ``scale`` × Shapley values into ``acc``."""
    size = 1 << d
    for bit in range(d):  # zeta transform: coef[S] becomes the sum over subsets of S
        step = 1 << bit
        for s in range(size):
            if s & step:
                for k in range(coef.shape[1]):
                    coef[s, k] += coef[s ^ step, k]
    for s in range(size):
        for k in range(coef.shape[1]):
            margin[k] = coef[s, k] + offset[k]
        _apply_link(margin, link, outputs[s])
    for local in range(d):
        step = 1 << local
        g = players[local]
        for s in range(size):
            if not s & step:
                w = scale * weights[d, counts[s]]
                for k in range(n_out):
                    acc[g, k] += w * (outputs[s | step, k] - outputs[s, k])
    for s in range(size):
        for k in range(coef.shape[1]):
            coef[s, k] = 0.0


@_compiled(parallel=True)
def node_decisions(X, feature, kind, threshold, default_left, missing, cat_start, cat_end, cat_values, left):
    """``out[r, node]`` = 1 when row r goes left at ``node`` (leaves: 0)."""
    out = np.zeros((X.shape[0], left.shape[0]), dtype=np.uint8)
    for r in prange(X.shape[0]):
        for node in range(left.shape[0]):
            if left[node] >= 0 and _goes_left(X[r, feature[node]], node, kind, threshold, default_left, missing,
                                              cat_start, cat_end, cat_values):
                out[r, node] = 1
    return out


@_compiled(parallel=True)
def leaves_reached(go, left, right, roots):
    """``out[r, t]``: the leaf row r reaches in tree t, from its decisions ``go``."""
    out = np.empty((go.shape[0], roots.shape[0]), dtype=np.int64)
    for r in prange(go.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] >= 0:
                node = left[node] if go[r, node] else right[node]
            out[r, t] = node
    return out


@_compiled(parallel=True)
def tree_shap_link(go_x, go_b, leaf_x, leaf_b, weight_b, group, left, right, value, roots, tree_out, offset, link,
                   n_groups, max_depth, max_players, weights, counts):
    """Exact interventional Shapley values of ``link(offset + sum of leaf values)`` (sigmoid or softmax).

    ``go_x`` / ``go_b``: every row's decision at every node (``node_decisions``); ``leaf_x`` / ``leaf_b``: the
    leaf each row reaches per tree; ``weight_b[j]``: background row j's weight (they sum to 1: duplicates of one
    decision pattern are explained once); ``tree_out[t]``: the only margin tree t adds to, or -1 for all of them.
    ``value`` has one column per margin (``offset``), or a single one when every tree adds to one margin.
    Returns ``(Shapley values (rows, n_groups, outputs), overflow)``; ``overflow[i]`` is set when some pair had
    more than ``max_players`` features with different decisions (its values are then incomplete).
    """
    n_x, n_b, n_margin = go_x.shape[0], go_b.shape[0], offset.shape[0]
    compact = value.shape[1] != n_margin
    n_out = 1 if link == LINK_SIGMOID else n_margin
    phi = np.zeros((n_x, n_groups, n_out))
    overflow = np.zeros(n_x, dtype=np.bool_)
    for i in prange(n_x):
        side = np.zeros(n_groups, dtype=np.int8)
        local_of = np.full(n_groups, -1, dtype=np.int64)
        players = np.empty(max_players + 1, dtype=np.int64)
        assigned = np.empty(max_depth + 1, dtype=np.int64)
        st_node = np.empty(max_depth + 2, dtype=np.int64)
        st_len = np.empty(max_depth + 2, dtype=np.int64)
        st_group = np.empty(max_depth + 2, dtype=np.int64)
        st_side = np.empty(max_depth + 2, dtype=np.int8)
        coef = np.zeros((1 << max_players, n_margin))
        outputs = np.zeros((1 << max_players, n_out))
        margin = np.zeros(n_margin)
        acc = np.zeros((n_groups, n_out))
        for j in range(n_b):
            d = 0
            for t in range(roots.shape[0]):
                only = tree_out[t]
                first, last = (only, only + 1) if only >= 0 else (0, n_margin)
                column0 = first if compact else 0  # value column of margin k: k - column0
                if leaf_x[i, t] == leaf_b[j, t]:  # same path: every hybrid reaches this leaf, a constant
                    for k in range(first, last):
                        coef[0, k] += value[leaf_x[i, t], k - column0]
                    continue
                top = 1
                st_node[0], st_len[0], st_group[0], st_side[0] = roots[t], 0, -1, 0
                n_assigned = 0
                while top > 0:
                    top -= 1
                    node, length, new_group, new_side = st_node[top], st_len[top], st_group[top], st_side[top]
                    while n_assigned > length:
                        n_assigned -= 1
                        side[assigned[n_assigned]] = 0
                    if new_group >= 0:
                        side[new_group] = new_side
                        assigned[n_assigned] = new_group
                        n_assigned += 1
                    if left[node] < 0:
                        pos_mask, neg_mask = 0, 0
                        for ai in range(n_assigned):
                            a = assigned[ai]
                            if local_of[a] < 0:
                                if d == max_players:
                                    overflow[i] = True
                                    continue
                                local_of[a] = d
                                players[d] = a
                                d += 1
                            if side[a] == 1:
                                pos_mask |= 1 << local_of[a]
                            else:
                                neg_mask |= 1 << local_of[a]
                        # indicator = prod_{P}[g in S] * prod_{N}(1 - [g in S]) = sum_{T ⊆ N} (-1)^|T| [P ∪ T ⊆ S]
                        sub = neg_mask
                        while True:
                            sign = -1.0 if counts[sub] & 1 else 1.0
                            for k in range(first, last):
                                coef[pos_mask | sub, k] += sign * value[node, k - column0]
                            if sub == 0:
                                break
                            sub = (sub - 1) & neg_mask
                        continue
                    g = group[node]
                    lx, lb = go_x[i, node], go_b[j, node]
                    if side[g] != 0:
                        go = lx if side[g] == 1 else lb
                        st_node[top], st_len[top], st_group[top] = left[node] if go else right[node], n_assigned, -1
                        top += 1
                    elif lx == lb:
                        st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, -1
                        top += 1
                    else:
                        st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, g
                        st_side[top] = 1
                        top += 1
                        st_node[top], st_len[top], st_group[top] = left[node] if lb else right[node], n_assigned, g
                        st_side[top] = -1
                        top += 1
                while n_assigned > 0:
                    n_assigned -= 1
                    side[assigned[n_assigned]] = 0
            _accumulate_shapley(coef, d, offset, link, n_out, weights, counts, outputs, margin, players, acc,
                                weight_b[j])
            for local in range(d):
                local_of[players[local]] = -1
        for g in range(n_groups):
            for k in range(n_out):
                phi[i, g, k] = acc[g, k]
    return phi, overflow


@_compiled(parallel=True)
def additive_shap_link(hx, hb, weight_b, offset, link, max_players, weights, counts):
    """Exact interventional Shapley values of ``link(offset + sum_g h_g(z_g))`` (a linear model's margin).

    ``hx[i, g]`` / ``hb[j, g]`` are feature g's margin terms for explained row i / background row j.
    Returns ``(Shapley values (rows, features, outputs), overflow)`` as ``tree_shap_link``.
    """
    n_x, n_groups, n_margin = hx.shape
    n_b = hb.shape[0]
    n_out = 1 if link == LINK_SIGMOID else n_margin
    phi = np.zeros((n_x, n_groups, n_out))
    overflow = np.zeros(n_x, dtype=np.bool_)
    for i in prange(n_x):
        players = np.empty(max_players + 1, dtype=np.int64)
        coef = np.zeros((1 << max_players, n_margin))
        outputs = np.zeros((1 << max_players, n_out))
        margin = np.zeros(n_margin)
        acc = np.zeros((n_groups, n_out))
        for j in range(n_b):
            d = 0
            for k in range(n_margin):
                coef[0, k] = 0.0
            for g in range(n_groups):
                differs = False
                for k in range(n_margin):
                    coef[0, k] += hb[j, g, k]
                    if hx[i, g, k] != hb[j, g, k]:
                        differs = True
                if differs:
                    if d == max_players:
                        overflow[i] = True
                        continue
                    players[d] = g
                    for k in range(n_margin):
                        coef[1 << d, k] = hx[i, g, k] - hb[j, g, k]
                    d += 1
            _accumulate_shapley(coef, d, offset, link, n_out, weights, counts, outputs, margin, players, acc,
                                weight_b[j])
        for g in range(n_groups):
            for k in range(n_out):
                phi[i, g, k] = acc[g, k]
    return phi, overflow


# --- beyond the exact limit: pair leaves, costs, antithetic permutation sampling ---------------------------
#
# For one pair (x, b) a tree ensemble's margin at coalition S is the sum of the values of the leaves with
# P ⊆ S and N ∩ S = ∅ (module docstring). Along a permutation of the pair's d players, the coalitions are the
# prefixes, so such a leaf is reached exactly from step max pos(P) + 1 to step min pos(N): one walk costs the
# leaves' (P, N) entries plus d + 1 link evaluations, against 2^d coalitions for the exact sum. The marginal
# contributions of one walk telescope to f(x) - f(b), so every sample, and the estimate, adds up exactly.

PAIR_LEAVES, PAIR_MEMBERS, PAIR_PLAYERS, PAIR_EXPANSION = 0, 1, 2, 3


@_compiled()
def _pair_leaves(i, j, go_x, go_b, leaf_x, leaf_b, group, left, right, value, roots, tree_out, store, side,
                 local_of, players, assigned, st_node, st_len, st_group, st_side, const, leaf_node, leaf_tree,
                 leaf_mstart, members, member_side, sizes):
    """Reachable leaves of the pair (x_i, b_j) with their (P, N) in local player indices.

    ``sizes[PAIR_*]``: leaves, (P, N) entries, players d (``players[:d]``, ``local_of`` set for them: the caller
    resets it) and Möbius terms ``sum 2^|N|``. With ``store``: trees where both rows reach one leaf add their
    value to ``const``, and every other reachable leaf is written to the leaf buffers.
    """
    n_margin = const.shape[0]
    compact = value.shape[1] != n_margin
    n_leaves, n_members, d, expansion = 0, 0, 0, 0
    for t in range(roots.shape[0]):
        if leaf_x[i, t] == leaf_b[j, t]:
            if store:
                only = tree_out[t]
                if only >= 0:
                    const[only] += value[leaf_x[i, t], 0 if compact else only]
                else:
                    for k in range(n_margin):
                        const[k] += value[leaf_x[i, t], k]
            continue
        top = 1
        st_node[0], st_len[0], st_group[0], st_side[0] = roots[t], 0, -1, 0
        n_assigned = 0
        while top > 0:
            top -= 1
            node, length, new_group, new_side = st_node[top], st_len[top], st_group[top], st_side[top]
            while n_assigned > length:
                n_assigned -= 1
                side[assigned[n_assigned]] = 0
            if new_group >= 0:
                side[new_group] = new_side
                assigned[n_assigned] = new_group
                n_assigned += 1
            if left[node] < 0:
                if store:
                    leaf_node[n_leaves] = node
                    leaf_tree[n_leaves] = t
                    leaf_mstart[n_leaves] = n_members
                negatives = 0
                for ai in range(n_assigned):
                    a = assigned[ai]
                    if local_of[a] < 0:
                        local_of[a] = d
                        players[d] = a
                        d += 1
                    if store:
                        members[n_members] = local_of[a]
                        member_side[n_members] = side[a]
                    n_members += 1
                    if side[a] == -1:
                        negatives += 1
                n_leaves += 1
                expansion += np.int64(1) << min(negatives, 40)
                continue
            g = group[node]
            lx, lb = go_x[i, node], go_b[j, node]
            if side[g] != 0:
                go = lx if side[g] == 1 else lb
                st_node[top], st_len[top], st_group[top] = left[node] if go else right[node], n_assigned, -1
                top += 1
            elif lx == lb:
                st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, -1
                top += 1
            else:
                st_node[top], st_len[top], st_group[top] = left[node] if lx else right[node], n_assigned, g
                st_side[top] = 1
                top += 1
                st_node[top], st_len[top], st_group[top] = left[node] if lb else right[node], n_assigned, g
                st_side[top] = -1
                top += 1
        while n_assigned > 0:
            n_assigned -= 1
            side[assigned[n_assigned]] = 0
    if store:
        leaf_mstart[n_leaves] = n_members
    sizes[PAIR_LEAVES], sizes[PAIR_MEMBERS], sizes[PAIR_PLAYERS], sizes[PAIR_EXPANSION] = (
        n_leaves, n_members, d, expansion)


@_compiled(parallel=True)
def pair_sizes(go_x, go_b, leaf_x, leaf_b, group, left, right, roots, n_groups, max_depth):
    """``out[i, j, PAIR_*]``: what ``_pair_leaves`` finds for every pair, without storing it (costs, buffers)."""
    n_x, n_b = go_x.shape[0], go_b.shape[0]
    out = np.zeros((n_x, n_b, 4), dtype=np.int64)
    dummy_value = np.zeros((1, 1))
    tree_out = np.full(roots.shape[0], -1, dtype=np.int64)
    for i in prange(n_x):
        side = np.zeros(n_groups, dtype=np.int8)
        local_of = np.full(n_groups, -1, dtype=np.int64)
        players = np.empty(n_groups, dtype=np.int64)
        assigned = np.empty(max_depth + 1, dtype=np.int64)
        st_node = np.empty(max_depth + 2, dtype=np.int64)
        st_len = np.empty(max_depth + 2, dtype=np.int64)
        st_group = np.empty(max_depth + 2, dtype=np.int64)
        st_side = np.empty(max_depth + 2, dtype=np.int8)
        const = np.zeros(1)
        none = np.zeros(1, dtype=np.int64)
        none8 = np.zeros(1, dtype=np.int8)
        sizes = np.zeros(4, dtype=np.int64)
        for j in range(n_b):
            _pair_leaves(i, j, go_x, go_b, leaf_x, leaf_b, group, left, right, dummy_value, roots, tree_out, False,
                         side, local_of, players, assigned, st_node, st_len, st_group, st_side, const, none, none,
                         none, none, none8, sizes)
            for p in range(sizes[PAIR_PLAYERS]):
                local_of[players[p]] = -1
            for s in range(4):
                out[i, j, s] = sizes[s]
    return out


@_compiled()
def _shuffle(order, d):
    """Uniform random permutation of ``order[:d]`` (Fisher-Yates, numba's per-thread generator)."""
    for k in range(d):
        order[k] = k
    for k in range(d - 1, 0, -1):
        r = np.random.randint(0, k + 1)
        order[k], order[r] = order[r], order[k]


@_compiled()
def _add_unit(steps, order, d, n_out, contrib, s1, s2):
    """Fold one antithetic unit (walks ``order`` and its reverse, outputs ``steps[0]`` / ``steps[1]``) into s1, s2."""
    for k in range(d):
        forward, backward = order[k], order[d - 1 - k]
        for o in range(n_out):
            contrib[forward, o] += 0.5 * (steps[0, k + 1, o] - steps[0, k, o])
            contrib[backward, o] += 0.5 * (steps[1, k + 1, o] - steps[1, k, o])
    for p in range(d):
        for o in range(n_out):
            s1[p, o] += contrib[p, o]
            s2[p, o] += contrib[p, o] * contrib[p, o]
            contrib[p, o] = 0.0


@_compiled()
def _fold_pair(s1, s2, d, n_out, units, weight, players, phi_i, var_i):
    """Pair mean of the units (weighted) into ``phi_i``; its variance estimate ``s² / units`` into ``var_i``."""
    for p in range(d):
        g = players[p]
        for o in range(n_out):
            mean = s1[p, o] / units
            phi_i[g, o] += weight * mean
            if units > 1:
                spread = max(0.0, s2[p, o] - s1[p, o] * mean) / (units - 1)
                var_i[g, o] += weight * weight * spread / units
            s1[p, o] = 0.0
            s2[p, o] = 0.0


@_compiled(parallel=True)
def tree_shap_link_sampled(go_x, go_b, leaf_x, leaf_b, weight_b, group, left, right, value, roots, tree_out,
                           offset, link, n_groups, max_depth, max_leaves, max_members, units, seeds):
    """Antithetic permutation estimates of the values ``tree_shap_link`` computes exactly.

    Every pair (x_i, b_j) gets ``units[i]`` antithetic units (a uniform permutation of the pair's players and its
    reverse); ``weight_b[j]`` weighs background row j (they sum to 1). Returns ``(estimates, variances)``, both
    ``(rows, n_groups, outputs)``: the stratified mean over background rows and its estimated variance. Row i's
    generator is seeded with ``seeds[i]``, so results do not depend on the thread schedule.
    """
    n_x, n_b, n_margin = go_x.shape[0], go_b.shape[0], offset.shape[0]
    compact = value.shape[1] != n_margin
    n_out = 1 if link == LINK_SIGMOID else n_margin
    phi = np.zeros((n_x, n_groups, n_out))
    var = np.zeros((n_x, n_groups, n_out))
    for i in prange(n_x):
        np.random.seed(seeds[i])
        side = np.zeros(n_groups, dtype=np.int8)
        local_of = np.full(n_groups, -1, dtype=np.int64)
        players = np.empty(n_groups, dtype=np.int64)
        assigned = np.empty(max_depth + 1, dtype=np.int64)
        st_node = np.empty(max_depth + 2, dtype=np.int64)
        st_len = np.empty(max_depth + 2, dtype=np.int64)
        st_group = np.empty(max_depth + 2, dtype=np.int64)
        st_side = np.empty(max_depth + 2, dtype=np.int8)
        const = np.zeros(n_margin)
        leaf_node = np.empty(max_leaves + 1, dtype=np.int64)
        leaf_tree = np.empty(max_leaves + 1, dtype=np.int64)
        leaf_mstart = np.empty(max_leaves + 1, dtype=np.int64)
        members = np.empty(max_members + 1, dtype=np.int64)
        member_side = np.empty(max_members + 1, dtype=np.int8)
        sizes = np.zeros(4, dtype=np.int64)
        order = np.empty(n_groups, dtype=np.int64)
        position = np.empty(n_groups, dtype=np.int64)
        diff = np.zeros((n_groups + 2, n_margin))
        margin = np.zeros(n_margin)
        steps = np.zeros((2, n_groups + 1, n_out))
        contrib = np.zeros((n_groups, n_out))
        s1 = np.zeros((n_groups, n_out))
        s2 = np.zeros((n_groups, n_out))
        for j in range(n_b):
            for k in range(n_margin):
                const[k] = offset[k]
            _pair_leaves(i, j, go_x, go_b, leaf_x, leaf_b, group, left, right, value, roots, tree_out, True, side,
                         local_of, players, assigned, st_node, st_len, st_group, st_side, const, leaf_node,
                         leaf_tree, leaf_mstart, members, member_side, sizes)
            d, n_leaves = sizes[PAIR_PLAYERS], sizes[PAIR_LEAVES]
            for _ in range(units[i] if d > 0 else 0):
                _shuffle(order, d)
                for k in range(d):
                    position[order[k]] = k
                for direction in range(2):
                    for k in range(d + 2):
                        for c in range(n_margin):
                            diff[k, c] = 0.0
                    for leaf in range(n_leaves):
                        start, end = 0, d
                        for m in range(leaf_mstart[leaf], leaf_mstart[leaf + 1]):
                            p = position[members[m]] if direction == 0 else d - 1 - position[members[m]]
                            if member_side[m] == 1:
                                start = max(start, p + 1)
                            else:
                                end = min(end, p)
                        if start <= end:
                            node = leaf_node[leaf]
                            only = tree_out[leaf_tree[leaf]]
                            if only >= 0:
                                v = value[node, 0 if compact else only]
                                diff[start, only] += v
                                diff[end + 1, only] -= v
                            else:
                                for c in range(n_margin):
                                    diff[start, c] += value[node, c]
                                    diff[end + 1, c] -= value[node, c]
                    for c in range(n_margin):
                        margin[c] = const[c]
                    for k in range(d + 1):
                        for c in range(n_margin):
                            margin[c] += diff[k, c]
                        _apply_link(margin, link, steps[direction, k])
                _add_unit(steps, order, d, n_out, contrib, s1, s2)
            # order[k] is a local player; _add_unit indexed contributions by local player, _fold_pair maps them.
            _fold_pair(s1, s2, d, n_out, units[i], weight_b[j], players, phi[i], var[i])
            for p in range(d):
                local_of[players[p]] = -1
    return phi, var


@_compiled(parallel=True)
def additive_shap_link_sampled(hx, hb, weight_b, offset, link, units, seeds):
    """Antithetic permutation estimates of the values ``additive_shap_link`` computes exactly (a linear margin).

    Returns ``(estimates, variances)`` as ``tree_shap_link_sampled``.
    """
    n_x, n_groups, n_margin = hx.shape
    n_b = hb.shape[0]
    n_out = 1 if link == LINK_SIGMOID else n_margin
    phi = np.zeros((n_x, n_groups, n_out))
    var = np.zeros((n_x, n_groups, n_out))
    for i in prange(n_x):
        np.random.seed(seeds[i])
        players = np.empty(n_groups, dtype=np.int64)
        order = np.empty(n_groups, dtype=np.int64)
        margin = np.zeros(n_margin)
        start = np.zeros(n_margin)
        steps = np.zeros((2, n_groups + 1, n_out))
        contrib = np.zeros((n_groups, n_out))
        s1 = np.zeros((n_groups, n_out))
        s2 = np.zeros((n_groups, n_out))
        for j in range(n_b):
            d = 0
            for c in range(n_margin):
                start[c] = offset[c]
            for g in range(n_groups):
                differs = False
                for c in range(n_margin):
                    start[c] += hb[j, g, c]
                    if hx[i, g, c] != hb[j, g, c]:
                        differs = True
                if differs:
                    players[d] = g
                    d += 1
            for _ in range(units[i] if d > 0 else 0):
                _shuffle(order, d)
                for direction in range(2):
                    for c in range(n_margin):
                        margin[c] = start[c]
                    _apply_link(margin, link, steps[direction, 0])
                    for k in range(d):
                        g = players[order[k] if direction == 0 else order[d - 1 - k]]
                        for c in range(n_margin):
                            margin[c] += hx[i, g, c] - hb[j, g, c]
                        _apply_link(margin, link, steps[direction, k + 1])
                _add_unit(steps, order, d, n_out, contrib, s1, s2)
            _fold_pair(s1, s2, d, n_out, units[i], weight_b[j], players, phi[i], var[i])
    return phi, var
