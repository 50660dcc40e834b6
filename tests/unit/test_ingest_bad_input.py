"""A corpus of bad inputs: each fails with its own specific message and leaves no output behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kfp_tabular.components.ingest_data import readers
from kfp_tabular.components.ingest_data.core import IngestConfig, ingest
from kfp_tabular.errors import DataSourceError, DataValidationError

GOOD_ROWS = "".join(f"{i},{'x' if i % 2 else 'y'},{i % 3}\n" for i in range(20))


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def assert_fails(
    source: str | Path, tmp_path: Path, error: type[Exception], *patterns: str, **config
) -> Exception:
    """Ingest must raise ``error`` whose message contains every pattern, and leave the output folder empty."""
    out = tmp_path / "out"
    out.mkdir()
    paths = [out / "train.parquet", out / "validation.parquet", out / "test.parquet", out / "profile.md"]
    config.setdefault("label", "label")
    with pytest.raises(error) as caught:
        ingest(str(source), IngestConfig(**config), *paths)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"
    assert not any(path.exists() for path in paths)
    assert list(out.iterdir()) == []  # no temporary files either
    return caught.value


def test_ragged_row_names_its_line(tmp_path: Path) -> None:
    source = write(tmp_path, "ragged.csv", "a,b,label\n" + GOOD_ROWS + "7,z,1,surprise\n" + GOOD_ROWS)
    assert_fails(
        source, tmp_path, DataValidationError, "ragged.csv", "line(s) 22 ", "4 fields", "header has 3"
    )


def test_truncated_row_names_its_line(tmp_path: Path) -> None:
    source = write(tmp_path, "truncated.csv", "a,b,label\n" + GOOD_ROWS + "8,z")  # cut off mid-row
    assert_fails(source, tmp_path, DataValidationError, "line(s) 22 ", "2 fields")


def test_every_malformed_line_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "BLOCK_SIZE", 256)  # the bad rows sit in different blocks
    lines = GOOD_ROWS.splitlines(keepends=True)
    body = [*lines[:3], "1,2\n", *lines[3:], "\n", '3,"quoted, with comma",1\n', "1,2,3,4\n", "9,x\n"]
    source = write(tmp_path, "many.csv", "a,b,label\n" + "".join(body))
    # line 5 has 2 fields; line 23 is blank (ignored); line 24 is fine (quoted comma); lines 25 and 26 are bad
    assert_fails(source, tmp_path, DataValidationError, "3 malformed CSV row(s) at line(s) 5, 25, 26 ")


def test_latin1_bytes_in_utf8_file(tmp_path: Path) -> None:
    content = ("a,b,label\n" + GOOD_ROWS + "3,café,1\n" + GOOD_ROWS).encode("latin-1")
    source = write(tmp_path, "latin.csv", content)
    assert_fails(
        source,
        tmp_path,
        DataValidationError,
        "latin.csv",
        "not valid utf-8",
        "line(s) 22 ",
        "0xe9",
        "encoding=",
    )


def test_latin1_file_loads_with_its_encoding(tmp_path: Path) -> None:
    content = ("a,b,label\n" + GOOD_ROWS + "3,café,1\n" + GOOD_ROWS).encode("latin-1")
    source = write(tmp_path, "latin.csv", content)
    out = tmp_path / "out"
    result = ingest(
        str(source),
        IngestConfig(label="label", encoding="latin-1", min_rows=40),  # 41 rows: below the default minimum
        out / "train.parquet",
        out / "validation.parquet",
        out / "test.parquet",
        out / "profile.md",
    )
    assert result.metrics["rows"] == 41
    splits = [pq.read_table(out / f"{name}.parquet") for name in ("train", "validation", "test")]
    assert "café" in {value for table in splits for value in table["b"].to_pylist()}


def test_latin1_bytes_deep_in_a_large_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "BLOCK_SIZE", 512)  # the first block is clean text, the bad byte comes later
    content = ("a,b,label\n" + GOOD_ROWS * 5 + "3,na\xefve,1\n").encode("latin-1")
    source = write(tmp_path, "late.csv", content)
    assert_fails(source, tmp_path, DataValidationError, "line(s) 102 ", "0xef")


def test_latin1_bytes_in_jsonl(tmp_path: Path) -> None:
    content = '{"a": 1, "label": "x"}\n{"a": 2, "label": "caf\xe9"}\n'.encode("latin-1")
    source = write(tmp_path, "latin.jsonl", content)
    assert_fails(source, tmp_path, DataValidationError, "line(s) 2 ", "encoding=")


def test_empty_file(tmp_path: Path) -> None:
    source = write(tmp_path, "empty.csv", "")
    assert_fails(source, tmp_path, DataValidationError, "empty.csv", "empty")


def test_blank_lines_only(tmp_path: Path) -> None:
    source = write(tmp_path, "blank.csv", "\n\n\n")
    assert_fails(source, tmp_path, DataValidationError, "no header and no rows")


def test_header_only(tmp_path: Path) -> None:
    source = write(tmp_path, "header.csv", "a,b,label\n")
    assert_fails(source, tmp_path, DataValidationError, "header.csv", "no data rows")


def test_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    source = write(tmp_path, "data.csv", "a,b,Label\n" + GOOD_ROWS)
    assert_fails(
        source,
        tmp_path,
        DataValidationError,
        "`label` not found",
        "`a`, `b`, `Label`",
        "Did you mean `Label`",
    )


def test_all_null_label(tmp_path: Path) -> None:
    source = write(tmp_path, "nolabel.csv", "a,label\n1,\n2,NA\n3,\n")
    assert_fails(source, tmp_path, DataValidationError, "`label` is missing in all 3 rows")


def test_single_class_label(tmp_path: Path) -> None:
    source = write(tmp_path, "one.csv", "a,label\n1,yes\n2,yes\n3,\n4,yes\n")
    assert_fails(source, tmp_path, DataValidationError, "single value ('yes')", "at least 2 classes")


def test_duplicate_column_names(tmp_path: Path) -> None:
    source = write(tmp_path, "dup.csv", "a,b,a,label\n1,2,3,x\n4,5,6,y\n")
    assert_fails(source, tmp_path, DataValidationError, "duplicate column name(s) 'a'", "rename")


def test_unknown_extension(tmp_path: Path) -> None:
    source = write(tmp_path, "table.xlsx", "a,label\n1,x\n")
    assert_fails(source, tmp_path, DataValidationError, "'.xlsx'", "file_format=")


def test_missing_file(tmp_path: Path) -> None:
    assert_fails(tmp_path / "nowhere.csv", tmp_path, DataSourceError, "nowhere.csv", "does not exist")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    assert_fails(tmp_path / "folder.csv", tmp_path, DataSourceError, "is not a file")


def test_unknown_scheme(tmp_path: Path) -> None:
    assert_fails(
        "gs://bucket/data.csv", tmp_path, DataSourceError, "unknown scheme 'gs://'", "s3://bucket/key"
    )


def test_unknown_builtin(tmp_path: Path) -> None:
    assert_fails(
        "builtin://iris", tmp_path, DataSourceError, "unknown builtin dataset 'iris'", "builtin://penguins"
    )


def test_s3_without_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    assert_fails("s3://bucket/data.csv", tmp_path, DataSourceError, "S3_ENDPOINT, AWS_SECRET_ACCESS_KEY")


def test_s3_uri_without_key(tmp_path: Path) -> None:
    assert_fails("s3://bucket/", tmp_path, DataSourceError, "not s3://bucket/key")


def test_regression_needs_a_numeric_label(tmp_path: Path) -> None:
    source = write(tmp_path, "text.csv", "a,label\n1,x\n2,y\n3,z\n")
    assert_fails(
        source, tmp_path, DataValidationError, "regression", "numeric label", problem_type="regression"
    )


def test_binary_needs_two_classes(tmp_path: Path) -> None:
    source = write(tmp_path, "three.csv", "a,label\n1,x\n2,y\n3,z\n4,x\n")
    assert_fails(source, tmp_path, DataValidationError, "exactly 2 classes", "has 3", problem_type="binary")


def test_infinite_regression_label(tmp_path: Path) -> None:
    source = write(tmp_path, "inf.csv", "a,label\n1,1.5\n2,inf\n3,2.5\n4,3.5\n")
    assert_fails(source, tmp_path, DataValidationError, "1 infinite value(s)", "data row 2")


def test_too_few_rows_to_split(tmp_path: Path) -> None:
    source = write(tmp_path, "two.csv", "a,label\n1,x\n2,y\n")
    assert_fails(source, tmp_path, DataValidationError, "only 2 rows have a label")


def test_only_the_label_column(tmp_path: Path) -> None:
    source = write(tmp_path, "lonely.csv", "label\nx\ny\nx\ny\n")
    assert_fails(source, tmp_path, DataValidationError, "only the label column")


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    source = write(
        tmp_path, "bad.jsonl", '{"a": 1, "label": "x"}\n{"a": 2, "label": "y"\n{"a": 3, "label": "x"}\n'
    )
    assert_fails(source, tmp_path, DataValidationError, "line(s) 2 ", "one JSON object")


def test_jsonl_column_changing_type(tmp_path: Path) -> None:
    source = write(tmp_path, "mixed.jsonl", '{"a": 1, "label": "x"}\n{"a": "two", "label": "y"}\n')
    assert_fails(source, tmp_path, DataValidationError, "`a` is a number before line 2 and a string there")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    source = write(tmp_path, "fake.parquet", "a,label\n1,x\n")
    assert_fails(source, tmp_path, DataValidationError, "fake.parquet", "not a readable Parquet file")


def test_gzip_with_a_ragged_row(tmp_path: Path) -> None:
    source = write(
        tmp_path, "ragged.csv.gz", gzip.compress(("a,b,label\n" + GOOD_ROWS + "1,2,3,4\n").encode())
    )
    assert_fails(source, tmp_path, DataValidationError, "line(s) 22 ")


def test_failure_removes_outputs_of_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = [out / "train.parquet", out / "validation.parquet", out / "test.parquet", out / "profile.md"]
    ingest("builtin://penguins", IngestConfig(label="species"), *paths)
    assert all(path.exists() for path in paths)
    with pytest.raises(DataValidationError):
        ingest("builtin://penguins", IngestConfig(label="nope"), *paths)
    assert not any(path.exists() for path in paths)


def test_bytes_outside_a_declared_encoding(tmp_path: Path) -> None:
    content = ("a,b,label\n" + GOOD_ROWS + "3,café,1\n").encode("latin-1")
    source = write(tmp_path, "ascii.csv", content)
    assert_fails(source, tmp_path, DataValidationError, "not valid ascii", "line(s) 22 ", encoding="ascii")


def test_blank_jsonl(tmp_path: Path) -> None:
    source = write(tmp_path, "blank.jsonl", "\n\n")
    assert_fails(source, tmp_path, DataValidationError, "blank.jsonl", "no")


def test_classification_of_a_continuous_label(tmp_path: Path) -> None:
    # Every value its own class: nothing can leave train, so the split would be empty: say so, don't hang.
    rows = "".join(f"{i},{i * 0.37:.2f}\n" for i in range(3000))
    source = write(tmp_path, "continuous.csv", "a,label\n" + rows)
    assert_fails(
        source,
        tmp_path,
        DataValidationError,
        "split would be empty",
        "3000 of 3000 classes",
        "regression",
        problem_type="multiclass",
    )
