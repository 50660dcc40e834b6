"""Write the op registry of the TensorFlow this runs under, for the deploy step's version-skew guard.

TF Serving X.Y is built on TensorFlow X.Y and knows exactly its ops. Run this with TensorFlow X.Y installed
(any platform; e.g. ``python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==X.Y.*``):

    /tmp/tf/bin/python scripts/op_registry.py components/deploy_tf_serving/op_registries

It writes ``tensorflow-X.Y.json``: every registered op with its attribute names, and the GraphDef version range.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(folder: str) -> Path:
    """Write the registry into ``folder``; return the file written."""
    import tensorflow as tf
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    buffer = pywrap_tf_session.TF_GetAllOpList()
    op_list = op_def_pb2.OpList.FromString(bytes(pywrap_tf_session.TF_GetBuffer(buffer)))
    major, minor = tf.__version__.split(".")[:2]
    registry = {
        "tensorflow": tf.__version__,
        "graph_def_version": tf.version.GRAPH_DEF_VERSION,
        "graph_def_version_min_consumer": tf.version.GRAPH_DEF_VERSION_MIN_CONSUMER,
        "ops": {op.name: sorted(attr.name for attr in op.attr) for op in sorted(op_list.op, key=lambda o: o.name)},
    }
    path = Path(folder) / f"tensorflow-{major}.{minor}.json"
    lines = [f"{json.dumps(name)}: {json.dumps(attrs)}" for name, attrs in registry.pop("ops").items()]
    head = json.dumps(registry, sort_keys=True)[:-1]
    path.write_text(head + ', "ops": {\n' + ",\n".join(lines) + "\n}}\n")
    return path


if __name__ == "__main__":
    written = main(sys.argv[1] if len(sys.argv) > 1 else "components/deploy_tf_serving/op_registries")
    print(f"wrote {written}")
