"""TF Serving warmup requests and the gRPC ``PredictRequest`` form of a batch of rows.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog``
protos, at most 1000) when it loads a model, so the first real request does not pay for graph initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.signature import (
    SIGNATURE_KEY,
    SignatureInfo,
    frame_to_inputs,
    resolve_keys,
)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def predict_request(arrays: dict[str, np.ndarray], signature: SignatureInfo, model_name: str = "model") -> Any:
    """A ``tensorflow.serving.PredictRequest`` carrying one batch of signature inputs.

    ``arrays`` is keyed by tensor names (as :func:`frame_to_inputs` returns) or by original column names, under
    the rule of :func:`resolve_keys`; the request always carries tensor names, as TF Serving expects.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE_KEY
    for key, column in resolve_keys(arrays, signature, "The PredictRequest arrays").items():
        values = arrays[key]
        if column.dtype == "float64":
            proto = tf.make_tensor_proto(np.asarray(values, dtype=np.float64))
        else:
            proto = tf.make_tensor_proto(np.asarray([str(v).encode() for v in values], dtype=object))
        request.inputs[column.name].CopyFrom(proto)
    return request


def write_warmup(savedmodel_dir: Path, frame: Any, signature: SignatureInfo, rows: int = 5) -> Path:
    """Write one single-row request per row plus one batch request of up to ``rows`` rows.

    Returns:
        Path of the warmup file.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(savedmodel_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = frame.head(rows)
    arrays = frame_to_inputs(sample, signature)
    batches = [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(len(sample))] + [arrays]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches[:MAX_WARMUP_RECORDS]:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(batch, signature))
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup(savedmodel_dir: Path) -> list[Any]:
    """Parse the warmup file back into ``PredictRequest`` protos."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(Path(savedmodel_dir) / WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def request_to_tensors(request: Any) -> dict[str, Any]:
    """Decode a ``PredictRequest`` the way TF Serving does: each ``TensorProto`` becomes a tensor."""
    import tensorflow as tf

    return {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
