"""Shared fixtures and the opt-in flags for GPU and cluster tests (AutoGluon-style)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PENGUINS_CSV = REPO / "src" / "kfp_tabular" / "data" / "penguins.csv"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rungpu", action="store_true", help="run tests that need an NVIDIA GPU")
    parser.addoption("--runcluster", action="store_true", help="run tests that need a Kubeflow cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "gpu": (config.getoption("--rungpu"), "needs an NVIDIA GPU: run with --rungpu on a GPU machine"),
        "cluster": (config.getoption("--runcluster"), "needs a Kubeflow cluster: run with --runcluster"),
    }
    for item in items:
        for marker, (enabled, reason) in skips.items():
            if item.get_closest_marker(marker) and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _autogluon_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep AutoGluon's default output folder out of the working tree."""
    monkeypatch.setenv("AG_DEFAULT_BASE_PATH", str(tmp_path / "ag"))


@pytest.fixture(scope="session")
def penguins_csv() -> Path:
    """The bundled Palmer penguins CSV (344 rows, NA for missing values)."""
    return PENGUINS_CSV
