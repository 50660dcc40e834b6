"""scripts/skaffold-hook.sh: compile against the image Skaffold built, submit only when asked."""

from __future__ import annotations

import json
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
    """The images of the CPU steps (optimize_tensorrt runs in the GPU image, which Skaffold does not build)."""
    spec = next(yaml.safe_load_all(pipeline_yaml.read_text()))  # doc 2 is the PlatformSpec
    executors = spec["deploymentSpec"]["executors"]
    return {e["container"]["image"] for name, e in executors.items()
            if "container" in e and name != "exec-optimize-tensorrt"}


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


def _skaffold_build_output(path: Path, builds: list[dict[str, str]]) -> Path:
    """Write ``builds`` as `skaffold build --file-output` does.

    Skaffold executes the template ``{{json .}}`` over ``flags.BuildOutput{Builds: []graph.Artifact}``: a Go
    ``json.Encoder`` without HTML escaping, trimmed of its newline (cmd/skaffold/app/cmd/build.go,
    cmd/skaffold/app/flags/template.go). Its own test expects ``{"builds":[{"imageName":...,"tag":...}]}``.
    """
    path.write_text(json.dumps({"builds": builds}, separators=(",", ":"), ensure_ascii=False))
    return path


def test_compile_from_skaffold_build_output_pins_the_digest_skaffold_pushed(tmp_path):
    # A pushed build: Skaffold's tag is <repo>:<tag>@sha256:<registry digest> (build.TagWithDigest). A second
    # artifact shows that the hook takes the kfp-tabular one by its imageName, not the first entry.
    pushed = f"registry.example:5000/team/kfp-tabular:0f1e2d3c@{DIGEST}"
    build_json = _skaffold_build_output(tmp_path / "build.json", [
        {"imageName": "sidecar", "tag": f"registry.example:5000/team/sidecar:1a2b@sha256:{'cd' * 32}"},
        {"imageName": "kfp-tabular", "tag": pushed},
    ])
    assert build_json.read_text().startswith('{"builds":[{"imageName":"sidecar","tag":')
    dist = tmp_path / "dist"
    done = _run(["compile-from", str(build_json)], {"DIST_DIR": str(dist)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert _images_in(dist / "tabular_training.yaml") == {pushed}
    assert (dist / "component-image.txt").read_text().strip() == pushed
    assert "not pinned" not in done.stderr


def test_compile_from_a_local_only_build_keeps_its_image_id_tag_and_says_it_is_not_pinned(tmp_path):
    # push: false: Skaffold names the image by its local image id (docker.TagWithImageID), no registry digest.
    local = f"kfp-tabular:{'9f' * 32}"
    build_json = _skaffold_build_output(tmp_path / "build.json", [{"imageName": "kfp-tabular", "tag": local}])
    done = _run(["compile-from", str(build_json)], {"DIST_DIR": str(tmp_path / "dist")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert _images_in(tmp_path / "dist" / "tabular_training.yaml") == {local}
    assert "is not pinned by a registry digest" in done.stderr


@pytest.mark.parametrize(("content", "says"), [
    ('{"builds":[{"imageName":"sidecar","tag":"r/sidecar:1"}]}', "found ['sidecar']"),
    ('{"builds":[]}', "found none"),
    ('{"images":["kfp-tabular:1"]}', "not a `skaffold build --file-output` file"),
    ("kfp-tabular:1", "not a `skaffold build --file-output` file"),
])
def test_compile_from_a_file_without_a_kfp_tabular_build_fails_and_writes_nothing(tmp_path, content, says):
    build_json = tmp_path / "build.json"
    build_json.write_text(content)
    dist = tmp_path / "dist"
    done = _run(["compile-from", str(build_json)], {"DIST_DIR": str(dist)})
    assert done.returncode != 0
    assert str(build_json) in done.stderr and says in done.stderr
    assert not dist.exists()


def test_compile_from_without_a_file_prints_usage(tmp_path):
    done = _run(["compile-from"], {"DIST_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "usage:" in done.stderr and "--file-output" in done.stderr


def test_cli_reads_the_build_output_of_skaffolds_own_test(tmp_path):
    # Verbatim from Skaffold's cmd/skaffold/app/cmd/build_test.go (expectedFileContent of --file-output),
    # including the optional runtimeType field that a newer build output carries.
    from kfp_tabular.cli import image_from_build_output

    example = tmp_path / "build.json"
    example.write_text('{"builds":[{"imageName":"gcr.io/skaffold/example","tag":"test","runtimeType":"go"}]}')
    assert image_from_build_output(example, "gcr.io/skaffold/example") == "test"


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
    from_build = parser.parse_args(["compile", "--build-output", "build.json", "--print-image"])
    assert (str(from_build.build_output), from_build.print_image) == ("build.json", True)
    submit_args = parser.parse_args(
        ["submit", "--host", "h", "--image", "i", "--output", "o.yaml", "--namespace", "n"]
    )
    assert (submit_args.host, submit_args.image, submit_args.namespace) == ("h", "i", "n")
