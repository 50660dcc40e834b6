"""Export a trained AutoGluon predictor to a TensorFlow SavedModel that TF Serving can serve, exactly.

``export`` reads the predictor's best model (or a weighted ensemble refitted over the exportable base models),
rebuilds its feature preprocessing and every member's trees / linear algebra as standard TensorFlow ops,
saves the SavedModel, loads it back in a fresh ``tf.saved_model.load`` and compares it with
``predict_proba`` / ``predict`` on the test split plus adversarial rows. Only a model that passes the gate is
left behind; the parity numbers go into the Markdown report and the metrics. The SavedModel has two signatures
(``serving_default`` for TensorFlow, ``onnx`` for tf2onnx / onnxruntime: see ``graph``); both are gated.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfp_tabular.components._shared.ensemble import describe_ensemble
from kfp_tabular.components._shared.files import all_or_nothing, remove_path, write_text_atomic
from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components._shared.splits import read_split
from kfp_tabular.components._shared.table_schema import read_table_schema
from kfp_tabular.components.export_savedmodel.signature import SIGNATURE_FILE, SIGNATURE_KEY, SignatureInfo
from kfp_tabular.errors import ConfigError, DataSourceError, ExportParityError, UnsupportedModelError

# Op types a tabular serving graph may contain; anything else (file, network, process or Python ops) fails a test.
# Assert refuses inputs AutoGluon refuses; Bitcast / BitwiseAnd read subnormal inputs that float ops flush to 0;
# Floor / Pow / Round round float32 columns exactly (numerics.round_to_float32).
ALLOWED_OP_TYPES = frozenset({
    "Abs", "Add", "AddV2", "All", "Any", "ArgMax", "Assert", "BiasAdd", "Bitcast", "BitwiseAnd",
    "BroadcastTo", "Cast", "ClipByValue", "ConcatV2", "Const", "Cumsum", "DivNoNan", "Equal", "Exp",
    "ExpandDims", "Fill", "Floor", "GatherV2", "Greater", "GreaterEqual", "HashTableV2", "Identity",
    "IdentityN", "If", "IsFinite", "IsInf", "IsNan", "Less", "LessEqual", "Log", "LogicalAnd", "LogicalNot",
    "LogicalOr", "LookupTableFindV2", "LookupTableImportV2", "MatMul", "Max", "Maximum", "Min", "Minimum",
    "Mul", "Neg", "NoOp", "NotEqual", "OnesLike", "Pack", "PartitionedCall", "Placeholder", "Pow", "Range",
    "RealDiv", "Reshape", "Round", "Select", "SelectV2", "Shape", "Sigmoid", "Softmax", "Sqrt",
    "StatefulPartitionedCall", "StatelessIf", "StridedSlice", "Sub", "Sum", "TensorScatterUpdate", "Tile",
    "Unpack", "Where", "ZerosLike",
})


@dataclass(frozen=True)
class ExportConfig:
    """Settings of the export.

    Attributes:
        refit_ensemble: When the best model holds families that cannot be exported exactly, refit the weighted
            ensemble over the exportable base models only (AutoGluon ``fit_weighted_ensemble``) and export it.
        tolerance: Parity tolerance: max |probability delta| (classification) or max |delta| / max(1, |y|)
            (regression).
        adversarial_rows: Add generated edge-case rows (missing values, zeros, split thresholds +-1 ulp, unseen
            and rare categories) to the test split in the parity gate.
        model_name: Model of the predictor to export; empty means its best model (``predictor.model_best``).
    """

    refit_ensemble: bool = False
    tolerance: float = 1e-6
    adversarial_rows: bool = True
    model_name: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise ConfigError(f"tolerance must be a number in [0, 1), got {self.tolerance!r}.")


@dataclass
class ExportResult:
    """What the export produced.

    Attributes:
        metadata: Signature (sanitized input name -> original column and dtype), outputs, classes, families,
            op types, parity numbers, TensorFlow version.
        metrics: ``parity_max_abs_diff``, ``parity_rows_checked``, ``label_agreement``...
        report_markdown: The parity report.
    """

    metadata: dict[str, Any]
    metrics: dict[str, float]
    report_markdown: str
    model_name: str = ""
    refit: dict[str, Any] = field(default_factory=dict)


def export(model_dir: Path, test_path: Path, savedmodel_dir: Path, config: ExportConfig,
           report_path: Path) -> ExportResult:
    """Export the predictor in ``model_dir`` to a SavedModel folder, gated on parity with AutoGluon.

    Args:
        model_dir: Folder of a saved ``TabularPredictor`` (the ``model`` output of ``train_autogluon``).
        test_path: Test split (Parquet) used for the parity gate and the warmup requests.
        savedmodel_dir: Output folder; becomes the SavedModel itself (``saved_model.pb``, ``variables/``,
            ``assets.extra/``).
        config: Export settings.
        report_path: Output Markdown parity report.

    Raises:
        UnsupportedModelError: the model holds families, features or settings with no exact export (and
            ``refit_ensemble`` is off or cannot help).
        ExportParityError: the SavedModel differs from AutoGluon beyond the tolerance; nothing is written.
    """
    savedmodel_dir, report_path = Path(savedmodel_dir), Path(report_path)
    workdir = Path(tempfile.mkdtemp(prefix="kfp-tabular-export-"))
    try:
        with all_or_nothing(savedmodel_dir, report_path):
            return _export(Path(model_dir), Path(test_path), savedmodel_dir, config, report_path, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _export(model_dir: Path, test_path: Path, savedmodel_dir: Path, config: ExportConfig, report_path: Path,
            workdir: Path) -> ExportResult:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel import parity, report
    from kfp_tabular.components.export_savedmodel.families import compile_members, unsupported_members
    from kfp_tabular.components.export_savedmodel.features import build_feature_plan
    from kfp_tabular.components.export_savedmodel.graph import PORTABLE_SIGNATURE_KEY, build_module
    from kfp_tabular.components.export_savedmodel.numeric_graph import (
        NUMERIC_SIGNATURE_KEY,
        numeric_description,
    )
    from kfp_tabular.components.export_savedmodel.refit import refit_exportable_ensemble
    from kfp_tabular.components.export_savedmodel.warmup import write_warmup

    predictor = load_predictor(model_dir)
    test = read_split(Path(test_path), "test split")
    frame = test.drop(columns=[predictor.label], errors="ignore")
    missing = [c for c in predictor.original_features if c not in frame.columns]
    if missing:
        raise DataSourceError(f"Test data {test_path} lacks the model's feature column(s) {missing}.")
    frame = frame[list(predictor.original_features)]
    if frame.empty:
        raise DataSourceError(f"Test data {test_path} has no rows; the parity gate needs at least one.")

    model_name = config.model_name or predictor.model_best
    if model_name not in predictor.model_names():
        raise ConfigError(f"Model {model_name!r} is not in the predictor; it has {predictor.model_names()}.")
    structure = describe_ensemble(predictor, model_name)
    refit: dict[str, Any] = {}
    blocking = unsupported_members(structure)
    if blocking and config.refit_ensemble:
        predictor, model_name, refit = refit_exportable_ensemble(predictor, structure, blocking, workdir / "refit")
        structure = describe_ensemble(predictor, model_name)
    decided = read_table_schema(Path(test_path))
    plan = build_feature_plan(predictor, frame, decided.as_metadata() if decided else None)
    members = compile_members(structure, plan, predictor.transform_features(frame.head(1)))
    spec = output_spec(predictor, structure)
    signature = SignatureInfo(
        inputs=plan.inputs,
        problem_type=predictor.problem_type,
        outputs=({"prediction": "float32 [N]"} if spec.problem_type == "regression" else
                 {"probabilities": f"float32 [N, {len(spec.class_labels)}]", "label": "string [N]"}),
        class_labels=spec.class_labels,
        decision_threshold=spec.decision_threshold if spec.problem_type == "binary" else None,
        label=str(predictor.label),
        model_name=model_name,
        numeric=numeric_description(plan, predictor.problem_type),
    )
    module = build_module(plan, members, spec, signature)
    # Rows the SavedModel refuses (an infinite value...) can be neither compared nor sent as warmup requests.
    refused = parity.refused_rows(frame, plan, members)
    if refused.all():
        raise DataSourceError(
            f"Every row of test data {test_path} holds a value the exported model refuses (+-inf, or beyond the "
            "float32 range in a column a random forest reads); the parity gate needs rows it can answer."
        )
    frame = frame[~refused]

    staging = savedmodel_dir.parent / f".{savedmodel_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        # The portable signature first: tf2onnx takes the first one when no --signature_def names it (graph.py).
        signatures = {PORTABLE_SIGNATURE_KEY: module.serve_portable.get_concrete_function(),
                      SIGNATURE_KEY: module.serve.get_concrete_function(),
                      NUMERIC_SIGNATURE_KEY: module.serve_numeric.get_concrete_function()}
        tf.saved_model.save(module, str(staging), signatures=signatures)
        write_text_atomic(staging / SIGNATURE_FILE, signature.to_json())
        write_warmup(staging, frame, signature)

        checked = frame
        adversarial = 0
        if config.adversarial_rows:
            extra = parity.adversarial_rows(frame, plan, parity.threshold_values(members))
            adversarial = len(extra)
            import pandas as pd

            checked = pd.concat([frame.reset_index(drop=True), extra], ignore_index=True)
        loaded = tf.saved_model.load(str(staging))
        function = loaded.signatures[SIGNATURE_KEY]
        result = parity.compare(predictor, model_name, function, signature, checked, adversarial, config.tolerance)
        # TensorFlow reads subnormal inputs as 0, so it can check the portable signature on the other rows only
        # (tests/unit/export/test_export_onnx.py checks all rows through onnxruntime).
        portable = parity.compare(predictor, model_name, loaded.signatures[PORTABLE_SIGNATURE_KEY], signature,
                                  parity.without_subnormals(checked, signature), adversarial, config.tolerance)
        result.member_diffs = parity.member_differences(
            predictor, members, plan, signature, checked, spec.internal_class_index
        )
        op_types = signature_op_types(function)
        if result.passed and not portable.passed:
            raise ExportParityError(
                f"The {PORTABLE_SIGNATURE_KEY!r} signature of {model_name} differs from {SIGNATURE_KEY!r}: max "
                f"|delta| {portable.max_abs_diff:.3g} (scaled {portable.max_scaled_diff:.3g}), label agreement "
                f"{portable.label_agreement:.4%}, worst row {portable.worst_row_values}. Nothing was exported."
            )
        if not result.passed:
            worst_member = max(result.member_diffs, key=result.member_diffs.get) if result.member_diffs else "?"
            raise ExportParityError(
                f"The exported SavedModel of {model_name} differs from AutoGluon: max |delta| "
                f"{result.max_abs_diff:.3g} (scaled {result.max_scaled_diff:.3g}, tolerance {config.tolerance:g}), "
                f"label agreement {result.label_agreement:.4%}. Worst row {result.worst_row} of "
                f"{result.rows_checked}: {result.worst_row_values}. Worst member: {worst_member} "
                f"(max |delta| {result.member_diffs.get(worst_member, float('nan')):.3g}). Nothing was exported; "
                "report this model so the family's export rules can be fixed, or retrain with presets='deployable'."
            )
        from kfp_tabular.serving.verify import write_manifest

        write_manifest(staging)  # last: sha256 of every file above, so the artifact can be verified downstream
        remove_path(savedmodel_dir)
        savedmodel_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(savedmodel_dir)
    finally:
        remove_path(staging)

    metadata = {
        "signature_name": SIGNATURE_KEY,
        "portable_signature_name": PORTABLE_SIGNATURE_KEY,
        "numeric_signature_name": NUMERIC_SIGNATURE_KEY,
        "inputs": {c.name: {"column": c.column, "dtype": c.dtype, "used": c.used} for c in signature.inputs},
        "outputs": signature.outputs,
        "problem_type": signature.problem_type,
        "class_labels": list(signature.class_labels),
        "decision_threshold": signature.decision_threshold,
        "model_name": model_name,
        "families": sorted({m.family for m in members}),
        "members": {m.name: {"family": m.family, "weight": m.weight, "children": len(m.children)} for m in members},
        "op_types": sorted(op_types),
        "parity_max_abs_diff": result.max_abs_diff,
        "parity_rows_checked": result.rows_checked,
        "parity_member_diffs": result.member_diffs,
        "tensorflow_version": tf.__version__,
        "signature_file": str(SIGNATURE_FILE),
    }
    metrics = {
        "parity_max_abs_diff": result.max_abs_diff,
        "parity_max_scaled_diff": result.max_scaled_diff,
        "parity_rows_checked": float(result.rows_checked),
        "parity_adversarial_rows": float(result.adversarial_rows),
        "parity_refused_rows": float(refused.sum()),
        "label_agreement": result.label_agreement,
        "members": float(len(members)),
    }
    if refit:
        metrics.update({key: float(value) for key, value in refit.items() if isinstance(value, (int, float))})
        metadata["refit"] = refit
    markdown = report.render(model_name, members, signature, result, config, refit, op_types, int(refused.sum()))
    write_text_atomic(report_path, markdown)
    return ExportResult(metadata=metadata, metrics=metrics, report_markdown=markdown, model_name=model_name,
                        refit=refit)


def output_spec(predictor: Any, structure: Any) -> Any:
    """How the final prediction maps to the signature outputs (classes, threshold, ensemble or single model)."""
    from kfp_tabular.components.export_savedmodel.graph import OutputSpec

    is_ensemble = not (len(structure.members) == 1 and structure.members[0].name == structure.model_name)
    problem_type = predictor.problem_type
    if problem_type == "regression":
        return OutputSpec(problem_type, is_ensemble=is_ensemble)
    cleaner = predictor._learner.label_cleaner
    labels = tuple(str(c) for c in predictor.class_labels)
    if problem_type == "binary":
        if type(cleaner).__name__ != "LabelCleanerBinary":
            raise UnsupportedModelError(f"Label cleaner {type(cleaner).__name__} is not exported.")
        return OutputSpec(problem_type, labels, (0, 1), float(predictor.decision_threshold), is_ensemble)
    if problem_type != "multiclass" or type(cleaner).__name__ != "LabelCleanerMulticlass":
        raise UnsupportedModelError(f"Problem type {problem_type!r} ({type(cleaner).__name__}) is not exported.")
    return OutputSpec(problem_type, labels, tuple(cleaner.label_index_to_keep), 0.5, is_ensemble)


def signature_op_types(function: Any) -> set[str]:
    """Every op type reachable from a concrete function, through the functions it calls."""
    graph_def = function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        types |= {node.op for node in library_function.node_def}
    return types


def savedmodel_size(path: Path) -> int:
    """Total bytes of the files under a folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
