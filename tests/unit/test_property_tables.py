"""Property-based: random small tables with random column types go through ingest -> train -> export -> predict.

Every table either stops at ingest with a typed error that names the offending column, or trains, exports at
parity and predicts through TF Serving's REST body and gRPC ``PredictRequest`` with AutoGluon's own answers.
``make test`` runs 15 tables (derandomized, so CI sees the same tables every time); ``make test-long`` runs
many more (``--runlong``).
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from core_chain import evaluate_model, export_model, ingest_table, train_model
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kfp_tabular.errors import DataValidationError

pytestmark = pytest.mark.slow

# Feature kinds; the last two must be refused at ingest.
FEATURES = ("float", "float_clean", "float_tiny", "float16", "float32", "int", "unsigned", "constant", "category", "rare_category", "boolean",
            "timestamp", "decimal", "nested", "stray_number", "list")
REFUSED = {"stray_number", "list"}
LABELS = ("binary_text", "multiclass_text", "int_classes", "float_classes_with_blanks", "boolean", "regression",
          "decimal_regression")
# Names that collide once sanitized into tensor names, and a near-copy of the label's name.
NAMES = ("a b", "a_b", "A_B", "a.b", "x", "price", "when", "flag", "city", "label ", "1st", "ünïcode")


def _feature(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    missing = rng.random(n) < rng.uniform(0.05, 0.3)
    if kind in ("float", "float_clean", "float_tiny"):
        values = rng.normal(size=n) * rng.choice([1.0, 1e3, 1e-3])
        values[rng.random(n) < 0.1] = 0.0
        if kind == "float_tiny":  # subnormals and values near LightGBM's zero threshold, beside exact zeros
            picks = rng.random(n) < 0.15
            values[picks] = rng.choice([5e-324, -5e-324, 1e-310, 1e-36, -1e-40, 2.2250738585072014e-308], picks.sum())
        return pa.array(np.where(missing, np.nan, values) if kind == "float" else values)
    if kind in ("float16", "float32"):
        values = (rng.normal(size=n) * rng.choice([1.0, 30.0])).astype(kind)
        return pa.array(np.where(missing, np.nan, values).astype(kind))
    if kind == "int":
        return pa.array(rng.integers(-5, 20, n))
    if kind == "unsigned":
        width = rng.choice([np.uint8, np.uint32, np.uint64])
        return pa.array(rng.integers(0, 200, n).astype(width))
    if kind == "constant":
        return pa.array(["same"] * n)
    if kind in ("category", "rare_category"):
        levels = [f"c{i}" for i in range(int(rng.integers(2, 7)))]
        values = rng.choice(levels, n).astype(object)
        if kind == "rare_category":
            values[: 3] = ["only-once", "twice", "twice"]
        values[missing] = None
        return pa.array(values.tolist(), pa.string())
    if kind == "boolean":
        return pa.array([None if m else bool(v) for m, v in zip(missing, rng.random(n) < 0.4, strict=True)])
    if kind == "timestamp":
        seconds = rng.integers(1_600_000_000, 1_750_000_000, n)
        return pa.array(seconds, pa.int64()).cast(pa.timestamp("s", tz=rng.choice([None, "UTC"])))
    if kind == "decimal":
        return pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.uniform(-500, 500, n)], pa.decimal128(10, 2))
    if kind == "nested":
        return pa.array([{"p": float(v), "q": "uv"[i % 2]} for i, v in enumerate(rng.normal(size=n))])
    if kind == "stray_number":
        values = [f"{v:.3f}" for v in rng.normal(size=n)]
        values[int(rng.integers(0, n))] = "oops"
        return pa.array(values)
    assert kind == "list"
    return pa.array([[int(v), 1] for v in rng.integers(0, 5, n)])


def _label(kind: str, signal: np.ndarray, rng: np.random.Generator) -> pa.Array:
    n = len(signal)
    noisy = signal + rng.normal(scale=0.3, size=n)
    if kind == "binary_text":
        return pa.array(np.where(noisy > 0, "yes", "no"))
    if kind == "multiclass_text":
        return pa.array(np.select([noisy < -0.5, noisy < 0.5], ["lo", "mid"], "hi"))
    if kind == "int_classes":
        return pa.array(np.digitize(noisy, [-0.7, 0.0, 0.7]).astype(np.int64))
    if kind == "float_classes_with_blanks":
        values = (noisy > 0).astype(float)
        values[rng.random(n) < 0.1] = np.nan
        return pa.array(values)
    if kind == "boolean":
        return pa.array(noisy > 0.2)
    if kind == "regression":
        return pa.array(noisy * 1000.0 + 5000.0)
    return pa.array([decimal.Decimal(f"{v:.2f}") for v in noisy * 300.0 + 900.0], pa.decimal128(12, 2))


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, list[str]]:
    """A random table: a signal column, 1-4 random features under random (colliding) names, a random label."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(150, 260))
    kinds = draw(st.lists(st.sampled_from(FEATURES), min_size=1, max_size=4))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=len(kinds), max_size=len(kinds), unique=True))
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    columns = {"signal": pa.array(signal)}
    for kind, name in zip(kinds, names, strict=True):
        columns[name] = _feature(kind, n, rng)
    columns["label"] = _label(draw(st.sampled_from(LABELS)), signal, rng)
    refused = [name for kind, name in zip(kinds, names, strict=True) if kind in REFUSED]
    return pa.table(columns), refused


