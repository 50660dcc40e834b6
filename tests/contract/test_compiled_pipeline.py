"""Contract tests on the compiled IR YAML: what a Kubeflow cluster will actually receive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfp_tabular.components._image import IMAGE

EXPECTED_DEFAULTS = {
    "source_uri": "builtin://penguins",
    "label": "species",
    "problem_type": "auto",
    "presets": "deployable",
    "time_limit_s": 120,
    "thresholds": "",
    "baseline_metrics": "",
    "refit_ensemble": False,
    "s3_secret_name": "kfp-tabular-s3",
}
SECRET_WORDS = ("password", "secret_key", "access_key", "token", "credential")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    from kfp_tabular.pipelines.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "tabular_training.yaml")


@pytest.fixture(scope="module")
def documents(compiled: Path) -> list[dict]:
    return list(yaml.safe_load_all(compiled.read_text()))


def test_yaml_parses_into_pipeline_and_platform_spec_protos(documents):
    assert len(documents) == 2
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "tabular-training"
    platform = json_format.ParseDict(documents[1], pipeline_spec_pb2.PlatformSpec())
    assert "kubernetes" in platform.platforms


def test_yaml_loads_back_as_a_reusable_component(compiled):
    from kfp import components

    loaded = components.load_component_from_file(str(compiled))
    assert loaded.name == "tabular-training"
    assert set(EXPECTED_DEFAULTS) <= set(loaded.component_spec.inputs)


def test_every_executor_runs_the_single_image_without_installing_packages(documents):
    executors = documents[0]["deploymentSpec"]["executors"]
    assert len(executors) == 5
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE, name
        script = " ".join(container["command"])
        assert "pip install" not in script, f"{name} installs packages at run time"
        assert "ensurepip" not in script, name


def test_parameters_and_defaults_are_as_documented(documents):
    inputs = documents[0]["root"]["inputDefinitions"]["parameters"]
    for name, default in EXPECTED_DEFAULTS.items():
        assert inputs[name]["defaultValue"] == default, name
    assert not [p for p in inputs if any(word in p.lower() for word in SECRET_WORDS)]


def test_dag_order_and_blessing_gate(documents):
    root_tasks = documents[0]["root"]["dag"]["tasks"]
    assert root_tasks["train-autogluon"]["dependentTasks"] == ["ingest-data"]
    assert sorted(root_tasks["evaluate-model"]["dependentTasks"]) == ["ingest-data", "train-autogluon"]
    assert "evaluate-model" not in root_tasks["explain-shap"].get("dependentTasks", [])
    gate = next(t for t in root_tasks.values() if "triggerPolicy" in t)
    assert "evaluate-model-Output" in gate["triggerPolicy"]["condition"]
    branch = documents[0]["components"][gate["componentRef"]["name"]]
    assert "export-savedmodel" in branch["dag"]["tasks"]


def test_s3_credentials_come_only_from_a_kubernetes_secret(documents):
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    ingest = executors["exec-ingest-data"]
    (secret,) = ingest["secretAsEnv"]
    assert secret["secretNameParameter"]["componentInputParameter"] == "s3_secret_name"
    assert {m["envVar"] for m in secret["keyToEnv"]} == {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert secret["optional"] is True


def test_every_step_has_cpu_and_memory_limits(documents):
    for name, executor in documents[0]["deploymentSpec"]["executors"].items():
        resources = executor["container"]["resources"]
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, name


def test_cli_compile_injects_the_image_reference(tmp_path):
    image = "registry.example/kfp-tabular@sha256:" + "a" * 64
    output = tmp_path / "pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if k != "KFP_TABULAR_IMAGE"}
    subprocess.run(
        [sys.executable, "-m", "kfp_tabular.cli", "compile", "--image", image, "--output", str(output)],
        check=True, env=env, capture_output=True,
    )
    spec = next(yaml.safe_load_all(output.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {image}


def test_default_image_is_tagged_with_the_package_version():
    import tomllib

    from kfp_tabular.components._image import DEFAULT_IMAGE

    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert DEFAULT_IMAGE.endswith(f"/kfp-tabular:{version}")
    assert json.dumps(DEFAULT_IMAGE)  # a plain string reference
