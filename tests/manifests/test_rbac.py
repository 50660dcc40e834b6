"""RBAC of the pipeline's deploy step (S3): namespaced, least privilege, and only on the TF Serving Deployment.

``deployer_role_problems`` is the check; the guard tests feed it broken Roles so that a check that passes
everything cannot go unnoticed.
"""

from __future__ import annotations

import copy

import pytest
from manifest_docs import DEPLOYER, OVERLAY_PARAMS, SERVING, one, serving_deployment

# What deploy_tf_serving may do, per (apiGroup, resource), and nothing else.
DEPLOYER_ALLOWED = {
    ("apps", "deployments"): {"get", "patch"},
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"get", "list", "watch"},
}
# What it needs for roll out, watch, diagnosis and rollback: the Role must grant at least this.
DEPLOYER_NEEDS = {
    ("apps", "deployments"): {"get", "patch"},
    ("apps", "replicasets"): {"get", "list"},
    ("", "pods"): {"get", "list"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"list"},
}
# Rules that only the deployer's Deployment may be the object of.
BY_NAME_ONLY = {("apps", "deployments")}
# Never granted to any Role here, whatever the resource.
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "delete", "deletecollection", "update"}
SECRET_LIKE = {"secrets", "serviceaccounts/token", "pods/exec", "pods/attach", "pods/portforward"}
# What every KFP v2 pipeline pod running as the deployer needs (overlays/kubeflow/pipeline-pod-rbac.yaml):
# the Argo executor's minimum, and the KFP launcher's reads, each object by name.
PIPELINE_POD_ROLE = "kfp-tabular-pipeline-pod"
PIPELINE_POD_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlpipeline-minio-artifact"],
     "verbs": ["get"]},
]


def _grants(role: dict) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def deployer_role_problems(role: dict, deployment: str) -> list[str]:
    """Everything in the deployer's Role that goes beyond DEPLOYER_ALLOWED, or misses DEPLOYER_NEEDS."""
    problems = []
    for rule in role["rules"]:
        fields = {key: rule.get(key, []) for key in ("apiGroups", "resources", "verbs", "resourceNames")}
        if any("*" in values for values in fields.values()):
            problems.append(f"wildcard in {rule}")
        if "nonResourceURLs" in rule:
            problems.append(f"nonResourceURLs in {rule}")
        for group in fields["apiGroups"]:
            for resource in fields["resources"]:
                if resource in SECRET_LIKE:
                    problems.append(f"{resource} access in {rule}")
                allowed = DEPLOYER_ALLOWED.get((group, resource))
                if allowed is None:
                    problems.append(f"{group or 'core'}/{resource} is not the deploy step's business")
                elif extra := set(fields["verbs"]) - allowed:
                    problems.append(f"{group or 'core'}/{resource}: verbs {sorted(extra)} are not allowed")
                if (group, resource) in BY_NAME_ONLY and fields["resourceNames"] != [deployment]:
                    problems.append(f"{resource} rule must name only {deployment!r}: {rule}")
        if "patch" in fields["verbs"] and fields["resourceNames"] != [deployment]:
            problems.append(f"patch must be limited to resourceNames [{deployment!r}]: {rule}")
    granted = _grants(role)
    for key, verbs in DEPLOYER_NEEDS.items():
        if missing := verbs - granted.get(key, set()):
            problems.append(f"{key[0] or 'core'}/{key[1]}: the deploy step needs {sorted(missing)}")
    return problems


def _deployer_role(docs: list[dict]) -> dict:
    return one(docs, "Role", DEPLOYER)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_deployer_role_is_least_privilege_on_the_serving_deployment(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    name = serving_deployment(docs)["metadata"]["name"]
    assert deployer_role_problems(_deployer_role(docs), name) == []
    (patch_rule,) = [r for r in _deployer_role(docs)["rules"] if "patch" in r["verbs"]]
    assert patch_rule["resources"] == ["deployments"]
    assert patch_rule["resourceNames"] == [name] == [SERVING]


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda rules: rules[0]["verbs"].append("*"), id="wildcard-verb"),
        pytest.param(lambda rules: rules[1].update(apiGroups=["*"]), id="wildcard-group"),
        pytest.param(lambda rules: rules[2]["resources"].append("*"), id="wildcard-resource"),
        pytest.param(lambda rules: rules.append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), id="secrets"),
        pytest.param(lambda rules: rules.append(
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}), id="exec"),
        pytest.param(lambda rules: rules[0]["verbs"].append("create"), id="create-deployments"),
        pytest.param(lambda rules: rules[2]["verbs"].append("delete"), id="delete-pods"),
        pytest.param(lambda rules: rules[0].pop("resourceNames"), id="patch-any-deployment"),
        pytest.param(lambda rules: rules[0].update(resourceNames=["tf-serving", "other"]), id="patch-two"),
        pytest.param(lambda rules: rules[1]["verbs"].append("patch"), id="patch-replicasets"),
        pytest.param(lambda rules: rules.append(
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}), id="unlisted-resource"),
        pytest.param(lambda rules: rules.pop(3), id="cannot-read-logs"),
    ],
)
def test_role_check_rejects_a_broken_role(rendered_overlays, breakage):
    role = copy.deepcopy(_deployer_role(rendered_overlays["dev"]))
    assert [r["resources"] for r in role["rules"]][:4] == [
        ["deployments"], ["replicasets"], ["pods", "events"], ["pods/log"],
    ], "the breakages below index the rules in this order"
    breakage(role["rules"])
    assert deployer_role_problems(role, SERVING)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_rbac_is_namespaced_and_no_role_grants_forbidden_rights(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    expected = {DEPLOYER, PIPELINE_POD_ROLE} if overlay == "kubeflow" else {DEPLOYER}
    assert set(roles) == expected
    for role in roles.values():
        assert role["metadata"]["namespace"]
        for rule in role["rules"]:
            values = [*rule["apiGroups"], *rule["resources"], *rule["verbs"], *rule.get("resourceNames", [])]
            assert "*" not in values, rule
            assert not set(rule["verbs"]) & FORBIDDEN_VERBS, rule
            if set(rule["resources"]) & SECRET_LIKE:
                # Only the KFP launcher's read of its artifact-store Secret, by name.
                assert role["metadata"]["name"] == PIPELINE_POD_ROLE, rule
                assert rule["resourceNames"] and rule["verbs"] == ["get"], rule


def test_kubeflow_pipeline_pod_role_is_exactly_what_kfp_pods_need(rendered_overlays):
    docs = rendered_overlays["kubeflow"]
    assert one(docs, "Role", PIPELINE_POD_ROLE)["rules"] == PIPELINE_POD_RULES


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_role_bindings_grant_the_roles_to_the_deployer_in_its_namespace(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    for binding in bindings:
        namespace = binding["metadata"]["namespace"]
        assert binding["roleRef"]["kind"] == "Role"
        assert one(docs, "Role", binding["roleRef"]["name"])["metadata"]["namespace"] == namespace
        subjects = [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]]
        # In a Kubeflow profile the deploy task's pod runs in this namespace, as this ServiceAccount.
        assert subjects == [("ServiceAccount", DEPLOYER, namespace)], "a subject of another namespace or name"
        one(docs, "ServiceAccount", DEPLOYER)
        assert one(docs, "Deployment", SERVING)["metadata"]["namespace"] == namespace


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_deployer_service_account_is_not_the_serving_pods(rendered_overlays, overlay):
    # The serving pods must not carry the deployer's rights (they mount no token at all).
    pod = serving_deployment(rendered_overlays[overlay])["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] != DEPLOYER
