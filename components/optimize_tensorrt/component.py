"""KFP shell of ``optimize_tensorrt``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def optimize_tensorrt(
    savedmodel: Input[Model],
    test_data: Input[Dataset],
    optimized_model: Output[Model],
    report: Output[Markdown],
    metrics: Output[Metrics],
    precision: str = "fp32",
    max_batch_size: int = 1024,
):
    """Build a TensorRT engine of the exported model as a Triton model repository, gated on parity.

    Converts the SavedModel's ``numeric`` signature (float32 numbers, int32 category codes; the vocabulary is
    in the signature file) to ONNX, builds a strongly typed engine with a dynamic batch profile (1 / 64 / max)
    and compares it with the SavedModel on the test split plus edge rows (fp32: 1e-5 and identical labels).
    Needs the GPU image on a GPU node: without TensorRT or a GPU the step fails at once and writes nothing.

    Args:
        savedmodel: The SavedModel from ``export_savedmodel``.
        test_data: Test split from ``ingest_data`` (parity rows and latency batches).
        optimized_model: Triton model repository: ``tabular/config.pbtxt``, ``tabular/1/model.plan`` and the
            signature file ``tabular/kfp_tabular_signature.json``.
        report: Markdown: parity, latency and throughput at batch 1 / 64 / 1024, GPU, TensorRT version.
        metrics: ``parity_max_abs_diff``, ``label_agreement``, ``latency_ms_batch_*``, ``engine_bytes``.
        precision: ``fp32`` (default) or ``fp16`` (ModelOpt AutoCast; wider stated bound, 1e-2).
        max_batch_size: Largest batch the engine accepts.
    """
    from pathlib import Path

    from kfp_tabular.components.optimize_tensorrt.core import OptimizeConfig, optimize

    result = optimize(Path(savedmodel.path), Path(test_data.path), Path(optimized_model.path), Path(report.path),
                      OptimizeConfig(precision=precision, max_batch_size=max_batch_size))
    optimized_model.framework = "tensorrt"
    optimized_model.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
