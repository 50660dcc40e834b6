"""What the deploy step (deploy_tf_serving) sets in the rendered Deployment, and the defaults until it does.

The deploy step patches ``MODEL_URI`` of the fetch-model init container and two pod-template annotations.
Until then the placeholder must fail in the init container with a fetch-model error that says what is
missing; that is checked by running the rendered command through the installed ``kfp-tabular``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from manifest_docs import (
    DEPLOYER,
    FETCH,
    MODEL_DIGEST_ANNOTATION,
    MODEL_URI_ENV,
    MODEL_VERSION_ANNOTATION,
    OVERLAY_PARAMS,
    SERVING,
    container,
    one,
    serving_deployment,
)

from kfp_tabular.components._shared.s3 import S3Timeouts

PLACEHOLDER = "unset://deploy_tf_serving-sets-MODEL_URI"
S3_TIMEOUTS = {"S3_CONNECT_TIMEOUT_S": "5", "S3_READ_TIMEOUT_S": "30", "S3_RETRIES": "2"}


def _fetch(docs: list[dict]) -> dict:
    return container(serving_deployment(docs)["spec"]["template"]["spec"], FETCH)


def _literal_env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def _expand(argument: str, env: dict[str, str]) -> str:
    """$(NAME) as the kubelet expands it in a container's command: unknown references stay as they are."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), argument)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_the_names_the_deploy_step_uses_are_rendered(rendered_overlays, overlay):
    docs = rendered_overlays[overlay]
    deployment = serving_deployment(docs)
    one(docs, "Service", SERVING)
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [FETCH]
    assert [c["name"] for c in pod["containers"]] == [SERVING]
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        one(docs, kind, DEPLOYER)


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_model_uri_is_a_placeholder_the_deploy_step_replaces(rendered_overlays, overlay):
    fetch = _fetch(rendered_overlays[overlay])
    (entry,) = [e for e in fetch["env"] if e["name"] == MODEL_URI_ENV]
    assert entry == {"name": MODEL_URI_ENV, "value": PLACEHOLDER}
    assert fetch["command"][fetch["command"].index("--source-uri") + 1] == f"$({MODEL_URI_ENV})"


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_pod_template_carries_the_model_annotations_the_deploy_step_sets(rendered_overlays, overlay):
    annotations = serving_deployment(rendered_overlays[overlay])["spec"]["template"]["metadata"]["annotations"]
    # Empty until the first deploy; the deploy step writes the version and the manifest's root digest.
    assert annotations[MODEL_VERSION_ANNOTATION] == ""
    assert annotations[MODEL_DIGEST_ANNOTATION] == ""


@pytest.mark.parametrize("overlay", OVERLAY_PARAMS)
def test_init_container_s3_timeouts_are_bounded(rendered_overlays, overlay):
    env = _literal_env(_fetch(rendered_overlays[overlay]))
    assert {name: env.get(name) for name in S3_TIMEOUTS} == S3_TIMEOUTS
    # Read back the way fetch-model reads them.
    timeouts = S3Timeouts.from_env(env)
    assert (timeouts.connect_s, timeouts.read_s, timeouts.retries) == (5.0, 30.0, 2)
    # An endpoint that never answers fails in (retries + 1) x read timeout, well inside the startup budget.
    assert timeouts.attempts * timeouts.read_s <= 120


def test_placeholder_fails_in_fetch_model_with_an_error_that_says_why(rendered_overlays, tmp_path: Path):
    script = Path(sys.executable).with_name("kfp-tabular")
    if not script.is_file():
        pytest.skip(f"no kfp-tabular console script beside {sys.executable}: install the package")
    fetch = _fetch(rendered_overlays["dev"])
    env = _literal_env(fetch)
    dest = tmp_path / "models" / "tabular"
    command = [_expand(arg, env) for arg in fetch["command"]]
    command[command.index("--dest") + 1] = str(dest)
    assert command[:2] == ["kfp-tabular", "fetch-model"] and PLACEHOLDER in command
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
    done = subprocess.run([str(script), *command[1:]], capture_output=True, text=True,
                          env={**scrubbed, **env}, timeout=120)
    assert done.returncode != 0
    message = done.stderr + done.stdout
    assert "no model version" in message and PLACEHOLDER in message, message
    assert "Traceback" not in message, "a placeholder must fail with a readable error, not a crash"
    assert not dest.exists(), "a failed fetch leaves nothing behind"
