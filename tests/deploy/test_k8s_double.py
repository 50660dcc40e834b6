"""The Kubernetes API TEST DOUBLE answers the unchanged official client as the API server does (no S3, no pods
that run processes: images the double cannot pull)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from doubles.k8s_api import ADMIN_TOKEN
from doubles.k8s_objects import json_patch, label_matcher, strategic_merge
from kubernetes import client

pytestmark = pytest.mark.deploy
NS = "unit"
SELECTOR = {"app.kubernetes.io/name": "kfp-tabular", "app.kubernetes.io/component": "tf-serving"}


def deployment(name: str = "tf-serving", deadline: int = 600) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "progressDeadlineSeconds": deadline,
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "selector": {"matchLabels": SELECTOR},
                 "template": {"metadata": {"labels": SELECTOR},
                              "spec": {"initContainers": [{"name": "fetch-model", "image": "kfp-tabular",
                                                           "command": ["true"],
                                                           "env": [{"name": "MODEL_URI", "value": "s3://b/m/1"}]}],
                                       # busybox is in no registry of the double: ErrImagePull, no process runs
                                       "containers": [{"name": "tf-serving", "image": "busybox:1.36"}]}}},
    }


@pytest.fixture(scope="module")
def api(cluster):
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}], NS)
    admin = cluster.client()
    client.AppsV1Api(admin).create_namespaced_deployment(NS, deployment())
    return admin


def status_of(error: client.ApiException) -> dict:
    return json.loads(error.body)


def test_not_found_is_a_404_status(api) -> None:
    with pytest.raises(client.ApiException) as missing:
        client.AppsV1Api(api).read_namespaced_deployment("nope", NS)
    body = status_of(missing.value)
    assert missing.value.status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_create_twice_is_409_already_exists(api) -> None:
    with pytest.raises(client.ApiException) as twice:
        client.AppsV1Api(api).create_namespaced_deployment(NS, deployment())
    assert twice.value.status == 409 and status_of(twice.value)["reason"] == "AlreadyExists"


def test_defaults_generation_and_a_stale_resource_version(api) -> None:
    apps = client.AppsV1Api(api)
    current = apps.read_namespaced_deployment("tf-serving", NS)
    assert current.spec.revision_history_limit == 10 and current.spec.template.spec.restart_policy == "Always"
    assert current.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    generation = current.metadata.generation
    # A dict body goes as a strategic merge patch: env is merged by name, the other entries stay.
    patched = apps.patch_namespaced_deployment("tf-serving", NS, {"spec": {"template": {"spec": {"initContainers": [
        {"name": "fetch-model", "env": [{"name": "EXTRA", "value": "1"}]}]}}}})
    env = patched.spec.template.spec.init_containers[0].env
    assert [e.name for e in env] == ["MODEL_URI", "EXTRA"] and patched.metadata.generation == generation + 1
    stale = {"metadata": {"resourceVersion": current.metadata.resource_version}, "spec": {"replicas": 1}}
    with pytest.raises(client.ApiException) as conflict:
        apps.patch_namespaced_deployment("tf-serving", NS, stale)
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(conflict.value)["message"]


def test_invalid_patches_are_422(api) -> None:
    apps = client.AppsV1Api(api)
    with pytest.raises(client.ApiException) as labels:
        apps.patch_namespaced_deployment("tf-serving", NS, {"spec": {"template": {"metadata": {"labels": {
            "app.kubernetes.io/name": "other"}}}}})
    body = status_of(labels.value)
    assert labels.value.status == 422 and body["reason"] == "Invalid"
    assert "`selector` does not match template `labels`" in body["message"]
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"
    # A list body goes as a JSON patch; a failed test operation is 422 too.
    with pytest.raises(client.ApiException) as test_op:
        apps.patch_namespaced_deployment("tf-serving", NS, [{"op": "test", "path": "/metadata/resourceVersion",
                                                             "value": "1"}])
    assert test_op.value.status == 422


def test_the_content_types_the_client_sends(api, cluster) -> None:
    seen = []
    original = cluster.api.handle

    def spy(method, path, headers, body):
        seen.append((method, headers.get("Content-Type")))
        return original(method, path, headers, body)

    cluster.api.handle = spy
    try:
        apps = client.AppsV1Api(api)
        apps.patch_namespaced_deployment("tf-serving", NS, {"metadata": {"labels": {"a": "b"}}})
        apps.patch_namespaced_deployment("tf-serving", NS, [{"op": "add", "path": "/metadata/labels/c", "value": "d"}])
    finally:
        cluster.api.handle = original
    assert [t for m, t in seen if m == "PATCH"] == ["application/strategic-merge-patch+json",
                                                    "application/json-patch+json"]
    # merge patch (kubectl --type merge) and an unknown type, sent by hand
    token = ADMIN_TOKEN
    url = f"{cluster.api.url}/apis/apps/v1/namespaces/{NS}/deployments/tf-serving"
    for content_type, status in (("application/merge-patch+json", 200), ("application/apply-patch+yaml", 415)):
        request = urllib.request.Request(url, json.dumps({"metadata": {"labels": {"e": "f"}}}).encode(),
                                         {"Content-Type": content_type, "Authorization": f"Bearer {token}"},
                                         method="PATCH")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == status
        except urllib.error.HTTPError as error:
            assert error.code == status


def test_rbac_follows_the_role(api, cluster) -> None:
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
         "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["tf-serving"],
                    "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}]},
    ], NS)
    reader = client.AppsV1Api(cluster.client(cluster.token_for(NS, "reader")))
    assert reader.read_namespaced_deployment("tf-serving", NS).metadata.name == "tf-serving"
    with pytest.raises(client.ApiException) as listing:
        reader.list_namespaced_deployment(NS)  # resourceNames never allow a list
    assert listing.value.status == 403 and status_of(listing.value)["reason"] == "Forbidden"
    assert 'cannot list resource "deployments" in API group "apps"' in status_of(listing.value)["message"]
    with pytest.raises(client.ApiException) as patching:
        reader.patch_namespaced_deployment("tf-serving", NS, {"spec": {"replicas": 2}})
    assert patching.value.status == 403
    anonymous = client.ApiClient(client.Configuration(host=cluster.api.url))
    with pytest.raises(client.ApiException) as nobody:
        client.AppsV1Api(anonymous).read_namespaced_deployment("tf-serving", NS)
    assert nobody.value.status == 401


def test_controller_revisions_image_pull_events_logs_and_the_deadline(cluster) -> None:
    admin = cluster.client()
    apps, core = client.AppsV1Api(admin), client.CoreV1Api(admin)
    apps.create_namespaced_deployment(NS, deployment("stuck", deadline=2))
    def timed_out() -> bool:
        status = apps.read_namespaced_deployment("stuck", NS).status  # None until the controller wrote one
        return any(c.reason == "ProgressDeadlineExceeded" for c in (status and status.conditions) or [])

    cluster.wait_for(timed_out, 20, "ProgressDeadlineExceeded")
    rs = [r for r in apps.list_namespaced_replica_set(NS).items if r.metadata.owner_references[0].name == "stuck"]
    assert len(rs) == 1 and rs[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs[0].metadata.name == f"stuck-{rs[0].metadata.labels['pod-template-hash']}"
    pod = core.list_namespaced_pod(NS, label_selector=f"pod-template-hash={rs[0].metadata.labels['pod-template-hash']}"
                                   ).items[0]
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    events = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod.metadata.name}").items
    assert any(e.reason == "Failed" and "busybox" in e.message for e in events)
    with pytest.raises(client.ApiException) as waiting_log:
        core.read_namespaced_pod_log(pod.metadata.name, NS, container="tf-serving")
    assert waiting_log.value.status == 400
    assert "is waiting to start: trying and failing to pull image" in status_of(waiting_log.value)["message"]
    with pytest.raises(client.ApiException) as bad_field:
        core.list_namespaced_event(NS, field_selector="spec.secret=x")
    assert bad_field.value.status == 400
    # A new template: a new ReplicaSet with the next revision; with maxUnavailable 0 the old one keeps its pod.
    apps.patch_namespaced_deployment("stuck", NS, {"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}})
    cluster.wait_for(lambda: len([r for r in apps.list_namespaced_replica_set(NS).items
                                  if r.metadata.owner_references[0].name == "stuck"]) == 2, 10, "revision 2")
    time.sleep(0.5)
    owned = {r.metadata.annotations["deployment.kubernetes.io/revision"]: r for r in
             apps.list_namespaced_replica_set(NS).items if r.metadata.owner_references[0].name == "stuck"}
    assert owned["1"].spec.replicas == 1 and owned["2"].spec.replicas == 1
    status = apps.read_namespaced_deployment("stuck", NS).status
    assert status.observed_generation == 2 and not status.available_replicas
    assert status.unavailable_replicas == 2


def test_patch_and_selector_mechanics() -> None:
    original = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]},
                                        {"name": "b", "image": "y"}]}}
    merged = strategic_merge(original, {"spec": {"containers": [{"name": "a", "env": [{"name": "K", "value": "2"}]},
                                                                {"name": "b", "$patch": "delete"}]}})
    assert merged == {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "2"}]}]}}
    assert strategic_merge(original, {"spec": {"$patch": "replace", "x": 1}}) == {"spec": {"x": 1}}
    assert json_patch({"a": {"b/c": [1]}}, [{"op": "add", "path": "/a/b~1c/-", "value": 2}]) == {"a": {"b/c": [1, 2]}}
    match = label_matcher("app=x,tier in (web, api),!canary,env!=prod")
    assert match({"app": "x", "tier": "api", "env": "dev"})
    assert not match({"app": "x", "tier": "api", "canary": "1"})
    assert not match({"app": "x", "tier": "db"})


def test_the_step_client_connects_by_host_and_token_file_and_names_rbac_fixes(api, cluster, tmp_path) -> None:
    from kfp_tabular.components.deploy_tf_serving.kube import KubeAccess, connect
    from kfp_tabular.errors import ClusterError

    token = tmp_path / "token"
    token.write_text(cluster.token_for(NS, "reader") + "\n")
    kube = connect(KubeAccess(host=cluster.api.url, token_file=str(token)))
    assert kube.deployment(NS, "tf-serving")["metadata"]["name"] == "tf-serving"
    with pytest.raises(ClusterError, match="kfp-tabular-deployer Role") as forbidden:
        kube.replicasets(NS, "app=x")
    assert forbidden.value.status == 403
    with pytest.raises(ClusterError, match="cannot reach the Kubernetes API"):
        connect(KubeAccess(host="http://127.0.0.1:9", connect_timeout_s=1)).deployment(NS, "tf-serving")


def test_the_control_endpoints_inject_faults_and_name_service_ports(api, cluster) -> None:
    cluster.apply([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                    "spec": {"selector": SELECTOR, "ports": [{"name": "http", "port": 8501, "targetPort": "http"}]}}],
                  NS)

    def call(method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"{cluster.api.url}{path}", json.dumps(body).encode() if body else None,
                                         {"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    added = call("POST", "/_double/faults", {"fault": "oom", "match": {"kfp-tabular.dev/model-version": "7"}})
    assert {"fault": "oom", "match": {"kfp-tabular.dev/model-version": "7"}} in added["faults"]
    assert cluster.faults.of({"metadata": {"annotations": {"kfp-tabular.dev/model-version": "7"}}}) == {"oom"}
    assert call("DELETE", "/_double/faults") == {"faults": []}
    ports = call("GET", f"/_double/services/{NS}/svc")
    assert ports["http"].startswith("127.0.0.1:")
