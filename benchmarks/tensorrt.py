"""Time the numeric ONNX graph (onnxruntime CPU) against the SavedModel (TF) and AutoGluon; TensorRT where it exists.

Usage: python benchmarks/tensorrt.py PREDICTOR_DIR TEST_PARQUET SAVEDMODEL_DIR
Prints ms per call at batch 1 / 64 / 1024 and each ratio against the SavedModel (the anchor).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BATCHES = (1, 64, 1024)


def _median_ms(call, repeats: int = 20) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main(predictor_dir: str, test_path: str, savedmodel_dir: str) -> None:
    import onnxruntime
    import tensorflow as tf
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.export_savedmodel.numeric_graph import encode_numeric
    from kfp_tabular.components.export_savedmodel.signature import (
        SIGNATURE_KEY,
        frame_to_inputs,
        read_signature,
    )
    from kfp_tabular.components.optimize_tensorrt import core

    signature = read_signature(Path(savedmodel_dir))
    frame = pd.read_parquet(test_path)[[c.column for c in signature.inputs]]
    predictor = TabularPredictor.load(predictor_dir, verbosity=0)
    function = tf.saved_model.load(savedmodel_dir).signatures[SIGNATURE_KEY]
    with tempfile.TemporaryDirectory() as work:
        onnx_path = Path(work) / "model.onnx"
        core.convert_to_onnx(Path(savedmodel_dir), onnx_path)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        missing = core.missing_gpu_runtime()
        runner = None
        if missing:
            print(f"TensorRT: skipped, missing {'; '.join(missing)}")
        else:
            plan, info = core.build_engine(onnx_path, [i.name for i in session.get_inputs()], core.OptimizeConfig())
            runner = core.EngineRunner(plan)
            print(f"TensorRT {info['tensorrt_version']}")
        print("batch | SavedModel ms | ONNX (ORT CPU) ms | AutoGluon ms | TensorRT ms | ratios vs SavedModel")
        for batch in BATCHES:
            rows = frame.iloc[np.arange(batch) % len(frame)].reset_index(drop=True)
            tensors = {k: tf.constant(v) for k, v in frame_to_inputs(rows, signature).items()}
            encoded = encode_numeric(rows, signature)
            saved = _median_ms(lambda tensors=tensors: function(**tensors))
            ort = _median_ms(lambda encoded=encoded: session.run(None, encoded))
            ag = _median_ms(lambda rows=rows: predictor.predict(rows), repeats=5)
            trt = _median_ms(lambda encoded=encoded: runner(encoded)) if runner else None
            trt_ms, trt_ratio = (f"{trt:11.3f}", f"{saved / trt:.2f}x") if trt else (f"{'-':>11}", "-")
            print(f"{batch:5d} | {saved:13.3f} | {ort:17.3f} | {ag:12.3f} | {trt_ms} | ONNX {saved / ort:.2f}x, "
                  f"AutoGluon {saved / ag:.2f}x, TensorRT {trt_ratio} (ratios: times faster than the SavedModel)")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
