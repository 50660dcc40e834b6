"""Turn the folder `kfp-tabular run --output <dir>` left into a CML-style Markdown report for a pull request.

    python .github/scripts/pr_report.py <dir> <report folder>

Writes <report folder>/report.md (test metrics table, blessing decision, AutoGluon leaderboard, SHAP global
importance) and <report folder>/shap_importance.png (the importance bar chart, taken from the explain-shap HTML
report, where it is inlined as a PNG). `cml comment create <report folder>/report.md` then posts it, uploading
the PNG it links to. Everything comes from the run's own artifacts: nothing is recomputed here.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

from kfp_tabular.pipelines.local_run import collect_task_outputs

# The caption explain_shap/report.py gives the importance figure; it is the figure's alt text in the HTML.
IMPORTANCE_ALT = "Mean absolute SHAP value per feature"
_FIGURE = re.compile(r'<img alt="(?P<alt>[^"]*)" src="data:image/png;base64,(?P<data>[A-Za-z0-9+/=]+)">')


def latest_run(output: Path) -> Path:
    """The newest ``tabular-training-*`` run folder under ``output``."""
    runs = sorted(p for p in output.glob("tabular-training-*") if p.is_dir())
    if not runs:
        raise SystemExit(f"pr_report: no tabular-training-* run folder under {output}: did `kfp-tabular run` run?")
    return runs[-1]


def _metrics_table(metrics: dict[str, float]) -> list[str]:
    rows = [f"| {name} | {value:.4g} |" for name, value in metrics.items() if isinstance(value, int | float)]
    return ["| metric | value |", "|---|---|", *rows]


def _section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``##`` heading, or '' when there is none."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    return match.group(1).strip() if match else ""


def importance_png(report_html: str) -> bytes | None:
    """The SHAP importance bar chart inlined in the explain-shap HTML report."""
    for figure in _FIGURE.finditer(report_html):
        if figure.group("alt") == IMPORTANCE_ALT:
            return base64.b64decode(figure.group("data"))
    return None


def build_report(run_folder: Path, out: Path) -> Path:
    """Write ``report.md`` (and the SHAP plot) for ``run_folder`` into ``out``; return the report's path."""
    tasks = collect_task_outputs(run_folder)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# kfp-tabular: model report", "", f"Local run `{run_folder.name}` on the sample data.", ""]

    evaluate = tasks.get("evaluate-model")
    if evaluate is not None:
        blessed = evaluate.parameters.get("Output")
        reason = str(evaluate.parameters.get("reason", "")).strip()
        lines += ["## Test metrics", "", *_metrics_table(evaluate.metadata("metrics")), ""]
        lines += [f"**Blessed:** {'yes' if blessed else 'no'}" + (f": {reason}" if reason else ""), ""]
    else:
        lines += ["## Test metrics", "", "The run stopped before evaluate-model: no metrics.", ""]

    train = tasks.get("train-autogluon")
    if train is not None:
        leaderboard = train.path("leaderboard").read_text(encoding="utf-8")
        body = leaderboard.split("\n", 1)[1].strip() if leaderboard.startswith("# ") else leaderboard.strip()
        lines += ["## Leaderboard", "", body, ""]

    explain = tasks.get("explain-shap")
    if explain is not None:
        lines += ["## SHAP importance", ""]
        summary = explain.path("summary").read_text(encoding="utf-8")
        lines += [summary.split("\n\n", 1)[0].strip(), ""]  # the one-sentence "In short" line
        png = importance_png(explain.path("report").read_text(encoding="utf-8"))
        if png is not None:
            (out / "shap_importance.png").write_bytes(png)
            lines += [f"![{IMPORTANCE_ALT}](./shap_importance.png)", ""]
        table = _section(summary, "Global importance")
        if table:
            lines += ["<details><summary>Importance table</summary>", "", table, "", "</details>", ""]

    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def main(argv: list[str]) -> int:
    """``pr_report.py <run output dir> <report folder>``."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report = build_report(latest_run(Path(argv[0])), Path(argv[1]))
    print(f"pr_report: wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
