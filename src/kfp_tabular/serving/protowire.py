"""Just enough of the protobuf wire format to read the outline of a ``saved_model.pb`` without TensorFlow.

The init container must not import TensorFlow (hundreds of MB of memory, seconds of start-up) to check a
download, and the SavedModel message classes ship only inside the TensorFlow package. Walking the wire format
of the top levels is enough to prove the file is whole (every length fits) and to read the meta graphs'
signature names and whether they carry variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

# Field numbers from tensorflow/core/protobuf/{saved_model,meta_graph}.proto.
SAVED_MODEL_META_GRAPHS = 2
META_GRAPH_META_INFO_DEF = 1
META_INFO_TAGS = 4
META_GRAPH_SAVER_DEF = 3
META_GRAPH_SIGNATURE_DEF = 5
META_GRAPH_OBJECT_GRAPH_DEF = 7
SIGNATURE_INPUTS = 1
SIGNATURE_OUTPUTS = 2
MAP_KEY = 1
MAP_VALUE = 2

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated or not protobuf at all)."""


@dataclass
class Signature:
    """Input and output tensor names of one ``SignatureDef``."""

    inputs: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)


@dataclass
class MetaGraphOutline:
    """What the fetch checks need from one ``MetaGraphDef``."""

    tags: set[str] = field(default_factory=set)
    has_variables: bool = False
    signatures: dict[str, Signature] = field(default_factory=dict)


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)`` for each field; length-delimited values are views.

    Raises:
        WireError: a field runs past the end, or a wire type or field number is invalid.
    """
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        tag, pos = _varint(view, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | memoryview
        if wire == VARINT:
            value, pos = _varint(view, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            value, pos = view[pos:pos + size], pos + size
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(view, pos)
            value, pos = view[pos:pos + length], pos + length
        else:
            raise WireError(f"wire type {wire} (groups are not used by SavedModel)")
        if pos > end:
            raise WireError(f"field {number} runs {pos - end} bytes past the end")
        yield number, wire, value


def messages(data: bytes | memoryview, number: int) -> Iterator[memoryview]:
    """The length-delimited fields numbered ``number`` (sub-messages, strings) of a message, in order."""
    for field_number, wire, value in fields(data):
        if field_number == number and wire == LENGTH_DELIMITED:
            yield value


def _map_keys(entries: list[memoryview]) -> list[tuple[str, memoryview]]:
    """``(key, value)`` of protobuf map entries with string keys and message values."""
    pairs = []
    for entry in entries:
        key, value = "", memoryview(b"")
        for number, wire, item in fields(entry):
            if number == MAP_KEY and wire == LENGTH_DELIMITED:
                key = bytes(item).decode("utf-8", errors="replace")
            elif number == MAP_VALUE and wire == LENGTH_DELIMITED:
                value = item
        pairs.append((key, value))
    return pairs


def _signature(data: memoryview) -> Signature:
    inputs: list[memoryview] = []
    outputs: list[memoryview] = []
    for number, wire, value in fields(data):
        if wire == LENGTH_DELIMITED and number == SIGNATURE_INPUTS:
            inputs.append(value)
        elif wire == LENGTH_DELIMITED and number == SIGNATURE_OUTPUTS:
            outputs.append(value)
    return Signature(inputs={k for k, _ in _map_keys(inputs)}, outputs={k for k, _ in _map_keys(outputs)})


def saved_model_outline(data: bytes) -> list[MetaGraphOutline]:
    """The meta graphs of a serialized ``SavedModel``: tags, whether each has variables, and its signatures.

    Raises:
        WireError: the bytes are not a well-formed ``SavedModel`` message.
    """
    outlines = []
    for number, wire, value in fields(data):
        if number != SAVED_MODEL_META_GRAPHS or wire != LENGTH_DELIMITED:
            continue
        outline, signatures = MetaGraphOutline(), []
        for inner, inner_wire, item in fields(value):
            if inner_wire != LENGTH_DELIMITED:
                continue
            if inner == META_GRAPH_META_INFO_DEF:
                outline.tags |= {
                    bytes(tag).decode("utf-8", errors="replace")
                    for tag_number, tag_wire, tag in fields(item)
                    if tag_number == META_INFO_TAGS and tag_wire == LENGTH_DELIMITED
                }
            # A saver (TF1) or an object graph (TF2) means the graph restores a variables/ checkpoint.
            elif inner in (META_GRAPH_SAVER_DEF, META_GRAPH_OBJECT_GRAPH_DEF):
                outline.has_variables = True
            elif inner == META_GRAPH_SIGNATURE_DEF:
                signatures.append(item)
        outline.signatures = {key: _signature(value) for key, value in _map_keys(signatures)}
        outlines.append(outline)
    return outlines


# MetaGraphDef.graph_def, GraphDef.{node, library, versions}, NodeDef.{op, attr}, FunctionDefLibrary.function,
# FunctionDef.{signature, node_def}, OpDef.name, VersionDef.min_consumer (tensorflow/core/framework/*.proto).
META_GRAPH_GRAPH_DEF = 2
GRAPH_NODE, GRAPH_LIBRARY, GRAPH_VERSIONS = 1, 2, 4
NODE_OP, NODE_ATTR = 2, 5
LIBRARY_FUNCTION = 1
FUNCTION_SIGNATURE, FUNCTION_NODE_DEF = 1, 3
OP_DEF_NAME = 1
VERSIONS_MIN_CONSUMER = 2


@dataclass
class GraphOps:
    """The ops a SavedModel's graphs run, with the attributes each sets, and the oldest consumer they allow."""

    ops: dict[str, set[str]] = field(default_factory=dict)
    min_consumer: int = 0


def _string(value: memoryview) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _node(data: memoryview, ops: dict[str, set[str]]) -> None:
    op = ""
    for value in messages(data, NODE_OP):  # a repeated singular field: the last one counts
        op = _string(value)
    if op:
        ops.setdefault(op, set()).update(key for key, _ in _map_keys(list(messages(data, NODE_ATTR))))


def graph_ops(data: bytes) -> GraphOps:
    """Every op in the meta graphs' graphs and function libraries, with the attribute names set on its nodes.

    Calls of the library's own functions (a node whose op is a function name) are not ops and are left out.

    Raises:
        WireError: the bytes are not a well-formed ``SavedModel`` message.
    """
    ops: dict[str, set[str]] = {}
    functions: set[str] = set()
    result = GraphOps()
    for meta_graph in messages(data, SAVED_MODEL_META_GRAPHS):
        for graph in messages(meta_graph, META_GRAPH_GRAPH_DEF):
            for node in messages(graph, GRAPH_NODE):
                _node(node, ops)
            for versions in messages(graph, GRAPH_VERSIONS):
                for key, wire, value in fields(versions):
                    if key == VERSIONS_MIN_CONSUMER and wire == VARINT:
                        result.min_consumer = max(result.min_consumer, int(value))
            for library in messages(graph, GRAPH_LIBRARY):
                for function in messages(library, LIBRARY_FUNCTION):
                    for signature in messages(function, FUNCTION_SIGNATURE):
                        functions.update(_string(name) for name in messages(signature, OP_DEF_NAME))
                    for node in messages(function, FUNCTION_NODE_DEF):
                        _node(node, ops)
    result.ops = {op: attrs for op, attrs in ops.items() if op not in functions}
    return result
