"""Column types: the logical type of every column, decided once at ingest, and the conversions it implies.

Decided from the source's Arrow types (and, for text, from the values):

* integers, floats, decimals -> ``numeric`` (decimals stored as float64: AutoGluon reads Python ``Decimal``
  objects as text and LightGBM would see other numbers than the source; float16 widened to float32; unsigned
  integers as int64, uint64 above 2^63 - 1 as float64);
* booleans -> ``boolean``;
* timestamps (naive ones are taken as UTC) and dates -> ``datetime``, stored as float64 seconds since
  1970-01-01 UTC: AutoGluon's datetime features cannot be exported, a number can;
* times of day and durations -> ``numeric`` seconds;
* struct columns (nested JSON objects) are flattened: field ``b`` of column ``a`` becomes column ``a.b``;
* text -> ``categorical``, except text that is mostly numbers or mostly dates: a numeric (datetime) column with
  a few stray values. Those values are reported with their data rows, and ``bad_values`` says what to do:
  ``error`` (refuse the table), ``missing`` (read them as missing), ``text`` (keep the column as text);
* lists, maps, binary data and unions are refused, naming the column, before any work is done.

The label is stored in one canonical form: decimals as float64, and whole-number float labels of a
classification as int64 (so the classes are ``0``/``1``, not ``0.0``/``1.0``, from ingest to predict).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kfp_tabular.components._shared.table_schema import (
    BOOLEAN,
    CATEGORICAL,
    DATETIME,
    NUMERIC,
    ColumnType,
)
from kfp_tabular.errors import ConfigError, DataValidationError

BAD_VALUES = ("error", "missing", "text")
# A text column whose sampled values are at least this share numbers (dates) is a numeric (datetime) column.
MOSTLY = 0.9
SAMPLE = 2000  # text values sampled from the first piece to recognise numbers and dates
EXAMPLES = 5  # stray values quoted in a message
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
INT64_MAX = 2**63 - 1
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _unsupported(data_type: pa.DataType) -> str | None:
    """Why a column of this type cannot be a feature, or None when it can."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return f"lists ({data_type})"
    if pa.types.is_map(data_type):
        return f"maps ({data_type})"
    if pa.types.is_union(data_type):
        return f"mixed-type unions ({data_type})"
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type) or pa.types.is_fixed_size_binary(
        data_type
    ):
        return "binary data"
    return None


def _flatten(schema: pa.Schema) -> pa.Schema:
    """The schema after flattening struct columns into ``parent.child`` columns (recursively)."""
    table = schema.empty_table()
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table.schema


def parse_drop_columns(text: str) -> tuple[str, ...]:
    """``drop_columns`` as the pipeline passes it: a JSON list of names, or names separated by commas.

    Use the JSON form for names with commas or with spaces at either end (``["label "]``).
    """
    text = (text or "").strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"drop_columns={text!r} is not a valid JSON list ({error})") from error
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"drop_columns={text!r}; a JSON list must hold column names as strings")
        return tuple(names)
    return tuple(name.strip() for name in text.split(",") if name.strip())


def drop_columns_argument(names: list[str]) -> str:
    """How to write ``names`` as a ``drop_columns`` value: plain when that parses back, else a JSON list."""
    plain = ",".join(names)
    return plain if parse_drop_columns(plain) == tuple(names) else json.dumps(names)


@dataclass
class _Stray:
    """Values of a text column that are not numbers (or not dates), counted over every piece."""

    kind: str  # NUMERIC or DATETIME
    count: int = 0
    values: int = 0  # non-missing values seen
    first_rows: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


def _ticks_to_seconds(ticks: pa.Array, per_second: int) -> pa.Array:
    """int64 ticks -> float64 seconds, nulls kept; whole seconds and the fraction apart, so ns stay exact-ish."""
    values = ticks.to_numpy(zero_copy_only=False).astype(np.int64) if ticks.null_count == 0 else (
        pc.fill_null(ticks, 0).to_numpy(zero_copy_only=False).astype(np.int64))
    whole, part = np.divmod(values, per_second)
    seconds = whole.astype(np.float64) + part.astype(np.float64) / per_second
    mask = None if ticks.null_count == 0 else ticks.is_null().to_numpy(zero_copy_only=False)
    return pa.array(seconds, pa.float64(), mask=mask)


