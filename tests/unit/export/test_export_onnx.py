"""The SavedModel converts with tf2onnx (opset 17) and onnxruntime reproduces AutoGluon.

The conversion names the ``onnx`` signature (``--signature_def onnx``): ``serving_default`` starts with a
``Bitcast`` (the subnormal guard) that tf2onnx cannot convert. String inputs reach ONNX through
``CategoryMapper`` (from the graph's hash tables); float64 stays float64.
Tolerance reached (test split plus adversarial rows): probabilities within one float32 ulp (<= 6e-8, from
onnxruntime's exp / sigmoid kernels), labels identical; regression within ~2e-6 x max(1, |y|): onnxruntime sums
the linear model's float64 dot products in another order (1e-16), which the float32 rounding of the model
output can turn into one ulp, and the ensemble's weighted sum can amplify when members cancel out.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_tf2onnx_and_onnxruntime_reproduce_autogluon(exported, predictor_dir, test_split, tmp_path, task) -> None:
    import onnxruntime
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components._shared.ensemble import describe_ensemble
    from kfp_tabular.components.export_savedmodel import parity
    from kfp_tabular.components.export_savedmodel.families import compile_members
    from kfp_tabular.components.export_savedmodel.features import build_feature_plan
    from kfp_tabular.components.export_savedmodel.graph import PORTABLE_SIGNATURE_KEY
    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature

    _, savedmodel = exported(task)
    onnx_path = tmp_path / "model.onnx"
    subprocess.run(  # serving_default's Bitcast (subnormal guard) has no tf2onnx conversion: name the onnx one
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel), "--signature_def",
         PORTABLE_SIGNATURE_KEY, "--output", str(onnx_path), "--opset", "17"],
        check=True, capture_output=True, timeout=300,
    )
    predictor = TabularPredictor.load(str(predictor_dir(task)), verbosity=0)
    frame = pd.read_parquet(test_split(task)).drop(columns=["label"])
    plan = build_feature_plan(predictor, frame)
    members = compile_members(describe_ensemble(predictor), plan, predictor.transform_features(frame.head(1)))
    frame = pd.concat([frame, parity.adversarial_rows(frame, plan, parity.threshold_values(members))],
                      ignore_index=True)

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    signature = read_signature(savedmodel)
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, frame_to_inputs(frame, signature)), strict=True))
    if task == "regression":
        expected = predictor.predict(frame).to_numpy()
        scaled = np.abs(outputs["prediction"] - expected) / np.maximum(1.0, np.abs(expected))
        assert scaled.max() <= 1e-5
    else:
        expected = predictor.predict_proba(frame).to_numpy()
        assert np.abs(outputs["probabilities"] - expected).max() <= 1e-6
        labels = outputs["label"].astype(str)
        assert np.array_equal(labels, predictor.predict(frame).astype(str).to_numpy())
