"""Wall time of ``kfp-tabular run`` on the bundled penguins table, split per step (goal: ≤ 3 minutes).

Usage: python benchmarks/local_run.py [--repeats 1] [--time-limit 60]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from kfp_tabular.pipelines.local_run import run_pipeline_locally, step_wall_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-limit", type=int, default=60, help="same default as `kfp-tabular run`")
    args = parser.parse_args()
    totals, per_step = [], {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            run = run_pipeline_locally(
                {"source_uri": "builtin://penguins", "label": "species", "time_limit_s": args.time_limit}, Path(tmp)
            )
            totals.append(run.wall_time_s)
            for step, seconds in step_wall_times(run).items():
                per_step.setdefault(step, []).append(seconds)
    print(f"\nkfp-tabular run on penguins, {args.repeats} run(s), AutoGluon time limit {args.time_limit} s")
    print(f"{'step':<22}{'median s':>10}")
    for step, values in per_step.items():
        print(f"{step:<22}{statistics.median(values):>10.1f}")
    print(f"{'total':<22}{statistics.median(totals):>10.1f}   (goal ≤ 180 s)")


if __name__ == "__main__":
    main()
