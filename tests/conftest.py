"""Shared fixtures and the opt-in flags for GPU and cluster tests (AutoGluon-style)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seaweedfs import s3_server  # noqa: F401  (the session's one S3 server, for every folder of tests)

REPO = Path(__file__).resolve().parents[1]
PENGUINS_CSV = REPO / "src" / "kfp_tabular" / "data" / "penguins.csv"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rungpu", action="store_true", help="run tests that need an NVIDIA GPU")
    parser.addoption("--runcluster", action="store_true", help="run tests that need a Kubeflow cluster")
    parser.addoption("--runlong", action="store_true", help="run the long property-based runs (make test-long)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "gpu": (config.getoption("--rungpu"), "needs an NVIDIA GPU: run with --rungpu on a GPU machine"),
        "cluster": (config.getoption("--runcluster"), "needs a Kubeflow cluster: run with --runcluster"),
        "long": (config.getoption("--runlong"), "long property-based run: make test-long (--runlong)"),
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


@pytest.fixture(scope="session")
def tiny_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny SavedModel shaped like an export: ``prediction = 2 * bill_length_mm + 1`` (+ signature JSON).

    Two inputs (float64, string) as export_savedmodel builds them, one variable (so ``variables/`` matters) and
    ``assets.extra/kfp_tabular_signature.json`` naming the same inputs and outputs.
    """
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.signature import (
        SIGNATURE_FILE,
        SIGNATURE_KEY,
        InputColumn,
        SignatureInfo,
    )

    # No autograph (nothing here needs it): in a long test session its conversion cache once handed this function
    # the converted code of an unrelated __init__ ("tf____init__() takes 1 positional argument but 3 were given").
    module = tf.Module(name="tiny")
    module.weight = tf.Variable(2.0, dtype=tf.float64)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None], tf.float64, name="bill_length_mm"),
        tf.TensorSpec([None], tf.string, name="island"),
    ])
    def serve(bill_length_mm, island):
        return {"prediction": tf.cast(module.weight * bill_length_mm + 1.0, tf.float32)}

    module.serve = serve
    folder = tmp_path_factory.mktemp("tiny") / "savedmodel"
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE_KEY: serve.get_concrete_function()})
    signature = SignatureInfo(
        inputs=(
            InputColumn("bill_length_mm", "bill_length_mm", "float64", "float"),
            InputColumn("island", "island", "string", "object"),
        ),
        problem_type="regression",
        outputs={"prediction": "float32 [N]"},
        label="body_mass_g",
        model_name="tiny",
    )
    (folder / SIGNATURE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / SIGNATURE_FILE).write_text(signature.to_json(), encoding="utf-8")
    return folder
