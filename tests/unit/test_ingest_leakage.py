"""The label-copy check's majority vote, against a plain count of the same thing on random columns."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from kfp_tabular.components.ingest_data.labels import LabelSummary
from kfp_tabular.components.ingest_data.leakage import REPRODUCES, _reproduction


def _label(codes: np.ndarray, classes: int) -> LabelSummary:
    return LabelSummary("y", "multiclass", "", codes >= 0, codes, tuple((str(c), 0) for c in range(classes)), {})


def _share_by_counting(values: list, codes: np.ndarray) -> float:
    """Share of labelled rows whose class is the most frequent class of their value (None is a value too)."""
    by_value: dict = {}
    for value, code in zip(values, codes, strict=True):
        if code >= 0:
            by_value.setdefault(value, Counter())[code] += 1
    return sum(max(c.values()) for c in by_value.values()) / int((codes >= 0).sum())


@pytest.mark.parametrize("seed", range(12))
def test_the_vote_matches_a_plain_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, classes, distinct = int(rng.integers(40, 3000)), int(rng.integers(2, 6)), int(rng.integers(1, 12))
    codes = rng.integers(-1, classes, rows)
    # A copy of the label with a little noise, so that shares land on both sides of the threshold.
    noisy = np.where(rng.random(rows) < rng.choice([0.0, 0.005, 0.3]), rng.integers(0, distinct, rows), codes % distinct)
    values = [None if rng.random() < 0.05 else f"v{v}" for v in noisy]
    said = _reproduction(pa.chunked_array([pa.array(values)]), _label(codes, classes), pa.table({"y": codes}))
    share = _share_by_counting(values, codes)
    if share >= REPRODUCES:
        assert said == f"its value gives the class of {100 * share:.1f}% of rows"
    else:
        assert said is None


def test_a_column_with_too_many_values_is_not_called_a_copy() -> None:
    codes = np.arange(400) % 2
    values = [f"id{i}" for i in range(400)]  # every value gives its row's class: a vote fits anything
    assert _reproduction(pa.chunked_array([pa.array(values)]), _label(codes, 2), pa.table({"y": codes})) is None
