"""The exported SavedModel as TF Serving sees it: signature file, warmup, gRPC / REST requests, op allowlist,
and the export's failure modes (unsupported families, refit, parity failure, datetime columns)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.errors import DataValidationError, ExportParityError, UnsupportedModelError

FORBIDDEN_OPS = {"ReadFile", "WriteFile", "PyFunc", "EagerPyFunc", "PyFuncStateless", "MatchingFiles",
                 "DecodeJSONExample", "Print", "PrintV2", "Save", "SaveV2", "RestoreV2"}


def _reference(predictor_dir, task: str, frame: pd.DataFrame, model: str | None = None) -> dict:
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(str(predictor_dir(task)), verbosity=0)
    if task == "regression":
        return {"prediction": predictor.predict(frame, model=model).to_numpy()}
    return {"probabilities": predictor.predict_proba(frame, model=model).to_numpy(),
            "label": predictor.predict(frame, model=model).astype(str).to_numpy()}


def _check(outputs: dict, reference: dict) -> None:
    for key, expected in reference.items():
        got = np.asarray(outputs[key])
        if key == "label":
            assert np.array_equal(got.astype(str), expected)
        else:
            assert np.max(np.abs(got.astype(np.float64) - expected)) <= 1e-6 * max(1.0, np.abs(expected).max())


def test_component_interface_and_cheap_import() -> None:
    import subprocess
    import sys

    from kfp_tabular.components.export_savedmodel.component import export_savedmodel

    spec = export_savedmodel.component_spec
    assert set(spec.inputs) == {"model", "test_data", "refit_ensemble"}
    assert set(spec.outputs) == {"savedmodel", "parity_report", "parity_metrics"}
    code = ("import sys, kfp_tabular.components.export_savedmodel.component as c; "
            "print(sorted(m for m in ('tensorflow', 'autogluon', 'pandas', 'sklearn') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_signature_file_names_every_column_and_the_classes(exported) -> None:
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    result, savedmodel = exported("binary")
    signature = read_signature(savedmodel)
    by_column = signature.by_column
    assert by_column["num a"].name == "num_a" and by_column["num a"].dtype == "float64"
    assert by_column["int_c"].dtype == "float64" and by_column["cat_d"].dtype == "string"
    assert by_column["bool_f"].dtype == "string"
    assert by_column["const_g"].used is False  # constant column: accepted, ignored
    assert signature.class_labels == ("no", "yes")
    assert result.metadata["inputs"]["num_a"] == {"column": "num a", "dtype": "float64", "used": True}
    assert set(result.metadata["outputs"]) == {"probabilities", "label"}
    assert json.loads((savedmodel / "assets.extra" / "kfp_tabular_signature.json").read_text())["label"] == "label"


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_graph_uses_only_allowed_standard_ops(exported, task: str) -> None:
    from kfp_tabular.components.export_savedmodel.core import ALLOWED_OP_TYPES

    result, _ = exported(task)
    op_types = set(result.metadata["op_types"])
    assert op_types <= ALLOWED_OP_TYPES, op_types - ALLOWED_OP_TYPES
    assert not op_types & FORBIDDEN_OPS
    assert "LookupTableFindV2" in op_types  # categories go through hash tables (tf2onnx: CategoryMapper)


def test_warmup_file_parses_back_into_predict_requests(exported, predictor_dir, test_split) -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.warmup import read_warmup, request_to_tensors

    _, savedmodel = exported("binary")
    requests = read_warmup(savedmodel)
    assert len(requests) == 6  # five single rows and one batch
    assert all(r.model_spec.signature_name == "serving_default" for r in requests)
    function = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    outputs = {k: v.numpy() for k, v in function(**request_to_tensors(requests[-1])).items()}
    frame = pd.read_parquet(test_split("binary")).drop(columns=["label"]).head(5)
    _check(outputs, _reference(predictor_dir, "binary", frame))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_grpc_predict_request_gives_autogluon_answers(exported, predictor_dir, test_split, task: str) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature
    from kfp_tabular.components.export_savedmodel.warmup import predict_request, request_to_tensors

    _, savedmodel = exported(task)
    signature = read_signature(savedmodel)
    frame = pd.read_parquet(test_split(task)).drop(columns=["label"])
    wire = predict_request(frame_to_inputs(frame, signature), signature).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(wire)  # what the server receives
    function = tf.saved_model.load(str(savedmodel)).signatures[request.model_spec.signature_name]
    outputs = {k: v.numpy() for k, v in function(**request_to_tensors(request)).items()}
    _check(outputs, _reference(predictor_dir, task, frame))


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_rest_rows_and_columns_give_autogluon_answers(exported, predictor_dir, test_split, task: str) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    _, savedmodel = exported(task)
    frame = pd.read_parquet(test_split(task))
    features = frame.drop(columns=["label"])
    reference = _reference(predictor_dir, task, features)
    # Row format with original column names and JSON nulls; the label column is ignored.
    rows = json.loads(frame.to_json(orient="records"))
    answer = predict_rows(savedmodel, {"instances": rows})
    outputs = {key: [row[key] for row in answer["predictions"]] for key in reference}
    _check(outputs, reference)
    # Columnar format with signature tensor names.
    names = {c.column: c.name for c in read_signature(savedmodel).inputs}
    columns = {names[c]: json.loads(features[c].to_json(orient="values")) for c in features.columns}
    _check(predict_rows(savedmodel, {"inputs": columns})["outputs"], reference)


def test_rest_errors_name_the_problem(exported) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    _, savedmodel = exported("binary")
    row = {"num a": 1.0, "num_b": 0.5, "int_c": 3, "cat_d": "red", "cat_e": "left", "bool_f": True,
           "const_g": "same", "skew_h": 0.1}
    assert predict_rows(savedmodel, {"instances": [row]})["predictions"][0]["label"] in ("yes", "no")
    with pytest.raises(DataValidationError, match="skew_h"):
        predict_rows(savedmodel, {"instances": [{k: v for k, v in row.items() if k != "skew_h"}]})
    with pytest.raises(DataValidationError, match="num_b"):
        predict_rows(savedmodel, {"instances": [{**row, "num_b": "abc"}]})
    with pytest.raises(DataValidationError, match="instances"):
        predict_rows(savedmodel, {"rows": [row]})


def test_unsupported_family_is_refused_with_both_ways_out(tmp_path, test_split, fit_small) -> None:
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    model_dir = fit_small(tmp_path / "ag", "binary", {"GBM": {"num_boost_round": 20}, "KNN": {}, "LR": {}})
    out = tmp_path / "out"
    with pytest.raises(UnsupportedModelError) as error:
        export(model_dir, test_split("binary"), out / "sm", ExportConfig(model_name="KNeighbors_BAG_L1"),
               out / "r.md")
    message = str(error.value)
    assert "KNeighbors_BAG_L1" in message and "KNN" in message
    assert "presets='deployable'" in message and "refit_ensemble=True" in message
    assert not (out / "sm").exists() and not (out / "r.md").exists()

    before = sorted(p.name for p in (model_dir / "models").iterdir())
    result = export(model_dir, test_split("binary"), out / "sm",
                    ExportConfig(model_name="KNeighbors_BAG_L1", refit_ensemble=True), out / "r.md")
    assert result.model_name == "WeightedEnsemble_L2Exportable"
    assert set(result.metadata["families"]) <= {"GBM", "LR"}
    assert result.metrics["label_agreement"] == 1.0 and result.metrics["parity_max_abs_diff"] <= 1e-6
    assert result.metrics["refit_score_val_delta"] == pytest.approx(
        result.metrics["refit_score_val_new"] - result.metrics["refit_score_val_old"])
    assert "Refitted ensemble" in (out / "r.md").read_text()
    assert sorted(p.name for p in (model_dir / "models").iterdir()) == before  # input artifact untouched


def test_parity_failure_leaves_nothing_behind(predictor_dir, test_split, tmp_path, monkeypatch) -> None:
    from kfp_tabular.components.export_savedmodel import families
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    compile_members = families.compile_members

    def skewed(*args, **kwargs):  # a deliberately wrong weight: the gate must catch it
        members = compile_members(*args, **kwargs)
        members[0].weight *= 1.01
        return members

    monkeypatch.setattr(families, "compile_members", skewed)
    with pytest.raises(ExportParityError) as error:
        export(predictor_dir("binary"), test_split("binary"), tmp_path / "sm", ExportConfig(), tmp_path / "r.md")
    assert "Worst row" in str(error.value) and "Worst member" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_datetime_column_is_refused_by_name(tmp_path, frame_factory) -> None:
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    frame = frame_factory(400, 0, "binary")
    frame["signup"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(400), unit="D")
    frame.iloc[:150].to_parquet(tmp_path / "test.parquet")
    TabularPredictor("label", path=str(tmp_path / "ag"), verbosity=0).fit(
        frame, hyperparameters={"GBM": {"num_boost_round": 10}}, num_cpus=1)
    with pytest.raises(UnsupportedModelError, match="signup"):
        export(tmp_path / "ag", tmp_path / "test.parquet", tmp_path / "sm", ExportConfig(), tmp_path / "r.md")
    assert not (tmp_path / "sm").exists()
