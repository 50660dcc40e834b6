"""ingest_data core on real files: formats, problem types, splits, profile, metadata."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from kfp_tabular.components.ingest_data import readers
from kfp_tabular.components.ingest_data.core import IngestConfig, IngestResult, ingest
from kfp_tabular.components.ingest_data.labels import analyse_label
from kfp_tabular.errors import ConfigError

SPLITS = ("train", "validation", "test")


class Outputs:
    """The four output paths of one ingestion, under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.train = folder / "train" / "data.parquet"
        self.validation = folder / "validation" / "data.parquet"
        self.test = folder / "test" / "data.parquet"
        self.profile = folder / "profile.md"

    def paths(self) -> tuple[Path, Path, Path, Path]:
        return self.train, self.validation, self.test, self.profile

    def split(self, name: str) -> pd.DataFrame:
        return pq.read_table(getattr(self, name)).to_pandas()


def run(source: str | Path, folder: Path, **config) -> tuple[IngestResult, Outputs]:
    outputs = Outputs(folder)
    config.setdefault("label", "species")
    return ingest(str(source), IngestConfig(**config), *outputs.paths()), outputs


@pytest.fixture(scope="module")
def penguins_table(penguins_csv: Path) -> pa.Table:
    return pcsv.read_csv(penguins_csv, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))


@pytest.fixture(scope="module")
def penguins_files(penguins_table: pa.Table, penguins_csv: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("penguins")
    parquet = folder / "penguins.parquet"
    pq.write_table(penguins_table, parquet)
    jsonl = folder / "penguins.jsonl"
    penguins_table.to_pandas().to_json(jsonl, orient="records", lines=True)
    tsv = folder / "penguins.tsv"
    tsv.write_text(penguins_csv.read_text().replace(",", "\t"))
    gz = folder / "penguins.csv.gz"
    gz.write_bytes(gzip.compress(penguins_csv.read_bytes()))
    return {"csv": penguins_csv, "parquet": parquet, "jsonl": jsonl, "tsv": tsv, "csv.gz": gz}


# ------------------------------------------------------------------------------------------ sources, formats


def test_builtin_penguins(tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path)
    assert result.problem_type == "multiclass"
    assert result.metrics["rows"] == 344
    assert result.metrics["columns"] == 8
    assert {name: result.splits[name]["rows"] for name in SPLITS} == {
        "train": 223,
        "validation": 52,
        "test": 69,
    }
    assert sum(len(out.split(name)) for name in SPLITS) == 344
    assert out.profile.read_text().startswith("344 rows × 8 columns")


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl", "tsv", "csv.gz"])
def test_formats_give_the_same_splits(kind: str, penguins_files: dict[str, Path], tmp_path: Path) -> None:
    result, out = run(penguins_files[kind], tmp_path)
    reference, ref_out = run("builtin://penguins", tmp_path / "reference")
    assert result.problem_type == "multiclass"
    for name in SPLITS:
        assert result.splits[name]["rows"] == reference.splits[name]["rows"]
        mine, theirs = out.split(name), ref_out.split(name)
        assert list(mine.columns) == list(theirs.columns)
        pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)


def test_file_uri_and_explicit_format(penguins_csv: Path, tmp_path: Path) -> None:
    copy = tmp_path / "penguins.data"  # an extension that says nothing: file_format decides
    copy.write_bytes(penguins_csv.read_bytes())
    result, _ = run(copy.resolve().as_uri(), tmp_path / "out", file_format="csv")
    assert result.metrics["rows"] == 344


def test_dtypes_are_stable(penguins_table: pa.Table, tmp_path: Path) -> None:
    # A Parquet source with a categorical (dictionary) column and large strings still yields plain strings.
    table = penguins_table.set_column(0, "species", pc.dictionary_encode(penguins_table["species"]))
    table = table.set_column(1, "island", table["island"].cast(pa.large_string()))
    source = tmp_path / "categorical.parquet"
    pq.write_table(table, source)
    result, out = run(source, tmp_path / "out")
    for name in SPLITS:
        schema = pq.read_schema(getattr(out, name))
        assert schema.field("species").type == pa.string()
        assert schema.field("island").type == pa.string()
        assert schema.field("bill_length_mm").type == pa.float64()
        assert schema.field("body_mass_g").type == pa.int64()
        assert schema.names == result.splits[name]["columns"]


