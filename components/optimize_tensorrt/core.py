"""Turn an exported SavedModel into a TensorRT engine in a Triton model repository, gated on parity.

Steps: check that TensorRT and a GPU are there (else fail at once, before anything is written); convert the
SavedModel's ``numeric`` signature (float32 / int32 inputs, ``export_savedmodel.numeric_graph``) to ONNX with
tf2onnx; refuse any op or type outside TensorRT's parser list (``onnx_support``); for ``fp16`` run ModelOpt
AutoCast on the ONNX (TensorRT 11 has no FP16 builder flag); parse it with TensorRT and build a strongly typed
engine with one dynamic batch profile (1 / opt / max); run the engine on the test split plus edge rows and
compare with the SavedModel's ``serving_default``; time batches of 1 / 64 / 1024. Only an engine that passes is
written, as ``<name>/config.pbtxt``, ``<name>/1/model.plan`` and ``<name>/kfp_tabular_signature.json``.

Everything up to the TensorRT calls (encoding, edge rows, profile shapes, the Triton config, the parity check)
is plain Python and numpy, tested on CPU with onnxruntime standing in for the engine.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfp_tabular.components._shared.files import all_or_nothing, write_text_atomic
from kfp_tabular.errors import ConfigError, KfpTabularError, ModelError

PRECISIONS = ("fp32", "fp16")
# fp32: float32 arithmetic in another order than the SavedModel's float64 (measured here through onnxruntime:
# <= 1e-6); fp16 keeps float32 tree comparisons only where AutoCast leaves them, so its bound is wider and is
# gated as stated (never measured here: no GPU with TensorRT has run it).
TOLERANCES = {"fp32": 1e-5, "fp16": 1e-2}
LABEL_AGREEMENT = {"fp32": 1.0, "fp16": 0.99}
BENCHMARK_BATCHES = (1, 64, 1024)
WHERE_IT_RUNS = ("optimize_tensorrt runs in the kfp-tabular GPU image (docker build --target gpu, TensorRT from "
                 "NVIDIA's index) on a node with an NVIDIA GPU: in the pipeline, set optimize_gpu=True.")
SIGNATURE_JSON = "kfp_tabular_signature.json"
_ONNX_DTYPES = {1: ("TYPE_FP32", np.float32), 6: ("TYPE_INT32", np.int32), 7: ("TYPE_INT64", np.int64),
                9: ("TYPE_BOOL", np.bool_)}


class GpuUnavailableError(KfpTabularError):
    """TensorRT or an NVIDIA GPU is missing where the step runs."""


class TensorRTParityError(ModelError):
    """The engine's outputs differ from the SavedModel's beyond the precision's bound."""


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of the optimization.

    Attributes:
        precision: ``fp32`` (default) or ``fp16`` (ModelOpt AutoCast on the ONNX, then a strongly typed engine).
        max_batch_size: Largest batch of the engine's dynamic profile (the profile is 1 / min(64, max) / max).
        model_name: Model name in the Triton repository (letters, digits, ``_`` and ``-``).
        workspace_bytes: TensorRT builder workspace limit.
    """

    precision: str = "fp32"
    max_batch_size: int = 1024
    model_name: str = "tabular"
    workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if not isinstance(self.max_batch_size, int) or not 1 <= self.max_batch_size <= 1 << 20:
            raise ConfigError(f"max_batch_size must be an integer in [1, 1048576], got {self.max_batch_size!r}.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.model_name):
            raise ConfigError(f"model_name must be letters, digits, '_' and '-', got {self.model_name!r}.")


@dataclass
class ParityResult:
    """Engine (or stand-in) outputs against the SavedModel's."""

    rows: int
    max_abs_diff: float
    label_agreement: float
    tolerance: float
    required_agreement: float
    worst_row: int = -1

    @property
    def passed(self) -> bool:
        """Within the bound and with enough identical labels."""
        return self.max_abs_diff <= self.tolerance and self.label_agreement >= self.required_agreement


@dataclass
class OptimizeResult:
    """What the step produced."""

    metrics: dict[str, float]
    metadata: dict[str, Any]
    report_markdown: str
    parity: ParityResult | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)


