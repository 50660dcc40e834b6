"""Explaining the rows in shards: which rows a shard takes, how a shard is stored, and how shards are merged.

The rows to explain (``max_rows`` sampled from the test split, seeded) are cut into ``count`` contiguous
ranges; shard ``index`` explains one range against the same background. On a cluster the pipeline runs the
shards as pods (``dsl.ParallelFor``) and one step merges them; run in one step, the same code explains one shard
of everything. The tree methods give every row the same values either way (their sampling is seeded per row);
shap's permutation and kernel explainers are seeded per shard, so their estimates differ between shardings.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kfp_tabular.components._shared.files import all_or_nothing
from kfp_tabular.components.explain_shap.explanation import Explanation, relative_gap
from kfp_tabular.errors import ConfigError, DataValidationError, ModelError

TREE_METHODS = ("exact_tree", "sampled_tree")
# Pods the pipeline starts at once for the shards.
MAX_PARALLEL_SHARDS = 16
_ARRAYS, _META, _ROWS = "arrays.npz", "shard.json", "rows.parquet"


def shard_count(rows: int, rows_per_shard: int) -> int:
    """Shards for ``rows`` rows to explain, each at most ``rows_per_shard`` rows (at least one shard)."""
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ConfigError(f"rows_per_shard must be a positive integer; got {rows_per_shard!r}.")
    return max(1, math.ceil(rows / rows_per_shard))


def shard_range(rows: int, index: int, count: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``index`` of ``count``: contiguous ranges whose sizes differ by at most one."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise ConfigError(f"shard {index!r} of {count!r}: the index must be in 0 .. count - 1, and count >= 1.")
    return index * rows // count, (index + 1) * rows // count


@dataclass(frozen=True)
class ShardInfo:
    """What the merge needs besides the explanation: the shard's place, the model's kind and the settings used."""

    index: int
    count: int
    problem_type: str
    classes: list[str]
    background_rows: int
    reason: str
    sample_budget: int
    target_standard_error: float


@dataclass
class Shard:
    """One shard's explanation, its rows (index: row position in the explained split) and the model's outputs."""

    explanation: Explanation
    rows: pd.DataFrame
    predictions: np.ndarray
    info: ShardInfo


def write_shard(shard: Shard, folder: Path) -> None:
    """Store a shard as a folder: the rows (Parquet), the arrays (npz) and ``shard.json``."""
    tmp = Path(folder)
    with all_or_nothing(tmp):
        tmp.mkdir(parents=True, exist_ok=True)
        shard.rows.to_parquet(tmp / _ROWS, index=True)
        arrays = {"values": shard.explanation.values, "base_values": shard.explanation.base_values,
                  "predictions": shard.predictions}
        if shard.explanation.standard_errors is not None:
            arrays["standard_errors"] = shard.explanation.standard_errors
        np.savez(tmp / _ARRAYS, **arrays)
        e = shard.explanation  # its arrays are in the npz, the rest here
        description = {"features": list(e.features), "outputs": list(e.outputs), "method": e.method,
                       "exact": bool(e.exact), "tolerance": float(e.tolerance), "notes": list(e.notes),
                       "stats": {name: float(value) for name, value in e.stats.items()}}
        meta = {"shard": asdict(shard.info), "explanation": description}
        (tmp / _META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_shard(folder: Path) -> Shard:
    """A shard written by :func:`write_shard`.

    Raises:
        DataValidationError: the folder is not a shard.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        info, description = ShardInfo(**meta["shard"]), meta["explanation"]
        rows = pd.read_parquet(folder / _ROWS)
        with np.load(folder / _ARRAYS) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataValidationError(f"{folder} is not an explain_shap_shard output ({type(exc).__name__}: {exc}); "
                                  "pass the shards of one run.") from exc
    explanation = Explanation(values=stored["values"], base_values=stored["base_values"],
                              standard_errors=stored.get("standard_errors"), **description)
    return Shard(explanation, rows, stored["predictions"], info)


def merge_shards(shards: list[Shard]) -> Shard:
    """One shard of all the rows: values and rows in order, the notes and costs of all shards.

    Raises:
        DataValidationError: the shards are not the complete set of one run (missing, repeated, other settings).
        ModelError: the shards explained with different kinds of method (tree and shap's), which do not combine.
    """
    if not shards:
        raise DataValidationError("No explanation shards to merge; the explain_shap_shard steps produced none.")
    shards = sorted(shards, key=lambda s: s.info.index)
    first = shards[0].info
    indexes = [s.info.index for s in shards]
    if indexes != list(range(first.count)) or any(s.info.count != first.count for s in shards):
        raise DataValidationError(f"Explanation shards {indexes} are not the complete set 0 .. {first.count - 1} of "
                                  "one run; merge the shards of one ParallelFor.")
    explanations = [s.explanation for s in shards]
    methods = list(dict.fromkeys(e.method for e in explanations))
    if len(methods) == 1:
        method = methods[0]
    elif set(methods) <= set(TREE_METHODS):
        method = "sampled_tree"
    else:
        raise ModelError(
            f"The explanation shards used different methods ({', '.join(methods)}): tree SHAP and shap's "
            "explainers do not combine into one explanation. Choose one with explain_method (kfp-tabular run "
            "--explain-method).")
    same = ("problem_type", "classes", "background_rows")
    for shard in shards[1:]:
        differ = [name for name in same if getattr(shard.info, name) != getattr(first, name)]
        differ += [name for name in ("features", "outputs")
                   if getattr(shard.explanation, name) != getattr(explanations[0], name)]
        base_differs = relative_gap(shard.explanation.base_values[None, :],
                                    explanations[0].base_values[None, :]) > explanations[0].tolerance
        if differ or base_differs:
            raise DataValidationError(
                f"Explanation shard {shard.info.index} was computed with another "
                f"{', '.join(differ) or 'background'} than shard 0; merge the shards of one run.")
    if len(shards) == 1:
        return shards[0]
    errors = None
    if all(e.standard_errors is not None for e in explanations):
        errors = np.concatenate([e.standard_errors for e in explanations])
    stats: dict[str, float] = {}
    for e in explanations:
        for name, value in e.stats.items():
            stats[name] = max(stats.get(name, value), value) if name.startswith("max_") else stats.get(name, 0) + value
    merged = Explanation(
        values=np.concatenate([e.values for e in explanations]), base_values=explanations[0].base_values,
        features=explanations[0].features, outputs=explanations[0].outputs, method=method, exact=all(e.exact for e in explanations),
        tolerance=max(e.tolerance for e in explanations), standard_errors=errors,
        notes=list(dict.fromkeys(note for e in explanations for note in e.notes)), stats=stats)
    reasons = list(dict.fromkeys(s.info.reason for s in shards))
    info = replace(first, index=0, count=1, reason="; ".join(reasons))
    rows = pd.concat([s.rows for s in shards])
    return Shard(merged, rows, np.concatenate([s.predictions for s in shards]), info)
