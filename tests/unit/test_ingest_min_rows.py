"""ingest_data refuses a table too small to split meaningfully, naming it, its rows, the minimum and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_tabular.components.ingest_data.core import MIN_ROWS, IngestConfig, ingest
from kfp_tabular.errors import ConfigError, DataValidationError


def _table(folder: Path, rows: int, unlabelled: int = 0) -> Path:
    lines = ["x,label"] + [f"{i},{'ab'[i % 2]}" for i in range(rows)] + [f"{i}," for i in range(unlabelled)]
    source = folder / "small.csv"
    source.write_text("\n".join(lines) + "\n")
    return source


def _ingest(source: Path, folder: Path, **config):
    out = folder / "out"
    paths = [out / "train.parquet", out / "validation.parquet", out / "test.parquet", out / "profile.md"]
    return ingest(str(source), IngestConfig(label="label", **config), *paths), paths


def test_a_table_below_the_minimum_is_refused_with_the_fix(tmp_path):
    source = _table(tmp_path, rows=12, unlabelled=3)
    with pytest.raises(DataValidationError) as caught:
        _ingest(source, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{source}: only 12 rows have a label (15 read, 3 without a label)")
    assert f"min_rows={MIN_ROWS}" in message and "kfp-tabular run --min-rows" in message
    assert "about 2 test rows" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_bundled_penguins_and_a_table_at_the_minimum_pass(tmp_path):
    result, _ = _ingest(_table(tmp_path, rows=MIN_ROWS), tmp_path)
    assert result.metrics["rows"] == MIN_ROWS and result.metrics["test_rows"] == 10
    penguins = ingest("builtin://penguins", IngestConfig(label="species"),
                      *(tmp_path / "p" / name for name in ("train.parquet", "v.parquet", "t.parquet", "p.md")))
    assert penguins.metrics["rows"] == 344


def test_the_minimum_is_a_parameter(tmp_path):
    result, _ = _ingest(_table(tmp_path, rows=12), tmp_path, min_rows=10)
    assert result.metrics["rows"] == 12


@pytest.mark.parametrize("bad", [0, 2, 2.5, True])
def test_min_rows_below_three_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="min_rows"):
        IngestConfig(label="label", min_rows=bad)