def missing_gpu_runtime() -> list[str]:
    """What is missing to build a TensorRT engine here: the ``tensorrt`` package, the driver, a GPU (empty: none)."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError as error:
        missing.append(f"the TensorRT Python package ({error})")
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        missing.append("the NVIDIA driver (libcuda.so.1 is not loadable)")
    else:
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            missing.append("an NVIDIA GPU (the driver sees none)")
    return missing


def require_gpu_runtime() -> None:
    """Fail at once, naming what is missing and where the step runs.

    Raises:
        GpuUnavailableError: TensorRT, the driver or a GPU is missing.
    """
    missing = missing_gpu_runtime()
    if missing:
        raise GpuUnavailableError(f"Cannot build a TensorRT engine here: missing {'; '.join(missing)}. "
                                  f"{WHERE_IT_RUNS} Nothing was written.")


def profile_shapes(max_batch_size: int) -> tuple[int, int, int]:
    """Batch sizes of the dynamic profile: (min, opt, max) = (1, min(64, max), max)."""
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be at least 1, got {max_batch_size}.")
    return 1, min(64, max_batch_size), max_batch_size


def convert_to_onnx(savedmodel_dir: Path, onnx_path: Path) -> None:
    """Convert the SavedModel's ``numeric`` signature with tf2onnx (opset 17) and check it against TensorRT's list.

    Raises:
        ModelError: the SavedModel has no numeric signature, the conversion fails, or an op / type is refused.
    """
    import onnx

    from kfp_tabular.components.export_savedmodel.numeric_graph import NUMERIC_SIGNATURE_KEY
    from kfp_tabular.components.optimize_tensorrt.onnx_support import OPSET, tensorrt_problems

    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel_dir), "--signature_def",
               NUMERIC_SIGNATURE_KEY, "--output", str(onnx_path), "--opset", str(OPSET)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not onnx_path.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ModelError(f"tf2onnx could not convert the {NUMERIC_SIGNATURE_KEY!r} signature of {savedmodel_dir} "
                         f"(exit {done.returncode}): {tail}. Export the model again with export_savedmodel.")
    problems = tensorrt_problems(onnx.load(str(onnx_path)))
    if problems:
        raise ModelError(f"The numeric ONNX graph of {savedmodel_dir} holds what TensorRT cannot parse: "
                         f"{'; '.join(problems[:5])}. Report this model.")


def io_specs(onnx_model: Any) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Inputs and outputs of an ONNX model as (name, Triton data type, rank)."""
    def spec(value: Any) -> tuple[str, str, int]:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_DTYPES:
            raise ModelError(f"ONNX tensor {value.name!r} has data type {tensor.elem_type}, which Triton's "
                             "config here does not map.")
        return value.name, _ONNX_DTYPES[tensor.elem_type][0], len(tensor.shape.dim)

    return [spec(v) for v in onnx_model.graph.input], [spec(v) for v in onnx_model.graph.output]


def triton_config(name: str, inputs: list[tuple[str, str, int]], outputs: list[tuple[str, str, int]],
                  widths: dict[str, int]) -> str:
    """Triton ``config.pbtxt`` of a ``tensorrt_plan`` model whose every tensor starts with the batch dimension.

    ``max_batch_size: 0``: the engine's batch dimension is explicit (dynamic profile), so dims are full shapes
    with ``-1`` for the batch; ``widths`` gives the second dimension of rank-2 outputs (classes).
    """
    def block(kind: str, specs: list[tuple[str, str, int]]) -> str:
        entries = []
        for tensor, data_type, rank in specs:
            dims = ["-1"] + ([str(widths[tensor])] if rank == 2 else [])
            if rank not in (1, 2):
                raise ModelError(f"Tensor {tensor!r} has rank {rank}; the numeric graph's tensors have rank 1 or 2.")
            entries.append(f'  {{\n    name: "{tensor}"\n    data_type: {data_type}\n    dims: [ {", ".join(dims)} ]\n  }}')
        return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"

    return (f'name: "{name}"\nplatform: "tensorrt_plan"\nmax_batch_size: 0\n' + block("input", inputs)
            + block("output", outputs) + "instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]\n")


