"""The whole pipeline through kfp.local (real executor, real components, this Python environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kfp_tabular.pipelines.local_run import collect_task_outputs, run_pipeline_locally

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[str, Path]:
    """``kfp-tabular run --serve`` on the bundled penguins, as ``make demo`` types it."""
    output = tmp_path_factory.mktemp("local_outputs")
    result = subprocess.run(
        [sys.executable, "-m", "kfp_tabular.cli", "run", "--data", "builtin://penguins", "--label", "species",
         "--time-limit", "40", "--output", str(output), "--serve"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    (run_folder,) = output.glob("tabular-training-*/")
    return result.stdout, run_folder, result.stderr


def test_every_step_ran_and_left_its_artifacts(cli_run):
    _, run_folder, _ = cli_run
    tasks = collect_task_outputs(run_folder)
    assert {"ingest-data", "train-autogluon", "evaluate-model", "explain-shap", "export-savedmodel"} <= set(tasks)
    for split in ("train_data", "validation_data", "test_data"):
        assert tasks["ingest-data"].path(split).is_file()
    assert (tasks["train-autogluon"].path("model") / "predictor.pkl").is_file()
    assert tasks["evaluate-model"].path("report").read_text().startswith("<!DOCTYPE html>")
    assert (tasks["export-savedmodel"].path("savedmodel") / "saved_model.pb").is_file()
    assert tasks["explain-shap"].path("shap_values").exists()


def test_penguins_model_is_accurate_blessed_and_exported_at_parity(cli_run):
    _, run_folder, _ = cli_run
    tasks = collect_task_outputs(run_folder)
    metrics = tasks["evaluate-model"].metadata("metrics")
    assert metrics["accuracy"] > 0.9
    assert tasks["evaluate-model"].parameters["Output"] is True  # the blessing gate's return value
    assert tasks["export-savedmodel"].metadata("parity_metrics")["parity_max_abs_diff"] <= 1e-6
    confusion = tasks["evaluate-model"].metadata("classification_metrics")["confusionMatrix"]
    assert [a["displayName"] for a in confusion["annotationSpecs"]] == ["Adelie", "Chinstrap", "Gentoo"]


def test_summary_tells_the_user_what_happened(cli_run):
    stdout, run_folder, _ = cli_run
    for heading in ("DATA", "LEADERBOARD", "TEST METRICS", "BLESSED: yes", "EXPORT", "EXPLANATION", "ARTIFACTS"):
        assert heading in stdout, heading
    assert "344 rows" in stdout
    assert str(run_folder) in stdout


def test_the_blessed_model_is_published_and_answers_through_the_local_server(cli_run):
    stdout, run_folder, _ = cli_run
    tasks = collect_task_outputs(run_folder)
    published = tasks["publish-model"].metadata("published_model")
    repository = run_folder.parent / "models" / "tabular"
    assert published["uri"] == f"{repository}/1" and int(published["version"]) == 1
    manifest = json.loads((repository / "1" / "manifest.json").read_text())
    assert manifest["root_digest"] == published["root_digest"] and "saved_model.pb" in manifest["files"]
    served = stdout.split("SERVED (", 1)[1]
    assert "/v1/models/tabular:predict" in served
    answer = json.loads(served.split("-> ", 1)[1].splitlines()[0])
    (prediction,) = answer["predictions"]
    assert prediction["label"] in ("Adelie", "Chinstrap", "Gentoo")
    assert abs(sum(prediction["probabilities"]) - 1.0) < 1e-5


def test_an_unmet_threshold_stops_the_model_before_export(tmp_path):
    import builtins

    print_before = builtins.print
    run = run_pipeline_locally(
        {
            "source_uri": "builtin://penguins",
            "label": "species",
            "time_limit_s": 20,
            "hyperparameters": json.dumps({"GBM": {"num_boost_round": 10}}),
            "thresholds": json.dumps({"accuracy": 1.01}),
            "explain_max_rows": 20,
            "explain_rows_per_shard": 8,
        },
        tmp_path,
    )
    assert run.blessed is False
    assert "accuracy" in run.blessing_reason
    assert "export-savedmodel" not in run.tasks
    # kfp.local runs the ParallelFor: 20 rows in shards of at most 8 are three shard steps, merged by explain-shap
    shards = sorted(name for name in run.tasks if name.startswith("explain-shap-shard"))
    assert shards == ["explain-shap-shard[0]", "explain-shap-shard[1]", "explain-shap-shard[2]"]
    assert [run.tasks[name].metadata("explanation")["rows"] for name in shards] == [6, 7, 7]
    merged = run.tasks["explain-shap"].metadata("metrics")
    assert merged["rows_explained"] == 20 and merged["shards"] == 3
    assert len(pd.read_parquet(run.tasks["explain-shap"].path("shap_values"))["row_id"].unique()) == 20
    # kfp.local indents a step's output by swapping builtins.print, from two threads at once in a ParallelFor:
    # a lost swap would indent every later print of this process
    assert builtins.print is print_before


def test_cli_predict_answers_a_tf_serving_rest_request_with_the_export(cli_run, tmp_path):
    _, run_folder, _ = cli_run
    savedmodel = collect_task_outputs(run_folder)["export-savedmodel"].path("savedmodel")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"instances": [
        {"island": "Biscoe", "bill_length_mm": 48.6, "bill_depth_mm": 16.0, "flipper_length_mm": 230.0,
         "body_mass_g": 5800.0, "sex": "male", "year": 2009},
        {"island": "Torgersen", "bill_length_mm": 39.1, "bill_depth_mm": 18.7, "flipper_length_mm": 181.0,
         "body_mass_g": 3750.0, "sex": "female", "year": 2007},
    ]}))
    result = subprocess.run(
        [sys.executable, "-m", "kfp_tabular.cli", "predict", "--model", str(savedmodel), "--json", str(rows)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["label"] for p in predictions] == ["Gentoo", "Adelie"]
    for prediction in predictions:
        assert abs(sum(prediction["probabilities"]) - 1.0) < 1e-5


def test_the_served_prediction_is_not_buried_in_tensorflow_runtime_logs(cli_run):
    # The steps' logs go to the log file; serving the prediction loads TensorFlow in the CLI process itself, whose
    # C++ runtime logs (oneDNN, CPU features, CUDA probing) must not reach the terminal either.
    stdout, _, stderr = cli_run
    assert "SERVED (kfp-tabular serve" in stdout
    for noise in ("oneDNN custom operations", "cpu_feature_guard", "cuInit", "cudart_stub", "Not handling type"):
        assert noise not in stdout + stderr, noise
