"""Seeded train / validation / test assignment, stratified by class for classification.

Sizes follow the fractions exactly (rounded, at least one row for every split with a non-zero fraction).
Classification splits allocate each split's rows to classes by largest remainder, so every split has the class
proportions of the whole table to within one row per class; a class too small to appear everywhere stays in train
(every class keeps at least one training row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kfp_tabular.components.ingest_data.labels import LabelSummary
from kfp_tabular.errors import DataValidationError

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST, DROPPED = 0, 1, 2, -1


@dataclass(frozen=True)
class SplitPlan:
    """Split code per input row (``DROPPED`` for rows without a label) and how it was made."""

    assignment: np.ndarray
    stratified: bool
    small_classes: int  # classes absent from some split because they have too few rows
    planned: tuple[int, int, int]  # rows the fractions asked for (train, validation, test)

    def rows(self, code: int) -> int:
        """Rows assigned to one split."""
        return int(np.count_nonzero(self.assignment == code))


def _share(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, math.floor(fraction * n + 0.5))


def split_sizes(
    n: int, validation_fraction: float, test_fraction: float, display: str
) -> tuple[int, int, int]:
    """Rows of (train, validation, test) for ``n`` labelled rows."""
    test, validation = _share(n, test_fraction), _share(n, validation_fraction)
    train = n - test - validation
    if train < 1:
        raise DataValidationError(
            f"{display}: only {n} rows have a label, too few for validation_fraction={validation_fraction} and "
            f"test_fraction={test_fraction} to leave any training rows; supply more rows or lower the fractions"
        )
    return train, validation, test


def _apportion(targets: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integers summing to ``total`` closest to ``targets`` (largest remainder, random tie-breaks)."""
    counts = np.floor(targets).astype(np.int64)
    left = total - int(counts.sum())
    if left > 0:
        remainders = targets - counts
        order = np.lexsort((rng.random(len(targets)), -remainders))
        counts[order[:left]] += 1
    return counts


def _stratified_counts(
    class_rows: np.ndarray, sizes: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = int(class_rows.sum())
    targets = {split: class_rows * sizes[split] / n for split in (TEST, VALIDATION)}
    held = {split: _apportion(targets[split], sizes[split], rng) for split in (TEST, VALIDATION)}
    present = class_rows > 0
    # Every class keeps one training row: take back from validation first, then test...
    for split in (VALIDATION, TEST):
        over = np.maximum(0, held[TEST] + held[VALIDATION] - (class_rows - 1)) * present
        take = np.minimum(over, held[split])
        held[split] -= take
        # ...and hand those rows to the classes furthest below their share that have room, so sizes stay exact.
        deficit = int(take.sum())
        while deficit > 0:
            room = (class_rows - 1 - held[TEST] - held[VALIDATION]) * present
            candidates = np.flatnonzero(room > 0)
            if len(candidates) == 0:
                break  # degenerate: every class is down to its one training row
            shortfall = targets[split][candidates] - held[split][candidates]
            chosen = candidates[np.lexsort((rng.random(len(candidates)), -shortfall))][:deficit]
            held[split][chosen] += 1
            deficit -= len(chosen)
    return held[TEST], held[VALIDATION]


def assign_splits(
    label: LabelSummary, validation_fraction: float, test_fraction: float, seed: int, display: str
) -> SplitPlan:
    """Assign every labelled row to train, validation or test."""
    rows = np.flatnonzero(label.valid)
    sizes = split_sizes(len(rows), validation_fraction, test_fraction, display)
    rng = np.random.default_rng(seed)
    assignment = np.full(len(label.valid), DROPPED, dtype=np.int8)
    if label.codes is None:
        order = rng.permutation(rows)
        assignment[order[: sizes[TEST]]] = TEST
        assignment[order[sizes[TEST] : sizes[TEST] + sizes[VALIDATION]]] = VALIDATION
        assignment[order[sizes[TEST] + sizes[VALIDATION] :]] = TRAIN
        return SplitPlan(assignment, stratified=False, small_classes=0, planned=sizes)

    codes = label.codes[rows]
    codes = codes.astype(np.int16 if codes.max() < 2**15 else np.int64)  # 16-bit keys sort by radix: fast
    class_rows = np.bincount(codes, minlength=int(codes.max()) + 1)
    test, validation = _stratified_counts(class_rows, sizes, rng)
    for split, held in ((VALIDATION, validation), (TEST, test)):
        if sizes[split] > 0 and held.sum() == 0:
            singletons = int(np.count_nonzero(class_rows == 1))
            raise DataValidationError(
                f"{display}: the {SPLITS[split]} split would be empty: {singletons} of "
                f"{int(np.count_nonzero(class_rows))} classes of label `{label.name}` have a single row, and every "
                "class keeps its rows in train first. If the label is a quantity, use problem_type='regression'"
            )
    # Rows grouped by class, in random order inside each class: each class's first rows go to test, the next to
    # validation, the rest to train.
    shuffled = rng.permutation(len(rows))
    order = shuffled[np.argsort(codes[shuffled], kind="stable")]
    train = class_rows - test - validation
    runs = np.column_stack((test, validation, train)).ravel()
    split = np.repeat(np.tile(np.array([TEST, VALIDATION, TRAIN], dtype=np.int8), len(class_rows)), runs)
    assignment[order if len(rows) == len(assignment) else rows[order]] = split
    wanted = [code for code, size in ((VALIDATION, sizes[VALIDATION]), (TEST, sizes[TEST])) if size > 0]
    per_class = {TEST: test, VALIDATION: validation}
    small = class_rows > 0
    small &= np.logical_or.reduce([per_class[code] == 0 for code in wanted]) if wanted else False
    return SplitPlan(assignment, stratified=True, small_classes=int(np.count_nonzero(small)), planned=sizes)
