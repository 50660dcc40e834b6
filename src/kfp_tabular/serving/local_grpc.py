"""The local server's gRPC side: TF Serving's PredictionService and ModelService.GetModelStatus.

``PredictionService.Predict`` and ``GetModelMetadata`` and ``ModelService.GetModelStatus`` take and return the
``tensorflow_serving.apis`` protos and fail with TF Serving's status codes and messages. Classify, Regress, MultiInference and HandleReloadConfigRequest answer ``UNIMPLEMENTED``. Predict is counted in
the Prometheus metrics as TF Serving counts it (``API="Predict"``, ``entrypoint="GRPC"``).
"""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from kfp_tabular.serving.local_metrics import ServingMetrics
from kfp_tabular.serving.local_models import ServedModel, ServingError, status_code

SIGNATURE_DEF_FIELD = "signature_def"


def _spec(request: Any) -> tuple[str, int | None, str | None]:
    if not request.HasField("model_spec"):
        raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    return (spec.name, spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None)


def _abort(context: grpc.ServicerContext, error: Exception) -> None:
    context.abort(getattr(grpc.StatusCode, status_code(error), grpc.StatusCode.UNKNOWN), str(error))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over one :class:`ServedModel`."""

    def __init__(self, model: ServedModel, metrics: ServingMetrics) -> None:
        self.model = model
        self.metrics = metrics

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Run ``serving_default`` on the request's tensors."""
        started = time.perf_counter()
        try:
            name, version, label = _spec(request)
            response = self.model.get(name, version, label).predict_proto(request)
        except Exception as error:  # every failure becomes a gRPC status, as TF Serving answers
            self.metrics.record(request.model_spec.name, status_code(error), "Predict", "GRPC", 0.0)
            _abort(context, error)
        self.metrics.record(request.model_spec.name, "OK", "Predict", "GRPC", time.perf_counter() - started)
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The ``signature_def`` metadata of the requested version."""
        try:
            name, version, label = _spec(request)
            if not request.metadata_field:
                raise ServingError("INVALID_ARGUMENT",
                                   "GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise ServingError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
            return self.model.metadata(name, version, label)
        except Exception as error:  # every failure becomes a gRPC status
            _abort(context, error)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService.GetModelStatus`` over one :class:`ServedModel`."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Status of every version seen, or of the one asked for (a label asks for all, as in TF Serving)."""
        try:
            name, version, _ = _spec(request)
            return self.model.status(name, version)
        except Exception as error:  # every failure becomes a gRPC status
            _abort(context, error)


def start_grpc_server(model: ServedModel, metrics: ServingMetrics, host: str, port: int,
                      threads: int) -> tuple[grpc.Server, int]:
    """Start the gRPC server on ``host:port`` (0: a free port) and return it with the bound port.

    At most ``threads`` calls run at once and ``4 * threads`` wait; more are refused with RESOURCE_EXHAUSTED.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                         maximum_concurrent_rpcs=4 * threads)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(model, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(model), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (the port is taken?)")
    server.start()
    return server, bound
