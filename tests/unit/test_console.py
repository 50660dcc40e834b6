"""StepConsole around a real kfp.local run of a two-step pipeline: progress lines, the log file, the step's error."""


import io
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl, local

from kfp_tabular.console import ANSI, StepConsole, last_error, progress_line
from kfp_tabular.pipelines.local_run import kfp_local_print_guard


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def chatty_step(rows: int) -> int:
    for i in range(rows):
        print(f"executor chatter line {i}")
    return rows


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def failing_step(rows: int):
    from kfp_tabular.errors import DataValidationError

    raise DataValidationError(f"toy.csv: only {rows} rows; pass min_rows={rows} to accept it.")


@dsl.pipeline(name="console-toy")
def toy_pipeline(rows: int = 3, fail: bool = True):
    first = chatty_step(rows=rows)
    with dsl.If(fail == True):  # noqa: E712 (KFP condition DSL)
        failing_step(rows=first.output)


def _run(tmp_path: Path, fail: bool) -> tuple:
    terminal = io.StringIO()  # not a terminal: no colour, no in-place updates
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"),
               raise_on_error=True)
    raised = None
    with StepConsole(tmp_path / "logs" / "run.log", terminal) as console:
        try:
            toy_pipeline(rows=3, fail=fail)
        except RuntimeError as exc:
            raised = exc
    return terminal.getvalue(), console, raised


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("console")
    return (*_run(folder, fail=True), folder)


def test_terminal_shows_one_line_per_step_and_no_executor_logs(failed_run):
    terminal, _, raised, _ = failed_run
    assert raised is not None
    lines = terminal.splitlines()
    assert [line.split()[:2] for line in lines] == [["chatty-step", "done"], ["failing-step", "FAILED"]]
    assert all(line.rstrip().endswith(" s") for line in lines)
    assert "chatter" not in terminal and "Traceback" not in terminal
    assert not ANSI.search(terminal)


def test_the_log_file_keeps_everything_without_colour_codes(failed_run):
    _, console, _, folder = failed_run
    log = (folder / "logs" / "run.log").read_text()
    assert "executor chatter line 2" in log
    assert "Traceback (most recent call last):" in log
    assert "Executing task 'failing-step'" in log
    assert not ANSI.search(log)
    assert console.log_path == folder / "logs" / "run.log"


def test_failure_is_the_steps_own_typed_error(failed_run):
    _, console, _, _ = failed_run
    failure = console.failure()
    assert failure is not None and failure.step == "failing-step"
    assert failure.error == "DataValidationError: toy.csv: only 3 rows; pass min_rows=3 to accept it."


def test_a_successful_run_has_no_failure(tmp_path):
    terminal, console, raised, = _run(tmp_path, fail=False)
    assert raised is None and console.failure() is None
    assert [line.split()[:2] for line in terminal.splitlines()] == [["chatty-step", "done"]]


def test_last_error_reads_a_real_chained_traceback_with_a_multi_line_message():
    code = (
        "from kfp_tabular.errors import ModelError\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n"
        "    raise ModelError('first line\\nsecond line') from exc\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    lines = ["noise before", *result.stderr.splitlines(), ""]
    assert last_error(lines) == "ModelError: first line\nsecond line"
    assert last_error(["no traceback here"]) is None


def test_progress_line_aligns_name_state_and_seconds():
    assert progress_line("ingest-data", "done", 3.4) == "  ingest-data            done         3 s"
    assert progress_line("train-autogluon", "running", 61.0) == "  train-autogluon        running     61 s"
    # the longest step names of the pipeline keep the columns aligned
    assert progress_line("explain-shap-shard #3", "done", 2.0) == "  explain-shap-shard #3  done         2 s"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shard_list(count: int) -> list:
    return list(range(count))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def sleepy_shard(index: int) -> int:
    import time

    time.sleep(0.5 + index * 0.3)
    return index


@dsl.pipeline(name="console-loop")
def loop_pipeline(count: int = 3):
    plan = shard_list(count=count)
    with dsl.ParallelFor(plan.output) as index:
        sleepy_shard(index=index)


def test_parallel_iterations_get_a_line_each(tmp_path):
    # kfp.local runs two iterations at once and logs each under the same task name
    terminal = io.StringIO()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"),
               raise_on_error=True)
    with StepConsole(tmp_path / "run.log", terminal) as console, kfp_local_print_guard():
        loop_pipeline(count=3)
    lines = terminal.getvalue().splitlines()
    assert [line.rsplit(maxsplit=3)[0].strip() for line in lines] == [
        "shard-list", "sleepy-shard", "sleepy-shard #2", "sleepy-shard #3"]
    assert all(line.split()[-3] == "done" for line in lines)
    seconds = [int(line.split()[-2]) for line in lines[1:]]
    assert all(s >= 0 for s in seconds) and max(seconds) >= 1  # each from its own start, none lumped at 0
    assert console.failure() is None


def test_the_error_is_found_however_deep_kfp_local_indents_the_output(tmp_path):
    # after a ParallelFor, kfp.local can leave its indenting print in place: the output is then indented by 8
    for indent in ("    ", "        "):
        terminal = io.StringIO()
        with StepConsole(tmp_path / f"run{len(indent)}.log", terminal) as console:
            print("10:00:00.000 - INFO - Executing task 'failing-step'")
            print("10:00:00.001 - INFO - Streamed logs:")
            print("")
            for line in ("[KFP Executor 2026-12-02 10:00:00,100 INFO]: Got executor_input:",
                         "Traceback (most recent call last):", '  File "step.py", line 3, in failing_step',
                         "    raise DataValidationError('toy.csv: too few rows')",
                         "kfp_tabular.errors.DataValidationError: toy.csv: too few rows", ""):
                print(indent + line)
            print("10:00:01.000 - ERROR - Task 'failing-step' finished with status FAILURE")
        failure = console.failure()
        assert failure is not None and failure.step == "failing-step"
        assert failure.error == "DataValidationError: toy.csv: too few rows"
