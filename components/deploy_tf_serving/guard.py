"""Version-skew guard: refuse a SavedModel written by a newer TensorFlow than the TF Serving image runs.

A SavedModel records the TensorFlow that wrote it (``MetaGraphDef.meta_info_def.tensorflow_version``). TF Serving
X.Y is built on TensorFlow X.Y; a graph from a newer minor release may use ops or attributes X.Y does not know,
and the server then fails to load it with ``Op type not registered`` (tensorflow/serving#1155,
kubeflow/pipelines#1102). Patch releases add no ops, so major.minor is compared. The serving side's version is
read from the image tag (``tensorflow/serving:2.21.0``, ``2.21.0-gpu``, ``2.21.0@sha256:...``); an image without
a version tag (``latest``, a bare digest) cannot be checked and is refused unless the check is turned off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfp_tabular.errors import VersionSkewError
from kfp_tabular.serving.protowire import (
    LENGTH_DELIMITED,
    META_GRAPH_META_INFO_DEF,
    SAVED_MODEL_META_GRAPHS,
    fields,
)

META_INFO_TENSORFLOW_VERSION = 5  # tensorflow/core/protobuf/meta_graph.proto, MetaInfoDef.tensorflow_version
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


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
    for number, wire, graph in fields(saved_model_pb):
        if number != SAVED_MODEL_META_GRAPHS or wire != LENGTH_DELIMITED:
            continue
        for inner, inner_wire, info in fields(graph):
            if inner != META_GRAPH_META_INFO_DEF or inner_wire != LENGTH_DELIMITED:
                continue
            for key, key_wire, value in fields(info):
                if key == META_INFO_TENSORFLOW_VERSION and key_wire == LENGTH_DELIMITED:
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


def check_version_skew(model_tf: str | None, model_source: str, image: str, allow: bool = False) -> SkewCheck:
    """Compare the model's TensorFlow with the serving image's.

    Args:
        model_tf: The TensorFlow version that wrote the SavedModel, or None when unknown.
        model_source: Where ``model_tf`` was read (for messages).
        image: The TF Serving container's image.
        allow: Do not raise; only record the outcome.

    Raises:
        VersionSkewError: the model is newer than the server (major.minor), or a version cannot be told.
    """
    model, server = parse_version(model_tf), serving_version(image)
    served = ".".join(map(str, server)) if server else None
    if model is None or server is None:
        missing = (f"the TensorFlow that wrote the model is unknown ({model_source})" if model is None else
                   f"the image {image!r} has no version tag, so its TensorFlow is unknown")
        note = f"cannot check version skew: {missing}"
        if not allow:
            raise VersionSkewError(f"{note}. Pin the TF Serving image to a version tag (tensorflow/serving:2.21.0) "
                                   "and deploy a model published with its lineage, or turn the check off "
                                   "(allow_version_skew) if you know the versions are compatible")
        return SkewCheck(model_tf, model_source, image, served, False, note + " (check turned off)")
    if model[:2] > server[:2]:
        note = (f"the SavedModel was written by TensorFlow {model_tf} ({model_source}) and the serving image "
                f"{image} runs TensorFlow {served}: TF Serving {server[0]}.{server[1]} may not know ops of "
                f"{model[0]}.{model[1]} and would fail to load it ('Op type not registered')")
        if not allow:
            raise VersionSkewError(f"{note}. Nothing was changed. Use tensorflow/serving:{model[0]}.{model[1]}.x or "
                                   "newer in the Deployment, or export with the serving image's TensorFlow")
        return SkewCheck(model_tf, model_source, image, served, False, note + " (check turned off)")
    return SkewCheck(model_tf, model_source, image, served, True,
                     f"TensorFlow {model_tf} (model) <= {served} (serving image): compatible")