def edge_rows(frame: Any, signature: Any) -> Any:
    """Rows of ``frame`` with one cell each set to an edge value: missing, 0, -0, an unseen category, ``""``.

    The export's own adversarial rows need the predictor; these need only the signature.
    """
    import pandas as pd

    base = frame.iloc[[0]]
    rows = []
    for column in signature.inputs:
        if not column.used:
            continue
        values = [np.nan, 0.0, -0.0, 1e-30] if column.dtype == "float64" else [None, "", "kfp-tabular-unseen"]
        for value in values:
            row = base.copy()
            row[column.column] = pd.Series([value], index=row.index, dtype=object if value is None else None)
            rows.append(row)
    return pd.concat(rows, ignore_index=True) if rows else frame.iloc[:0]


def check_parity(got: dict[str, np.ndarray], reference: dict[str, np.ndarray], signature: Any,
                 precision: str) -> ParityResult:
    """Compare numeric-graph outputs (engine, or onnxruntime) with the SavedModel's ``serving_default`` outputs.

    Classification: max |delta| of probabilities and label agreement (``label_index`` into ``class_labels``
    against the SavedModel's ``label``); regression: max |delta| / max(1, |y|).
    """
    tolerance, required = TOLERANCES[precision], LABEL_AGREEMENT[precision]
    if signature.problem_type == "regression":
        expected = np.asarray(reference["prediction"], dtype=np.float64)
        errors = np.abs(np.asarray(got["prediction"], np.float64) - expected) / np.maximum(1.0, np.abs(expected))
        agreement = 1.0
    else:
        errors = np.abs(np.asarray(got["probabilities"], np.float64)
                        - np.asarray(reference["probabilities"], np.float64)).max(axis=1)
        labels = np.asarray(signature.class_labels)[np.asarray(got["label_index"])]
        agreement = float(np.mean(labels == np.asarray(reference["label"]).astype(str)))
    errors = np.where(np.isnan(errors), np.inf, errors)
    worst = int(np.argmax(errors)) if len(errors) else -1
    return ParityResult(rows=len(errors), max_abs_diff=float(errors.max(initial=0.0)), label_agreement=agreement,
                        tolerance=tolerance, required_agreement=required, worst_row=worst)


def parity_rows(test_path: Path, signature: Any) -> tuple[Any, dict[str, np.ndarray], Any, int]:
    """Test split plus edge rows the numeric encoding takes: (rows as sent, encoded inputs, frame, refused)."""
    import pandas as pd

    from kfp_tabular.components._shared.splits import read_split
    from kfp_tabular.components.export_savedmodel.numeric_graph import (
        NUMERIC,
        encode_numeric,
        read_numeric_inputs,
    )
    from kfp_tabular.errors import DataValidationError

    test = read_split(Path(test_path), "test split")
    frame = test[[c.column for c in signature.inputs]]
    frame = pd.concat([frame.reset_index(drop=True), edge_rows(frame, signature)], ignore_index=True)
    keep = []
    for index in range(len(frame)):
        try:
            encode_numeric(frame.iloc[[index]], signature)
            keep.append(index)
        except DataValidationError:  # +-inf or beyond float32: refused by the encoding, like the SavedModel
            pass
    rows = frame.iloc[keep].reset_index(drop=True)
    encoded = encode_numeric(rows, signature)
    sent = rows.copy()
    for item in read_numeric_inputs(signature):
        if item.kind == NUMERIC:
            sent[item.column] = encoded[item.name].astype(np.float64)
    return sent, encoded, rows, len(frame) - len(keep)


