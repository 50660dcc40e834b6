"""The rendered overlays, once per session, for the manifest tests."""

from __future__ import annotations

import pytest
from manifest_docs import MANIFESTS, OVERLAYS, render


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, list[dict]]:
    """Every overlay under manifests/overlays, rendered once per session."""
    assert OVERLAYS, "no overlay under manifests/overlays"
    return {name: render(MANIFESTS / "overlays" / name) for name in OVERLAYS}
