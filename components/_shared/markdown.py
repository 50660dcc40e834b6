"""Tiny Markdown helpers (no tabulate dependency) for the Markdown artifacts shown in the dashboard."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def format_value(value: Any, digits: int = 4) -> str:
    """Render one cell: floats rounded, NaN as an empty cell, pipes escaped."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.{digits}e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4) -> str:
    """Render a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(format_value(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(format_value(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_table(frame: Any, digits: int = 4, max_rows: int | None = None) -> str:
    """Render a pandas DataFrame (index dropped) as a Markdown table."""
    shown = frame if max_rows is None else frame.head(max_rows)
    return table(list(map(str, shown.columns)), shown.itertuples(index=False, name=None), digits)
