"""Terminal output of ``kfp-tabular run``: one progress line per pipeline step, the full logs in a file.

kfp.local writes everything to ``sys.stdout``: its own log records (the root logger's handler is created on
``sys.stdout`` for every task) and each step's subprocess output, which it reads from a pipe and ``print``s.
:class:`StepConsole` stands in for ``sys.stdout`` and ``sys.stderr`` while the run lasts: every line goes to the
log file (without colour codes), kfp.local's "Executing task" / "finished with status" records become one line
per step, and the last traceback of a failed step gives its error message.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_KFP_INDENT = "    "  # kfp.local indents every line of a step's output by four spaces
_NAME_WIDTH = 22
_KEPT_LINES = 400  # of the current step's output, enough for a traceback
_STATES = {"SUCCESS": "done", "FAILURE": "FAILED"}
_COLOURS = {"done": "\x1b[32m", "FAILED": "\x1b[31m", "running": "\x1b[36m"}


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return ANSI.sub("", text)


def uses_colour(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (colours and in-place updates) rather than a file or a pipe."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def last_error(lines: list[str]) -> str | None:
    """The exception line (and its continuation) of the last traceback in ``lines``, module path left out.

    ``kfp_tabular.errors.DataValidationError: data.csv: ...`` becomes ``DataValidationError: data.csv: ...``.
    None when the lines hold no traceback.
    """
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return None
    tail = lines[starts[-1] + 1 :]
    # Frames are indented; the first line at column 0 after them is "<type>: <message>".
    first = next((i for i, line in enumerate(tail) if line.strip() and not line.startswith(" ")), None)
    if first is None:
        return None
    message = [line.rstrip() for line in tail[first:]]
    while message and not message[-1].strip():
        message.pop()
    kind, sep, text = message[0].partition(": ")
    message[0] = kind.rsplit(".", 1)[-1] + sep + text
    return "\n".join(message)


@dataclass
class StepFailure:
    """The step that failed and what it said."""

    step: str
    error: str  # the step's exception (type: message), or the last lines of its output when it left no traceback


class _LineStream(io.TextIOBase):
    """A text stream handing complete lines to a callback (kfp.local writes lines in pieces)."""

    def __init__(self, on_line, isatty: bool) -> None:
        super().__init__()
        self._on_line = on_line
        self._isatty = isatty
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._isatty

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._on_line(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._on_line(line)


class StepConsole:
    """Capture a kfp.local run: full logs to ``log_path``, one progress line per step on ``terminal``.

    Use as a context manager around the run; afterwards :meth:`failure` tells which step failed and why.

    Args:
        log_path: File that receives every line of the run (created, parents too).
        terminal: Where progress lines go (``sys.stdout``); colours and a ticking clock only if a terminal.
        verbose: Also pass every log line to the terminal, as kfp.local prints them.
    """

    def __init__(self, log_path: Path, terminal: TextIO, verbose: bool = False) -> None:
        self.log_path = Path(log_path)
        self.terminal = terminal
        self.verbose = verbose
        self.colour = uses_colour(terminal)
        self.steps: dict[str, tuple[str, float]] = {}  # step -> (state, seconds), in order of completion
        self._current: str | None = None  # the step shown as running (the latest started)
        self._current_task: str | None = None  # its task name
        self._started = 0.0
        # ParallelFor iterations run side by side under one task name: each start is an instance of its own
        # ("explain-shap-shard", "explain-shap-shard #2", ...), finished in the order they started
        self._running: dict[str, deque[tuple[str, float]]] = {}
        self._instances: dict[str, int] = {}
        self._output: deque[str] = deque(maxlen=_KEPT_LINES)
        self._in_output = False
        self._indent: str | None = None  # of the current step's output block
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._log: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    # --- context manager ---------------------------------------------------------------------------------
    def __enter__(self) -> StepConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w", encoding="utf-8")
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _LineStream(self._line, isatty=self.verbose and self.colour)
        sys.stderr = _LineStream(self._line, isatty=False)
        if self.colour and not self.verbose:
            self._ticker = threading.Thread(target=self._tick, name="kfp-tabular-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        assert self._saved is not None and self._log is not None
        sys.stdout, sys.stderr = self._saved
        if error is not None and self._current is not None and self._current not in self.steps:
            self._finish(self._current_task or self._current, "FAILED")
        self._log.close()

    # --- results -------------------------------------------------------------------------------------------
    def failure(self) -> StepFailure | None:
        """The failed step and its error, or None if no step failed."""
        failed = [step for step, (state, _) in self.steps.items() if state == "FAILED"]
        if not failed:
            return None
        lines = list(self._output)
        error = last_error(lines)
        if error is None:
            tail = [line for line in lines if line.strip()][-10:]
            error = "\n".join(tail) or "the step exited with an error and printed nothing"
        return StepFailure(failed[-1], error)

    # --- line handling ------------------------------------------------------------------------------------
    def _line(self, raw: str) -> None:
        with self._lock:
            line = strip_ansi(raw)
            assert self._log is not None
            self._log.write(line + "\n")
            self._log.flush()
            if self.verbose:
                self._emit(raw if self.colour else line)
            if "Streamed logs:" in line:
                self._in_output = True
                self._indent = None
            elif started := _STARTED.search(line):
                self._start(started.group(1))
            elif finished := _FINISHED.search(line):
                self._finish(finished.group(1), _STATES.get(finished.group(2), finished.group(2)))
            elif self._in_output and self._current is not None:
                if self._indent is None and line.strip():
                    # kfp.local indents a step's output by four spaces, twice as much after a ParallelFor has
                    # left its indenting print behind: the block's first line says by how much
                    self._indent = line[: len(line) - len(line.lstrip(" "))] or _KFP_INDENT
                self._output.append(line.removeprefix(self._indent or _KFP_INDENT))

    def _start(self, task: str) -> None:
        count = self._instances[task] = self._instances.get(task, 0) + 1
        step = task if count == 1 else f"{task} #{count}"
        self._current, self._current_task, self._started = step, task, time.perf_counter()
        self._running.setdefault(task, deque()).append((step, self._started))
        self._output.clear()
        self._in_output = False
        if self.colour and not self.verbose:
            self._show(step, "running", 0.0, final=False)

    def _finish(self, task: str, state: str) -> None:
        running = self._running.get(task)
        if running:
            step, started = running.popleft()
            seconds = time.perf_counter() - started
        else:
            step, seconds = task, 0.0
        self.steps[step] = (state, seconds)
        self._in_output = False
        if state != "FAILED":  # the clock goes on for an iteration still running beside it, if any
            left = [(started, name, label) for name, queue in self._running.items() for label, started in queue]
            if left:
                self._started, self._current_task, self._current = max(left)
            else:
                self._current_task = self._current = None
        self._show(step, state, seconds)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                if self._current is not None and self._current not in self.steps:
                    self._show(self._current, "running", time.perf_counter() - self._started, final=False)

    # --- rendering ----------------------------------------------------------------------------------------
    def _show(self, step: str, state: str, seconds: float | None, final: bool = True) -> None:
        text = progress_line(step, state, seconds)
        if self.colour:
            colour = _COLOURS.get(state, "")
            text = text.replace(state, f"{colour}{state}\x1b[0m", 1) if colour else text
            self._emit("\r\x1b[K" + text, end="\n" if final else "")
        else:
            self._emit(text)

    def _emit(self, text: str, end: str = "\n") -> None:
        self.terminal.write(text + end)
        self.terminal.flush()


def progress_line(step: str, state: str, seconds: float | None) -> str:
    """``  train-autogluon     done       42 s``: the step, its state and how long it took."""
    elapsed = "" if seconds is None else f"{seconds:5.0f} s"
    return f"  {step:<{_NAME_WIDTH}} {state:<8} {elapsed}".rstrip()
