"""Benchmark: AutoGluon ``predict_proba`` / ``predict`` vs the exported SavedModel, on a suite of tables.

Tables (seeded; penguins ships with the package): penguins (3 classes), a wide numeric table (30 features,
binary), a loan-like table (4,000 rows, categories and missing values, binary) and the same loan table with a
regression target. Each is fitted with the ``deployable`` preset (AutoGluon's default models of the exportable
families, one stack level) under a small time limit; the ensemble AutoGluon picks is exported with its parity
gate. AutoGluon (persisted) is timed on its native input (DataFrames), the SavedModel in process two ways:
``savedmodel``, the ``serving_default`` signature of ``tf.saved_model.load`` called eagerly on tensors built from
column arrays (Python builds one tensor per column on every call), and ``tf-session``, the same signature in a
graph-mode ``Session`` fed the column arrays, which is how TF Serving runs a SavedModel (without its RPC). All
sides are timed in the same run, interleaved round by round: single-row p50 and batch-1024 throughput; the
headline is the WORST table. Goals (issue 10): single row >= 20x AutoGluon and <= 1 ms p50; batch 1024 >= 5x.

``--per-member`` also times each member of the ensemble alone (AutoGluon ``predict_proba(model=...)`` vs the
member's own graph, features included); ``--per-family`` does the same for every base model fitted, whether
the ensemble kept it or not (LightGBM, XGBoost, random forest, extra trees, linear). ``--work DIR`` keeps the
fitted predictors and exports; a SavedModel exported by another version of the code under
``DIR/<table>/savedmodel-<NAME>`` (``--save-as NAME``) is timed next to the current one with ``--compare-with NAME``
(before/after in one run).

    .venv/bin/python benchmarks/export.py [--quick] [--work DIR] [--per-member] [--save-as NAME]
                                          [--compare-with NAME] [--tables penguins,wide,loan,loan-regression]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PENGUINS = Path(__file__).resolve().parents[1] / "src" / "kfp_tabular" / "data" / "penguins.csv"
BATCH = 1024


def wide_table(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """30 numeric features, binary label."""
    table = pd.DataFrame({f"f{k:02d}": rng.normal(size=rows) for k in range(30)})
    signal = table.iloc[:, :6].sum(axis=1) + table["f00"] * table["f02"] + 0.3 * table.iloc[:, 6:].sum(axis=1)
    table["label"] = np.where(signal + rng.normal(0, 0.7, rows) > 0, "yes", "no")
    return table


def loan_table(rows: int, rng: np.random.Generator, regression: bool = False) -> pd.DataFrame:
    """Loan-like: numbers, integers, categories, missing values; binary default or a regression amount."""
    table = pd.DataFrame({
        "income": rng.lognormal(10, 0.5, rows), "debt_ratio": rng.uniform(0, 1, rows),
        "age": rng.integers(18, 80, rows).astype(float), "loan_amount": rng.lognormal(9, 0.7, rows),
        "term": rng.choice([12, 24, 36, 60], rows).astype(float), "open_accounts": rng.poisson(5, rows).astype(float),
        "delinquencies": rng.poisson(0.3, rows).astype(float), "employment_years": rng.exponential(5, rows),
        "purpose": rng.choice(["car", "home", "education", "business", "other"], rows).astype(object),
        "home": rng.choice(["rent", "own", "mortgage"], rows).astype(object),
        "region": rng.choice(list("NSEW"), rows).astype(object), "grade": rng.choice(list("ABCDEFG"), rows),
    })
    table.loc[rng.random(rows) < 0.1, "employment_years"] = np.nan
    table.loc[rng.random(rows) < 0.05, "income"] = np.nan
    table.loc[rng.random(rows) < 0.05, "purpose"] = None
    score = (np.log(table["loan_amount"]) - np.log(table["income"].fillna(20000)) + 2 * table["debt_ratio"]
             + 0.5 * table["delinquencies"] - 0.03 * table["employment_years"].fillna(0)
             + 0.3 * (table["grade"] > "D") + 0.2 * (table["home"] == "rent"))
    noisy = score + rng.normal(0, 0.5, rows)
    if regression:
        table["label"] = 1000 * np.exp(noisy - noisy.mean())  # an amount in the thousands
    else:
        table["label"] = np.where(noisy > np.median(noisy), "default", "repaid")
    return table


def penguins(rng: np.random.Generator) -> pd.DataFrame:
    return pd.read_csv(PENGUINS).rename(columns={"species": "label"}).sample(frac=1.0, random_state=0)


TABLES: dict[str, tuple[Callable[[np.random.Generator], pd.DataFrame], str]] = {
    "penguins": (penguins, "multiclass"),
    "wide": (lambda rng: wide_table(3000, rng), "binary"),
    "loan": (lambda rng: loan_table(4000, rng), "binary"),
    "loan-regression": (lambda rng: loan_table(4000, rng, regression=True), "regression"),
}


@dataclass
class Timings:
    single: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return 1e3 * statistics.median(self.single)

    @property
    def rows_per_s(self) -> float:
        return BATCH / statistics.median(self.batch)


def interleaved(calls: dict[str, Callable[[Any], Any]], rows: list[Any], batches: dict[str, Any],
                rounds: int, repeats: int) -> dict[str, Timings]:
    """Time every call round by round: a share of the single rows, then a few batches, side after side."""
    out = {name: Timings() for name in calls}
    for name, call in calls.items():  # warm up
        for item in rows[name][:10]:
            call(item)
        call(batches[name])
    per_round = max(1, len(next(iter(rows.values()))) // rounds)
    for r in range(rounds):
        for name, call in calls.items():
            for item in rows[name][r * per_round:(r + 1) * per_round]:
                t0 = time.perf_counter()
                call(item)
                out[name].single.append(time.perf_counter() - t0)
            for _ in range(repeats):
                t0 = time.perf_counter()
                call(batches[name])
                out[name].batch.append(time.perf_counter() - t0)
    return out


def fit_table(name: str, folder: Path, time_limit: int) -> tuple[Any, pd.DataFrame]:
    """The predictor of a table (fitted once per work folder) and its held-out rows (label dropped)."""
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.train_autogluon.presets import deployable_fit_kwargs

    build, problem_type = TABLES[name]
    table = build(np.random.default_rng(0)).reset_index(drop=True)
    cut = max(len(table) * 3 // 4, len(table) - 2048)
    train, test = table.iloc[:cut], table.iloc[cut:]
    if not (folder / "ag" / "predictor.pkl").exists():
        shutil.rmtree(folder / "ag", ignore_errors=True)
        kwargs = deployable_fit_kwargs()
        start = time.perf_counter()
        TabularPredictor("label", problem_type=problem_type, path=str(folder / "ag"), verbosity=0).fit(
            train, time_limit=time_limit, **kwargs)
        print(f"[{name}] fit {time.perf_counter() - start:.0f} s", flush=True)
    test.to_parquet(folder / "test.parquet")
    return TabularPredictor.load(str(folder / "ag"), verbosity=0), test.drop(columns=["label"])


def export_table(name: str, folder: Path, label: str) -> Path:
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    target = folder / f"savedmodel-{label}"
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    result = export(folder / "ag", folder / "test.parquet", target, ExportConfig(), folder / f"parity-{label}.md")
    print(f"[{name}] export + parity gate on {int(result.metrics['parity_rows_checked'])} rows: "
          f"{time.perf_counter() - start:.0f} s, max |delta| {result.metrics['parity_max_abs_diff']:.3g}", flush=True)
    return target


def serving_call(path: Path) -> tuple[Callable[[dict], Any], Any]:
    """The ``serving_default`` signature as a function of column arrays, and the signature file."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.signature import read_signature

    signature = read_signature(path)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    dtypes = {c.name: tf.float64 if c.dtype == "float64" else tf.string for c in signature.inputs}
    key = output_key(signature)

    def call(arrays: dict) -> Any:
        return serve(**{k: tf.constant(v, dtype=dtypes[k]) for k, v in arrays.items()})[key].numpy()

    return call, signature


