"""Explaining in shards: the rows cut into contiguous ranges, explained apart and merged, give one explanation."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from kfp_tabular.components.explain_shap.core import ExplainConfig, explain, explain_shard, write_explanation
from kfp_tabular.components.explain_shap.shards import (
    merge_shards,
    read_shard,
    shard_count,
    shard_range,
    write_shard,
)
from kfp_tabular.errors import ConfigError, DataValidationError, ModelError


@pytest.mark.parametrize("rows", [0, 1, 5, 17, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shard_ranges_cover_every_row_once_in_order(rows: int, count: int) -> None:
    ranges = [shard_range(rows, index, count) for index in range(count)]
    assert [i for start, stop in ranges for i in range(start, stop)] == list(range(rows))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_shard_count_and_bad_settings() -> None:
    assert shard_count(500, 2000) == 1 and shard_count(4001, 2000) == 3 and shard_count(0, 10) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="rows_per_shard"):
            shard_count(10, bad)
    with pytest.raises(ConfigError):
        shard_range(10, 3, 3)


def _frames(table):
    return {name: pd.read_parquet(path) for name, path in table.items()}


@pytest.mark.parametrize("method", ["exact_tree", "sampled_tree"])
def test_three_shards_merge_to_the_one_step_explanation(method, fit_penguins, splits, tmp_path) -> None:
    # sampled_tree seeds each row by its position among all rows: the shards draw the same samples
    predictor = fit_penguins("multiclass")
    config = ExplainConfig(method=method, background_size=15, max_rows=11, target_standard_error=0.01)
    outputs = [tmp_path / "one" / name for name in ("values.parquet", "report.html", "summary.md")]
    whole = explain(predictor.path, splits[0], splits[1], config, *outputs)
    parts = []
    for index in range(3):
        shard = explain_shard(predictor.path, splits[0], splits[1], config, index, 3)
        write_shard(shard, tmp_path / f"shard{index}")
        parts.append(read_shard(tmp_path / f"shard{index}"))
    assert [len(p.rows) for p in parts] == [3, 4, 4]
    merged_outputs = [tmp_path / "three" / name for name in ("values.parquet", "report.html", "summary.md")]
    merged = write_explanation(parts[::-1], *merged_outputs)
    one, three = pd.read_parquet(outputs[0]), pd.read_parquet(merged_outputs[0])
    pd.testing.assert_frame_equal(one, three, check_exact=False, rtol=0, atol=1e-12)
    assert merged.method == whole.method
    for name, value in whole.metrics.items():
        if name not in ("shards", "exact_operations", "sampled_operations"):
            assert merged.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert merged.metrics["rows_explained"] == 11 and merged.metrics["shards"] == 3
    # the summaries agree but for the per-member notes, which list each shard's own coalition counts
    def without_notes(text: str) -> str:
        return re.sub(r" \[[^\]]*\]", "", text)

    assert without_notes(merged_outputs[2].read_text()) == without_notes(outputs[2].read_text())
    if method == "sampled_tree":
        assert "shap_standard_error" in three.columns and three["shap_standard_error"].max() > 0


def test_merge_refuses_an_incomplete_or_mixed_set(fit_penguins, splits, tmp_path) -> None:
    predictor = fit_penguins("binary")
    config = ExplainConfig(background_size=10, max_rows=6)
    shards = [explain_shard(predictor.path, splits[0], splits[1], config, index, 3) for index in range(3)]
    with pytest.raises(DataValidationError, match=r"not the complete set 0 \.\. 2"):
        merge_shards(shards[:2])
    with pytest.raises(DataValidationError, match="complete set"):
        merge_shards([shards[0], shards[0], shards[2]])
    other = explain_shard(predictor.path, splits[0], splits[1], ExplainConfig(background_size=12, max_rows=6), 1, 3)
    with pytest.raises(DataValidationError, match="background"):
        merge_shards([shards[0], other, shards[2]])
    agnostic = ExplainConfig(method="permutation", background_size=10, max_rows=6, sample_budget=16)
    odd = explain_shard(predictor.path, splits[0], splits[1], agnostic, 1, 3)
    with pytest.raises(ModelError, match="explain_method"):
        merge_shards([shards[0], odd, shards[2]])
    with pytest.raises(DataValidationError, match="No explanation shards to merge"):
        merge_shards([])
    outputs = [tmp_path / name for name in ("values.parquet", "report.html", "summary.md")]
    with pytest.raises(DataValidationError):
        write_explanation(shards[:2], *outputs)
    assert not any(path.exists() for path in outputs)


def test_a_folder_that_is_not_a_shard_is_named(tmp_path) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataValidationError, match="not an explain_shap_shard output"):
        read_shard(tmp_path / "junk")