def test_missing_values_read_as_nulls(tmp_path: Path) -> None:
    _, out = run("builtin://penguins", tmp_path, label="species")
    frames = pd.concat([out.split(name) for name in SPLITS])
    assert frames["sex"].isna().sum() == 11  # "NA" in the CSV
    assert "NA" not in set(frames["sex"].dropna())
    assert frames["bill_length_mm"].isna().sum() == 2


def test_column_types_widen_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The streaming reader infers types from its first block; a later block with 2.5 or text must still load.
    monkeypatch.setattr(readers, "BLOCK_SIZE", 1 << 10)
    rows = [
        f"{i},{i % 7},{'a' if i % 2 else 'b'},,{i % 3},{i % 2 == 0},2024-01-{1 + i % 28:02d}"
        for i in range(600)
    ]
    rows += ["600,2.5,a,x,1,maybe,soon", "601,3,b,7,oops,true,2024-02-01"]
    source = tmp_path / "drift.csv"
    source.write_text("id,amount,kind,late,label,flag,day\n" + "\n".join(rows) + "\n")
    # bad_values="text": `label` (numbers and one "oops") and `day` (dates and one "soon") stay text as read
    result, out = run(source, tmp_path / "out", label="kind", bad_values="text")
    assert result.metrics["rows"] == 602
    schema = pq.read_schema(out.train)
    assert schema.field("id").type == pa.int64()
    assert schema.field("amount").type == pa.float64()
    for name in ("late", "label", "flag", "day"):
        assert schema.field(name).type == pa.string(), name


def test_many_batches_match_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=3000).round(3),
            "n": rng.integers(0, 50, 3000),
            "c": rng.choice(["u", "v", "w"], 3000),
            "y": rng.choice(["yes", "no"], 3000, p=[0.3, 0.7]),
        }
    )
    frame.iloc[::97, 0] = np.nan
    source = tmp_path / "many.csv"
    frame.to_csv(source, index=False)
    whole, whole_out = run(source, tmp_path / "whole", label="y")
    monkeypatch.setattr(readers, "BLOCK_SIZE", 4096)
    chunked, chunked_out = run(source, tmp_path / "chunked", label="y")
    assert whole.metrics == chunked.metrics
    for name in SPLITS:
        pd.testing.assert_frame_equal(whole_out.split(name), chunked_out.split(name))


# ------------------------------------------------------------------------------------------- problem types


@pytest.mark.parametrize(
    ("label", "expected"),
    [("species", "multiclass"), ("sex", "binary"), ("body_mass_g", "regression"), ("year", "multiclass")],
)
def test_problem_type_detection(label: str, expected: str, tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path, label=label)
    assert result.problem_type == expected
    assert all(result.splits[name]["problem_type"] == expected for name in SPLITS)
    assert f"label `{label}` ({expected}" in out.profile.read_text().splitlines()[0]


def test_explicit_problem_type_wins(tmp_path: Path) -> None:
    result, _ = run("builtin://penguins", tmp_path, label="year", problem_type="regression")
    assert result.problem_type == "regression"
    assert "classes" not in result.metrics


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pa.array([1.0, 2.0, 3.0] * 40), "multiclass"),  # float, few whole values
        (pa.array(np.linspace(0, 1, 120)), "regression"),  # float, many values
        (pa.array([0.5, 1.5, 2.5] * 40), "regression"),  # float, few but fractional
        (pa.array(list(range(120))), "regression"),  # integer, all distinct
        (pa.array([True, False] * 60), "binary"),
        (pa.array([3, 7] * 60), "binary"),
        (pa.array(["a", "b", "c", None] * 30), "multiclass"),
    ],
)
def test_autogluon_rules(values: pa.Array, expected: str) -> None:
    assert analyse_label(values, "y", "auto", "t.csv").problem_type == expected


def test_null_labels_are_dropped_and_counted(tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path, label="sex")
    assert result.metrics["dropped_label_rows"] == 11
    assert sum(result.splits[name]["rows"] for name in SPLITS) == 344 - 11
    assert all(out.split(name)["sex"].notna().all() for name in SPLITS)
    assert "Rows with a missing label dropped: 11" in out.profile.read_text()


# ------------------------------------------------------------------------------------------------ splitting


