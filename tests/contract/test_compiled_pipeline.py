"""Contract tests on the compiled IR YAML: what a Kubeflow cluster will actually receive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfp_tabular.components._image import GPU_IMAGE, IMAGE

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
    "encoding": "utf-8",
    "drop_columns": "",
    "bad_values": "error",
    "min_rows": 50,
    "validation_fraction": 0.15,
    "test_fraction": 0.2,
    "explain_max_rows": 500,
    "explain_rows_per_shard": 2000,
    "allow_version_skew": False,
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
    assert len(executors) == 10  # optimize_tensorrt included (GPU stage), explain as plan + shard + merge
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == (GPU_IMAGE if name == "exec-optimize-tensorrt" else IMAGE), name
        script = " ".join(container["command"])
        assert "pip install" not in script, f"{name} installs packages at run time"
        assert "ensurepip" not in script, name


def test_parameters_and_defaults_are_as_documented(documents):
    inputs = documents[0]["root"]["inputDefinitions"]["parameters"]
    for name, default in EXPECTED_DEFAULTS.items():
        assert inputs[name]["defaultValue"] == default, name
    assert not [p for p in inputs if any(word in p.lower() for word in SECRET_WORDS)]


def test_every_cli_run_option_is_a_pipeline_parameter(documents):
    # a fix that an error message advises (--bad-values, --drop-columns, --encoding, --refit-ensemble...) must
    # reach the pipeline, not stop at the CLI
    from kfp_tabular.cli import _run_arguments, build_parser

    args = build_parser().parse_args([
        "run", "--data", "x.csv", "--label", "y", "--problem-type", "binary", "--presets", "deployable",
        "--hyperparameters", "{}", "--thresholds", "{}", "--baseline-metrics", "{}", "--seed", "1",
        "--file-format", "csv", "--encoding", "latin-1", "--drop-columns", "id", "--bad-values", "missing",
        "--eval-metric", "accuracy", "--refit-ensemble", "--min-rows", "20", "--validation-fraction", "0.1",
        "--test-fraction", "0.3", "--explain-method", "kernel", "--explain-background-size", "20",
        "--explain-max-rows", "30",
    ])
    arguments = _run_arguments(args)
    inputs = documents[0]["root"]["inputDefinitions"]["parameters"]
    assert set(arguments) <= set(inputs), set(arguments) - set(inputs)
    assert arguments["bad_values"] == "missing" and arguments["refit_ensemble"] is True
    assert arguments["min_rows"] == 20 and arguments["test_fraction"] == 0.3 and arguments["explain_max_rows"] == 30


def test_dag_order_and_blessing_gate(documents):
    root_tasks = documents[0]["root"]["dag"]["tasks"]
    assert root_tasks["train-autogluon"]["dependentTasks"] == ["ingest-data"]
    assert sorted(root_tasks["evaluate-model"]["dependentTasks"]) == ["ingest-data", "train-autogluon"]
    assert "evaluate-model" not in root_tasks["explain-shap"].get("dependentTasks", [])
    gate = next(t for t in root_tasks.values() if "triggerPolicy" in t)
    assert "evaluate-model-Output" in gate["triggerPolicy"]["condition"]
    branch = documents[0]["components"][gate["componentRef"]["name"]]
    assert "export-savedmodel" in branch["dag"]["tasks"]


def test_explanation_fans_out_over_shards_and_merges_them(documents):
    spec = documents[0]
    root_tasks = spec["root"]["dag"]["tasks"]
    name, loop = next((n, t) for n, t in root_tasks.items() if "parameterIterator" in t)
    # the loop iterates over plan_explain_shards' list, at most 16 pods at once
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-explain-shards-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 16
    plan = root_tasks["plan-explain-shards"]
    assert plan["inputs"]["parameters"]["rows_per_shard"] == {"componentInputParameter": "explain_rows_per_shard"}
    assert plan["inputs"]["parameters"]["max_rows"] == {"componentInputParameter": "explain_max_rows"}
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    shard = body["explain-shap-shard"]
    assert shard["inputs"]["parameters"]["shard"]["componentInputParameter"].endswith("-loop-item")
    # the merge collects every iteration's output
    merge = root_tasks["explain-shap"]
    collected = merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert collected["producerTask"] == name
    assert collected["outputArtifactKey"] in spec["components"][loop["componentRef"]["name"]]["dag"]["outputs"][
        "artifacts"]
    executors = spec["deploymentSpec"]["executors"]
    env = {e["name"]: e["value"] for e in executors["exec-explain-shap-shard"]["container"]["env"]}
    assert env["NUMBA_NUM_THREADS"] == "2"
    assert executors["exec-explain-shap-shard"]["container"]["resources"]["cpuLimit"] == 2


def test_publish_runs_only_for_a_blessed_model_and_a_repository(documents):
    spec = documents[0]
    root_tasks = spec["root"]["dag"]["tasks"]
    gate = next(t for t in root_tasks.values() if "triggerPolicy" in t)
    blessed = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    # the blessed branch also holds the optional GPU stage's condition (optimize_gpu)
    inner = next(t for t in blessed.values() if "model_repository_uri" in str(t.get("triggerPolicy", "")))
    assert "model_repository_uri" in inner["triggerPolicy"]["condition"]
    publish = spec["components"][inner["componentRef"]["name"]]["dag"]["tasks"]["publish-model"]
    artifacts = publish["inputs"]["artifacts"]
    # inside a condition branch, artifacts arrive as channels named after their producer and output
    assert artifacts["savedmodel"]["componentInputArtifact"] == "pipelinechannel--export-savedmodel-savedmodel"
    assert artifacts["train_data"]["componentInputArtifact"] == "pipelinechannel--ingest-data-train_data"
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-publish-model"]["container"]
           ["env"]}
    assert env["KFP_TABULAR_IMAGE"] == IMAGE  # the lineage names the image the step runs in
    assert spec["root"]["inputDefinitions"]["parameters"]["model_repository_uri"]["defaultValue"] == ""


def test_deploy_runs_only_when_asked_after_publish(documents):
    spec = documents[0]
    assert spec["root"]["inputDefinitions"]["parameters"]["deploy"]["defaultValue"] is False

    def find(component: dict, task_name: str) -> list[str]:
        """The trigger conditions on the way from ``component`` down to ``task_name``."""
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            if name == task_name:
                return []
            child = spec["components"].get(task["componentRef"]["name"], {})
            found = find(child, task_name)
            if found is not None:
                return [task.get("triggerPolicy", {}).get("condition", ""), *found]
        return None

    conditions = [c for c in find(spec["root"], "deploy-tf-serving") if c]
    assert len(conditions) == 3
    assert "evaluate-model-Output" in conditions[0] and "model_repository_uri" in conditions[1]
    assert "deploy" in conditions[2]


def s3_variables_read() -> set[str]:
    """Every environment variable ``components/_shared/s3.py`` reads, found in its source."""
    from kfp_tabular.components._shared import s3

    source = Path(s3.__file__).read_text()
    found = set(re.findall(r"os\.environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']", source))
    return found | set(s3.S3_REQUIRED_ENV)


def _secret_env(documents) -> dict[str, list]:
    """Executor name → its ``secret_as_env`` entries, parsed into the kfp-kubernetes protos."""
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s

    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {name: list(json_format.ParseDict(config, k8s.KubernetesExecutorConfig()).secret_as_env)
            for name, config in executors.items()}


@pytest.mark.parametrize("executor", ["exec-ingest-data", "exec-publish-model", "exec-deploy-tf-serving"])
def test_s3_credentials_come_only_from_a_kubernetes_secret(documents, executor):
    secrets = _secret_env(documents)[executor]
    assert secrets
    for secret in secrets:
        # the pipeline parameter, passed into condition branches as a channel
        assert secret.secret_name_parameter.component_input_parameter in (
            "s3_secret_name", "pipelinechannel--s3_secret_name")
        # Optional, so builtin:// and volume paths run without the Secret, and a Secret that lacks the optional
        # keys still starts the pod (the driver copies it onto every secretKeyRef, which then may be absent).
        assert secret.HasField("optional") and secret.optional is True
        assert all(m.secret_key == m.env_var for m in secret.key_to_env)
    wired = {m.env_var for secret in secrets for m in secret.key_to_env}
    # SSL_CERT_FILE is a path to a CA bundle inside the container, not a setting a Secret value can carry.
    expected = s3_variables_read() - {"SSL_CERT_FILE"}
    assert {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_USE_HTTPS", "AWS_REGION"} <= expected
    assert expected <= wired, f"read by _shared/s3.py but not wired from the Secret: {sorted(expected - wired)}"


def test_no_credential_is_a_pipeline_parameter_or_a_plain_value(documents):
    names = {name.lower() for name in s3_variables_read()}
    spec = documents[0]
    inputs = set(spec["root"]["inputDefinitions"]["parameters"])
    for component in spec["components"].values():
        inputs |= set(component.get("inputDefinitions", {}).get("parameters", {}))
    assert not {p for p in inputs if p.lower() in names or any(word in p.lower() for word in SECRET_WORDS)}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        env = {variable["name"] for variable in executor["container"].get("env", [])}
        assert not {v for v in env if v.lower() in names}, f"{name} sets an S3 variable as a plain value"


def test_every_step_has_cpu_and_memory_limits(documents):
    for name, executor in documents[0]["deploymentSpec"]["executors"].items():
        resources = executor["container"]["resources"]
        assert resources["cpuLimit"] > 0 and resources["memoryLimit"] > 0, name


def test_cli_compile_injects_the_image_reference(tmp_path):
    image = "registry.example/kfp-tabular@sha256:" + "a" * 64
    gpu_image = "registry.example/kfp-tabular-gpu@sha256:" + "b" * 64
    output = tmp_path / "pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if k not in {"KFP_TABULAR_IMAGE", "KFP_TABULAR_GPU_IMAGE"}}
    subprocess.run(
        [sys.executable, "-m", "kfp_tabular.cli", "compile", "--image", image, "--gpu-image", gpu_image,
         "--output", str(output)],
        check=True, env=env, capture_output=True,
    )
    spec = next(yaml.safe_load_all(output.read_text()))
    images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
    assert images.pop("exec-optimize-tensorrt") == gpu_image
    assert set(images.values()) == {image}


def test_default_image_is_tagged_with_the_package_version():
    import tomllib

    from kfp_tabular.components._image import DEFAULT_IMAGE

    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert DEFAULT_IMAGE.endswith(f"/kfp-tabular:{version}")
    assert json.dumps(DEFAULT_IMAGE)  # a plain string reference


def test_optimize_gpu_stage_gets_a_gpu_and_a_toleration(documents):
    inputs = documents[0]["root"]["inputDefinitions"]["parameters"]
    assert inputs["optimize_gpu"]["defaultValue"] is False
    executor = documents[0]["deploymentSpec"]["executors"]["exec-optimize-tensorrt"]
    accelerator = executor["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1
    # It runs in the Dockerfile's gpu target (TensorRT); every other step in the CPU image.
    assert executor["container"]["image"] == GPU_IMAGE and GPU_IMAGE.endswith("-gpu")
    others = {e["container"]["image"] for name, e in documents[0]["deploymentSpec"]["executors"].items()
              if name != "exec-optimize-tensorrt"}
    assert others == {IMAGE}
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-optimize-tensorrt"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform["tolerations"]
    # Only after the export of a blessed model, and only when asked.
    components = documents[0]["components"]
    gate = next(c for c in components.values() if "optimize-tensorrt" in c.get("dag", {}).get("tasks", {}))
    assert gate is not None
    branch = next(c for c in components.values() if "export-savedmodel" in c.get("dag", {}).get("tasks", {}))
    condition = next(t for t in branch["dag"]["tasks"].values() if "optimize_gpu" in str(t.get("triggerPolicy")))
    assert "export-savedmodel" in condition.get("dependentTasks", [])

