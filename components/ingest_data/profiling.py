"""Data profile accumulated batch by batch: per column type, missing values and distinct values; duplicate rows.

Everything is computed in one streaming pass with bounded memory. Distinct values are counted exactly up to
``DISTINCT_CAP`` per column (beyond that the profile says "more than"). Exact duplicate rows are counted from a
64-bit hash of every row (collisions are negligible: about n² / 2⁶⁵, i.e. below 10⁻⁶ for ten million rows).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DISTINCT_CAP = 100_000

_NULL_KEY = np.uint64(0x5BD1E9955BD1E995)
_ROW_PRIME = np.uint64(0x100000001B3)


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the profile; ``distinct`` is None when there are more than ``DISTINCT_CAP`` values."""

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


def _scramble(keys: np.ndarray, index: int) -> np.ndarray:
    """Mix a column's 64-bit keys with a per-column odd multiplier (xor-shift, multiply, xor-shift)."""
    z = keys ^ (keys >> np.uint64(31))
    z *= _multiplier(index)
    z ^= z >> np.uint64(29)
    return z


def _multiplier(index: int) -> np.uint64:
    """A different odd constant per column position, so that equal values in two columns hash differently."""
    return np.uint64((((index + 1) * 0x9E3779B97F4A7C15) | 1) & 0xFFFFFFFFFFFFFFFF)


def _raw_values(column: pa.Array, dtype: type) -> np.ndarray:
    """The value buffer of a fixed-width column, without copying; slots of nulls hold arbitrary values."""
    buffer = column.buffers()[1]
    if buffer is None:  # an all-null array may have no value buffer
        return np.zeros(len(column), dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=len(column) + column.offset)[column.offset :]


def _hash_objects(values: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(values, categorize=False).astype(np.uint64, copy=False)


def column_keys(column: pa.Array) -> tuple[np.ndarray, pa.Array | None]:
    """Per row a 64-bit key equal for equal values, and the column's distinct non-null values (None: unsupported).

    Numbers, booleans and times use their exact bit pattern; text is dictionary-encoded by Arrow so that only the
    distinct strings of the batch are hashed.
    """
    data_type = column.type
    uniques: pa.Array | None
    if pa.types.is_string(data_type) or pa.types.is_binary(data_type):
        encoded = pc.dictionary_encode(column)
        uniques = encoded.dictionary
        if len(uniques) == 0:
            return np.full(len(column), _NULL_KEY, dtype=np.uint64), uniques
        dictionary_keys = _hash_objects(uniques.to_numpy(zero_copy_only=False))
        keys = dictionary_keys[pc.fill_null(encoded.indices, 0).to_numpy()]
    elif (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_boolean(data_type)
        or (pa.types.is_temporal(data_type) and data_type.bit_width in (32, 64))
        or pa.types.is_decimal(data_type)
    ):
        uniques = pc.unique(column).drop_null()
        if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
            keys = _raw_values(
                column if data_type == pa.float64() else pc.cast(column, pa.float64()), np.float64
            )
        else:
            if pa.types.is_temporal(data_type):  # dates, times, timestamps, durations: their integer ticks
                column = column.view(pa.int32() if data_type.bit_width == 32 else pa.int64())
            if column.type != pa.int64():
                column = pc.cast(column, pa.int64(), safe=False)  # uint64 above 2⁶³ wraps: still one key each
            keys = _raw_values(column, np.int64)
        keys = keys.view(np.uint64)
    else:  # nested or exotic types: slow but exact through their Python representation
        values = np.array([repr(v) for v in column.to_pylist()], dtype=object)
        keys = _hash_objects(values)
        valid = pc.drop_null(column).to_pylist()
        uniques = pa.array(sorted({repr(v) for v in valid}), type=pa.string())
    keys = np.array(keys, dtype=np.uint64)  # a private, writable copy
    if column.null_count:
        keys[column.is_null().to_numpy(zero_copy_only=False)] = _NULL_KEY
    return keys, uniques


def _scrambled_keys(index: int, column: pa.Array) -> tuple[np.ndarray, pa.Array | None]:
    keys, uniques = column_keys(column)
    return _scramble(keys, index), uniques


class _DistinctCounter:
    """Exact distinct count of one column up to a cap, merging per-batch unique values with Arrow."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[pa.Array] = []
        self.pending = 0
        self.over = False

    def add(self, uniques: pa.Array | None) -> None:
        if self.over:
            return
        if uniques is None:
            self.over = True
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


class ProfileAccumulator:
    """Feed record batches with :meth:`add`, then :meth:`finish` for the :class:`TableProfile`; use with ``with``."""

    def __init__(self, schema: pa.Schema, distinct_cap: int = DISTINCT_CAP) -> None:
        self.schema = schema
        self.rows = 0
        self._missing = [0] * len(schema)
        self._distinct = [_DistinctCounter(distinct_cap) for _ in schema]
        self._row_hashes: list[np.ndarray] = []
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="profile")

    def add(self, batch: pa.RecordBatch) -> None:
        """Account for one batch (columns are keyed in parallel: Arrow and NumPy release the GIL)."""
        keyed = self._pool.map(_scrambled_keys, range(batch.num_columns), batch.columns)
        row_hash = np.zeros(batch.num_rows, dtype=np.uint64)
        for index, (column, (keys, uniques)) in enumerate(zip(batch.columns, keyed, strict=True)):
            self._missing[index] += column.null_count
            self._distinct[index].add(uniques)
            row_hash ^= keys
            row_hash *= _ROW_PRIME
        self._row_hashes.append(row_hash)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown()

    def __enter__(self) -> ProfileAccumulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def finish(self) -> TableProfile:
        """The profile of everything added so far."""
        hashes = np.concatenate(self._row_hashes) if self._row_hashes else np.zeros(0, dtype=np.uint64)
        self._row_hashes = []
        hashes.sort()
        duplicates = int(np.count_nonzero(hashes[1:] == hashes[:-1]))
        columns = tuple(
            ColumnProfile(field.name, type_name(field.type), missing, counter.count())
            for field, missing, counter in zip(self.schema, self._missing, self._distinct, strict=True)
        )
        return TableProfile(rows=self.rows, columns=columns, duplicate_rows=duplicates)
