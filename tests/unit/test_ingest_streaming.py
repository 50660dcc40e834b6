"""ingest_data on files too big to read whole: the streaming path must give what the whole-file path gives."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfp_tabular.components.ingest_data import core, readers
from kfp_tabular.components.ingest_data.core import IngestConfig, IngestResult, ingest
from kfp_tabular.components.ingest_data.readers import FileFormat, TableReader
from kfp_tabular.components.ingest_data.sources import LocalSource
from kfp_tabular.errors import DataValidationError

SPLITS = ("train", "validation", "test")


def run(source: Path, folder: Path, **config) -> tuple[IngestResult, dict[str, pa.Table]]:
    paths = [folder / f"{name}.parquet" for name in SPLITS]
    result = ingest(str(source), IngestConfig(**config), *paths, folder / "profile.md")
    return result, {name: pq.read_table(path) for name, path in zip(SPLITS, paths, strict=True)}


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as too big to read whole, and is read in small blocks."""
    monkeypatch.setattr(readers, "WHOLE_READ_BYTES", 0)
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 500)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n).round(2),
            "n": rng.integers(0, 40, n),
            "c": rng.choice(["u", "v", "w", "long text, with a comma"], n),
            "y": rng.choice(["yes", "no", "maybe"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    frame.loc[::50, "x"] = np.nan
    frame.loc[::70, "c"] = None
    frame.loc[::400, "y"] = None  # dropped rows
    return pd.concat([frame, frame.iloc[:25]], ignore_index=True)  # 25 duplicate rows


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "parquet", "jsonl"])
def test_streaming_gives_the_same_result_as_reading_whole(
    kind: str, frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / f"data.{kind}"
    if kind == "csv":
        frame.to_csv(source, index=False)
    elif kind == "csv.gz":
        source.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    elif kind == "parquet":
        frame.to_parquet(source, index=False, row_group_size=700)
    else:
        frame.to_json(source, orient="records", lines=True)
    whole, whole_splits = run(source, tmp_path / "whole", label="y")
    monkeypatch.setattr(readers, "WHOLE_READ_BYTES", 0)
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 500)
    streamed, streamed_splits = run(source, tmp_path / "streamed", label="y")
    assert streamed.metrics == whole.metrics
    assert whole.metrics["duplicate_rows"] == frame.duplicated().sum() >= 25
    assert whole.metrics["dropped_label_rows"] == frame["y"].isna().sum() == 9
    assert streamed.profile_markdown == whole.profile_markdown
    for name in SPLITS:
        assert streamed_splits[name].equals(whole_splits[name]), name
        assert streamed.splits[name]["sha256"] != ""


def test_streamed_splits_are_written_in_steps(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: None
) -> None:
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    monkeypatch.setattr(core, "ROW_GROUP_BYTES", 1)  # every piece is written as soon as it is read
    result, splits = run(source, tmp_path / "out", label="y")
    train = pq.ParquetFile(tmp_path / "out" / "train.parquet")
    assert train.metadata.num_row_groups > 1
    assert sum(len(table) for table in splits.values()) == len(frame) - 9  # rows without a label are dropped
    assert splits["train"].num_rows == train.metadata.num_rows == result.splits["train"]["rows"]


def test_streaming_widens_column_types_and_reads_again(tmp_path: Path, stream: None) -> None:
    rows = [f"{i},{i % 7},{'a' if i % 2 else 'b'},,{i % 2 == 0}" for i in range(600)]
    rows += ["600,2.5,a,x,maybe", "601,3,b,7,true"]
    source = tmp_path / "drift.csv"
    source.write_text("id,amount,kind,late,flag\n" + "\n".join(rows) + "\n")
    result, splits = run(source, tmp_path / "out", label="kind")
    assert result.metrics["rows"] == 602
    schema = splits["train"].schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("amount").type == pa.float64()
    assert schema.field("late").type == pa.string()
    assert schema.field("flag").type == pa.string()


def test_streaming_errors_name_their_lines(tmp_path: Path, stream: None) -> None:
    good = "".join(f"{i},{'x' if i % 2 else 'y'},{i % 3}\n" for i in range(400))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,label\n" + good + "7,z,1,surprise\n" + good)
    with pytest.raises(DataValidationError, match=r"1 malformed CSV row\(s\) at line\(s\) 402 "):
        run(ragged, tmp_path / "ragged", label="label")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(("a,b,label\n" + good + "3,na\xefve,1\n").encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"line\(s\) 402 .*0xef"):
        run(latin, tmp_path / "latin", label="label")
    assert not any(
        (tmp_path / folder).exists() and any((tmp_path / folder).iterdir()) for folder in ("ragged", "latin")
    )


def test_streaming_jsonl_with_fields_that_appear_late(tmp_path: Path, stream: None) -> None:
    lines = [json.dumps({"a": i, "label": "xy"[i % 2]}) for i in range(300)]
    lines.append('{"a": 1.5, "label": "x", "extra": true}')
    source = tmp_path / "late.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result, splits = run(source, tmp_path / "out", label="label")
    assert result.metrics["rows"] == 301
    assert splits["train"].schema.names == ["a", "label", "extra"]
    assert splits["train"].schema.field("a").type == pa.float64()


def test_reader_reads_small_tables_whole_and_big_ones_in_blocks(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = frame.to_csv(index=False).encode()
    plain, packed = tmp_path / "data.csv", tmp_path / "data.csv.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))

    def reader(path: Path, compression: str | None = None) -> TableReader:
        return TableReader(
            LocalSource(path=path, name=path.name, display=str(path)), FileFormat("csv", compression)
        )

    assert reader(plain).estimated_bytes() == len(text)
    assert reader(packed, "gzip").estimated_bytes() == packed.stat().st_size * readers.COMPRESSED_TEXT_RATIO
    whole = reader(plain).open()
    assert whole.whole
    assert sum(piece.num_rows for piece in whole.pieces) == len(frame)
    monkeypatch.setattr(readers, "WHOLE_READ_BYTES", len(text) - 1)
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)
    streamed = reader(plain).open()
    assert not streamed.whole
    pieces = list(streamed.pieces)
    assert len(pieces) > 1
    assert sum(piece.num_rows for piece in pieces) == len(frame)
    assert all(piece.schema == streamed.schema for piece in pieces)