def test_split_sizes_follow_fractions(tmp_path: Path) -> None:
    result, _ = run("builtin://penguins", tmp_path, validation_fraction=0.1, test_fraction=0.3)
    assert result.splits["test"]["rows"] == round(0.3 * 344)
    assert result.splits["validation"]["rows"] == round(0.1 * 344)
    assert result.splits["train"]["rows"] == 344 - round(0.3 * 344) - round(0.1 * 344)


def test_zero_validation_fraction_writes_an_empty_split(tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path, validation_fraction=0.0)
    assert result.splits["validation"]["rows"] == 0
    assert pq.read_table(out.validation).num_rows == 0
    assert pq.read_schema(out.validation).names == result.splits["train"]["columns"]


def test_stratification_keeps_class_proportions(tmp_path: Path) -> None:
    _, out = run("builtin://penguins", tmp_path)
    overall = pd.concat([out.split(name) for name in SPLITS])["species"].value_counts(normalize=True)
    for name in SPLITS:
        split = out.split(name)
        share = split["species"].value_counts(normalize=True)
        # within one row per class of the exact proportion
        assert (share - overall).abs().max() <= 1.0 / len(split) + 1e-9, name


def test_stratification_of_an_imbalanced_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["common"] * 950 + ["rare"] * 50)
    frame = pd.DataFrame({"x": rng.normal(size=1000), "y": rng.permutation(labels)})
    source = tmp_path / "imbalanced.parquet"
    frame.to_parquet(source)
    result, out = run(source, tmp_path / "out", label="y")
    assert result.problem_type == "binary"
    rare = {name: int((out.split(name)["y"] == "rare").sum()) for name in SPLITS}
    assert rare["test"] == 10  # 50 × 0.2
    assert rare["validation"] in (7, 8)  # 50 × 0.15 = 7.5
    assert rare["train"] == 50 - rare["test"] - rare["validation"]


def test_tiny_classes_do_not_crash_and_stay_in_train(tmp_path: Path) -> None:
    labels = ["a"] * 40 + ["b"] * 30 + ["c"] * 2 + ["d"]
    frame = pd.DataFrame({"x": np.arange(len(labels), dtype=float), "y": labels})
    source = tmp_path / "tiny.csv"
    frame.to_csv(source, index=False)
    result, out = run(source, tmp_path / "out", label="y")
    assert set(out.split("train")["y"]) == {"a", "b", "c", "d"}
    sizes = {name: result.splits[name]["rows"] for name in SPLITS}
    assert sizes == {"train": 47, "validation": 11, "test": 15}  # exact sizes kept
    assert "too few rows to appear in every split" in out.profile.read_text()


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    first, _ = run("builtin://penguins", tmp_path / "a", seed=7)
    again, _ = run("builtin://penguins", tmp_path / "b", seed=7)
    other, _ = run("builtin://penguins", tmp_path / "c", seed=8)
    for name in SPLITS:
        assert first.splits[name]["sha256"] == again.splits[name]["sha256"]
        assert first.splits[name]["sha256"] != other.splits[name]["sha256"]


def test_regression_split_is_random_and_seeded(tmp_path: Path) -> None:
    first, out_a = run("builtin://penguins", tmp_path / "a", label="body_mass_g", seed=1)
    second, out_b = run("builtin://penguins", tmp_path / "b", label="body_mass_g", seed=2)
    assert first.splits["test"]["rows"] == second.splits["test"]["rows"] == round(0.2 * 342)
    assert not out_a.split("test").equals(out_b.split("test"))


def test_splits_are_disjoint_and_cover_all_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"row": np.arange(500), "y": rng.choice(["p", "q", "r"], 500)})
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    _, out = run(source, tmp_path / "out", label="y")
    seen = [set(out.split(name)["row"]) for name in SPLITS]
    assert set.union(*seen) == set(range(500))
    assert sum(len(s) for s in seen) == 500


# ------------------------------------------------------------------------------------- profile, metadata


def test_profile_content(tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path)
    text = out.profile.read_text()
    assert text == result.profile_markdown
    headline = text.splitlines()[0]
    assert headline == (
        "344 rows × 8 columns, 0.7% missing, 0 duplicate rows, label `species` "
        "(multiclass, 3 classes: Adelie 152, Gentoo 124, Chinstrap 68)"
    )
    assert "| column | type | missing | missing % | distinct |" in text
    assert "| sex | string | 11 | 3.2% | 2 |" in text
    assert "| species (label) | string | 0 | 0.0% | 3 |" in text
    assert "| bill_length_mm | float64 | 2 | 0.6% | 164 |" in text
    assert "| year | int64 | 0 | 0.0% | 3 |" in text
    assert result.metrics["missing_fraction"] == pytest.approx(19 / (344 * 8))


