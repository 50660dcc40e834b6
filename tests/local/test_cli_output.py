"""What `kfp-tabular run` prints when a step fails: its own error, the log file, exit 1, nothing else raw."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_too_small_table_ends_with_the_ingest_error_the_log_path_and_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "tiny.csv"
    data.write_text("x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(12)))
    result = subprocess.run(
        [sys.executable, "-m", "kfp_tabular.cli", "run", "--data", str(data), "--label", "y",
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    terminal = result.stdout + result.stderr
    assert "\x1b[" not in terminal  # not a terminal: no ANSI codes
    assert "Traceback" not in terminal and "Streamed logs" not in terminal
    (log,) = (tmp_path / "out" / "logs").glob("run-*.log")
    last = result.stderr.strip().splitlines()
    assert last[-2].startswith(f"ingest-data failed: DataValidationError: {data}: only 12 rows have a label")
    assert "kfp-tabular run --min-rows" in last[-2]
    assert last[-1] == f"Full logs, with the traceback: {log}"
    assert re.search(r"^  ingest-data +FAILED +\d+ s$", result.stdout, re.MULTILINE)
    assert f"Full logs: {log}" in result.stdout.splitlines()[1]
    text = log.read_text()
    assert "Traceback (most recent call last):" in text and "kfp_tabular.errors.DataValidationError" in text
