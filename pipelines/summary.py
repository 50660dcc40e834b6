"""A short terminal summary of a local run: data, leaderboard, test metrics, blessing, export, explanation.

The artifacts are Markdown (the dashboard renders it); the terminal gets plain text: no ``**`` or backticks,
and tables as aligned columns.
"""

from __future__ import annotations

import re
from pathlib import Path

from kfp_tabular.pipelines.local_run import LocalRun, TaskOutputs, step_wall_times


def _first_lines(path: Path, count: int) -> list[str]:
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:count]


_EMPHASIS = re.compile(r"\*\*(.+?)\*\*|`([^`]*)`")


def plain_text(line: str) -> str:
    """One line of Markdown without its inline syntax: ``**bold**`` and ```code``` become their text."""
    return _EMPHASIS.sub(lambda match: match.group(1) if match.group(1) is not None else match.group(2), line)


def _cells(row: str) -> list[str]:
    inner = row.strip().removeprefix("|").removesuffix("|")
    return [plain_text(cell.strip().replace("\\|", "|")) for cell in re.split(r"(?<!\\)\|", inner)]


def plain_table(rows: list[str]) -> list[str]:
    """A Markdown pipe table as aligned columns: text left-aligned, numbers right-aligned, no separator row."""
    table = [_cells(row) for row in rows if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", row.strip())]
    if not table:
        return []
    width = max(len(row) for row in table)
    table = [row + [""] * (width - len(row)) for row in table]
    widths = [max(len(row[k]) for row in table) for k in range(width)]
    numeric = [all(_is_number(row[k]) for row in table[1:]) and len(table) > 1 for k in range(width)]
    return [
        "  ".join(cell.rjust(widths[k]) if numeric[k] else cell.ljust(widths[k]) for k, cell in enumerate(row)).rstrip()
        for row in table
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True


def _profile_warnings(path: Path) -> list[str]:
    """The items of the profile's ``Warnings:`` list (label copies, ID-like columns, ...)."""
    lines = _first_lines(path, 10_000)
    if "Warnings:" not in lines:
        return []
    items = []
    for line in lines[lines.index("Warnings:") + 1:]:
        if not line.startswith("- "):
            break
        items.append(line[2:])
    return items


def _leaderboard_top(path: Path, rows: int = 3) -> list[str]:
    """The best-model line and the first rows of the leaderboard, as plain text."""
    lines = _first_lines(path, 10_000)
    best = [plain_text(line) for line in lines if line.startswith("**Best model")]
    table = [line for line in lines if line.startswith("|")]
    return best + plain_table(table[: 2 + rows])


def _metrics_line(task: TaskOutputs, output: str, names: list[str] | None = None) -> str:
    values = task.metadata(output)
    keys = names or sorted(values)
    return " · ".join(f"{k} {values[k]:.4g}" for k in keys if isinstance(values.get(k), int | float))


def summarize(run: LocalRun) -> str:
    """Render the run as a few readable blocks of text."""
    tasks = run.tasks
    out = [f"Run folder: {run.folder}"]
    if "ingest-data" in tasks:
        headline = _first_lines(tasks["ingest-data"].path("profile"), 2)
        out += ["", "DATA", *(f"  {plain_text(line.lstrip('#- '))}" for line in headline)]
        warnings = _profile_warnings(tasks["ingest-data"].path("profile"))
        if warnings:  # the step log goes to a file: what ingest warns about must be read here
            out += ["", "WARNINGS", *(f"  {plain_text(line)}" for line in warnings)]
    if "train-autogluon" in tasks:
        out += ["", "LEADERBOARD (top 3)"]
        out += [f"  {line}" for line in _leaderboard_top(tasks["train-autogluon"].path("leaderboard"))]
    if "evaluate-model" in tasks:
        evaluate = tasks["evaluate-model"]
        out += ["", "TEST METRICS", f"  {_metrics_line(evaluate, 'metrics')}"]
        out += ["", f"BLESSED: {'yes' if run.blessed else 'no'} — {run.blessing_reason}"]
    if "export-savedmodel" in tasks:
        export = tasks["export-savedmodel"]
        out += ["", "EXPORT", f"  SavedModel: {export.path('savedmodel')}"]
        out += [f"  parity: {_metrics_line(export, 'parity_metrics')}"]
    elif "evaluate-model" in tasks:
        out += ["", "EXPORT skipped: the model was not blessed."]
    if "explain-shap" in tasks:
        out += ["", "EXPLANATION"]
        prose = [line for line in _first_lines(tasks["explain-shap"].path("summary"), 20) if not line.startswith("#")]
        out += [f"  {plain_text(line)}" for line in prose[:2]]
    out += ["", "ARTIFACTS"]
    for name, task in sorted(tasks.items()):
        for output, artifact in sorted(task.artifacts.items()):
            if Path(artifact["path"]).exists():
                out.append(f"  {name}/{output}: {artifact['path']}")
    times = step_wall_times(run)
    out += ["", f"WALL TIME {run.wall_time_s:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())]
    return "\n".join(out)