def savedmodel_outputs(savedmodel_dir: Path, signature: Any, rows: Any) -> dict[str, np.ndarray]:
    """The SavedModel's ``serving_default`` outputs on rows (TensorFlow, as the export's parity gate calls it)."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.parity import run_signature
    from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_KEY

    function = tf.saved_model.load(str(savedmodel_dir)).signatures[SIGNATURE_KEY]
    out = run_signature(function, signature, rows)
    if "label" in out:
        out["label"] = out["label"].astype(str)
    return out


def build_engine(onnx_path: Path, input_names: list[str], config: OptimizeConfig) -> tuple[bytes, dict[str, Any]]:
    """Parse the ONNX with TensorRT and build a strongly typed engine with a dynamic batch profile (TensorRT calls)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {errors}.")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    profile = builder.create_optimization_profile()
    low, opt, high = profile_shapes(config.max_batch_size)
    for name in input_names:
        profile.set_shape(name, min=(low,), opt=(opt,), max=(high,))
    builder_config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise ModelError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name}.")
    level = getattr(builder_config, "hardware_compatibility_level", "NONE")
    return bytes(plan), {"tensorrt_version": trt.__version__, "hardware_compatibility": str(level)}


class EngineRunner:
    """Runs a serialized engine on numpy inputs (TensorRT + cuda-python); ``__call__`` returns numpy outputs."""

    def __init__(self, plan: bytes) -> None:
        import tensorrt as trt
        from cuda import cudart

        self._trt, self._cudart = trt, cudart
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        _, self.stream = cudart.cudaStreamCreate()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through the engine."""
        trt, cudart = self._trt, self._cudart
        pointers, outputs = [], {}
        try:
            for name in self.names:
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    host = np.ascontiguousarray(inputs[name])
                    self.context.set_input_shape(name, host.shape)
                    _, pointer = cudart.cudaMalloc(max(host.nbytes, 1))
                    cudart.cudaMemcpy(pointer, host.ctypes.data, host.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
                    pointers.append(pointer)
                    self.context.set_tensor_address(name, pointer)
            for name in self.names:
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                    shape = tuple(self.context.get_tensor_shape(name))
                    host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
                    _, pointer = cudart.cudaMalloc(max(host.nbytes, 1))
                    pointers.append(pointer)
                    self.context.set_tensor_address(name, pointer)
                    outputs[name] = (host, pointer)
            self.context.execute_async_v3(self.stream)
            cudart.cudaStreamSynchronize(self.stream)
            for host, pointer in outputs.values():
                cudart.cudaMemcpy(host.ctypes.data, pointer, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
            return {name: host for name, (host, _) in outputs.items()}
        finally:
            for pointer in pointers:
                cudart.cudaFree(pointer)


def run_batched(run: Any, encoded: dict[str, np.ndarray], max_batch: int) -> dict[str, np.ndarray]:
    """Call ``run`` on slices of at most ``max_batch`` rows and join the outputs."""
    total = len(next(iter(encoded.values())))
    parts = [run({k: v[start:start + max_batch] for k, v in encoded.items()}) for start in range(0, total, max_batch)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def time_batches(run: Any, encoded: dict[str, np.ndarray], batches: tuple[int, ...], repeats: int = 20) -> dict:
    """Median milliseconds per call at each batch size (rows repeated to fill the batch)."""
    total = len(next(iter(encoded.values())))
    out = {}
    for batch in batches:
        index = np.arange(batch) % total
        feed = {key: value[index] for key, value in encoded.items()}
        run(feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(feed)
            times.append(time.perf_counter() - start)
        out[batch] = 1000.0 * float(np.median(times))
    return out


def _autocast_fp16(onnx_path: Path, output: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modelopt.onnx.autocast", "--onnx_path", str(onnx_path),
                           "--output_path", str(output)], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not output.is_file():
        raise ModelError(f"ModelOpt AutoCast could not make an fp16 graph (exit {done.returncode}): "
                         f"{done.stderr.strip()[-400:]}. Use precision='fp32'.")


def render_report(config: OptimizeConfig, parity: ParityResult, latency: dict[int, float], info: dict[str, Any],
                  refused: int) -> str:
    """The Markdown report: parity, latency and throughput per batch, GPU, TensorRT version, compatibility."""
    lines = [f"# TensorRT engine ({config.precision})", "",
             f"GPU: {info.get('gpu', '?')}; TensorRT {info.get('tensorrt_version', '?')}; hardware compatibility: "
             f"{info.get('hardware_compatibility', '?')}; profile (min / opt / max batch): "
             f"{' / '.join(map(str, profile_shapes(config.max_batch_size)))}.", "",
             "## Parity with the SavedModel (serving_default)", "",
             f"Rows: {parity.rows} (test split plus edge rows; {refused} refused by the encoding). "
             f"Max |delta|: {parity.max_abs_diff:.3g} (bound {parity.tolerance:g}); label agreement "
             f"{parity.label_agreement:.4%} (required {parity.required_agreement:.0%}).", "",
             "## Latency", "", "| batch | ms / call | rows / s |", "|---|---|---|"]
    lines += [f"| {batch} | {ms:.3f} | {batch / ms * 1000:.0f} |" for batch, ms in latency.items()]
    return "\n".join(lines) + "\n"


def optimize(savedmodel_dir: Path, test_path: Path, output_dir: Path, report_path: Path,
             config: OptimizeConfig) -> OptimizeResult:
    """Build, check and write the TensorRT engine of an exported SavedModel as a Triton model repository.

    Raises:
        GpuUnavailableError: TensorRT or a GPU is missing (raised before anything is read or written).
        TensorRTParityError: the engine differs from the SavedModel beyond the bound; nothing is written.
    """
    require_gpu_runtime()
    import onnx

    from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_FILE, read_signature

    savedmodel_dir, output_dir, report_path = Path(savedmodel_dir), Path(output_dir), Path(report_path)
    signature = read_signature(savedmodel_dir)
    workdir = Path(tempfile.mkdtemp(prefix="kfp-tabular-trt-"))
    try:
        with all_or_nothing(output_dir, report_path):
            onnx_path = workdir / "model.onnx"
            convert_to_onnx(savedmodel_dir, onnx_path)
            if config.precision == "fp16":
                _autocast_fp16(onnx_path, workdir / "model_fp16.onnx")
                onnx_path = workdir / "model_fp16.onnx"
            model = onnx.load(str(onnx_path))
            inputs, outputs = io_specs(model)
            plan, info = build_engine(onnx_path, [name for name, _, _ in inputs], config)
            runner = EngineRunner(plan)
            sent, encoded, _, refused = parity_rows(test_path, signature)
            got = run_batched(runner, encoded, config.max_batch_size)
            parity = check_parity(got, savedmodel_outputs(savedmodel_dir, signature, sent), signature,
                                  config.precision)
            if not parity.passed:
                raise TensorRTParityError(
                    f"The {config.precision} TensorRT engine of {savedmodel_dir} differs from the SavedModel: max "
                    f"|delta| {parity.max_abs_diff:.3g} (bound {parity.tolerance:g}), label agreement "
                    f"{parity.label_agreement:.4%} (required {parity.required_agreement:.0%}), worst row "
                    f"{parity.worst_row}. Nothing was written; try precision='fp32'."
                )
            latency = time_batches(runner, encoded, tuple(b for b in BENCHMARK_BATCHES if b <= config.max_batch_size))
            info["gpu"] = _gpu_name()
            widths = {name: int(got[name].shape[1]) for name, _, rank in outputs if rank == 2}
            folder = output_dir / config.model_name
            (folder / "1").mkdir(parents=True, exist_ok=True)
            (folder / "1" / "model.plan").write_bytes(plan)
            write_text_atomic(folder / "config.pbtxt", triton_config(config.model_name, inputs, outputs, widths))
            shutil.copyfile(savedmodel_dir / SIGNATURE_FILE, folder / SIGNATURE_JSON)
            markdown = render_report(config, parity, latency, info, refused)
            write_text_atomic(report_path, markdown)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    metrics = {"parity_max_abs_diff": parity.max_abs_diff, "label_agreement": parity.label_agreement,
               "parity_rows_checked": float(parity.rows), "engine_bytes": float(len(plan))}
    metrics.update({f"latency_ms_batch_{batch}": ms for batch, ms in latency.items()})
    metadata = {**info, "precision": config.precision, "model_name": config.model_name,
                "profile": list(profile_shapes(config.max_batch_size)), "triton_platform": "tensorrt_plan",
                "inputs": json.loads(json.dumps([name for name, _, _ in inputs]))}
    return OptimizeResult(metrics=metrics, metadata=metadata, report_markdown=markdown, parity=parity,
                          latency_ms=latency)


def _gpu_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown GPU"
