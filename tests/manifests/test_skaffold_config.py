"""skaffold.yaml validates against the v4beta14 schema and points at files, overlays and names that exist."""

from __future__ import annotations

import copy
import hashlib
import json

import jsonschema
import pytest
import yaml
from manifest_docs import MANIFESTS, ROOT, one, package_version

# Vendored from the Skaffold repository (Apache-2.0): see schemas/README.md for its origin and version.
SCHEMA_PATH = ROOT / "tests" / "manifests" / "schemas" / "skaffold-v4beta14.json"
SCHEMA_SHA256 = "7c29a621995d2c6143d3c423c8e3d3dfb25703a49fd1cf77644b54168414b39e"
CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
HOOK = "scripts/skaffold-hook.sh"


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _builds() -> list[tuple[str, dict]]:
    """The top-level build and every profile's build, labelled."""
    builds = [("default", CONFIG["build"])]
    builds += [(p["name"], p["build"]) for p in CONFIG.get("profiles", []) if "build" in p]
    return builds


def _kustomize_paths() -> list[str]:
    paths = list(CONFIG["manifests"]["kustomize"]["paths"])
    for profile in CONFIG.get("profiles", []):
        paths += profile.get("manifests", {}).get("kustomize", {}).get("paths", [])
    return paths


def _errors(config: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(config)]


def test_vendored_schema_is_the_upstream_v4beta14_file():
    # The README beside it names the upstream commit this hash belongs to; an edit to the copy shows here.
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert (SCHEMA_PATH.parent / "README.md").read_text().count("Apache License 2.0") == 1


def test_skaffold_yaml_validates_against_the_v4beta14_schema():
    assert CONFIG["apiVersion"] == "skaffold/v4beta14"
    assert _errors(CONFIG) == []


def test_schema_rejects_local_and_cluster_builds_together():
    # Guards the test above: the schema must be strict enough to catch a real mistake.
    broken = copy.deepcopy(CONFIG)
    broken["build"]["cluster"] = {"namespace": "kfp-tabular-build"}
    assert _errors(broken)


def test_profiles_are_dev_gpu_and_cluster_and_map_to_their_overlays():
    profiles = {p["name"]: p for p in CONFIG["profiles"]}
    assert set(profiles) == {"dev", "gpu", "cluster"}
    assert profiles["dev"]["manifests"]["kustomize"]["paths"] == ["manifests/overlays/dev"]
    assert profiles["gpu"]["manifests"]["kustomize"]["paths"] == ["manifests/overlays/gpu"]
    assert CONFIG["manifests"]["kustomize"]["paths"] == ["manifests/overlays/dev"]
    assert "cluster" in profiles["cluster"]["build"] and "local" not in profiles["cluster"]["build"]
    assert CONFIG["build"]["local"] == {"push": False, "useBuildkit": True}


@pytest.mark.parametrize("path", sorted(set(_kustomize_paths())))
def test_kustomize_paths_exist(path):
    assert (ROOT / path / "kustomization.yaml").is_file()


@pytest.mark.parametrize(("where", "build"), _builds(), ids=[f"{name}-build" for name, _ in _builds()])
def test_every_build_makes_the_one_component_image_from_the_dockerfile(where, build):
    (artifact,) = build["artifacts"]
    assert artifact["image"] == "kfp-tabular"
    builder = artifact.get("docker") or artifact.get("kaniko")
    assert (ROOT / artifact.get("context", ".") / builder["dockerfile"]).is_file()
    assert builder["buildArgs"]["VERSION"] == package_version()
    assert "inputDigest" in build["tagPolicy"]


@pytest.mark.parametrize(("where", "build"), _builds(), ids=[f"{name}-build" for name, _ in _builds()])
def test_every_build_recompiles_the_pipeline_against_the_image_it_built(where, build):
    (artifact,) = build["artifacts"]
    commands = [hook["command"] for hook in artifact["hooks"]["after"]]
    assert ["sh", HOOK, "compile"] in commands
    assert (ROOT / HOOK).is_file()


def test_deploy_hook_offers_to_submit_the_compiled_pipeline():
    commands = [item["host"]["command"] for item in CONFIG["deploy"]["kubectl"]["hooks"]["after"]]
    assert commands == [["sh", HOOK, "submit"]]


def test_artifact_name_is_the_image_name_the_manifests_use():
    # Skaffold replaces an image in the manifests only when its name equals the artifact's.
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    assert {i["name"] for i in base["images"]} >= {a["image"] for _, b in _builds() for a in b["artifacts"]}


def test_port_forward_targets_the_rest_port_of_a_rendered_service(rendered_overlays):
    (forward,) = CONFIG["portForward"]
    assert (forward["resourceType"], forward["port"]) == ("service", 8501)
    service = one(rendered_overlays["dev"], "Service", forward["resourceName"])
    assert service["metadata"]["namespace"] == forward["namespace"]
    assert 8501 in {p["port"] for p in service["spec"]["ports"]}


def test_no_sync_rule_points_into_the_image():
    # The package sits in a root-owned venv while the image runs as uid 1000, so a sync could not write
    # there; and no long-running container uses the image. Changes rebuild it instead.
    assert all("sync" not in a for _, b in _builds() for a in b["artifacts"])
