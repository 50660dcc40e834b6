"""The numeric graph holds only TensorRT-parsable ops and types; the check itself refuses what TensorRT cannot take."""

from __future__ import annotations

import pytest
from numeric_models import build

from kfp_tabular.components.optimize_tensorrt.onnx_support import TENSORRT_ONNX_OPS, tensorrt_problems


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_family_converts_to_tensorrt_ops_only(predictor_dir, test_split, task) -> None:
    from kfp_tabular.components.export_savedmodel.numeric_graph import NUMERIC_SIGNATURE_KEY

    # The best model is an ensemble; each family alone is checked too (its own blocks and finish ops).
    for name in ["", "LightGBM_BAG_L1", "XGBoost_BAG_L1", "RandomForest_BAG_L1", "ExtraTrees_BAG_L1",
                 "LinearModel_BAG_L1"]:
        model = build(predictor_dir(task), test_split(task), name)
        assert tensorrt_problems(model.onnx) == [], (name, NUMERIC_SIGNATURE_KEY)
        used = {node.op_type for node in model.onnx.graph.node}
        assert used <= TENSORRT_ONNX_OPS
        assert {"Gather", "Greater"} <= used  # a tree walk, not an empty graph
        inputs = {i.name: i.type.tensor_type.elem_type for i in model.onnx.graph.input}
        assert set(inputs.values()) <= {1, 6}  # float32 numbers and int32 codes, nothing else


def _model(nodes, inputs, outputs, initializers=(), opsets=None):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])


def test_check_refuses_onnx_ml_strings_doubles_and_unlisted_ops() -> None:
    from onnx import TensorProto, helper

    strings = _model(
        [helper.make_node("CategoryMapper", ["s"], ["c"], domain="ai.onnx.ml", name="lookup",
                          cats_strings=["a"], cats_int64s=[0])],
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("c", TensorProto.INT64, [None])],
        opsets=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    problems = tensorrt_problems(strings)
    assert any("ai.onnx.ml.CategoryMapper" in p for p in problems)
    assert any("'s'" in p and "data type 8" in p for p in problems)

    doubles = _model(
        [helper.make_node("IsInf", ["x"], ["y"], name="inf"), helper.make_node("Cast", ["x"], ["z"], to=11, name="c")],
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None])],
        [helper.make_tensor_value_info("y", TensorProto.BOOL, [None]),
         helper.make_tensor_value_info("z", TensorProto.DOUBLE, [None])],
    )
    problems = tensorrt_problems(doubles)
    assert any("op IsInf" in p for p in problems)
    assert any("Cast to" in p and "data type 11" in p for p in problems)
    assert any("'x'" in p for p in problems)

    fine = _model([helper.make_node("Greater", ["x", "t"], ["y"], name="g")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                  [helper.make_tensor_value_info("y", TensorProto.BOOL, [None])],
                  [helper.make_tensor("t", TensorProto.FLOAT, [1], [0.5])])
    assert tensorrt_problems(fine) == []
