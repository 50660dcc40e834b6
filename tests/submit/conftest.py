"""Fixtures of the submit tests: the KFP API TEST DOUBLE and compiled packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from doubles.kfp_api import KfpApiDouble
from kfp import compiler
from submit_env import PROFILE, TOKEN, tiny


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


@pytest.fixture
def api() -> KfpApiDouble:
    """A single-user KFP API (no authentication), as behind a port-forward of a standalone install."""
    with KfpApiDouble() as double:
        yield double


@pytest.fixture
def profile_api() -> KfpApiDouble:
    """A multi-user KFP API: one profile, a bearer token accepted by the token review, a login cookie."""
    with KfpApiDouble(profiles=(PROFILE,), token=TOKEN, cookie="authservice_session=s3cr3t") as double:
        yield double


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path
