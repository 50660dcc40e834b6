"""TF Serving config files parse as the text protos the server reads; batching fits the CPU limit (L1)."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from manifest_docs import OVERLAY_PARAMS, cpu_cores, one, serving_config_files
from tensorflow_serving.config import model_server_config_pb2

# tensorflow-serving-api ships model_server_config.proto, but neither session_bundle_config.proto
# (BatchingParameters) nor monitoring_config.proto. Those messages are rebuilt here from the upstream .proto
# files, field for field, so that text_format rejects a misspelt or mistyped field as tensorflow_model_server
# would.
_UPSTREAM = {
    "BatchingParameters": [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, "repeated int64"),
        ("pad_variable_length_inputs", 7, "bool"),
    ],
    "PrometheusConfig": [("enable", 1, "bool"), ("path", 2, "string")],
    "MonitoringConfig": [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig")],
}


def _upstream_messages() -> dict[str, type]:
    from google.protobuf import wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="kfp_tabular_test/tf_serving_mirror.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {"bool": F.TYPE_BOOL, "string": F.TYPE_STRING, "int64": F.TYPE_INT64}
    for message, fields in _UPSTREAM.items():
        msg = proto.message_type.add(name=message)
        for name, number, kind in fields:
            repeated = kind.startswith("repeated ")
            kind = kind.removeprefix("repeated ")
            field = msg.field.add(name=name, number=number)
            field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if kind in scalar:
                field.type = scalar[kind]
            else:
                field.type, field.type_name = F.TYPE_MESSAGE, kind
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in _UPSTREAM
    }


MESSAGES = _upstream_messages()


def _config(docs: list[dict]) -> tuple[dict[str, str], dict]:
    pod = one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]
    (serving,) = [c for c in pod["containers"] if c["name"] == "tf-serving"]
    return serving_config_files(docs), serving


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_models_config_serves_one_tensorflow_model_from_the_models_volume(rendered_overlays, overlay):
    files, _ = _config(rendered_overlays[overlay])
    config = text_format.Parse(files["models.config"], model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("tabular", "/models/tabular", "tensorflow")


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_monitoring_config_exposes_prometheus_metrics(rendered_overlays, overlay):
    files, _ = _config(rendered_overlays[overlay])
    config = text_format.Parse(files["monitoring.config"], MESSAGES["MonitoringConfig"]())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_batching_threads_match_the_cpu_limit_and_overload_is_refused_not_queued(rendered_overlays, overlay):
    files, serving = _config(rendered_overlays[overlay])
    batching = text_format.Parse(files["batching.config"], MESSAGES["BatchingParameters"]())
    threads = batching.num_batch_threads.value
    assert threads == cpu_cores(serving["resources"]["limits"]["cpu"])
    assert batching.max_enqueued_batches.value == threads
    assert 0 <= batching.batch_timeout_micros.value <= 10_000
    assert batching.max_batch_size.value >= 1


def test_mirrored_schema_rejects_an_unknown_batching_field():
    with pytest.raises(text_format.ParseError):
        text_format.Parse("num_batch_thread { value: 2 }", MESSAGES["BatchingParameters"]())
