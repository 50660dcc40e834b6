"""Data profile of a table read piece by piece: per column type, missing and distinct values; duplicate rows.

A piece is the whole table (read whole) or one streamed block; memory stays bounded by the pieces plus 8 bytes per
row. Every column is dictionary-encoded by Arrow (one hash pass): the dictionary gives the distinct values, counted
exactly up to ``DISTINCT_CAP`` per column (beyond that the profile says "more than"), and only the dictionary's
values are hashed, then gathered per row. Exact duplicate rows are counted from a 64-bit hash of every row, the sum
of its columns' value hashes, each mixed with the column's position (collisions are negligible: about n² / 2⁶⁵,
i.e. below 10⁻⁶ for ten million rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DISTINCT_CAP = 100_000

_NULL_KEY = np.uint64(0x5BD1E9955BD1E995)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the profile; ``distinct`` is None when there are more than ``DISTINCT_CAP`` values.

    ``missing`` counts nulls and, in float columns, NaN.
    """

    name: str
    type: str
    missing: int
    distinct: int | None


@dataclass(frozen=True)
class TableProfile:
    """The whole-table profile."""

    rows: int
    columns: tuple[ColumnProfile, ...]
    duplicate_rows: int

    @property
    def missing_fraction(self) -> float:
        """Share of missing cells in the whole table."""
        cells = self.rows * len(self.columns)
        return sum(c.missing for c in self.columns) / cells if cells else 0.0


def type_name(data_type: pa.DataType) -> str:
    """Short, familiar names for Arrow types in the profile."""
    names = {pa.string(): "string", pa.float64(): "float64", pa.float32(): "float32", pa.bool_(): "bool"}
    return names.get(data_type, str(data_type))


def _mix(keys: np.ndarray, index: int) -> np.ndarray:
    """SplitMix64's finalizer over ``keys`` salted with the column position: equal values in two columns differ."""
    z = keys + np.uint64(((index + 1) * _GOLDEN) & _MASK)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def value_keys(values: pa.Array) -> np.ndarray:
    """A 64-bit key per value (no nulls), equal for equal values, whatever piece of the table they come from.

    Numbers, booleans and times use their exact bit pattern; text and anything else is hashed by pandas.
    """
    data_type = values.type
    if pa.types.is_floating(data_type):
        return values.cast(pa.float64()).to_numpy().view(np.uint64)
    if pa.types.is_integer(data_type) or pa.types.is_boolean(data_type):
        # uint64 values above 2⁶³ wrap around: still one key each
        return pc.cast(values, pa.int64(), safe=False).to_numpy().view(np.uint64)
    if pa.types.is_temporal(data_type) and data_type.bit_width in (32, 64):
        # dates, times, timestamps, durations: their integer ticks
        ticks = values.view(pa.int32() if data_type.bit_width == 32 else pa.int64())
        return ticks.cast(pa.int64()).to_numpy().view(np.uint64)
    if pa.types.is_string(data_type) or pa.types.is_binary(data_type):
        objects = values.to_numpy(zero_copy_only=False)
    else:  # decimals, nested and exotic types: exact through their Python representation
        objects = np.array([repr(value) for value in values.to_pylist()], dtype=object)
    return pd.util.hash_array(objects, categorize=False).astype(np.uint64, copy=False)


def column_keys(column: pa.ChunkedArray, index: int) -> tuple[np.ndarray, pa.Array]:
    """Per row a 64-bit key of the value (nulls included) mixed with the column position, and the distinct values."""
    try:
        encoded = pc.dictionary_encode(column)
    except pa.ArrowNotImplementedError:  # lists, structs, maps: encode their text representation instead
        texts = [None if value is None else repr(value) for value in column.to_pylist()]
        encoded = pc.dictionary_encode(pa.chunked_array([pa.array(texts, pa.string())]))
    # Arrow gives every chunk the same dictionary: the table's distinct non-null values, in order of appearance.
    uniques = encoded.chunk(0).dictionary
    keys = _mix(np.append(value_keys(uniques), _NULL_KEY), index)
    null_code = len(uniques)  # nulls point at the extra key appended above
    rows = np.empty(len(column), dtype=np.uint64)
    start = 0
    for chunk in encoded.chunks:
        codes = chunk.indices if chunk.null_count == 0 else pc.fill_null(chunk.indices, null_code)
        np.take(keys, codes.to_numpy(), out=rows[start : start + len(chunk)])
        start += len(chunk)
    return rows, uniques


