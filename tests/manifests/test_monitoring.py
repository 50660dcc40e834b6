"""TF Serving's Prometheus metrics are scrapable: monitoring config, pod annotations, and the PodMonitor.

kubernetes-validate has no schema for the PodMonitor (a prometheus-operator CRD), so its fields are
checked here by hand against the monitoring.coreos.com/v1 API reference.
"""

from __future__ import annotations

import copy
import re

import pytest
from google.protobuf import text_format
from manifest_docs import (
    OVERLAY_PARAMS,
    SERVING,
    container,
    selects,
    serving_config_files,
    serving_deployment,
    serving_pod_labels,
)
from test_tf_serving_config import MESSAGES

METRICS_PATH = "/monitoring/prometheus/metrics"
PODMONITOR_OVERLAY = "prometheus-operator"
# Fields of PodMonitorSpec and PodMetricsEndpoint (prometheus-operator API reference, monitoring.coreos.com/v1).
PODMONITOR_SPEC_FIELDS = {
    "jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "selectorMechanism", "namespaceSelector",
    "sampleLimit", "targetLimit", "scrapeProtocols", "fallbackScrapeProtocol", "labelLimit",
    "labelNameLengthLimit", "labelValueLengthLimit", "scrapeClassicHistograms", "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor", "convertClassicHistogramsToNHCB", "keepDroppedTargets",
    "attachMetadata", "scrapeClass", "bodySizeLimit",
}
ENDPOINT_FIELDS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "trackTimestampsStaleness", "metricRelabelings", "relabelings",
    "proxyUrl", "followRedirects", "enableHttp2", "filterRunning", "tlsConfig", "basicAuth", "authorization",
    "oauth2", "bearerTokenSecret",
}
# Prometheus durations as the CRD's pattern accepts them ("30s", "1m30s").
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _seconds(duration: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[ywdhms])", duration))


def _metrics_path(docs: list[dict]) -> str:
    config = text_format.Parse(serving_config_files(docs)["monitoring.config"], MESSAGES["MonitoringConfig"]())
    assert config.prometheus_config.enable
    return config.prometheus_config.path


def podmonitor_problems(monitor: dict, docs: list[dict]) -> list[str]:
    """What would keep this PodMonitor from scraping the TF Serving pods of ``docs``."""
    problems = []
    if (monitor["apiVersion"], monitor["kind"]) != ("monitoring.coreos.com/v1", "PodMonitor"):
        problems.append(f"not a monitoring.coreos.com/v1 PodMonitor: {monitor['apiVersion']}")
    deployment = serving_deployment(docs)
    if monitor["metadata"].get("namespace") != deployment["metadata"]["namespace"]:
        problems.append("the PodMonitor is not in the serving pods' namespace")
    spec = monitor["spec"]
    if unknown := set(spec) - PODMONITOR_SPEC_FIELDS:
        problems.append(f"unknown PodMonitor spec fields {sorted(unknown)}")
    # Without a namespaceSelector it looks only in its own namespace, where the pods are.
    if "namespaceSelector" in spec:
        problems.append("namespaceSelector set: it could look in another namespace")
    if not selects(spec["selector"], serving_pod_labels(docs)):
        problems.append(f"selector {spec['selector']} does not match the serving pods")
    if not spec["selector"]["matchLabels"].items() <= deployment["spec"]["selector"]["matchLabels"].items():
        problems.append("selector uses labels beyond the Deployment's (stable) selector")
    serving = container(deployment["spec"]["template"]["spec"], SERVING)
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        problems.append("no podMetricsEndpoints")
    for endpoint in endpoints:
        if unknown := set(endpoint) - ENDPOINT_FIELDS:
            problems.append(f"unknown podMetricsEndpoints fields {sorted(unknown)}")
        if endpoint.get("port") not in ports:
            problems.append(f"port {endpoint.get('port')!r} is not a port name of {SERVING}: {sorted(ports)}")
        elif str(ports[endpoint["port"]]) != annotations["prometheus.io/port"]:
            problems.append("the PodMonitor and the prometheus.io/port annotation name different ports")
        if endpoint.get("path") != _metrics_path(docs):
            problems.append(f"path {endpoint.get('path')!r} is not monitoring.config's")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not DURATION.match(endpoint[key]):
                problems.append(f"{key} {endpoint[key]!r} is not a Prometheus duration")
        if {"interval", "scrapeTimeout"} <= set(endpoint) and (
            _seconds(endpoint["scrapeTimeout"]) > _seconds(endpoint["interval"])
        ):
            problems.append("scrapeTimeout is longer than interval")
    return problems