def test_duplicate_rows_are_counted(penguins_csv: Path, tmp_path: Path) -> None:
    lines = penguins_csv.read_text().splitlines()
    source = tmp_path / "dups.csv"
    # line 4 twice more, line 5 (with NA values) once more: 3 duplicate rows
    source.write_text("\n".join([*lines, lines[3], lines[3], lines[4]]) + "\n")
    result, out = run(source, tmp_path / "out")
    assert result.metrics["duplicate_rows"] == 3
    assert ", 3 duplicate rows," in out.profile.read_text().splitlines()[0]


def test_duplicates_need_every_column_equal(tmp_path: Path) -> None:
    source = tmp_path / "near.csv"
    source.write_text("a,b,y\n1,x,p\n1,x,q\n1,,p\n1,,p\n,x,p\n2,x,p\n")
    # 6 rows: far below a meaningful split, accepted here only to count duplicates
    result, _ = run(source, tmp_path / "out", label="y", validation_fraction=0.0, test_fraction=0.2, min_rows=3)
    assert result.metrics["duplicate_rows"] == 1  # only "1,,p" repeats


def test_metadata_sha256_is_the_files(tmp_path: Path) -> None:
    result, out = run("builtin://penguins", tmp_path)
    for name in SPLITS:
        data = getattr(out, name).read_bytes()
        assert result.splits[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert result.splits[name]["rows"] == pq.read_metadata(getattr(out, name)).num_rows
        assert result.splits[name]["label"] == "species"
        assert result.splits[name]["columns"] == [
            "species",
            "island",
            "bill_length_mm",
            "bill_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "sex",
            "year",
        ]
    assert set(result.metrics) >= {
        "rows",
        "columns",
        "missing_fraction",
        "duplicate_rows",
        "train_rows",
        "validation_rows",
        "test_rows",
    }
    assert all(isinstance(value, float) for value in result.metrics.values())


def test_outputs_replace_an_earlier_run(tmp_path: Path) -> None:
    run("builtin://penguins", tmp_path, seed=1)
    result, out = run("builtin://penguins", tmp_path, seed=2)
    assert hashlib.sha256(out.train.read_bytes()).hexdigest() == result.splits["train"]["sha256"]
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize(
    "config",
    [
        {"label": ""},
        {"label": "y", "problem_type": "classification"},
        {"label": "y", "file_format": "xlsx"},
        {"label": "y", "encoding": "no-such-codec"},
        {"label": "y", "test_fraction": 1.0},
        {"label": "y", "validation_fraction": -0.1},
        {"label": "y", "validation_fraction": 0.5, "test_fraction": 0.5},
        {"label": "y", "seed": -1},
    ],
)
def test_config_is_validated(config: dict) -> None:
    with pytest.raises(ConfigError):
        IngestConfig(**config)


def test_jsonl_fields_that_appear_late(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the new field and the float come blocks after the start
    monkeypatch.setattr(readers, "BLOCK_SIZE", 1024)
    lines = [json.dumps({"a": i, "label": "xy"[i % 2]}) for i in range(200)]
    lines.append('{"a": 1.5, "label": "x", "extra": true}')
    source = tmp_path / "late.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result, out = run(source, tmp_path / "out", label="label")
    assert result.metrics["rows"] == 201
    schema = pq.read_schema(out.train)
    assert schema.names == ["a", "label", "extra"]
    assert schema.field("a").type == pa.float64()
    assert "| extra | bool | 200 | 99.5% | 1 |" in out.profile.read_text()


def test_many_single_row_classes_shrink_the_splits_but_keep_train_whole(tmp_path: Path) -> None:
    labels = [f"c{i}" for i in range(300)] + ["big"] * 700  # 300 singletons and one large class
    frame = pd.DataFrame({"x": np.arange(1000), "y": labels})
    source = tmp_path / "singletons.parquet"
    frame.to_parquet(source)
    result, out = run(source, tmp_path / "out", label="y")
    assert set(out.split("train")["y"]) == set(labels)
    assert result.splits["test"]["rows"] == 200  # the large class makes up the whole test share
    assert sum(result.splits[name]["rows"] for name in SPLITS) == 1000
    assert "300 class(es) have too few rows to appear in every split" in out.profile.read_text()
