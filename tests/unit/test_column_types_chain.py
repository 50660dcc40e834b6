"""Column types from ingest to predict: what ingest decides is what training, evaluation and export use."""

from __future__ import annotations

import decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from core_chain import evaluate_model, export_model, ingest_table, train_model

from kfp_tabular.components._shared.predictor import load_predictor
from kfp_tabular.components.train_autogluon.core import TrainConfig, resolved_problem_type

pytestmark = pytest.mark.slow


def test_decimal_label_trains_and_evaluates_as_regression(tmp_path: Path) -> None:
    # issue 11, defect 3: AutoGluon picked multiclass from the object dtype, evaluation then crashed in sklearn
    n = 240
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, n)
    price = [decimal.Decimal(f"{1000 + 300 * v + rng.normal():.2f}") for v in x]
    source = tmp_path / "prices.parquet"
    pq.write_table(pa.table({"x": x, "size": rng.choice(["s", "m", "l"], n),
                             "price": pa.array(price, pa.decimal128(10, 2))}), source)
    chain = ingest_table(source, tmp_path / "run", label="price")
    assert resolved_problem_type(TrainConfig(label="price"), chain.split("train")) == "regression"
    train_model(chain, "price", models={"LR": {}})
    assert chain.train.metadata["problem_type"] == "regression"
    evaluate_model(chain)
    assert chain.evaluation.metrics["r2"] > 0.9


def test_float_zero_one_label_with_blanks_exports_at_parity(tmp_path: Path) -> None:
    # issue 11, defect 4: classes [0, 1] but predict() said "0.0"/"1.0"; the export's label agreement was 0 %
    n = 300
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=n), rng.normal(size=n)
    label = ((a + 0.5 * b) > 0).astype(float)
    label[rng.random(n) < 0.08] = np.nan
    source = tmp_path / "blanks.csv"
    pd.DataFrame({"a": a, "b": b, "label": label}).to_csv(source, index=False)
    chain = ingest_table(source, tmp_path / "run", label="label")
    train_model(chain, "label")
    assert chain.train.metadata["classes"] == ["0", "1"]
    predictor = load_predictor(chain.model)
    test = pd.read_parquet(chain.split("test"))
    assert set(predictor.predict(test).astype(str)) <= {"0", "1"}
    evaluate_model(chain)
    export_model(chain)
    assert chain.export.metrics["label_agreement"] == 1.0
    assert chain.export.metrics["parity_max_abs_diff"] <= 1e-6


def test_timestamp_feature_exports(tmp_path: Path) -> None:
    # issue 11, defect 5: export refused datetime columns after training; ingest now stores epoch seconds
    n = 300
    rng = np.random.default_rng(2)
    stamps = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.uniform(0, 730, n), unit="D")
    y = np.where(stamps > pd.Timestamp("2024-01-01"), "late", "early")
    flip = rng.random(n) < 0.05
    y[flip] = np.where(y[flip] == "late", "early", "late")
    source = tmp_path / "stamps.parquet"
    pq.write_table(pa.table({"when": pa.array(stamps.to_numpy(), pa.timestamp("ns")),
                             "x": rng.normal(size=n), "y": y}), source)
    chain = ingest_table(source, tmp_path / "run", label="y")
    train_model(chain, "y")
    evaluate_model(chain)
    export_model(chain)
    assert chain.export.metrics["label_agreement"] == 1.0
    # clients send the raw timestamp (ISO text, any zone); the signature says the input is a datetime
    from kfp_tabular.components.export_savedmodel.predict import predict_rows
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    assert read_signature(chain.savedmodel).by_column["when"].logical_type == "datetime"
    test = pd.read_parquet(chain.split("test")).head(20)
    iso = [pd.Timestamp(s, unit="s", tz="UTC").tz_convert("Asia/Tokyo").isoformat() for s in test["when"]]
    answer = predict_rows(chain.savedmodel, {"instances": [{"when": w, "x": x} for w, x in zip(iso, test["x"],
                                                                                               strict=True)]})
    expected = load_predictor(chain.model).predict_proba(test.drop(columns=["y"])).to_numpy()
    got = np.array([row["probabilities"] for row in answer["predictions"]])
    assert np.abs(got - expected).max() <= 1e-6


def test_boolean_column_with_missing_values_exports_at_parity(tmp_path: Path) -> None:
    # found by the property-based test: a boolean column with nulls is an object column of Python bools to
    # AutoGluon; the gate sent it the strings "True"/"False", which AutoGluon compares unequal to the booleans
    n = 200
    rng = np.random.default_rng(4)
    signal = rng.normal(size=n)
    flag = [None if m else bool(v) for m, v in zip(rng.random(n) < 0.15, rng.random(n) < 0.4, strict=True)]
    label = signal * 1000 + np.array([0 if f is None else 300 * f for f in flag]) + 5000
    source = tmp_path / "flags.parquet"
    pq.write_table(pa.table({"signal": signal, "flag": pa.array(flag, pa.bool_()), "label": label}), source)
    chain = ingest_table(source, tmp_path / "run", label="label")
    train_model(chain, "label", models={"LR": {}})
    export_model(chain)
    assert chain.export.metrics["parity_max_scaled_diff"] <= 1e-6


def test_boolean_label_evaluates_and_exports(tmp_path: Path) -> None:
    # found by the property-based test: classes [False, True] indexed the probability frame as a row mask
    n = 200
    rng = np.random.default_rng(5)
    x = rng.normal(size=n)
    source = tmp_path / "bool_label.parquet"
    pq.write_table(pa.table({"x": x, "y": (x + rng.normal(scale=0.3, size=n)) > 0}), source)
    chain = ingest_table(source, tmp_path / "run", label="y")
    train_model(chain, "y")
    evaluate_model(chain)
    assert chain.evaluation.metrics["accuracy"] > 0.8
    export_model(chain)
    assert chain.export.metrics["label_agreement"] == 1.0


def test_half_floats_and_unsigned_integers_export_at_parity(tmp_path: Path) -> None:
    # float16 failed the export (after training); uint64 failed the parity gate's casts
    n = 300
    rng = np.random.default_rng(6)
    signal = rng.normal(size=n)
    source = tmp_path / "widths.parquet"
    pq.write_table(pa.table({
        "half": pa.array((signal + rng.normal(scale=0.2, size=n)).astype(np.float16)),
        "u64": pa.array(rng.integers(0, 2**40, n, dtype=np.uint64)),
        "u64_big": pa.array(rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64)),
        "u32": pa.array(rng.integers(0, 2**32 - 1, n, dtype=np.uint32)),
        "u16": pa.array(rng.integers(0, 2**16 - 1, n, dtype=np.uint16)),
        "y": np.where(signal > 0, "yes", "no"),
    }), source)
    chain = ingest_table(source, tmp_path / "run", label="y")
    train_model(chain, "y", models={"GBM": {"num_boost_round": 30, "min_data_in_leaf": 3}, "LR": {},
                                    "XGB": {"n_estimators": 20}, "RF": {"n_estimators": 10}})
    export_model(chain)
    assert chain.export.metrics["label_agreement"] == 1.0
    assert chain.export.metrics["parity_max_abs_diff"] <= 1e-6