def _podmonitor(docs: list[dict]) -> dict:
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    return monitor


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_tf_serving_serves_prometheus_metrics_from_its_mounted_config(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    assert _metrics_path(docs) == METRICS_PATH
    pod = serving_deployment(docs)["spec"]["template"]["spec"]
    serving = container(pod, SERVING)
    (flag,) = [a for a in serving["args"] if a.startswith("--monitoring_config_file=")]
    path = flag.split("=", 1)[1]
    (mount,) = [m for m in serving["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "configMap" in volume, "the monitoring config comes from the generated ConfigMap"
    assert path.rsplit("/", 1)[1] in serving_config_files(docs)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_scrape_annotations_name_the_rest_port_and_the_metrics_path(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    template = serving_deployment(docs)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == _metrics_path(docs)
    serving = container(template["spec"], SERVING)
    assert annotations["prometheus.io/port"] == str(
        next(p["containerPort"] for p in serving["ports"] if p["name"] == "http")
    )


def test_prometheus_operator_overlay_adds_a_podmonitor_for_the_serving_pods(rendered_overlays):
    docs = rendered_overlays[PODMONITOR_OVERLAY]
    monitor = _podmonitor(docs)
    assert podmonitor_problems(monitor, docs) == []
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", METRICS_PATH)


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda m: m["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "other"}), id="selector-misses"),
        pytest.param(lambda m: m["spec"]["selector"]["matchLabels"].update(
            {"pod-template-hash": "abc"}), id="selector-unstable"),
        pytest.param(lambda m: m["spec"]["podMetricsEndpoints"][0].update(port="metrics"), id="port-name"),
        pytest.param(lambda m: m["spec"]["podMetricsEndpoints"][0].update(port="grpc"), id="wrong-port"),
        pytest.param(lambda m: m["spec"]["podMetricsEndpoints"][0].update(path="/metrics"), id="path"),
        pytest.param(lambda m: m["spec"].update(podMetricEndpoints=m["spec"].pop("podMetricsEndpoints")),
                     id="misspelt-field"),
        pytest.param(lambda m: m["spec"]["podMetricsEndpoints"][0].update(interval="30 seconds"),
                     id="duration"),
        pytest.param(lambda m: m["spec"]["podMetricsEndpoints"][0].update(scrapeTimeout="1m"), id="timeout"),
        pytest.param(lambda m: m["metadata"].update(namespace="monitoring"), id="namespace"),
        pytest.param(lambda m: m.update(apiVersion="monitoring.coreos.com/v1alpha1"), id="api-version"),
    ],
)
def test_podmonitor_check_rejects_a_broken_podmonitor(rendered_overlays, breakage):
    docs = rendered_overlays[PODMONITOR_OVERLAY]
    monitor = copy.deepcopy(_podmonitor(docs))
    breakage(monitor)
    assert podmonitor_problems(monitor, docs)


@pytest.mark.parametrize("overlay", [p for p in OVERLAY_PARAMS if p.values[0] != PODMONITOR_OVERLAY])
def test_other_overlays_need_no_prometheus_operator(rendered_overlays, overlay):
    # A PodMonitor on a cluster without its CRD would make `kubectl apply` fail.
    assert not [d for d in rendered_overlays[overlay] if d["kind"] == "PodMonitor"]
