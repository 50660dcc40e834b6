"""ingest_data decides every column's type once and stores the decision with the splits (issue 11)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfp_tabular.components._shared.table_schema import read_table_schema
from kfp_tabular.components.ingest_data.core import IngestConfig, IngestResult, ingest
from kfp_tabular.errors import ConfigError, DataValidationError

SPLITS = ("train", "validation", "test")


def run(source: Path, folder: Path, **config) -> tuple[IngestResult, dict[str, Path]]:
    paths = {name: folder / f"{name}.parquet" for name in SPLITS} | {"profile": folder / "profile.md"}
    result = ingest(str(source), IngestConfig(**config), paths["train"], paths["validation"], paths["test"],
                    paths["profile"])
    return result, paths


def every_row(paths: dict[str, Path]) -> pd.DataFrame:
    return pd.concat([pq.read_table(paths[name]).to_pandas() for name in SPLITS], ignore_index=True)


def write_parquet(table: pa.Table, tmp_path: Path) -> Path:
    source = tmp_path / "source.parquet"
    pq.write_table(table, source)
    return source


def test_decimal_feature_is_stored_as_float64(tmp_path: Path) -> None:
    n = 60
    prices = [decimal.Decimal(f"{i}.{i % 100:02d}") for i in range(n)]
    table = pa.table({"price": pa.array(prices, pa.decimal128(10, 2)), "y": ["a", "b", "c"] * (n // 3)})
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    assert pq.read_schema(paths["train"]).field("price").type == pa.float64()
    rows = every_row(paths)
    assert sorted(rows["price"]) == sorted(float(p) for p in prices)
    assert result.schema.column("price").logical_type == "numeric"
    assert "decimal128(10, 2) → double" in paths["profile"].read_text()


def test_decimal_label_is_a_regression_everywhere(tmp_path: Path) -> None:
    # issue 11, defect 3: ingest said regression, training let AutoGluon pick multiclass from object dtype
    n = 200
    rng = np.random.default_rng(0)
    labels = [decimal.Decimal(f"{v:.2f}") for v in rng.uniform(1000, 9000, n)]
    table = pa.table({"x": rng.normal(size=n), "price": pa.array(labels, pa.decimal128(10, 2))})
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="price")
    assert result.problem_type == "regression"
    for name in SPLITS:
        assert pq.read_schema(paths[name]).field("price").type == pa.float64()
        stored = read_table_schema(paths[name])
        assert stored is not None and stored.problem_type == "regression" and stored.label == "price"


def test_whole_number_float_label_with_blanks_becomes_int_classes(tmp_path: Path) -> None:
    # issue 11, defect 4: a 0/1 label with blanks is read as float64; classes must be 0/1, never "0.0"/"1.0"
    lines = ["x,label"] + [f"{i},{'' if i % 10 == 0 else i % 2}" for i in range(120)]
    source = tmp_path / "blank.csv"
    source.write_text("\n".join(lines) + "\n")
    result, paths = run(source, tmp_path / "out", label="label")
    assert result.problem_type == "binary"
    assert result.metrics["dropped_label_rows"] == 12
    for name in SPLITS:
        assert pq.read_schema(paths[name]).field("label").type == pa.int64()
    assert set(every_row(paths)["label"]) == {0, 1}


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_timestamps_become_epoch_seconds(tz: str | None, tmp_path: Path) -> None:
    # issue 11, defect 5: datetime columns are decided at ingest, as numbers the export supports
    n = 60
    start = datetime.datetime(2024, 3, 1, 12, 30)
    stamps = [start + datetime.timedelta(hours=7 * i) for i in range(n)]
    table = pa.table({
        "when": pa.array(stamps, pa.timestamp("ms")).cast(pa.timestamp("ms", tz)) if tz else pa.array(
            stamps, pa.timestamp("ms")),
        "day": pa.array([s.date() for s in stamps]),
        "y": ["a", "b"] * (n // 2),
    })
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    schema = pq.read_schema(paths["train"])
    assert schema.field("when").type == pa.float64() and schema.field("day").type == pa.float64()
    rows = every_row(paths).sort_values("when")
    # naive timestamps count as UTC; aware ones are stored in UTC by Arrow already
    expected = sorted(pd.Timestamp(s, tz="UTC").timestamp() for s in stamps)
    assert rows["when"].tolist() == expected
    assert result.schema.column("when").logical_type == "datetime"
    assert result.schema.column("day").logical_type == "datetime"
    assert rows["day"].iloc[0] == pd.Timestamp(stamps[0].date(), tz="UTC").timestamp()


def test_dates_written_as_text_are_datetimes(tmp_path: Path) -> None:
    lines = ["when,y"] + [f"03/{1 + i % 28:02d}/2024 10:{i % 60:02d},{'ab'[i % 2]}" for i in range(80)]
    source = tmp_path / "dates.csv"
    source.write_text("\n".join(lines) + "\n")
    result, paths = run(source, tmp_path / "out", label="y")
    assert result.schema.column("when").logical_type == "datetime"
    assert pq.read_schema(paths["train"]).field("when").type == pa.float64()
    assert every_row(paths)["when"].min() == pd.Timestamp("2024-03-01 10:00", tz="UTC").timestamp()


def test_nested_objects_are_flattened_and_lists_refused(tmp_path: Path) -> None:
    # issue 11, defect 6: nested JSONL was accepted, then training failed with "unhashable type: 'dict'"
    records = [{"user": {"age": 20 + i % 30, "city": "ab"[i % 2]}, "y": "pq"[i % 2]} for i in range(60)]
    source = tmp_path / "nested.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result, paths = run(source, tmp_path / "out", label="y")
    assert pq.read_schema(paths["train"]).names == ["user.age", "user.city", "y"]
    assert result.schema.column("user.city").logical_type == "categorical"

    listed = tmp_path / "lists.jsonl"
    listed.write_text("\n".join(json.dumps({"tags": [1, i], "x": i, "y": "pq"[i % 2]}) for i in range(60)) + "\n")
    out = tmp_path / "refused"
    with pytest.raises(DataValidationError, match=r"`tags` holds lists .*drop_columns='tags'"):
        run(listed, out, label="y")
    assert not out.exists() or not any(out.iterdir())
    result, paths = run(listed, tmp_path / "dropped", label="y", drop_columns=("tags",))
    assert pq.read_schema(paths["train"]).names == ["x", "y"]


def test_binary_columns_are_refused_by_name(tmp_path: Path) -> None:
    table = pa.table({"blob": pa.array([b"\x00\x01"] * 40), "x": range(40), "y": ["a", "b"] * 20})
    with pytest.raises(DataValidationError, match="`blob` holds binary data"):
        run(write_parquet(table, tmp_path), tmp_path / "out", label="y")


def one_stray_csv(tmp_path: Path, rows: int = 3000, stray_row: int = 2700) -> Path:
    rng = np.random.default_rng(1)
    values = [f"{v:.3f}" for v in rng.normal(size=rows)]
    values[stray_row - 1] = "n/a?"
    lines = ["amount,y"] + [f"{v},{'ab'[i % 2]}" for i, v in enumerate(values)]
    source = tmp_path / "stray.csv"
    source.write_text("\n".join(lines) + "\n")
    return source


def test_one_string_in_a_numeric_column_is_reported_with_its_row(tmp_path: Path) -> None:
    # issue 11, defect 7: the column silently became text with thousands of distinct values
    source = one_stray_csv(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError) as caught:
        run(source, out, label="y")
    message = str(caught.value)
    assert "`amount` holds numbers in 2999 of 3000 rows but 1 value(s) that are not numbers" in message
    assert "'n/a?'" in message and "data row(s) 2700; CSV line(s) 2701" in message
    assert Path(str(source)).read_text().splitlines()[2700].startswith("n/a?")  # line 2701 of the file
    assert "bad_values='missing'" in message and "bad_values='text'" in message and "--bad-values" in message
    assert not out.exists() or not any(out.iterdir())


def test_bad_values_missing_and_text(tmp_path: Path) -> None:
    source = one_stray_csv(tmp_path)
    result, paths = run(source, tmp_path / "missing", label="y", bad_values="missing")
    rows = every_row(paths)
    assert rows["amount"].dtype == np.float64 and rows["amount"].isna().sum() == 1
    assert result.schema.column("amount").logical_type == "numeric"
    assert "1 value(s) that are not numbers read as missing" in paths["profile"].read_text()
    result, paths = run(source, tmp_path / "text", label="y", bad_values="text")
    assert pq.read_schema(paths["train"]).field("amount").type == pa.string()
    assert result.schema.column("amount").logical_type == "categorical"


def test_text_of_numbers_only_stays_categorical(tmp_path: Path) -> None:
    # codes written as text on purpose (zip codes) are not numbers
    table = pa.table({"zip": [f"{i % 9:05d}" for i in range(60)], "y": ["a", "b"] * 30})
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    assert pq.read_schema(paths["train"]).field("zip").type == pa.string()
    assert result.schema.column("zip").logical_type == "categorical"


def test_nan_labels_are_counted_as_missing_in_the_profile(tmp_path: Path) -> None:
    # issue 11, defect 8: the profile said 0 missing and counted NaN as a distinct value
    n = 100
    y = np.where(np.arange(n) % 10 == 0, np.nan, np.arange(n) * 1.5)
    x = np.where(np.arange(n) % 25 == 0, np.nan, np.arange(n) * 1.0)
    result, paths = run(write_parquet(pa.table({"x": x, "y": y}), tmp_path), tmp_path / "out", label="y")
    text = paths["profile"].read_text()
    assert "| y (label) | float64 | 10 | 10.0% | 90 |" in text
    assert "| x | float64 | 4 | 4.0% | 96 |" in text
    assert result.metrics["dropped_label_rows"] == 10
    assert math.isclose(result.metrics["missing_fraction"], 14 / 200)


def test_label_copies_and_ids_are_warned_about(tmp_path: Path) -> None:
    # issue 11, defect 11: a trailing-space copy of the label was blessed with accuracy 1.0 and shipped
    n = 300
    rng = np.random.default_rng(2)
    label = rng.choice(["yes", "no"], size=n)
    table = pa.table({
        "customer_id": np.arange(1000, 1000 + n),
        "label ": label,
        "code": np.where(label == "yes", 1, 0),
        "noise": rng.normal(size=n),
        "label": label,
    })
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="label")
    warnings = "\n".join(result.warnings)
    assert "`label ` has the label's name" in warnings
    assert "`code` reproduces the label `label`: its value gives the class of 100.0% of rows" in warnings
    assert "`customer_id` has a different value in each of the 300 rows: it looks like an ID" in warnings
    assert "noise" not in warnings
    assert result.metrics["warnings"] == 3
    assert "Warnings:" in paths["profile"].read_text()
    result, _ = run(write_parquet(table, tmp_path), tmp_path / "dropped", label="label",
                    drop_columns=("label ", "code", "customer_id"))
    assert result.warnings == ()


def test_regression_label_copy_is_warned_about(tmp_path: Path) -> None:
    n = 200
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 1e6, n)
    table = pa.table({"x": rng.normal(size=n), "y_cents": np.round(y * 100), "y": y})
    result, _ = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    assert any("`y_cents` reproduces the label `y`: correlation 1.0000" in w for w in result.warnings)
    assert not any("`x`" in w for w in result.warnings)


def test_drop_columns_is_checked(tmp_path: Path) -> None:
    table = pa.table({"x": range(40), "id": range(40), "y": ["a", "b"] * 20})
    source = write_parquet(table, tmp_path)
    with pytest.raises(DataValidationError, match=r"`idd` \(did you mean `id`\?\)"):
        run(source, tmp_path / "a", label="y", drop_columns=("idd",))
    with pytest.raises(DataValidationError, match="lists the label"):
        run(source, tmp_path / "b", label="y", drop_columns=("y",))
    with pytest.raises(DataValidationError, match="only the label column"):
        run(source, tmp_path / "c", label="y", drop_columns=("x", "id"))
    with pytest.raises(ConfigError, match="bad_values"):
        IngestConfig(label="y", bad_values="ignore")


def test_decision_is_stored_in_every_split_and_the_metadata(tmp_path: Path) -> None:
    n = 60
    table = pa.table({
        "price": pa.array([decimal.Decimal(i) for i in range(n)], pa.decimal128(5, 0)),
        "flag": [i % 2 == 0 for i in range(n)],
        "city": ["x", "y", "z"] * (n // 3),
        "y": ["a", "b"] * (n // 2),
    })
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    expected = {"price": "numeric", "flag": "boolean", "city": "categorical", "y": "categorical"}
    for name in SPLITS:
        stored = read_table_schema(paths[name])
        assert stored == result.schema
        assert stored.as_metadata() == expected
        assert result.splits[name]["column_types"] == expected


@pytest.mark.parametrize(("text", "names"), [
    ("", ()), ("a, b", ("a", "b")), ('["label ", "x,y"]', ("label ", "x,y")),
])
def test_drop_columns_text(text: str, names: tuple[str, ...]) -> None:
    from kfp_tabular.components.ingest_data.column_types import drop_columns_argument, parse_drop_columns

    assert parse_drop_columns(text) == names
    assert parse_drop_columns(drop_columns_argument(list(names))) == names
    with pytest.raises(ConfigError, match="JSON list"):
        parse_drop_columns('["a"')


def test_the_advised_drop_columns_value_works(tmp_path: Path) -> None:
    # the warning's fix must be usable as written, even for a name with a trailing space
    n = 100
    table = pa.table({"x": np.arange(n) % 7, "label ": ["p", "q"] * (n // 2), "label": ["p", "q"] * (n // 2)})
    source = write_parquet(table, tmp_path)
    result, _ = run(source, tmp_path / "out", label="label")
    advised = result.warnings[0].split("drop_columns='")[1].split("'")[0]
    assert advised == '["label "]'
    from kfp_tabular.components.ingest_data.column_types import parse_drop_columns

    result, paths = run(source, tmp_path / "fixed", label="label", drop_columns=parse_drop_columns(advised))
    assert result.warnings == () and pq.read_schema(paths["train"]).names == ["x", "label"]


def test_narrow_and_unsigned_numbers_are_stored_in_types_the_export_reads(tmp_path: Path) -> None:
    # float16 columns failed the export after training; uint64 values failed the parity gate's casts
    n = 90
    rng = np.random.default_rng(3)
    small = [int(v) for v in rng.integers(0, 2**40, n, dtype=np.uint64)]
    huge = [int(v) for v in rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64)]
    table = pa.table({
        "half": pa.array(rng.normal(size=n).astype(np.float16)),
        "counts": pa.array(small, pa.uint64()),
        "big": pa.array(huge, pa.uint64()),
        "u32": pa.array(rng.integers(0, 2**32 - 1, n, dtype=np.uint32)),
        "y": ["a", "b", "c"] * (n // 3),
    })
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    stored = pq.read_schema(paths["train"])
    assert stored.field("half").type == pa.float32()  # float16 widens exactly
    assert stored.field("counts").type == pa.int64()  # every value fits
    assert stored.field("big").type == pa.float64()  # values above 2**63-1 do not
    assert stored.field("u32").type == pa.int64()  # AutoGluon refuses a missing value in an unsigned column
    rows = every_row(paths)
    half = table.column("half").to_numpy().astype(np.float32)
    assert sorted(rows["half"]) == sorted(half.tolist())
    assert sorted(rows["counts"]) == sorted(small)
    assert sorted(rows["big"]) == sorted(float(v) for v in huge)
    assert result.schema.column("big").logical_type == "numeric"
    profile = paths["profile"].read_text()
    assert "`half`: halffloat → float" in profile
    assert "`big`: uint64 → double" in profile and "2^53" in profile


def test_a_float16_label_is_a_float32_regression(tmp_path: Path) -> None:
    # the label analysis hashed the raw float16 column: Arrow has no dictionary kernel for it (a raw Arrow error)
    n = 120
    rng = np.random.default_rng(4)
    x = rng.normal(size=n)
    table = pa.table({"x": x, "y": pa.array((x * 3 + rng.normal(scale=0.1, size=n)).astype(np.float16))})
    result, paths = run(write_parquet(table, tmp_path), tmp_path / "out", label="y")
    assert result.problem_type == "regression"
    assert pq.read_schema(paths["train"]).field("y").type == pa.float32()


def test_a_column_error_comes_before_a_split_error(tmp_path: Path) -> None:
    # the inspector looks at the last piece while the labels are split: the errors keep their order
    values = [f"{v:.3f}" for v in np.random.default_rng(2).normal(size=80)]
    values[70] = "n/a?"
    lines = ["amount,y"] + [f"{v},class{i}" for i, v in enumerate(values)]  # every class has a single row
    source = tmp_path / "both.csv"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match="`amount` holds numbers in 79 of 80 rows"):
        run(source, tmp_path / "out", label="y", problem_type="multiclass")
    with pytest.raises(DataValidationError, match="split would be empty"):
        run(source, tmp_path / "out", label="y", problem_type="multiclass", bad_values="missing")