def _check_round_trip(table: pa.Table, refused: list[str], folder: Path) -> None:
    source = folder / "table.parquet"
    folder.mkdir(parents=True)
    pq.write_table(table, source)
    if refused:
        with pytest.raises(DataValidationError) as caught:
            ingest_table(source, folder / "run", label="label")
        assert any(f"`{name}`" in str(caught.value) for name in refused), str(caught.value)
        assert not (folder / "run").exists() or not any((folder / "run").rglob("*.parquet"))
        return
    chain = ingest_table(source, folder / "run", label="label")
    train_model(chain, "label")
    evaluate_model(chain)
    export_model(chain)  # raises ExportParityError unless within 1e-6 (scaled) with 100 % label agreement
    assert chain.export.metrics["label_agreement"] == 1.0
    _check_serving(chain)


def _check_serving(chain) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from kfp_tabular.components._shared.predictor import load_predictor
    from kfp_tabular.components.export_savedmodel.predict import predict_rows
    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature
    from kfp_tabular.components.export_savedmodel.warmup import predict_request, request_to_tensors

    predictor = load_predictor(chain.model)
    test = pd.read_parquet(chain.split("test"))
    features = test.drop(columns=["label"])
    regression = predictor.problem_type == "regression"
    if regression:
        expected = {"prediction": predictor.predict(features).to_numpy(np.float64)}
    else:
        expected = {"probabilities": predictor.predict_proba(features).to_numpy(np.float64),
                    "label": predictor.predict(features).astype(str).to_numpy()}

    # as a client sends them: JSON with null for missing values (Python's float repr round-trips exactly)
    records = features.astype(object).where(features.notna(), None).to_dict(orient="records")
    rows = json.loads(json.dumps(records, default=lambda value: value.item()))
    answer = predict_rows(chain.savedmodel, {"instances": rows})["predictions"]
    rest = {key: np.array([row[key] for row in answer]) for key in expected}

    signature = read_signature(chain.savedmodel)
    wire = predict_request(frame_to_inputs(features, signature), signature).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(wire)
    function = tf.saved_model.load(str(chain.savedmodel)).signatures[request.model_spec.signature_name]
    grpc = {key: value.numpy() for key, value in function(**request_to_tensors(request)).items()}

    for got in (rest, grpc):
        if regression:
            scale = np.maximum(1.0, np.abs(expected["prediction"]))
            assert np.max(np.abs(got["prediction"] - expected["prediction"]) / scale) <= 1e-6
        else:
            assert np.max(np.abs(got["probabilities"] - expected["probabilities"])) <= 1e-6
            labels = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in got["label"]])
            assert (labels == expected["label"]).all()


COMMON = {"deadline": None, "database": None, "derandomize": True,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.function_scoped_fixture]}


# No shrinking in make test: a failure is reported as found, within the time budget.
@settings(max_examples=15, phases=[Phase.explicit, Phase.reuse, Phase.generate], **COMMON)
@given(case=tables())
def test_random_tables_stop_at_ingest_or_serve_at_parity(case, tmp_path_factory) -> None:
    table, refused = case
    _check_round_trip(table, refused, tmp_path_factory.mktemp("table") / "case")


@pytest.mark.long
@settings(max_examples=80, **COMMON)
@given(case=tables())
def test_many_random_tables(case, tmp_path_factory) -> None:
    table, refused = case
    _check_round_trip(table, refused, tmp_path_factory.mktemp("table") / "case")