def _to_epoch_seconds(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Seconds since 1970-01-01 UTC (float64) of timestamps and dates; naive timestamps count as UTC."""
    data_type = values.type
    if pa.types.is_date(data_type):
        days = pc.cast(values.cast(pa.date32()), pa.int32())
        return pc.multiply(pc.cast(days, pa.float64()), 86400.0)
    per = _TICKS_PER_SECOND[data_type.unit]
    return pa.chunked_array([_ticks_to_seconds(chunk.view(pa.int64()), per) for chunk in values.chunks],
                            pa.float64())


def _to_seconds(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Seconds (float64) of times of day and durations."""
    data_type = values.type
    per = _TICKS_PER_SECOND[data_type.unit]
    width = pa.int64() if data_type.bit_width == 64 else pa.int32()
    return pa.chunked_array([_ticks_to_seconds(pc.cast(chunk.view(width), pa.int64()), per)
                             for chunk in values.chunks], pa.float64())


def _parse_dates(values: pa.Array) -> pa.Array:
    """Text -> seconds since the epoch (UTC; naive text counts as UTC), null where a value is not a date."""
    import warnings

    import pandas as pd

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    uniques = encoded.dictionary.to_pandas()
    with warnings.catch_warnings():
        # pandas warns once per call when it falls back to dateutil; the decision is reported, not warned about
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(uniques, errors="coerce", format="mixed", utc=True)
    seconds = (parsed.astype("int64") / 1e9).where(parsed.notna())
    table = pa.array(seconds.to_numpy(dtype=np.float64), from_pandas=True)
    return table.take(encoded.indices)


def _looks_like_dates(sample: pa.Array) -> float:
    """Share of sampled text values that parse as dates (AutoGluon's own test: pandas, mixed formats)."""
    if len(sample) == 0:
        return 0.0
    return float(pc.sum(_parse_dates(sample).is_valid()).as_py() or 0) / len(sample)


def decimal_to_float64(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Decimals as the nearest doubles.

    Arrow's decimal -> double cast is not correctly rounded (3.03 becomes 3.0300000000000002); parsing the
    decimal text is, and gives what ``float(Decimal)`` and the source system give.
    """
    return pc.cast(pc.cast(values, pa.string()), pa.float64())


def _number_mask(values: pa.Array) -> pa.Array:
    return pc.match_substring_regex(values, _NUMBER)


class ColumnInspector:
    """Pass 1 of ingest: refuses unsupported columns up front, then watches text columns for stray values.

    Build it from the source's schema, call :meth:`observe` on every piece in order, then :meth:`plan`.
    """

    def __init__(self, schema: pa.Schema, label: str, drop: tuple[str, ...], display: str,
                 csv_lines: bool = False) -> None:
        self.display = display
        self.csv_lines = csv_lines  # data row n is line n + 1 of a CSV (one header line, no value across lines)
        self.label = label
        unknown = [name for name in drop if name not in schema.names]
        if unknown:
            hints = [difflib.get_close_matches(name, schema.names, n=1) for name in unknown]
            said = ", ".join(f"`{name}`" + (f" (did you mean `{hint[0]}`?)" if hint else "")
                             for name, hint in zip(unknown, hints, strict=True))
            raise DataValidationError(
                f"{display}: drop_columns names column(s) the table does not have: {said}. Columns: "
                f"{', '.join(f'`{name}`' for name in schema.names)}"
            )
        if label in drop:
            raise DataValidationError(f"{display}: drop_columns lists the label `{label}`; remove it from the list")
        self.drop = tuple(drop)
        kept = pa.schema([f for f in schema if f.name not in drop])
        refused = [(f.name, why) for f in kept if f.name != label and (why := _unsupported(f.type))]
        flat = _flatten(kept)
        refused += [(f.name, why) for f in flat if f.name != label and f.name not in kept.names
                    and (why := _unsupported(f.type))]
        if refused:
            listed = "; ".join(f"`{name}` holds {why}" for name, why in refused)
            names = drop_columns_argument([name for name, _ in refused])
            raise DataValidationError(
                f"{display}: column(s) of a type a model cannot use: {listed}. Every cell must hold one number, "
                f"text, boolean or date: turn such a column into scalar columns (a count, one column per item), or "
                f"leave it out with drop_columns='{names}' (kfp-tabular run --drop-columns)"
            )
        duplicates = sorted({n for n in flat.names if flat.names.count(n) > 1})
        if duplicates:
            raise DataValidationError(
                f"{display}: flattening nested columns gives duplicate column name(s) "
                f"{', '.join(f'`{n}`' for n in duplicates)}; rename the nested fields or the column"
            )
        self.source_schema = kept
        self.schema = flat  # what a piece looks like after dropping and flattening
        self.stray: dict[str, _Stray] | None = None
        # uint64 columns are stored as int64 when every value fits, else as float64
        self.uint64_max = {f.name: 0 for f in flat if pa.types.is_uint64(f.type)}
        self._offset = 0

    def shape(self, piece: pa.Table) -> pa.Table:
        """Drop the dropped columns and flatten structs."""
        if self.drop:
            piece = piece.drop_columns(list(self.drop))
        while any(pa.types.is_struct(f.type) for f in piece.schema):
            piece = piece.flatten()
        return piece

    def observe(self, raw: pa.Table) -> None:
        """Look at one piece (in order): the first one decides which text columns to watch."""
        piece = self.shape(raw)
        if self.stray is None:
            self.stray = self._candidates(piece)
        for name in self.uint64_max:
            largest = pc.max(piece.column(name)).as_py()
            self.uint64_max[name] = max(self.uint64_max[name], largest or 0)
        for name, stray in self.stray.items():
            values = piece.column(name)
            present = values.is_valid()
            if stray.kind == NUMERIC:
                bad = pc.and_(present, pc.invert(_number_mask(values)))
            else:
                bad = pc.and_(present, pc.invert(_parse_dates(values).is_valid()))
            stray.values += int(pc.sum(present).as_py() or 0)
            count = int(pc.sum(bad).as_py() or 0)
            if count:
                rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False) if isinstance(bad, pa.Array)
                                      else bad.combine_chunks().to_numpy(zero_copy_only=False))
                stray.first_rows += [int(r) + self._offset + 1 for r in rows[: EXAMPLES - len(stray.first_rows)]]
                for value in values.filter(bad).to_pylist():
                    if len(stray.examples) >= EXAMPLES:
                        break
                    if value not in stray.examples:
                        stray.examples.append(value)
                stray.count += count
        self._offset += piece.num_rows

    def _candidates(self, piece: pa.Table) -> dict[str, _Stray]:
        """Text columns of the first piece whose values are mostly numbers or mostly dates."""
        found: dict[str, _Stray] = {}
        for f in piece.schema:
            if f.name == self.label or not pa.types.is_string(f.type):
                continue
            sample = piece.column(f.name).drop_null().slice(0, SAMPLE)
            if len(sample) == 0:
                continue
            sample = sample.combine_chunks() if isinstance(sample, pa.ChunkedArray) else sample
            numbers = float(pc.sum(_number_mask(sample)).as_py() or 0) / len(sample)
            if numbers >= MOSTLY:
                found[f.name] = _Stray(NUMERIC)
            elif numbers < 0.5 and _looks_like_dates(sample) >= MOSTLY:
                found[f.name] = _Stray(DATETIME)
        return found

    def plan(self, bad_values: str, problem_type: str, label_is_whole: bool) -> ColumnPlan:
        """Decide every column; raises :class:`DataValidationError` for stray values when ``bad_values='error'``."""
        watched = self.stray or {}
        # Text that holds only numbers was written as text on purpose (codes, zip codes): it stays categorical.
        stray = {name: s for name, s in watched.items() if s.kind == DATETIME or s.count > 0}
        failing = {name: s for name, s in stray.items() if s.count}
        if failing and bad_values == "error":
            raise DataValidationError(self._stray_message(failing))
        if bad_values == "text":
            stray = {name: s for name, s in stray.items() if s.count == 0}
        decisions, types = [], []
        for f in self.schema:
            fits = self.uint64_max.get(f.name, 0) <= INT64_MAX
            if f.name == self.label:
                decision, stored = _label_decision(f, problem_type, label_is_whole, fits)
            elif f.name in stray:
                decision, stored = _text_decision(f, stray[f.name]), pa.float64()
            else:
                decision, stored = _typed_decision(f, fits)
            decisions.append(decision)
            types.append(pa.field(f.name, stored))
        return ColumnPlan(self, tuple(decisions), pa.schema(types))

    def _stray_message(self, failing: dict[str, _Stray]) -> str:
        parts = []
        for name, s in failing.items():
            kind = "numbers" if s.kind == NUMERIC else "dates"
            rows = ", ".join(str(r) for r in s.first_rows) + (" …" if s.count > len(s.first_rows) else "")
            if self.csv_lines:
                rows += "; CSV line(s) " + ", ".join(str(r + 1) for r in s.first_rows)
            quoted = ", ".join(repr(v) for v in s.examples)
            parts.append(
                f"column `{name}` holds {kind} in {s.values - s.count} of {s.values} rows but {s.count} value(s) "
                f"that are not {kind} ({quoted}; data row(s) {rows})"
            )
        names = ", ".join(f"`{name}`" for name in failing)
        return (
            f"{self.display}: {'; '.join(parts)}. Fix those cells, or pass bad_values='missing' to read them as "
            f"missing values, or bad_values='text' to keep {names} as text (kfp-tabular run --bad-values)"
        )


def _widened(t: pa.DataType, fits_int64: bool) -> tuple[pa.DataType, str] | None:
    """Numbers stored in a wider type, so that AutoGluon and the export read them: (type, note), or None."""
    if pa.types.is_float16(t):
        return pa.float32(), "float16 widened to float32 (exact)"
    if pa.types.is_uint64(t) and not fits_int64:
        return pa.float64(), "values above 2^63 - 1: stored as float64 (exact up to 2^53, rounded above)"
    if pa.types.is_unsigned_integer(t):
        # AutoGluon casts a served value back to the column's dtype; for unsigned types a missing or negative
        # value then fails the whole request, where a signed column reads it as AutoGluon does at fit
        return pa.int64(), "unsigned integers stored as int64 (exact)"
    return None


def _label_decision(f: pa.Field, problem_type: str, whole: bool,
                    fits_int64: bool = True) -> tuple[ColumnType, pa.DataType]:
    source = str(f.type)
    kind = NUMERIC if problem_type == "regression" else CATEGORICAL
    if problem_type != "regression" and whole and (pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)):
        return ColumnType(f.name, kind, source, "int64", "whole-number classes stored as int64"), pa.int64()
    if pa.types.is_decimal(f.type):
        return ColumnType(f.name, kind, source, "double", "decimal to float64"), pa.float64()
    if widened := _widened(f.type, fits_int64):
        return ColumnType(f.name, kind, source, str(widened[0]), widened[1]), widened[0]
    return ColumnType(f.name, kind, source, source), f.type


def _text_decision(f: pa.Field, stray: _Stray) -> ColumnType:
    how = "missing" if stray.count else ""
    if stray.kind == NUMERIC:
        note = "numbers in text" + (f"; {stray.count} value(s) that are not numbers read as {how}" if how else "")
        return ColumnType(f.name, NUMERIC, str(f.type), "double", note)
    note = "dates in text, as seconds since 1970-01-01 UTC" + (
        f"; {stray.count} value(s) that are not dates read as {how}" if how else "")
    return ColumnType(f.name, DATETIME, str(f.type), "double", note)


def _typed_decision(f: pa.Field, fits_int64: bool = True) -> tuple[ColumnType, pa.DataType]:
    t, source = f.type, str(f.type)
    if pa.types.is_decimal(t):
        return ColumnType(f.name, NUMERIC, source, "double", "decimal to float64"), pa.float64()
    if widened := _widened(t, fits_int64):
        return ColumnType(f.name, NUMERIC, source, str(widened[0]), widened[1]), widened[0]
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return ColumnType(f.name, NUMERIC, source, source), t
    if pa.types.is_boolean(t):
        return ColumnType(f.name, BOOLEAN, source, source), t
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        zone = "" if not pa.types.is_timestamp(t) or t.tz else " (naive, taken as UTC)"
        note = f"seconds since 1970-01-01 UTC{zone}"
        return ColumnType(f.name, DATETIME, source, "double", note), pa.float64()
    if pa.types.is_time(t) or pa.types.is_duration(t):
        return ColumnType(f.name, NUMERIC, source, "double", "seconds"), pa.float64()
    return ColumnType(f.name, CATEGORICAL, source, source), t


@dataclass(frozen=True)
class ColumnPlan:
    """The decisions and the function that turns every read piece into what the splits store."""

    inspector: ColumnInspector
    decisions: tuple[ColumnType, ...]
    schema: pa.Schema  # of the stored pieces

    def convert(self, raw: pa.Table) -> pa.Table:
        """One read piece as stored: columns dropped, structs flattened, values converted."""
        piece = self.inspector.shape(raw)
        columns = []
        for decision, target in zip(self.decisions, self.schema, strict=True):
            values = piece.column(decision.name)
            if values.type != target.type:
                values = _convert(values, decision, target.type)
            columns.append(values)
        return pa.Table.from_arrays(columns, schema=self.schema)


def _convert(values: pa.ChunkedArray, decision: ColumnType, target: pa.DataType) -> pa.ChunkedArray | pa.Array:
    t = values.type
    if pa.types.is_string(t):
        if decision.logical_type == NUMERIC:
            numbers = pc.if_else(_number_mask(values), pc.utf8_trim_whitespace(values), None)
            return pc.cast(numbers, pa.float64())
        return _parse_dates(values.combine_chunks())
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _to_epoch_seconds(values)
    if pa.types.is_time(t) or pa.types.is_duration(t):
        return _to_seconds(values)
    if pa.types.is_decimal(t):
        values = decimal_to_float64(values)
    if pa.types.is_uint64(t) and pa.types.is_floating(target):  # rounds to the nearest double above 2^53
        return pc.cast(values, target, safe=False)
    if pa.types.is_floating(values.type) and target == pa.int64():  # whole-number labels: NaN becomes null
        values = pc.if_else(pc.is_nan(values), None, values)
    return pc.cast(values, target)
