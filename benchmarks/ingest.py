"""Throughput and peak memory of ``ingest_data`` against bare pyarrow on the same synthetic CSV, in the same run.

Anchor: ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table`` (default options): the least work that turns a
CSV into Parquet. Ours: ``ingest()`` (validation, profile, duplicate count, stratified split, three Parquet files,
sha256). Each measurement runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own; times exclude
the interpreter start and imports. Goals: throughput ratio ours / pyarrow ≥ 0.8; peak RSS < 1 GB for a 200 MB CSV.
``--stream`` makes ingest() take the path of files too big to read whole (streamed blocks, spilled to disk).

On a shared machine, wall times depend on what else runs: compare the ratio (both measured in the same run,
interleaved) and the CPU seconds, and look at the load average printed before and after.

Usage: python benchmarks/ingest.py [--rows 1000000] [--repeats 3] [--mb 200] [--stream] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUMERIC, INTEGER, CATEGORICAL = 8, 4, 7  # + the label: 20 columns
CHUNK_ROWS = 100_000
VOCABULARY = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def _chunk(rows: int, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns = {}
    for i in range(NUMERIC):
        columns[f"num_{i}"] = pa.array(rng.normal(size=rows).round(4), mask=rng.random(rows) < 0.05)
    for i in range(INTEGER):
        columns[f"int_{i}"] = pa.array(rng.integers(0, 1000, rows), mask=rng.random(rows) < 0.02)
    vocabulary = np.array(VOCABULARY)
    for i in range(CATEGORICAL):
        columns[f"cat_{i}"] = pa.array(vocabulary[rng.integers(0, 4 + i, rows)], mask=rng.random(rows) < 0.03)
    columns["label"] = pa.array(np.array(["yes", "no", "maybe"])[rng.choice(3, rows, p=[0.5, 0.3, 0.2])])
    return pa.table(columns)


def synthetic_csv(cache: Path, rows: int | None, megabytes: int | None) -> Path:
    """Write (once, then reuse) a CSV of ``rows`` rows or of at least ``megabytes`` MB, chunk by chunk."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    name = f"synthetic-{rows}rows.csv" if megabytes is None else f"synthetic-{megabytes}mb.csv"
    path = cache / name
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    written = size = chunk = 0
    with open(partial, "wb") as handle:
        while (written < rows) if megabytes is None else (size < megabytes * 1_000_000):
            count = CHUNK_ROWS if megabytes is not None else min(CHUNK_ROWS, rows - written)
            sink = pa.BufferOutputStream()
            pcsv.write_csv(_chunk(count, chunk), sink, pcsv.WriteOptions(include_header=chunk == 0))
            data = sink.getvalue()
            handle.write(data)
            written, size, chunk = written + count, size + data.size, chunk + 1
    partial.rename(path)
    return path


# ------------------------------------------------------------------------------------------------- children


def _child(kind: str, csv: Path, stream: bool) -> None:
    """Run one measurement and print it as JSON (this process is fresh: its peak RSS is this run's)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if kind == "ours":
        from kfp_tabular.components.ingest_data import readers
        from kfp_tabular.components.ingest_data.core import IngestConfig, ingest

        if stream:
            readers.WHOLE_READ_BYTES = 0
    imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        out = Path(tmp)
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        if kind == "pyarrow":
            table = pcsv.read_csv(csv)
            pq.write_table(table, out / "all.parquet")
            rows = table.num_rows
        else:
            result = ingest(
                str(csv),
                IngestConfig(label="label"),
                out / "train.parquet",
                out / "validation.parquet",
                out / "test.parquet",
                out / "profile.md",
            )
            rows = int(result.metrics["rows"])
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - start_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "peak_rss_mb": peak, "import_rss_mb": imported_rss, "rows": rows}
        )
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(kind: str, csv: Path, stream: bool) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--csv", str(csv), *(["--stream"] if stream else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic CSV (default 1M)")
    parser.add_argument("--mb", type=int, default=None, help="size the CSV by megabytes instead (e.g. 200)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream", action="store_true", help="force ingest() to stream the file")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kfp-tabular-bench")
    parser.add_argument("--child", choices=["pyarrow", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.csv, args.stream)
        return

    csv = synthetic_csv(args.cache, None if args.mb else args.rows, args.mb)
    size_mb = csv.stat().st_size / 1e6
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"pyarrow": [], "ours": []}
    for _ in range(args.repeats):  # interleaved, so that both see the same machine load
        for kind in runs:
            runs[kind].append(_measure(kind, csv, args.stream))
    rows = runs["ours"][0]["rows"]
    path = "streamed" if args.stream else "read whole when it fits"
    print(
        f"\ningest benchmark: {csv} ({size_mb:.0f} MB, {rows} rows × 20 columns), {args.repeats} run(s) each, "
        f"ingest() {path}"
    )
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(
        f"load average: {load:.2f} before the runs, {os.getloadavg()[0]:.2f} after "
        "(wall times compare fairly only on an idle machine)"
    )
    print(f"{'':<30}{'median s':>10}{'MB/s':>8}{'CPU s':>8}{'peak RSS MB':>13}{'after imports MB':>18}")
    median, cpu = {}, {}
    for kind, label in (("pyarrow", "pyarrow read_csv+write_table"), ("ours", "kfp-tabular ingest()")):
        median[kind] = statistics.median(run["seconds"] for run in runs[kind])
        cpu[kind] = statistics.median(run["cpu"] for run in runs[kind])
        peak = max(run["peak_rss_mb"] for run in runs[kind])
        imported = statistics.median(run["import_rss_mb"] for run in runs[kind])
        print(
            f"{label:<30}{median[kind]:>10.2f}{size_mb / median[kind]:>8.0f}{cpu[kind]:>8.2f}{peak:>13.0f}"
            f"{imported:>18.0f}"
        )
    ratio = median["pyarrow"] / median["ours"]
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"throughput ratio ours / pyarrow: {ratio:.2f}  (goal ≥ 0.8: {verdict})")
    print(f"CPU work ratio pyarrow / ours: {cpu['pyarrow'] / cpu['ours']:.2f}")
    peak_ours = max(run["peak_rss_mb"] for run in runs["ours"])
    print(f"peak RSS of ingest(): {peak_ours:.0f} MB  (goal < 1024 MB for a 200 MB CSV)")


if __name__ == "__main__":
    main()
