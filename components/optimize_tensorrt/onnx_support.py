"""What TensorRT's ONNX parser accepts, written down, and a check of an ONNX graph against it.

Source: the operator support matrix of onnx-tensorrt, ``docs/operators.md`` at commit
6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc (github.com/onnx/onnx-tensorrt; "TensorRT 8.5 supports operators up to
Opset 17", the opset the numeric graph is converted with). Only the operators the numeric graph needs are
listed, each marked Y there, with the types the matrix gives:

* ``CumSum`` FP32 / FP16 only, ``axis`` an initializer; ``ArgMax`` FP32 / FP16; comparisons FP32 / FP16 / INT32;
* ``IsInf`` is N (not supported), ``NonZero`` appears only later; neither is used;
* data types: no strings; DOUBLE is "cast down to FLOAT", which would move tree thresholds, so the check refuses
  it; INT64 (shape arithmetic from tf2onnx) is cast down to INT32, which the matrix allows.
"""

from __future__ import annotations

from typing import Any

SOURCE = "github.com/onnx/onnx-tensorrt/blob/6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc/docs/operators.md"
OPSET = 17
TENSORRT_ONNX_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "Cast", "Concat", "Constant", "ConstantOfShape", "CumSum", "Div", "Equal",
    "Exp", "Expand", "Flatten", "Gather", "GatherElements", "GatherND", "Gemm", "Greater", "GreaterOrEqual",
    "Identity", "IsNaN", "Less", "LessOrEqual", "Log", "MatMul", "Max", "Min", "Mul", "Neg", "Not", "Or",
    "Range", "ReduceMax", "ReduceMin", "ReduceSum", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tile", "Transpose", "Unsqueeze", "Where",
})
# ONNX TensorProto data types the graph may hold: FLOAT, INT32, INT64 (cast down by TensorRT), BOOL, FLOAT16.
ALLOWED_TENSOR_TYPES = {1: "FLOAT", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FLOAT16"}


def _graphs(graph: Any) -> list[Any]:
    """The graph and every subgraph (If / Loop bodies)."""
    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                found += _graphs(attribute.g)
            for sub in attribute.graphs:
                found += _graphs(sub)
    return found


def tensorrt_problems(model: Any) -> list[str]:
    """Why TensorRT's parser would refuse or change an ONNX model: ops outside the list, ONNX-ML, strings, doubles.

    Args:
        model: An ``onnx.ModelProto``.

    Returns:
        One line per problem; empty when the graph uses only the listed ops and types.
    """
    problems: list[str] = []
    # tf2onnx always imports the ai.onnx.ml opset; only nodes of that domain are a problem (checked below).
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                problems.append(f"node {node.name!r}: {node.domain}.{node.op_type} (not the default ONNX domain)")
            elif node.op_type not in TENSORRT_ONNX_OPS:
                problems.append(f"node {node.name!r}: op {node.op_type} is not in the TensorRT list ({SOURCE})")
        typed = [(t.name, t.data_type) for t in graph.initializer]
        typed += [(v.name, v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output, *graph.value_info)]
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    typed.append((f"{node.name}.{attribute.name}", attribute.t.data_type))
                if node.op_type == "Cast" and attribute.name == "to":
                    typed.append((f"{node.name} (Cast to)", attribute.i))
        for name, data_type in typed:
            if data_type and data_type not in ALLOWED_TENSOR_TYPES:
                problems.append(f"tensor {name!r}: ONNX data type {data_type} (TensorRT takes "
                                f"{'/'.join(ALLOWED_TENSOR_TYPES.values())} here; 8 is STRING, 11 DOUBLE)")
    return problems
