"""Numeric graphs of tiny real AutoGluon models, built in process (no SavedModel round trip), and their ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class NumericModel:
    """One model of a predictor compiled like the export does, with its numeric graph as ONNX."""

    predictor: Any
    model_name: str
    module: Any
    signature: Any
    onnx: Any
    frame: pd.DataFrame  # test split plus the export's adversarial rows


def build(predictor_dir: Any, test_path: Any, model_name: str = "") -> NumericModel:
    import tf2onnx
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components._shared.ensemble import describe_ensemble
    from kfp_tabular.components.export_savedmodel import parity
    from kfp_tabular.components.export_savedmodel.core import output_spec
    from kfp_tabular.components.export_savedmodel.families import compile_members
    from kfp_tabular.components.export_savedmodel.features import build_feature_plan
    from kfp_tabular.components.export_savedmodel.graph import build_module
    from kfp_tabular.components.export_savedmodel.numeric_graph import (
        numeric_description,
        numeric_input_specs,
        numeric_inputs,
    )
    from kfp_tabular.components.export_savedmodel.signature import SignatureInfo

    predictor = TabularPredictor.load(str(predictor_dir), verbosity=0)
    model_name = model_name or predictor.model_best
    frame = pd.read_parquet(test_path).drop(columns=["label"])[list(predictor.original_features)]
    structure = describe_ensemble(predictor, model_name)
    plan = build_feature_plan(predictor, frame)
    members = compile_members(structure, plan, predictor.transform_features(frame.head(1)))
    spec = output_spec(predictor, structure)
    signature = SignatureInfo(inputs=plan.inputs, problem_type=predictor.problem_type, outputs={},
                              class_labels=spec.class_labels, model_name=model_name,
                              decision_threshold=spec.decision_threshold,
                              numeric=numeric_description(plan, predictor.problem_type))
    module = build_module(plan, members, spec, signature)
    onnx_model, _ = tf2onnx.convert.from_function(module.serve_numeric, numeric_input_specs(numeric_inputs(plan)),
                                                  opset=17)
    refused = parity.refused_rows(frame, plan, members)
    adversarial = parity.adversarial_rows(frame[~refused], plan, parity.threshold_values(members))
    rows = pd.concat([frame[~refused].reset_index(drop=True), adversarial], ignore_index=True)
    return NumericModel(predictor, model_name, module, signature, onnx_model, rows)


def encodable(model: NumericModel) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """The rows the numeric encoding takes (finite, within float32), their encoding, and how many it refused."""
    from kfp_tabular.components.export_savedmodel.numeric_graph import encode_numeric
    from kfp_tabular.errors import DataValidationError

    keep = []
    for index in range(len(model.frame)):
        try:
            encode_numeric(model.frame.iloc[[index]], model.signature)
            keep.append(index)
        except DataValidationError:
            pass
    rows = model.frame.iloc[keep].reset_index(drop=True)
    return rows, encode_numeric(rows, model.signature), len(model.frame) - len(keep)


def as_sent(rows: pd.DataFrame, encoded: dict[str, np.ndarray], model: NumericModel) -> pd.DataFrame:
    """The rows with every numeric feature replaced by the float32 number the numeric graph receives."""
    from kfp_tabular.components.export_savedmodel.numeric_graph import NUMERIC, read_numeric_inputs

    out = rows.copy()
    for item in read_numeric_inputs(model.signature):
        if item.kind == NUMERIC:
            out[item.column] = encoded[item.name].astype(np.float64)
    return out
