"""optimize_tensorrt up to the TensorRT calls: config, refusal without a GPU, profile, Triton config, parity.

The parity check and the Triton config are fed by the real numeric ONNX graph of a real export, run through
onnxruntime on CPU (the stand-in for the engine, which needs TensorRT and a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from kfp_tabular.components.optimize_tensorrt import core
from kfp_tabular.errors import ConfigError


@pytest.mark.parametrize("bad", [{"precision": "int8"}, {"max_batch_size": 0}, {"max_batch_size": 2.5},
                                 {"model_name": "../x"}])
def test_config_refuses_bad_settings(bad) -> None:
    with pytest.raises(ConfigError):
        core.OptimizeConfig(**bad)


def test_profile_shapes() -> None:
    assert core.profile_shapes(1024) == (1, 64, 1024)
    assert core.profile_shapes(16) == (1, 16, 16)
    assert core.profile_shapes(1) == (1, 1, 1)
    with pytest.raises(ConfigError):
        core.profile_shapes(0)




def test_without_tensorrt_or_gpu_the_step_fails_at_once_and_writes_nothing(tmp_path) -> None:
    missing = core.missing_gpu_runtime()
    if not missing:
        pytest.skip("TensorRT and a GPU are here: the refusal cannot happen")
    output, report = tmp_path / "repo", tmp_path / "report.md"
    with pytest.raises(core.GpuUnavailableError) as error:
        # A path that does not exist: the refusal must come before anything is read.
        core.optimize(tmp_path / "no-such-savedmodel", tmp_path / "no-such.parquet", output, report,
                      core.OptimizeConfig())
    message = str(error.value)
    assert "TensorRT" in message and "GPU image" in message and "node with an NVIDIA GPU" in message
    assert all(part.split(" (")[0] in message for part in missing)
    assert not output.exists() and not report.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def converted(exported, tmp_path_factory):
    """(SavedModel folder, its numeric ONNX converted as the step does, the signature)."""
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    _, savedmodel = exported("binary")
    onnx_path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    core.convert_to_onnx(savedmodel, onnx_path)
    return savedmodel, onnx_path, read_signature(savedmodel)


def _onnxruntime(onnx_path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(None, feed), strict=True))


@pytest.mark.slow
def test_parity_check_on_onnxruntime_output_passes_and_catches_a_change(converted, test_split) -> None:
    savedmodel, onnx_path, signature = converted
    sent, encoded, _, refused = core.parity_rows(test_split("binary"), signature)
    assert len(sent) > 150 and refused == 0
    got = core.run_batched(_onnxruntime(onnx_path), encoded, max_batch=64)  # batches like the engine's profile
    reference = core.savedmodel_outputs(savedmodel, signature, sent)
    result = core.check_parity(got, reference, signature, "fp32")
    assert result.passed and result.rows == len(sent) and result.label_agreement == 1.0
    assert result.max_abs_diff <= 1e-6

    shifted = {**got, "probabilities": got["probabilities"] + np.float32(2e-5)}
    assert not core.check_parity(shifted, reference, signature, "fp32").passed
    flipped = {**got, "label_index": 1 - got["label_index"]}
    assert core.check_parity(flipped, reference, signature, "fp32").label_agreement == 0.0


@pytest.mark.slow
def test_triton_config_matches_the_onnx_inputs_and_outputs(converted) -> None:
    import onnx

    _, onnx_path, signature = converted
    inputs, outputs = core.io_specs(onnx.load(str(onnx_path)))
    assert {name for name, _, _ in inputs} == {item["name"] for item in signature.numeric["inputs"]}
    assert dict((n, t) for n, t, _ in outputs) == {"probabilities": "TYPE_FP32", "label_index": "TYPE_INT32"}
    text = core.triton_config("tabular", inputs, outputs, {"probabilities": 2})
    assert text.startswith('name: "tabular"\nplatform: "tensorrt_plan"\nmax_batch_size: 0\n')
    for name, data_type, _ in inputs:
        assert f'name: "{name}"\n    data_type: {data_type}\n    dims: [ -1 ]' in text
    assert 'name: "probabilities"\n    data_type: TYPE_FP32\n    dims: [ -1, 2 ]' in text
    assert "kind: KIND_GPU" in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_edge_rows_cover_missing_zero_and_unseen_values(frame_factory) -> None:
    from kfp_tabular.components.export_savedmodel.signature import InputColumn, SignatureInfo

    frame = frame_factory(5, 0, "binary")
    signature = SignatureInfo(inputs=(InputColumn("num_b", "num_b", "float64", "float"),
                                      InputColumn("cat_e", "cat_e", "string", "object")),
                              problem_type="binary", outputs={})
    rows = core.edge_rows(frame, signature)
    assert len(rows) == 7
    edges = rows["num_b"].iloc[:4]
    assert edges.isna().sum() == 1 and (edges == 0).sum() == 2 and edges.iloc[3] == 1e-30
    assert set(rows["cat_e"].iloc[4:].tolist()) == {None, "", "kfp-tabular-unseen"}


@pytest.mark.gpu
def test_engine_builds_and_matches_the_savedmodel(exported, test_split, tmp_path) -> None:
    """Where TensorRT and a GPU exist: the whole step, fp32."""
    _, savedmodel = exported("binary")
    result = core.optimize(savedmodel, test_split("binary"), tmp_path / "repo", tmp_path / "report.md",
                           core.OptimizeConfig())
    assert result.parity is not None and result.parity.passed
    assert (tmp_path / "repo" / "tabular" / "1" / "model.plan").stat().st_size > 0
    assert (tmp_path / "repo" / "tabular" / "config.pbtxt").is_file()
    assert (tmp_path / "repo" / "tabular" / core.SIGNATURE_JSON).is_file()
