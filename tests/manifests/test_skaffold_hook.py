"""scripts/skaffold-hook.sh: compile against the image Skaffold built, submit only when asked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from manifest_docs import ROOT

HOOK = ROOT / "scripts" / "skaffold-hook.sh"
DIGEST = "sha256:" + "ab" * 32


def _run(args: list[str], env: dict[str, str], path_prefix: Path | None = None):
    """Run the hook with only the given SKAFFOLD_*/KFP_* variables set."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SKAFFOLD_", "KFP_"))}
    full_env.update(env)
    if path_prefix is not None:
        full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(["sh", str(HOOK), *args], env=full_env, capture_output=True, text=True, timeout=300)


def _images_in(pipeline_yaml: Path) -> set[str]:
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))  # doc 2 is the PlatformSpec
    executors = spec["deploymentSpec"]["executors"]
    return {e["container"]["image"] for e in executors.values() if "container" in e}


def _executable(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_submit_without_kfp_host_only_says_how_to_submit(tmp_path):
    done = _run(["submit"], {"DIST_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "KFP_HOST is not set" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_compile_outside_skaffold_fails_and_says_why(tmp_path):
    done = _run(["compile"], {"DIST_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert "SKAFFOLD_IMAGE" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_subcommand_prints_usage():
    done = _run(["deploy"], {})
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_compile_pins_every_component_to_the_local_image_it_was_given(tmp_path):
    image = "kfp-tabular:0f1e2d3c"
    env = {"DIST_DIR": str(tmp_path), "SKAFFOLD_IMAGE": image, "SKAFFOLD_PUSH_IMAGE": "false"}
    done = _run(["compile"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _images_in(tmp_path / "tabular_training.yaml") == {image}
    assert (tmp_path / "component-image.txt").read_text().strip() == image


def test_compile_pins_a_pushed_image_by_its_registry_digest(tmp_path):
    # Test double for crane (a registry client): no registry runs here. It answers one digest.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "crane", f'[ "$1" = digest ] && echo {DIGEST}\n')
    dist = tmp_path / "dist"
    env = {"DIST_DIR": str(dist), "SKAFFOLD_IMAGE": "registry.example:5000/kfp-tabular:0f1e2d3c",
           "SKAFFOLD_PUSH_IMAGE": "true"}
    done = _run(["compile"], env, path_prefix=bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    pinned = f"registry.example:5000/kfp-tabular@{DIGEST}"
    assert _images_in(dist / "tabular_training.yaml") == {pinned}
    assert (dist / "component-image.txt").read_text().strip() == pinned


def test_compile_keeps_the_tag_and_warns_when_the_digest_cannot_be_resolved(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "crane", "exit 1\n")  # test double: the registry does not answer
    dist = tmp_path / "dist"
    image = "registry.example/kfp-tabular:0f1e2d3c"
    env = {"DIST_DIR": str(dist), "SKAFFOLD_IMAGE": image, "SKAFFOLD_PUSH_IMAGE": "true"}
    done = _run(["compile"], env, path_prefix=bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "could not resolve the digest" in done.stderr
    assert _images_in(dist / "tabular_training.yaml") == {image}


@pytest.fixture
def recording_cli(tmp_path) -> tuple[Path, Path]:
    """Test double for the kfp-tabular CLI's submit: a KFP API server cannot run here. Records its argv."""
    calls = tmp_path / "calls.txt"
    cli = _executable(tmp_path / "kfp-tabular", f'printf "%s\\n" "$@" > "{calls}"\n')
    return cli, calls


def test_submit_sends_the_compiled_image_to_the_host_and_profile(tmp_path, recording_cli):
    cli, calls = recording_cli
    dist = tmp_path / "dist"
    dist.mkdir()
    image = f"registry.example/kfp-tabular@{DIGEST}"
    (dist / "component-image.txt").write_text(image + "\n")
    env = {"DIST_DIR": str(dist), "KFP_TABULAR_CLI": str(cli), "KFP_HOST": "http://localhost:8080",
           "KFP_NAMESPACE": "kubeflow-user-example-com"}
    done = _run(["submit"], env)
    assert done.returncode == 0, done.stderr
    argv = calls.read_text().splitlines()
    assert argv[0] == "submit"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options == {
        "--host": "http://localhost:8080",
        "--image": image,
        "--output": str(dist / "tabular_training.yaml"),
        "--namespace": "kubeflow-user-example-com",
    }


def test_submit_without_a_compiled_image_fails_instead_of_guessing(tmp_path, recording_cli):
    cli, calls = recording_cli
    env = {"DIST_DIR": str(tmp_path / "dist"), "KFP_TABULAR_CLI": str(cli), "KFP_HOST": "http://localhost:8080"}
    done = _run(["submit"], env)
    assert done.returncode == 1
    assert "--cache-artifacts=false" in done.stderr
    assert not calls.exists()


def test_hook_flags_exist_in_the_real_cli():
    # The double above mirrors the real parser: both sub-commands accept exactly the flags the hook passes.
    from kfp_tabular.cli import build_parser

    parser = build_parser()
    compile_args = parser.parse_args(["compile", "--image", "i", "--output", "o.yaml"])
    assert (compile_args.image, str(compile_args.output)) == ("i", "o.yaml")
    submit_args = parser.parse_args(
        ["submit", "--host", "h", "--image", "i", "--output", "o.yaml", "--namespace", "n"]
    )
    assert (submit_args.host, submit_args.image, submit_args.namespace) == ("h", "i", "n")
