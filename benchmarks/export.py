"""Benchmark: AutoGluon ``predict_proba`` (persisted predictor) vs the exported SavedModel, same ensemble, same rows.

Prints single-row latency p50 / p99, throughput at batch 1024, their ratios (goals: >= 50x at one row, >= 5x at
batch 1024), the parity of the two on the benchmark rows, and both models' size on disk. AutoGluon is timed on
its native input (a one-row DataFrame), the SavedModel on its native input (tensors built from column arrays,
as TF Serving hands them over after decoding a request).

    .venv/bin/python benchmarks/export.py [--rows 4000] [--bag-folds 3] [--models GBM,XGB,RF,XT,LR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
MODELS = "GBM,XGB,RF,XT,LR"  # the families of the "deployable" preset, with AutoGluon's default settings


def make_table(n: int, seed: int) -> pd.DataFrame:
    """A binary task with numeric, integer, categorical and boolean columns, missing values and zeros."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "amount": np.where(rng.random(n) < 0.05, np.nan, rng.lognormal(3, 1, n)),
        "balance": np.where(rng.random(n) < 0.1, 0.0, rng.normal(1000, 300, n)),
        "age": rng.integers(18, 90, n),
        "tenure": np.where(rng.random(n) < 0.05, np.nan, rng.uniform(0, 30, n)),
        "score": rng.normal(size=n),
        "channel": rng.choice(["web", "store", "phone", "partner", "mail"], n).astype(object),
        "region": rng.choice([f"r{i}" for i in range(12)], n).astype(object),
        "member": rng.random(n) < 0.4,
    })
    frame.loc[rng.random(n) < 0.05, "channel"] = None
    logit = (0.02 * np.nan_to_num(frame["amount"]) - 0.001 * frame["balance"] + 0.03 * (frame["age"] - 50)
             + frame["score"] + (frame["channel"] == "web") * 0.8 + frame["member"] * 0.5 + rng.normal(size=n))
    frame["label"] = np.where(logit > np.median(logit), "churn", "stay")
    return frame


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000, help="training rows")
    parser.add_argument("--bag-folds", type=int, default=3, help="AutoGluon num_bag_folds (0: no bagging)")
    parser.add_argument("--single", type=int, default=300, help="single-row calls per side")
    parser.add_argument("--repeats", type=int, default=5, help="batch-1024 calls per side")
    parser.add_argument("--time-limit", type=int, default=300, help="AutoGluon fit time limit (s)")
    parser.add_argument("--models", default=MODELS, help="comma-separated AutoGluon model families")
    args = parser.parse_args()

    import tensorflow as tf
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export
    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature

    work = Path(tempfile.mkdtemp(prefix="kfp-tabular-bench-export-"))
    train, test = make_table(args.rows, 0), make_table(2048, 1)
    test.to_parquet(work / "test.parquet")
    start = time.perf_counter()
    predictor = TabularPredictor("label", path=str(work / "ag"), verbosity=0).fit(
        train, hyperparameters={name: {} for name in args.models.split(",")}, num_bag_folds=args.bag_folds,
        time_limit=args.time_limit, calibrate=False,
    )
    print(f"fit: {time.perf_counter() - start:.1f} s, best model {predictor.model_best}")
    start = time.perf_counter()
    result = export(work / "ag", work / "test.parquet", work / "savedmodel", ExportConfig(), work / "parity.md")
    print(f"export (with parity gate on {int(result.metrics['parity_rows_checked'])} rows): "
          f"{time.perf_counter() - start:.1f} s, members {list(result.metadata['members'])}")

    features = test.drop(columns=["label"])
    predictor.persist()
    signature = read_signature(work / "savedmodel")
    serve = tf.saved_model.load(str(work / "savedmodel")).signatures["serving_default"]
    dtypes = {c.name: tf.float64 if c.dtype == "float64" else tf.string for c in signature.inputs}

    def tf_call(arrays: dict) -> dict:
        return serve(**{k: tf.constant(v, dtype=dtypes[k]) for k, v in arrays.items()})

    # Each side is timed in its own phase: LightGBM / XGBoost OpenMP threads keep spinning for a while after an
    # AutoGluon call, which would slow down an interleaved TensorFlow call on a small machine.
    rows = [features.iloc[[i]] for i in range(args.single)]
    row_arrays = [frame_to_inputs(row, signature) for row in rows]
    batch = features.iloc[:1024]
    batch_arrays = frame_to_inputs(batch, signature)

    def timed(call, inputs: list) -> list[float]:
        for item in inputs[:20]:  # warm up
            call(item)
        times = []
        for item in inputs:
            t0 = time.perf_counter()
            call(item)
            times.append(time.perf_counter() - t0)
        return times

    ag_single = timed(predictor.predict_proba, rows)
    ag_batch = timed(predictor.predict_proba, [batch] * args.repeats)
    time.sleep(1.0)
    tf_single = timed(lambda arrays: tf_call(arrays)["probabilities"].numpy(), row_arrays)
    tf_batch = timed(lambda arrays: tf_call(arrays)["probabilities"].numpy(), [batch_arrays] * args.repeats)

    outputs = tf_call(frame_to_inputs(features, signature))
    parity = float(np.max(np.abs(outputs["probabilities"].numpy() - predictor.predict_proba(features).to_numpy())))
    labels = np.mean(outputs["label"].numpy().astype(str) == predictor.predict(features).astype(str))
    ag_p50, tf_p50 = percentile(ag_single, 50) * 1e3, percentile(tf_single, 50) * 1e3
    ag_p99, tf_p99 = percentile(ag_single, 99) * 1e3, percentile(tf_single, 99) * 1e3
    ag_rps, tf_rps = 1024 / statistics.median(ag_batch), 1024 / statistics.median(tf_batch)
    print()
    print(f"{'':28s}{'AutoGluon (persisted)':>24s}{'SavedModel (in-process)':>26s}{'ratio':>10s}")
    print(f"{'single row p50 (ms)':28s}{ag_p50:24.2f}{tf_p50:26.2f}{ag_p50 / tf_p50:9.1f}x   (goal >= 50x)")
    print(f"{'single row p99 (ms)':28s}{ag_p99:24.2f}{tf_p99:26.2f}{ag_p99 / tf_p99:9.1f}x")
    print(f"{'batch 1024 (rows/s)':28s}{ag_rps:24.0f}{tf_rps:26.0f}{tf_rps / ag_rps:9.1f}x   (goal >= 5x)")
    print(f"{'size on disk (MB)':28s}{folder_size(work / 'ag') / 1e6:24.2f}"
          f"{folder_size(work / 'savedmodel') / 1e6:26.2f}")
    print(f"parity on {len(features)} rows: max |delta p| = {parity:.3g}, label agreement {labels:.2%}; "
          f"export gate: max |delta| {result.metrics['parity_max_abs_diff']:.3g} on "
          f"{int(result.metrics['parity_rows_checked'])} rows")
    print(f"(scratch folder: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