def output_key(signature: Any) -> str:
    """The signature output both sides are compared on."""
    return "prediction" if signature.problem_type == "regression" else "probabilities"


def session_call(path: Path, signature: Any) -> Callable[[dict], Any]:
    """The ``serving_default`` signature in a graph-mode ``Session`` (TF Serving's way), fed numpy column arrays."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph)
        meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], str(path))
    definition = meta.signature_def["serving_default"]
    fetch = definition.outputs[output_key(signature)].name
    feeds = {key: tensor.name for key, tensor in definition.inputs.items()}

    def call(arrays: dict) -> Any:
        return session.run(fetch, {feeds[k]: v for k, v in arrays.items()})

    return call


def member_calls(predictor: Any, features: pd.DataFrame, signature: Any,
                 every_model: bool = False) -> dict[str, tuple[str, Callable, Callable]]:
    """Per ensemble member: family, AutoGluon's own call, and a graph of the member alone (features included).

    ``every_model``: every base model the predictor fitted (one per family and variant), not only the members of
    the ensemble it picked.
    """
    import tensorflow as tf

    from kfp_tabular.components._shared.ensemble import describe_ensemble
    from kfp_tabular.components.export_savedmodel.families import compile_members
    from kfp_tabular.components.export_savedmodel.features import (
        build_feature_plan,
        make_lookup_tables,
        transform_features,
    )
    from kfp_tabular.components.export_savedmodel.graph import canonicalize_inputs, member_output

    plan = build_feature_plan(predictor, features)
    head = predictor.transform_features(features.head(1))
    if every_model:
        models = [name for name in predictor.model_names() if not name.startswith("WeightedEnsemble")]
        members = [member for model in models
                   for member in compile_members(describe_ensemble(predictor, model), plan, head)]
    else:
        members = compile_members(describe_ensemble(predictor, predictor.model_best), plan, head)
    specs = [tf.TensorSpec([None], tf.float64 if c.dtype == "float64" else tf.string, name=c.name)
             for c in signature.inputs]
    names = [c.name for c in signature.inputs]
    tables = make_lookup_tables(plan)
    regression = predictor.problem_type == "regression"
    out = {}

    def member_graph(member: Any) -> Any:
        def graph(*args: Any) -> Any:
            inputs = canonicalize_inputs(signature, dict(zip(names, args, strict=True)))
            return member_output(member, transform_features(plan, inputs, tables, member.features))

        return tf.function(graph, input_signature=specs)

    for member in members:
        function = member_graph(member)

        def ours(arrays: dict, function: Any = function) -> Any:
            return function(*[tf.constant(arrays[n], s.dtype) for n, s in zip(names, specs, strict=True)]).numpy()

        def theirs(frame: pd.DataFrame, name: str = member.name) -> Any:
            return predictor.predict(frame, model=name) if regression else predictor.predict_proba(frame, model=name)

        out[member.name] = (member.family, theirs, ours)
    return out


def run_table(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    predictor, features = fit_table(name, folder, args.time_limit)
    label = args.save_as or "current"
    current = export_table(name, folder, label)
    predictor.persist()
    ag_call = predictor.predict if predictor.problem_type == "regression" else predictor.predict_proba
    call, signature = serving_call(current)
    batch = pd.concat([features] * (BATCH // len(features) + 1), ignore_index=True).iloc[:BATCH]
    frames = [features.iloc[[i % len(features)]] for i in range(args.single)]
    arrays = [frame_to_inputs(row, signature) for row in frames]
    calls: dict[str, Callable] = {"autogluon": ag_call, "savedmodel": call,
                                  "tf-session": session_call(current, signature)}
    rows: dict[str, list] = {"autogluon": frames, "savedmodel": arrays, "tf-session": arrays}
    batch_arrays = frame_to_inputs(batch, signature)
    batches: dict[str, Any] = {"autogluon": batch, "savedmodel": batch_arrays, "tf-session": batch_arrays}
    if args.compare_with and (folder / f"savedmodel-{args.compare_with}").exists():
        other, _ = serving_call(folder / f"savedmodel-{args.compare_with}")
        calls[args.compare_with] = other
        rows[args.compare_with], batches[args.compare_with] = arrays, batches["savedmodel"]
    timings = interleaved(calls, rows, batches, args.rounds, args.repeats)
    from kfp_tabular.components._shared.ensemble import describe_ensemble

    structure = [f"{m.name} ({m.family}, w={m.weight:.2f})" for m in describe_ensemble(predictor).members]
    result = {"table": name, "members": structure, "timings": timings, "per_member": {}}
    if args.per_member or args.per_family:
        for member, (family, theirs, ours) in member_calls(predictor, features, signature, args.per_family).items():
            timed = interleaved({"autogluon": theirs, "savedmodel": ours},
                                {"autogluon": frames, "savedmodel": arrays},
                                {"autogluon": batch, "savedmodel": batches["savedmodel"]},
                                args.rounds, max(1, args.repeats // 2))
            result["per_member"][member] = (family, timed)
    return result


def print_results(results: list[dict[str, Any]], compare_with: str | None) -> None:
    header = f"{'table':<17}{'side':<13}{'1-row p50 ms':>13}{'ratio':>8}{'batch rows/s':>14}{'ratio':>8}"
    print("\n" + header)
    for result in results:
        t = result["timings"]
        ag = t["autogluon"]
        for side, timing in t.items():
            if side == "autogluon":
                ratio1 = ratio2 = ""
            else:
                ratio1 = f"{ag.p50_ms / timing.p50_ms:7.1f}x"
                ratio2 = f"{timing.rows_per_s / ag.rows_per_s:7.2f}x"
            print(f"{result['table']:<17}{side:<13}{timing.p50_ms:>13.2f}{ratio1:>8}{timing.rows_per_s:>14.0f}"
                  f"{ratio2:>8}")
        print(f"{'':17}members: {', '.join(result['members'])}")
        for member, (family, timed) in result["per_member"].items():
            a, s = timed["autogluon"], timed["savedmodel"]
            print(f"{'':17}  {family:<4}{member:<28} 1-row {a.p50_ms:7.2f} vs {s.p50_ms:6.2f} ms "
                  f"({a.p50_ms / s.p50_ms:5.1f}x)   batch {a.rows_per_s:8.0f} vs {s.rows_per_s:8.0f} rows/s "
                  f"({s.rows_per_s / a.rows_per_s:5.2f}x)")
    for side in [s for s in results[0]["timings"] if s != "autogluon"]:
        single = min(results, key=lambda r: r["timings"]["autogluon"].p50_ms / r["timings"][side].p50_ms)
        batch = min(results, key=lambda r: r["timings"][side].rows_per_s / r["timings"]["autogluon"].rows_per_s)
        slowest = max(results, key=lambda r: r["timings"][side].p50_ms)
        s1 = single["timings"]["autogluon"].p50_ms / single["timings"][side].p50_ms
        s2 = batch["timings"][side].rows_per_s / batch["timings"]["autogluon"].rows_per_s
        p50 = slowest["timings"][side].p50_ms
        print(f"\nheadline ({side}, worst table): single row {s1:.1f}x ({single['table']}; goal >= 20x: "
              f"{'met' if s1 >= 20 else 'missed'}), slowest p50 {p50:.2f} ms ({slowest['table']}; goal <= 1 ms: "
              f"{'met' if p50 <= 1 else 'missed'}), batch {BATCH} {s2:.2f}x ({batch['table']}; goal >= 5x: "
              f"{'met' if s2 >= 5 else 'missed'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated subset of the suite")
    parser.add_argument("--quick", action="store_true", help="fewer timed calls and a shorter fit")
    parser.add_argument("--time-limit", type=int, default=None, help="AutoGluon fit time limit per table (s)")
    parser.add_argument("--single", type=int, default=None, help="single-row calls per side")
    parser.add_argument("--repeats", type=int, default=None, help="batch calls per side and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaving rounds")
    parser.add_argument("--work", type=Path, default=None, help="keep fits and exports here (reused when present)")
    parser.add_argument("--save-as", default=None, help="name of this code's export folder (savedmodel-NAME)")
    parser.add_argument("--compare-with", default=None, help="also time DIR/<table>/savedmodel-NAME")
    parser.add_argument("--per-member", action="store_true", help="also time each ensemble member alone")
    parser.add_argument("--per-family", action="store_true",
                        help="also time every base model fitted (every family), each alone")
    args = parser.parse_args()
    args.time_limit = args.time_limit or (40 if args.quick else 120)
    args.single = args.single or (100 if args.quick else 300)
    args.repeats = args.repeats or (2 if args.quick else 4)
    work = args.work or Path(tempfile.mkdtemp(prefix="kfp-tabular-bench-export-"))
    results = [run_table(name, args, work) for name in args.tables.split(",")]
    print_results(results, args.compare_with)
    print(f"(work folder: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
