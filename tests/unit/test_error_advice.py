"""Every fix an error message advises is reachable: as a `kfp-tabular run` flag and as a pipeline parameter.

The messages are read from the source: the string parts of every ``...Error(...)`` / ``...Failed(...)`` call in
components/, src/kfp_tabular/ and pipelines/. Option names are taken out of them in two forms: ``name=value``
(``pass encoding="latin-1"``) and ``--flag``; bare names (``turn the check off (allow_version_skew)``) count when
they are a known option. A new piece of advice fails this test until its option is in ``ADVICE`` (and so
exists on both sides) or is explained in ``NOT_OPTIONS``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("components", "src/kfp_tabular", "pipelines")

# option named in a message -> (pipeline parameter, `kfp-tabular run` flag); None flag: not a local-run concern
ADVICE: dict[str, tuple[str, str | None]] = {
    "problem_type": ("problem_type", "--problem-type"),
    "file_format": ("file_format", "--file-format"),
    "encoding": ("encoding", "--encoding"),
    "drop_columns": ("drop_columns", "--drop-columns"),
    "bad_values": ("bad_values", "--bad-values"),
    "min_rows": ("min_rows", "--min-rows"),
    "validation_fraction": ("validation_fraction", "--validation-fraction"),
    "test_fraction": ("test_fraction", "--test-fraction"),
    "seed": ("seed", "--seed"),
    "presets": ("presets", "--presets"),
    "time_limit_s": ("time_limit_s", "--time-limit"),
    "hyperparameters": ("hyperparameters", "--hyperparameters"),
    "eval_metric": ("eval_metric", "--eval-metric"),
    "refit_ensemble": ("refit_ensemble", "--refit-ensemble"),
    "method": ("explain_method", "--explain-method"),  # explain_shap's parameter
    "max_rows": ("explain_max_rows", "--explain-max-rows"),
    "background_size": ("explain_background_size", "--explain-background-size"),
    "sample_budget": ("explain_sample_budget", "--explain-sample-budget"),
    "time_budget_s": ("explain_time_budget_s", "--explain-time-budget"),
    "target_standard_error": ("explain_target_standard_error", "--explain-target-se"),
    "rows_per_shard": ("explain_rows_per_shard", "--explain-rows-per-shard"),
    # deploy runs only on a cluster (kfp-tabular submit --param allow_version_skew=true), never in a local run
    "allow_version_skew": ("allow_version_skew", None),
    # optimize_tensorrt runs only on a GPU node of a cluster (submit --param optimize_precision=fp32)
    "precision": ("optimize_precision", None),
    "require_conditional_writes": ("require_conditional_writes", "--allow-unconditional-store"),
}
# names in messages that are not options of the pipeline, and why
NOT_OPTIONS = {
    "stable": "an example label in `serve --version-label stable=3`",
    "cache_data": "AutoGluon's fit option, on by default; train_autogluon never turns it off",
}
# advice the pipeline cannot follow yet; each is a defect to fix in the component named
KNOWN_GAPS: dict[str, str] = {}
# --flags in component messages that a local run reaches through the environment (a Secret on a cluster)
ENVIRONMENT_FLAGS = {"--connect-timeout": "S3_CONNECT_TIMEOUT_S", "--read-timeout": "S3_READ_TIMEOUT_S",
                     "--retries": "S3_RETRIES"}
# flags of other programs that messages quote
FOREIGN_FLAGS = {"--file-output": "skaffold build --file-output"}

_ASSIGNED = re.compile(r"(?<![\w.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)*)\s?=(?!=)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def error_messages() -> list[tuple[str, str]]:
    """(file:line, the message's literal text with ``{}`` for interpolations) of every error constructed."""
    found = []
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name.endswith(("Error", "Failed")):
                    parts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", "{}".join(parts)))
    return found


def advised_names() -> dict[str, list[str]]:
    """Option names in the messages, with where each appears."""
    names: dict[str, list[str]] = {}
    for where, text in error_messages():
        for name in {m.group(1) for m in _ASSIGNED.finditer(text)} | (set(_WORD.findall(text)) & set(ADVICE)):
            names.setdefault(name, []).append(where)
    return names


def advised_flags() -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for where, text in error_messages():
        for flag in set(_FLAG.findall(text)):
            flags.setdefault(flag, []).append(where)
    return flags


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from kfp_tabular.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _pipeline_parameters() -> set[str]:
    from kfp_tabular.pipelines.tabular_training import tabular_training

    return set(tabular_training.component_spec.inputs)


def test_the_scan_finds_the_advice_it_is_meant_to_check():
    names = advised_names()
    assert {"encoding", "refit_ensemble", "bad_values", "drop_columns", "allow_version_skew", "min_rows",
            "method", "presets", "time_limit_s"} <= set(names)
    assert "--drop-columns" in advised_flags()


def test_every_advised_option_is_known():
    unknown = {name: where for name, where in advised_names().items() if name not in ADVICE | NOT_OPTIONS}
    assert not unknown, f"advice naming options missing from ADVICE (add the flag and the parameter): {unknown}"


@pytest.mark.parametrize("name", sorted(ADVICE))
def test_advised_option_is_a_pipeline_parameter_that_reaches_a_step_and_a_run_flag(name):
    parameter, flag = ADVICE[name]
    assert parameter in _pipeline_parameters()
    from kfp_tabular.pipelines.tabular_training import tabular_training

    spec = tabular_training.pipeline_spec
    consumers = [
        task for component in [spec.root, *spec.components.values()] if component.HasField("dag")
        for task in component.dag.tasks.values()
        for value in task.inputs.parameters.values()
        if value.component_input_parameter in (parameter, f"pipelinechannel--{parameter}")
    ]
    assert consumers, f"pipeline parameter {parameter} is passed to no step"
    if flag is not None:
        run = _subparsers()["run"]
        assert flag in _flags(run)
        from kfp_tabular.cli import _run_arguments

        action = next(a for a in run._actions if flag in a.option_strings)
        argv = [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, _sample(action)]
        assert parameter in _run_arguments(run.parse_args(argv))


def _sample(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    return {int: "7", float: "0.1"}.get(action.type, "x")


def test_every_advised_flag_exists_and_component_advice_is_reachable_from_run():
    parsers = _subparsers()
    every = set().union(*(_flags(p) for p in parsers.values()))
    run = _flags(parsers["run"])
    for flag, where in advised_flags().items():
        if flag in FOREIGN_FLAGS:
            continue
        assert flag in every, f"{flag} advised at {where} is no flag of kfp-tabular"
        from_components = [w for w in where if w.startswith("components/")]
        if from_components and flag not in run:
            assert flag in ENVIRONMENT_FLAGS, f"{flag} advised by a step ({from_components}) is no `run` flag"


def test_ingest_component_default_minimum_is_the_cores():
    from kfp_tabular.components.ingest_data.component import ingest_data
    from kfp_tabular.components.ingest_data.core import MIN_ROWS
    from kfp_tabular.pipelines.tabular_training import tabular_training

    assert inspect.signature(ingest_data.python_func).parameters["min_rows"].default == MIN_ROWS
    assert tabular_training.component_spec.inputs["min_rows"].default == MIN_ROWS


def test_no_known_gaps():
    assert not KNOWN_GAPS
