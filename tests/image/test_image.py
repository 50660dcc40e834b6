"""The built image runs the compiled pipeline's own steps, as the KFP launcher would start them.

The pipeline is compiled for the image under test; the ``ingest_data`` and ``train_autogluon`` executors' exact
``command`` + ``args`` run inside it (``buildah run``, network off) with the executor input that kfp builds for a
task (kfp.local's own functions: ``{{$}}`` becomes the ExecutorInput JSON), on the bundled penguins table. The
outputs are then read on the host: Parquet splits, metrics, the AutoGluon predictor (loaded and scored here).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import IMAGE, Container
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parents[2]
UID = 1000


# ---- the image as configured ---------------------------------------------------------------------------------


def test_image_runs_as_uid_1000_by_default(container: Container, image_config: dict):
    assert image_config["User"].split(":")[0] == str(UID)
    done = container.run(["sh", "-c", "id -u; id -g; echo $HOME; touch $HOME/probe && echo writable"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(UID), str(UID), "/home/kfp", "writable"]


def test_image_labels_carry_the_package_version(image_config: dict):
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert image_config["Labels"]["org.opencontainers.image.version"] == version


def test_cli_help_works(container: Container, image_config: dict):
    done = container.run(image_config["Cmd"])  # the image's CMD is `kfp-tabular --help`
    assert done.returncode == 0, done.stderr
    for command in ("run", "compile", "submit", "serve"):
        assert re.search(rf"\b{command}\b", done.stdout), done.stdout


def test_pip_check_is_clean(container: Container):
    done = container.run(["pip", "check"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No broken requirements found" in done.stdout


def test_installed_distributions_are_exactly_the_lock_plus_the_project(container: Container):
    done = container.run(["pip", "list", "--format=json"])
    assert done.returncode == 0, done.stderr
    installed = {_normalized(d["name"]): d["version"] for d in json.loads(done.stdout)}
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            locked[_normalized(name)] = version
    assert installed.pop("kfp-tabular")
    installed.pop("pip")  # the venv's own installer, not part of the lock
    assert installed == locked


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- lean: nothing of the build or the repository left in the runtime image ---------------------------------

COMPILERS = {"gcc", "g++", "cc", "c++", "clang", "clang++", "gfortran", "make", "ld", "as", "cpp", "rustc", "go"}


def test_runtime_filesystem_has_no_compilers_sources_caches_or_notebooks(container: Container):
    root = container.root
    found: list[str] = []
    for folder in ("usr/bin", "usr/local/bin", "bin", "opt/venv/bin"):
        for entry in (root / folder).iterdir() if (root / folder).is_dir() else ():
            base = re.sub(r"-\d+(\.\d+)*$", "", entry.name)  # gcc-12 -> gcc
            base = re.sub(r"^x86_64-linux-gnu-", "", base)
            if base in COMPILERS:
                found.append(f"compiler /{folder}/{entry.name}")
    for path in ("src", "opt/venv/src", "tests", "notebooks", "home/kfp/tests", "home/kfp/notebooks"):
        if (root / path).exists():
            found.append(f"build or repository folder /{path}")
    for cache in ("root/.cache", "home/kfp/.cache", "root/.cache/pip", "tmp/pip-*"):
        found += [f"cache /{p.relative_to(root)}" for p in root.glob(cache)]
    found += [f"apt list /{p.relative_to(root)}" for p in (root / "var/lib/apt/lists").glob("*_*")]
    found += [f"downloaded package /{p.relative_to(root)}" for p in (root / "var/cache/apt/archives").glob("*.deb")]
    for top in ("opt", "home", "root", "usr/local", "srv"):
        found += [f"notebook /{p.relative_to(root)}" for p in (root / top).rglob("*.ipynb")]
    # The project's own tests must not have been installed as a package either.
    site = next((root / "opt/venv/lib").glob("python3.*/site-packages"))
    found += [f"project tests /{p.relative_to(root)}" for p in site.glob("kfp_tabular/**/tests") if p.is_dir()]
    assert not found, "\n".join(found)


def test_image_size_is_reported(container: Container, image_config: dict):
    size = subprocess.run(["du", "-sm", "--one-file-system", str(container.root)], capture_output=True, text=True)
    venv = subprocess.run(["du", "-sm", str(container.root / "opt/venv")], capture_output=True, text=True)
    mib, venv_mib = int(size.stdout.split()[0]), int(venv.stdout.split()[0])
    print(f"\nimage {IMAGE}: root filesystem {mib} MiB, of which /opt/venv {venv_mib} MiB", file=sys.stderr)
    # The dependency set (TensorFlow, AutoGluon with three boosters, SHAP) is ~2.5 GB installed; a jump past this
    # bound means the build dragged in something else (a second framework, CUDA libraries, a copied cache).
    assert mib < 4000, f"{mib} MiB"


# ---- the compiled pipeline's steps, run inside the image ----------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The pipeline compiled by the CLI for the image under test (first YAML document: the PipelineSpec)."""
    out = tmp_path_factory.mktemp("compiled") / "p.yaml"
    cli = Path(sys.executable).parent / "kfp-tabular"
    done = subprocess.run([str(cli), "compile", "--image", IMAGE, "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return next(yaml.safe_load_all(out.read_text()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline root, shared with the container at the same path and owned by the image's user."""
    root = tmp_path_factory.mktemp("pipeline_root")
    os.chown(root, UID, UID)
    return root


def _run_step(
    spec: dict[str, Any], component: str, arguments: dict[str, Any], root: Path, container: Container,
    timeout: float,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    """Run one task of the compiled pipeline inside the image; return the process, executor_output.json, task root.

    The executor input and the placeholder substitution are kfp.local's own (the same message the v2 launcher
    writes: inputs.parameterValues / artifacts, outputs.artifacts with URIs under the task root, outputFile).
    """
    from kfp.local import executor_input_utils, placeholder_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    component_spec = json_format.ParseDict(spec["components"][component], pipeline_spec_pb2.ComponentSpec())
    executor = spec["deploymentSpec"]["executors"][component_spec.executor_label]["container"]
    assert executor["image"] == IMAGE
    full_command = [*executor["command"], *executor["args"]]
    assert not [part for part in full_command if re.search(r"pip\s+install", part)], "the step installs at run time"

    pipeline_name = executor_input_utils.get_local_pipeline_resource_name(spec["pipelineInfo"]["name"])
    task_name = executor_input_utils.get_local_task_resource_name(component)
    task_root = Path(executor_input_utils.construct_local_task_root(str(root), pipeline_name, task_name))
    task_root.mkdir(parents=True)
    for folder in (task_root.parent, task_root):
        os.chown(folder, UID, UID)
    executor_input = executor_input_utils.construct_executor_input(
        component_spec, arguments, str(task_root), block_input_artifact=False
    )
    command = placeholder_utils.replace_placeholders(
        full_command=full_command,
        executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component_spec),
        pipeline_resource_name=pipeline_name,
        task_resource_name=task_name,
        pipeline_root=str(root),
        unique_pipeline_id=placeholder_utils.make_random_id(),
    )
    assert "{{$}}" not in command
    done = container.run(command, volumes=(root,), timeout=timeout)
    output_file = task_root / "executor_output.json"
    output = json.loads(output_file.read_text()) if output_file.exists() else {}
    return done, output, task_root


def _artifact(output: dict[str, Any], name: str) -> dict[str, Any]:
    (artifact,) = output["artifacts"][name]["artifacts"]
    return artifact


def _venv_state(container: Container) -> tuple[str, set[str]]:
    """``pip freeze --all`` and every file name under site-packages outside ``__pycache__``."""
    freeze = container.run(["pip", "freeze", "--all"])
    assert freeze.returncode == 0, freeze.stderr
    site = next((container.root / "opt/venv/lib").glob("python3.*/site-packages"))
    files = {str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts}
    return freeze.stdout, files


@pytest.fixture(scope="module")
def venv_before(container: Container) -> tuple[str, set[str]]:
    return _venv_state(container)


@pytest.fixture(scope="module")
def ingest_step(pipeline_spec, runs, container, venv_before):
    arguments = {"source_uri": "builtin://penguins", "label": "species", "seed": 7}
    return _run_step(pipeline_spec, "comp-ingest-data", arguments, runs, container, timeout=300)


def test_ingest_data_step_writes_the_splits_in_the_image(ingest_step):
    import pandas as pd

    done, output, task_root = ingest_step
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    rows = {}
    for split in ("train_data", "validation_data", "test_data"):
        artifact = _artifact(output, split)
        path = Path(artifact["uri"])
        assert path.is_relative_to(task_root) and path.is_file(), artifact
        assert path.stat().st_uid == UID, "written by the image's user"
        frame = pd.read_parquet(path)
        assert artifact["metadata"]["rows"] == len(frame) > 0
        assert "species" in frame.columns
        rows[split] = len(frame)
    # 344 penguins, none without a species: every row lands in exactly one split, test ~20 %, validation ~15 %.
    assert sum(rows.values()) == 344
    assert abs(rows["test_data"] - 0.2 * 344) <= 2 and abs(rows["validation_data"] - 0.15 * 344) <= 2
    metrics = _artifact(output, "metrics")
    assert metrics["metadata"]["rows"] == 344
    profile = Path(_artifact(output, "profile")["uri"]).read_text()
    assert "species" in profile and "bill_length_mm" in profile


@pytest.fixture(scope="module")
def train_step(pipeline_spec, runs, container, ingest_step):
    from kfp import dsl

    _, ingest_output, _ = ingest_step
    # As the launcher hands a downstream task its upstream outputs: the artifacts (URI + metadata) that
    # ingest_data's executor_output.json reported.
    def upstream(name: str) -> dsl.Dataset:
        artifact = _artifact(ingest_output, name)
        return dsl.Dataset(name=name, uri=artifact["uri"], metadata=artifact["metadata"])

    arguments = {
        "train_data": upstream("train_data"),
        "validation_data": upstream("validation_data"),
        "label": "species",
        "time_limit_s": 120,
        "hyperparameters": json.dumps({"GBM": {"num_boost_round": 30}}),
    }
    return _run_step(pipeline_spec, "comp-train-autogluon", arguments, runs, container, timeout=900)


def test_train_autogluon_step_fits_a_model_in_the_image(train_step, ingest_step):
    import pandas as pd
    from autogluon.tabular import TabularPredictor

    done, output, task_root = train_step
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    model = _artifact(output, "model")
    # hyperparameters named only GBM: LightGBM fits, and the best model is it or an ensemble over it.
    assert re.match(r"(LightGBM|WeightedEnsemble)", model["metadata"]["best_model"]), model["metadata"]
    assert model["metadata"]["problem_type"] == "multiclass"
    model_dir = Path(model["uri"])
    assert model_dir.is_relative_to(task_root) and (model_dir / "predictor.pkl").is_file()
    metrics = _artifact(output, "metrics")["metadata"]
    assert 0.8 < metrics["validation_score"] <= 1.0
    leaderboard = Path(_artifact(output, "leaderboard")["uri"]).read_text()
    assert model["metadata"]["best_model"] in leaderboard and "LightGBM" in leaderboard

    # The predictor fitted inside the image loads and predicts here (same pinned AutoGluon) on the held-out split.
    test_frame = pd.read_parquet(_artifact(ingest_step[1], "test_data")["uri"])
    predictor = TabularPredictor.load(str(model_dir), require_py_version_match=False)
    accuracy = (predictor.predict(test_frame.drop(columns="species")) == test_frame["species"]).mean()
    assert accuracy > 0.9, accuracy


def test_steps_installed_nothing_at_run_time(container: Container, venv_before: tuple[str, set[str]], train_step):
    """After both steps ran in this container (network off), the venv holds exactly what the build installed."""
    assert train_step[0].returncode == 0, "the steps must have run for this to mean anything"
    assert _venv_state(container) == venv_before
