"""Version-skew guard: refuse a SavedModel that the TF Serving image's TensorFlow cannot load.

A SavedModel records the TensorFlow that wrote it (``MetaGraphDef.meta_info_def.tensorflow_version``). TF Serving
X.Y is built on TensorFlow X.Y; a graph from a newer minor release may use ops or attributes X.Y does not know,
and the server then fails to load it with ``Op type not registered`` (tensorflow/serving#1155,
kubeflow/pipelines#1102). The serving side's version is read from the image tag (``tensorflow/serving:2.21.0``,
``2.21.0-gpu``, ``2.21.0@sha256:...``); an image without a version tag (``latest``, a bare digest) cannot be
checked and is refused unless the check is turned off.

A model from the same or an older minor release passes. A model from a newer minor release of the same major
one passes only when the op registry of the image's TensorFlow is vendored here
(``op_registries/tensorflow-X.Y.json``, written by ``scripts/op_registry.py`` under that TensorFlow), every op
the graphs run is registered there with every attribute set on it, and the graphs allow a consumer that old.
That is what TensorFlow itself checks when it imports a GraphDef. Kernels are not compared: the smoke test after
the rollout is the check for those.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kfp_tabular.errors import VersionSkewError
from kfp_tabular.serving.protowire import (
    META_GRAPH_META_INFO_DEF,
    SAVED_MODEL_META_GRAPHS,
    GraphOps,
    messages,
)
from kfp_tabular.text import clause

META_INFO_TENSORFLOW_VERSION = 5  # tensorflow/core/protobuf/meta_graph.proto, MetaInfoDef.tensorflow_version
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
REGISTRIES = Path(__file__).parent / "op_registries"


@cache
def op_registry(major: int, minor: int) -> dict | None:
    """The vendored op registry of TensorFlow ``major.minor``, or None when none is vendored."""
    path = REGISTRIES / f"tensorflow-{major}.{minor}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def unknown_ops(ops: GraphOps, registry: dict) -> list[str]:
    """What of ``ops`` the registry does not know: ops, attributes of known ops, a too-new GraphDef.

    Attributes whose names start with ``_`` are the runtime's own annotations, not part of any op's definition;
    TensorFlow skips them when it validates a node, and so does this.
    """
    known = registry["ops"]
    problems = [f"op {op}" for op in sorted(ops.ops) if op not in known]
    problems += [f"attribute {attr!r} of {op}" for op in sorted(ops.ops) if op in known
                 for attr in sorted(ops.ops[op] - set(known[op])) if not attr.startswith("_")]
    if ops.min_consumer > registry["graph_def_version"]:
        problems.append(f"GraphDef min_consumer {ops.min_consumer} > {registry['graph_def_version']}")
    return problems


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``"2.21.0"`` / ``"2.21.0-rc1"`` / ``"2.21"`` -> ``(2, 21, 0)``; anything else -> None."""
    match = _VERSION.match((text or "").strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``None`` when it has none: ``repo`` or ``repo@sha256:...``)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def serving_version(image: str) -> tuple[int, int, int] | None:
    """The TensorFlow version of a ``tensorflow/serving`` image, from its tag."""
    return parse_version(image_tag(image))


def savedmodel_tf_version(saved_model_pb: bytes) -> str | None:
    """``meta_info_def.tensorflow_version`` of the first meta graph that records one, read without TensorFlow."""
    for graph in messages(saved_model_pb, SAVED_MODEL_META_GRAPHS):
        for info in messages(graph, META_GRAPH_META_INFO_DEF):
            for value in messages(info, META_INFO_TENSORFLOW_VERSION):
                return bytes(value).decode("utf-8", "replace")
    return None


@dataclass(frozen=True)
class SkewCheck:
    """The outcome of :func:`check_version_skew` (for the report)."""

    model_tensorflow: str | None
    model_source: str
    serving_image: str
    serving_tensorflow: str | None
    passed: bool
    note: str


def check_version_skew(model_tf: str | None, model_source: str, image: str, allow: bool = False,
                       ops: GraphOps | None = None) -> SkewCheck:
    """Compare the model's TensorFlow (and, when it is newer, its ops) with the serving image's.

    Args:
        model_tf: The TensorFlow version that wrote the SavedModel, or None when unknown.
        model_source: Where ``model_tf`` was read (for messages).
        image: The TF Serving container's image.
        allow: Do not raise; only record the outcome.
        ops: The ops of the SavedModel's graphs (:func:`~kfp_tabular.serving.protowire.graph_ops`); without
            them a newer model is refused.

    Raises:
        VersionSkewError: the model is newer than the server (major.minor) and not proven loadable by it, or a
            version cannot be told.
    """
    model, server = parse_version(model_tf), serving_version(image)
    served = ".".join(map(str, server)) if server else None
    if model is None or server is None:
        missing = (f"the TensorFlow that wrote the model is unknown ({model_source})" if model is None else
                   f"the image {image!r} has no version tag, so its TensorFlow is unknown")
        note = f"cannot check version skew: {missing}"
        if not allow:
            raise VersionSkewError(f"{clause(note)}. Pin the TF Serving image to a version tag (tensorflow/serving:2.20.0) "
                                   "and deploy a model published with its lineage, or turn the check off "
                                   "(allow_version_skew) if you know the versions are compatible")
        return SkewCheck(model_tf, model_source, image, served, False, note + " (check turned off)")
    if model[:2] <= server[:2]:
        return SkewCheck(model_tf, model_source, image, served, True,
                         f"TensorFlow {model_tf} (model) <= {served} (serving image): compatible")
    registry = op_registry(*server[:2]) if model[0] == server[0] else None
    problems = unknown_ops(ops, registry) if registry is not None and ops is not None else None
    if problems == []:
        return SkewCheck(model_tf, model_source, image, served, True,
                         f"TensorFlow {model_tf} (model) > {served} (serving image), but all {len(ops.ops)} ops of "
                         f"the graphs and their attributes are registered in TensorFlow {registry['tensorflow']} "
                         "(vendored op registry): loadable")
    if problems:
        listed = ", ".join(problems[:8]) + (f" and {len(problems) - 8} more" if len(problems) > 8 else "")
        why = f"TensorFlow {server[0]}.{server[1]} does not know {listed}"
    elif model[0] != server[0]:
        why = f"a newer major release ({model[0]} against {server[0]}) is not checked op by op"
    elif registry is None:
        why = (f"no op registry of TensorFlow {server[0]}.{server[1]} is vendored to prove it can load the graphs "
               "(scripts/op_registry.py writes one)")
    else:
        why = "the graphs' ops were not read"
    note = (f"the SavedModel was written by TensorFlow {model_tf} ({model_source}) and the serving image "
            f"{image} runs TensorFlow {served}: {why}, so it would fail to load it ('Op type not registered')")
    if not allow:
        raise VersionSkewError(f"{clause(note)}. Nothing was changed. Use tensorflow/serving:{model[0]}.{model[1]}.x or "
                               "newer in the Deployment, or export with the serving image's TensorFlow")
    return SkewCheck(model_tf, model_source, image, served, False, note + " (check turned off)")
