"""Availability, scale and isolation of the serving pods: disruption budget, autoscaler, spread, network policy."""

from __future__ import annotations

import pytest
from manifest_docs import (
    OVERLAY_PARAMS,
    SERVING,
    container,
    containers,
    min_serving_replicas,
    selects,
    serving_deployment,
    serving_pod_labels,
)

SERVING_PORTS = {("TCP", 8500), ("TCP", 8501)}
DNS = {("UDP", 53), ("TCP", 53)}
# The S3 endpoint of the base's Secret example, http://minio-service.kubeflow:9000 (networkpolicy.yaml).
S3_PORT = ("TCP", 9000)


def _selecting_serving_pods(docs: list[dict], kind: str, selector_path: tuple[str, ...]) -> list[dict]:
    labels = serving_pod_labels(docs)
    found = []
    for doc in docs:
        if doc["kind"] == kind:
            selector = doc
            for key in selector_path:
                selector = selector[key]
            if selects(selector, labels):
                found.append(doc)
    return found


def _ports(rule: dict) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_disruption_budget_exactly_where_more_than_one_pod_serves(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    budgets = _selecting_serving_pods(docs, "PodDisruptionBudget", ("spec", "selector"))
    replicas = min_serving_replicas(docs)
    if replicas == 1:
        assert budgets == [], "one replica: nothing for a budget to keep serving, it would only hold drains"
        return
    (budget,) = budgets
    spec = budget["spec"]
    assert spec["selector"] == serving_deployment(docs)["spec"]["selector"]
    # Exactly one of the two, leaving at least one pod serving without ever allowing zero disruptions.
    assert ("maxUnavailable" in spec) != ("minAvailable" in spec)
    if "maxUnavailable" in spec:
        assert 1 <= spec["maxUnavailable"] < replicas
    else:
        assert 1 <= spec["minAvailable"] < replicas
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_some_overlay_runs_more_than_one_replica_with_a_budget(rendered_overlays):
    # Guards the test above against passing only through its replicas == 1 branch.
    multi = [name for name, docs in rendered_overlays.items() if min_serving_replicas(docs) > 1]
    assert {"kubeflow", "autoscale", "prometheus-operator"} <= set(multi)
    assert min_serving_replicas(rendered_overlays["dev"]) == 1


def test_autoscale_overlay_scales_the_deployment_on_cpu(rendered_overlays):
    docs = rendered_overlays["autoscale"]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = serving_deployment(docs)
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", SERVING)
    spec = hpa["spec"]
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Scaling in is slow: a new pod needs fetch-model and the model load before it serves.
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_an_autoscaled_deployment_leaves_replicas_to_its_autoscaler(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    spec = serving_deployment(docs)["spec"]
    if hpas:
        # Otherwise every `kubectl apply` would reset the replica count the HPA chose.
        assert "replicas" not in spec
        # CPU utilization is measured against requests: every container that runs beside TF Serving has one.
        for c in spec["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"], c["name"]
    else:
        assert spec["replicas"] >= 1


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_serving_pods_spread_over_nodes_without_blocking_one_node_clusters(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    pod = serving_deployment(docs)["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"] == serving_deployment(docs)["spec"]["selector"]
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_network_policy_admits_only_the_serving_ports(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    (policy,) = _selecting_serving_pods(docs, "NetworkPolicy", ("spec", "podSelector"))
    spec = policy["spec"]
    # It selects the serving pods and nothing else: in a Kubeflow profile the pipeline pods live alongside.
    assert spec["podSelector"] == serving_deployment(docs)["spec"]["selector"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    # A rule without ports would open every port.
    assert spec["ingress"] and all(rule.get("ports") for rule in spec["ingress"])
    admitted = set().union(*(_ports(rule) for rule in spec["ingress"]))
    assert admitted == SERVING_PORTS
    serving = container(serving_deployment(docs)["spec"]["template"]["spec"], SERVING)
    assert {(p.get("protocol", "TCP"), p["containerPort"]) for p in serving["ports"]} == admitted


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_network_policy_lets_out_only_dns_and_the_s3_endpoint(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    (policy,) = _selecting_serving_pods(docs, "NetworkPolicy", ("spec", "podSelector"))
    egress = policy["spec"]["egress"]
    assert egress and all(rule.get("ports") for rule in egress)
    assert set().union(*(_ports(rule) for rule in egress)) == DNS | {S3_PORT}
    # Only fetch-model talks to S3; TF Serving itself needs no egress at all.
    pod = serving_deployment(docs)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-model"]
    assert {c["name"] for c in containers(pod)} == {"fetch-model", SERVING}


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_no_other_network_policy_touches_the_namespace(rendered_overlays, overlay):
    # A policy with an empty podSelector would also cut off the pipeline pods of a Kubeflow profile.
    policies = [d for d in rendered_overlays[overlay] if d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [SERVING]
