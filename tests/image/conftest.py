"""The built component image, driven through buildah (`make test-image` builds it first and names it).

These tests run only when ``KFP_TABULAR_TEST_IMAGE`` names the image (``make test-image`` sets it; ``make test``
also ignores this folder). Once it is set, nothing here skips: a missing buildah or image is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IMAGE = os.environ.get("KFP_TABULAR_TEST_IMAGE", "")
STORAGE_DRIVER = os.environ.get("BUILDAH_STORAGE", "vfs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IMAGE:
        return
    skip = pytest.mark.skip(reason="needs the built image: `make test-image` builds it and runs these tests")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


def buildah(
    *args: str, timeout: float = 120, check: bool = True, offline: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``buildah --storage-driver <driver> ARGS`` and return the finished process (text output).

    ``offline``: in a new, empty network namespace (``unshare --net``): chroot isolation refuses
    ``--network none`` and otherwise shares the caller's network.
    """
    argv = ["buildah", "--storage-driver", STORAGE_DRIVER, *args]
    done = subprocess.run(
        ["unshare", "--net", *argv] if offline else argv, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args[:3])}... exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass(frozen=True)
class Container:
    """A buildah working container of the image under test (one per session: each one copies the image)."""

    name: str
    root: Path  # the container's root filesystem, mounted on the host

    def run(
        self, argv: list[str], *, volumes: tuple[Path, ...] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container as the image configures it (its USER, ENV, WORKDIR), like a pod would.

        Each of ``volumes`` is bind-mounted at the same path inside, so artifact URIs mean the same on both
        sides. There is no network: a step that tried to download or install anything fails.
        """
        mounts = [f"--volume={path}:{path}:rw" for path in volumes]
        return buildah(
            "run", "--isolation", "chroot", *mounts, self.name, "--", *argv,
            timeout=timeout, check=False, offline=True,
        )


@pytest.fixture(scope="session")
def image_config() -> dict:
    """``buildah inspect`` of the image: its OCI config (User, Env, Cmd, Labels...)."""
    assert shutil.which("buildah"), "buildah is not installed: `make test-image` installs it"
    done = buildah("inspect", "--type", "image", IMAGE, check=False)
    assert done.returncode == 0, f"image {IMAGE} is not in buildah's {STORAGE_DRIVER} storage: run `make image`"
    return json.loads(done.stdout)["OCIv1"]["config"]


@pytest.fixture(scope="session")
def container(image_config: dict) -> Iterator[Container]:
    name = buildah("from", "--pull-never", IMAGE, timeout=600).stdout.strip().splitlines()[-1]
    try:
        root = Path(buildah("mount", name).stdout.strip())
        yield Container(name=name, root=root)
    finally:
        buildah("umount", name, check=False)
        buildah("rm", name, check=False)