class _DistinctCounter:
    """Exact distinct count of one column up to a cap, merging per-piece distinct values with Arrow."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[pa.Array] = []
        self.pending = 0
        self.over = False

    def add(self, uniques: pa.Array) -> None:
        if self.over:
            return
        self.parts.append(uniques)
        self.pending += len(uniques)
        if self.pending > 2 * self.cap:
            self._compact()

    def _compact(self) -> None:
        merged = pc.unique(pa.concat_arrays(self.parts)) if len(self.parts) > 1 else self.parts[0]
        if len(merged) > self.cap:
            self.over, self.parts, self.pending = True, [], 0
        else:
            self.parts, self.pending = [merged], len(merged)

    def count(self) -> int | None:
        if self.over:
            return None
        if not self.parts:
            return 0
        self._compact()
        return None if self.over else len(self.parts[0])


def profile_table(
    pieces: Iterable[pa.Table],
    schema: pa.Schema,
    pool: Executor,
    workers: int,
    distinct_cap: int = DISTINCT_CAP,
) -> TableProfile:
    """Profile a table given piece by piece, running the column work on ``pool``.

    For each piece, ``workers`` tasks go to the pool and share its columns (Arrow and NumPy release the GIL); they
    run whenever the pool's other jobs leave a thread free.
    """
    rows = 0
    missing = [0] * len(schema)
    distinct = [_DistinctCounter(distinct_cap) for _ in schema]
    row_hashes: list[np.ndarray] = []
    for piece in pieces:
        next_column = itertools.count().__next__  # shared by the tasks; one C call, so thread-safe
        tasks = [
            pool.submit(_key_columns, piece, next_column, missing, distinct)
            for _ in range(min(workers, piece.num_columns))
        ]
        row_hash = tasks[0].result()
        for task in tasks[1:]:
            row_hash += task.result()
        row_hashes.append(row_hash)
        rows += piece.num_rows

    hashes = np.concatenate(row_hashes) if row_hashes else np.zeros(0, dtype=np.uint64)
    hashes.sort()
    duplicates = int(np.count_nonzero(hashes[1:] == hashes[:-1]))
    columns = tuple(
        ColumnProfile(field.name, type_name(field.type), nulls, counter.count())
        for field, nulls, counter in zip(schema, missing, distinct, strict=True)
    )
    return TableProfile(rows=rows, columns=columns, duplicate_rows=duplicates)


def _key_columns(
    piece: pa.Table,
    next_column: Callable[[], int],
    missing: list[int],
    distinct: list[_DistinctCounter],
) -> np.ndarray:
    """One task of :func:`profile_table`: take columns until none is left; return the sum of their row keys.

    Summing as it goes keeps one task's memory at two arrays of row keys, however many columns it takes.
    """
    total = np.zeros(piece.num_rows, dtype=np.uint64)
    while (index := next_column()) < piece.num_columns:
        column = piece.column(index)
        keys, uniques = column_keys(column, index)
        total += keys  # wraps modulo 2⁶⁴
        missing[index] += column.null_count
        if pa.types.is_floating(column.type):  # NaN is a missing value too, not a distinct one
            nans = int(pc.sum(pc.is_nan(column)).as_py() or 0)
            if nans:
                missing[index] += nans
                uniques = uniques.filter(pc.invert(pc.is_nan(uniques)))
        distinct[index].add(uniques)
    return total
