"""Running ``tabular-training`` on one machine through ``kfp.local`` and reading back what each step produced.

``kfp.local.SubprocessRunner(use_venv=False)`` runs the real KFP executor for each step in a subprocess of the
current Python environment, so the same component code that runs in the cluster image runs here.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskOutputs:
    """What one step left behind: its output artifacts (path + metadata) and returned parameters."""

    name: str
    folder: Path
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def path(self, output: str) -> Path:
        """Local file or folder of an output artifact."""
        return Path(self.artifacts[output]["path"])

    def metadata(self, output: str) -> dict[str, Any]:
        """Metadata of an output artifact (for Metrics: the logged metrics)."""
        return self.artifacts[output]["metadata"]


@dataclass
class LocalRun:
    """A finished local run: its folder, per-step outputs and wall time per step."""

    folder: Path
    tasks: dict[str, TaskOutputs]
    started_at: float
    wall_time_s: float

    @property
    def blessed(self) -> bool | None:
        """The blessing gate's decision (``evaluate_model`` returns it), None if evaluation did not run."""
        evaluate = self.tasks.get("evaluate-model")
        return None if evaluate is None else evaluate.parameters.get("Output")

    @property
    def blessing_reason(self) -> str:
        """Why the model is or is not blessed."""
        evaluate = self.tasks.get("evaluate-model")
        return "" if evaluate is None else evaluate.parameters.get("reason", "")


def run_pipeline_locally(arguments: dict[str, Any], pipeline_root: Path) -> LocalRun:
    """Run ``tabular-training`` with ``arguments`` under ``pipeline_root`` and collect the step outputs.

    Args:
        arguments: Pipeline parameters, e.g. ``{"source_uri": "builtin://penguins", "label": "species"}``.
        pipeline_root: Where runs are written (``<root>/tabular-training-<timestamp>/<step>/<output>``).
            kfp.local only adds to it; its scratch workspace is a separate temporary folder it removes.
    """
    from kfp import local

    from kfp_tabular.pipelines.tabular_training import PIPELINE_NAME, tabular_training

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    started_at, started = time.time(), time.perf_counter()
    with kfp_local_print_guard():
        tabular_training(**arguments)
    wall = time.perf_counter() - started
    (folder,) = set(pipeline_root.glob(f"{PIPELINE_NAME}-*")) - before
    return LocalRun(folder=folder, tasks=collect_task_outputs(folder), started_at=started_at, wall_time_s=wall)


@contextlib.contextmanager
def kfp_local_print_guard() -> Iterator[None]:
    """Put ``builtins.print`` back after a kfp.local run.

    kfp.local (2.17) indents a step's output by replacing ``builtins.print`` for the step and restoring the one it
    saw; a ``ParallelFor`` runs two steps at once on threads, so one of them can restore the other's indenting
    print, and every later print of the process is indented.
    """
    saved = builtins.print
    try:
        yield
    finally:
        builtins.print = saved


def collect_task_outputs(run_folder: Path) -> dict[str, TaskOutputs]:
    """Read every step's ``executor_output.json`` under a local run folder, keyed by step name.

    A step inside a ``ParallelFor`` is keyed once per iteration, as ``name[i]``.
    """
    tasks: dict[str, TaskOutputs] = {}
    for executor_output in sorted(Path(run_folder).rglob("executor_output.json")):
        folder = executor_output.parent
        document = json.loads(executor_output.read_text(encoding="utf-8"))
        name = folder.name
        if folder.parent.name.startswith("for-loop-"):  # for-loop-N-iteration-i/<task>: one task per iteration
            name = f"{name}[{folder.parent.name.rsplit('-', 1)[1]}]"
        task = TaskOutputs(name=name, folder=folder, parameters=document.get("parameterValues", {}))
        for output, listing in document.get("artifacts", {}).items():
            artifact = listing["artifacts"][0]
            task.artifacts[output] = {
                "path": str(folder / output),
                "metadata": artifact.get("metadata", {}),
            }
        # Parameter outputs declared as OutputPath are plain files beside the artifacts.
        for file in folder.iterdir():
            if file.is_file() and file.name != executor_output.name and file.name not in task.artifacts:
                task.parameters.setdefault(file.name, file.read_text(encoding="utf-8"))
        tasks[task.name] = task
    return tasks


def step_wall_times(run: LocalRun) -> dict[str, float]:
    """Seconds each step took, from the modification times of its outputs (kfp.local logs no durations).

    kfp.local runs the steps one at a time in topological order, so a step's time is the gap between the
    newest file of the step before it and its own newest file (the first step counts from the start of the
    run). It includes the step's subprocess start-up, as a user waits for it.
    """
    finished = {
        name: max(p.stat().st_mtime for p in task.folder.rglob("*")) for name, task in run.tasks.items()
    }
    order = sorted(finished, key=finished.get)
    times, previous = {}, run.started_at
    for name in order:
        times[name] = max(0.0, finished[name] - previous)
        previous = finished[name]
    return times
