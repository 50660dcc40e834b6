"""Readers: a local CSV, Parquet or JSON Lines file as Arrow tables with one fixed schema.

A file whose table fits in ``WHOLE_READ_BYTES`` is read whole with Arrow's threaded readers (``read_csv``,
``ParquetFile.read``, ``read_json``: every core parses, and types are inferred from all blocks). A bigger file is
streamed (``open_csv``, ``ParquetFile.iter_batches``, ``open_json``) so memory stays bounded by a few blocks; the
streaming readers infer column types from the first block, so when a later CSV block disagrees (an integer column
that turns out to hold ``3.5``) the reader widens that column and asks the caller to read again
(:class:`RestartRead`); a JSON Lines file whose later records add fields is read again whole. Either way the caller
sees the same thing: pieces of one table (the whole table, or one piece per block). Errors are diagnosed on the
error path only, with a second look at the file in Python, so that messages name physical line numbers as an editor
shows them.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from queue import Full, Queue
from typing import IO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from kfp_tabular.components.ingest_data.sources import LocalSource
from kfp_tabular.errors import DataValidationError

BLOCK_SIZE = 8 << 20  # bytes of text per CSV / JSON block: the unit of streaming and of CSV type inference
WHOLE_READ_BYTES = 256 << 20  # a table estimated at most this big in memory is read whole, with every core
COMPRESSED_TEXT_RATIO = 8  # how much a gzip / bz2 CSV or JSON Lines file is assumed to expand
PARQUET_BATCH_ROWS = 128 * 1024
MAX_LISTED = 20  # line numbers spelled out in one message

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2"}
_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): .*CSV conversion error to (\w+)(?:\[[^\]]*\])?: invalid value '(.*)'"
)


class RestartRead(Exception):
    """The reader learnt something (a wider column type) and the caller must read again from the start."""


@dataclass(frozen=True)
class FileFormat:
    """How to read a file: ``kind`` csv / parquet / jsonl, an optional compression, the CSV delimiter."""

    kind: str
    compression: str | None = None
    delimiter: str = ","


def resolve_format(name: str, file_format: str, display: str) -> FileFormat:
    """Choose the reader from ``file_format`` or, for ``auto``, from the file name's extension."""
    lowered = name.lower()
    compression = None
    for suffix, kind in _COMPRESSIONS.items():
        if lowered.endswith(suffix):
            compression, lowered = kind, lowered[: -len(suffix)]
    extension = "." + lowered.rsplit(".", 1)[-1] if "." in lowered else ""
    if file_format == "auto":
        kind = _EXTENSIONS.get(extension)
        if kind is None:
            known = ", ".join(sorted(_EXTENSIONS)) + " (optionally + .gz / .bz2)"
            raise DataValidationError(
                f"{display}: cannot tell the format from the extension {extension or '(none)'!r}; rename the file "
                f"to one of {known}, or pass file_format='csv', 'parquet' or 'jsonl'"
            )
    else:
        kind = file_format
    if kind == "parquet" and compression:
        raise DataValidationError(
            f"{display}: a {compression}-compressed Parquet file is not supported; Parquet compresses its pages "
            "itself, upload the plain .parquet file"
        )
    return FileFormat(kind=kind, compression=compression, delimiter="\t" if extension == ".tsv" else ",")


def _arrow_encoding(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "utf8" if name == "utf-8" else name


def _open_binary(source: LocalSource, fmt: FileFormat) -> IO[bytes]:
    if fmt.compression == "gzip":
        return gzip.open(source.path, "rb")
    if fmt.compression == "bz2":
        return bz2.open(source.path, "rb")
    return open(source.path, "rb")


def _listed(numbers: list[int], total: int | None = None) -> str:
    total = len(numbers) if total is None else total
    shown = ", ".join(str(n) for n in numbers[:MAX_LISTED])
    return shown + (f" … ({total} in all)" if total > MAX_LISTED else "")


def _normalized_type(data_type: pa.DataType) -> pa.DataType:
    """Categoricals and large strings become plain strings, untyped (all-null) columns strings: stable dtypes."""
    if pa.types.is_dictionary(data_type):
        return _normalized_type(data_type.value_type)
    if pa.types.is_large_string(data_type) or pa.types.is_null(data_type):
        return pa.string()
    if pa.types.is_large_binary(data_type):
        return pa.binary()
    return data_type


def normalized_schema(schema: pa.Schema) -> pa.Schema:
    """The schema every piece is cast to (metadata from the source dropped)."""
    return pa.schema([pa.field(f.name, _normalized_type(f.type)) for f in schema])


def prefetched(pieces: Iterator[pa.Table], depth: int = 2) -> Iterator[pa.Table]:
    """Iterate ``pieces`` in a background thread, ``depth`` pieces ahead.

    Arrow's streaming CSV reader parses a block only when asked for it; reading ahead in a thread lets parsing
    overlap with the caller's work on the previous piece. Errors are re-raised in the caller's thread.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not put(piece):
                    return
            put(done)
        except BaseException as error:  # handed over to the consumer, which raises it
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    if table.schema.equals(schema, check_metadata=False):
        return table.replace_schema_metadata(None) if table.schema.metadata else table
    return table.cast(schema)


@dataclass(frozen=True)
class OpenedTable:
    """What :meth:`TableReader.open` returns: the normalized schema and the table's pieces, cast to it."""

    schema: pa.Schema
    pieces: Iterator[pa.Table]  # the whole table as one piece, or one piece per streamed block
    whole: bool  # True when the file was read whole: the piece is already in memory


@dataclass
class TableReader:
    """Reads one local file, whole or in blocks; ``open()`` may be called again after :class:`RestartRead`."""

    source: LocalSource
    fmt: FileFormat
    encoding: str = "utf-8"
    column_types: dict[str, pa.DataType] = field(default_factory=dict)  # widened CSV columns, by name
    _json_whole: bool = field(default=False, init=False, repr=False)
    _bad_rows: int = field(default=0, init=False, repr=False)

    @property
    def is_utf8(self) -> bool:
        """Whether the configured encoding is UTF-8 (the only one Arrow reads without transcoding)."""
        return _arrow_encoding(self.encoding) == "utf8"

    def estimated_bytes(self) -> int:
        """A rough size of the table in memory, to choose between reading it whole and streaming it."""
        size = self.source.path.stat().st_size
        if self.fmt.kind != "parquet":
            return size * (COMPRESSED_TEXT_RATIO if self.fmt.compression else 1)
        try:
            metadata = pq.read_metadata(self.source.path)
        except (pa.ArrowInvalid, OSError):
            return size  # the read reports the damage
        # Parquet records its encoded size; values that were dictionary- or run-length encoded take more in Arrow.
        encoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        return encoded + 8 * metadata.num_rows * metadata.num_columns

    def open(self) -> OpenedTable:
        """Read the file whole (all cores) when it fits in ``WHOLE_READ_BYTES``, else open a stream of blocks."""
        if self.source.path.stat().st_size == 0:
            raise DataValidationError(
                f"{self.source.display}: the file is empty (0 bytes); upload the full table"
            )
        kind = self.fmt.kind
        if self._json_whole or self.estimated_bytes() <= WHOLE_READ_BYTES:
            read = {"csv": self._read_csv, "parquet": self._read_parquet, "jsonl": self._read_jsonl}[kind]
            table = read()
            schema = normalized_schema(table.schema)
            return OpenedTable(schema, iter([_cast(table, schema)]), whole=True)
        opener = {"csv": self._open_csv, "parquet": self._open_parquet, "jsonl": self._open_jsonl}[kind]
        raw_schema, batches = opener()
        schema = normalized_schema(raw_schema)
        pieces = (_cast(pa.Table.from_batches([batch]), schema) for batch in batches)
        return OpenedTable(schema, prefetched(pieces), whole=False)

    # ---------------------------------------------------------------------------------------------- CSV

    def _csv_options(self, use_threads: bool) -> dict:
        self._bad_rows = 0

        def on_invalid_row(row) -> str:
            self._bad_rows += 1
            return "error"  # stop here; the diagnosis collects every malformed line in one pass

        return {
            "read_options": pcsv.ReadOptions(
                block_size=BLOCK_SIZE, encoding=_arrow_encoding(self.encoding), use_threads=use_threads
            ),
            "parse_options": pcsv.ParseOptions(
                delimiter=self.fmt.delimiter, invalid_row_handler=on_invalid_row
            ),
            "convert_options": pcsv.ConvertOptions(strings_can_be_null=True, column_types=self.column_types),
        }

    def _check_text_columns(self, schema: pa.Schema) -> None:
        if self.is_utf8 and any(pa.types.is_binary(f.type) for f in schema):
            # Arrow types a column that is not valid UTF-8 as binary instead of failing: that is an encoding error.
            raise self._encoding_failure() or DataValidationError(
                f"{self.source.display}: some columns are not valid UTF-8 text; pass the file's encoding="
            )

    def _read_csv(self) -> pa.Table:
        # The threaded reader infers each column's type from every block, so it never needs a restart.
        try:
            table = pcsv.read_csv(str(self.source.path), **self._csv_options(use_threads=True))
        except (pa.ArrowInvalid, UnicodeError) as error:
            raise self._csv_failure(error) from error
        self._check_text_columns(table.schema)
        return table

    def _open_csv(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        try:
            reader = pcsv.open_csv(str(self.source.path), **self._csv_options(use_threads=False))
        except (pa.ArrowInvalid, UnicodeError) as error:
            raise self._csv_failure(error) from error
        self._check_text_columns(reader.schema)
        return reader.schema, _batches(reader, lambda error: self._csv_failure(error, reader.schema))

    def _csv_failure(self, error: Exception, schema: pa.Schema | None = None) -> Exception:
        """Turn a failed CSV read into a specific error, or a :class:`RestartRead` with a widened column."""
        display = self.source.display
        message = str(error)
        if self._bad_rows:
            return self._malformed_rows_failure(message)
        if isinstance(error, UnicodeError) or "utf8" in message.lower().replace("-", ""):
            found = self._encoding_failure()
            if found is not None:
                return found
        if "Empty CSV file" in message:
            return DataValidationError(
                f"{display}: the file has no header and no rows; upload the full table"
            )
        match = _CONVERSION_ERROR.search(message)
        if match and schema is not None:
            index, value = int(match.group(1)), match.group(3)
            name = schema.field(index).name
            wider = _wider_type(schema.field(index).type, value)
            if self.column_types.get(name) != wider:
                self.column_types[name] = wider
                return RestartRead(f"column {name!r} widened to {wider}")
        return DataValidationError(f"{display}: cannot be read as CSV: {message}")

    def _malformed_rows_failure(self, arrow_message: str) -> DataValidationError:
        """Find every record whose field count differs from the header's, by physical line number."""
        expected, bad = None, []
        with _open_binary(self.source, self.fmt) as raw:
            text = io.TextIOWrapper(raw, encoding=self.encoding, errors="replace", newline="")
            reader = csv.reader(text, delimiter=self.fmt.delimiter)
            previous_line = 0
            for record in reader:
                start, previous_line = previous_line + 1, reader.line_num
                if not record:  # blank line: Arrow skips it too
                    continue
                if expected is None:
                    expected = len(record)
                elif len(record) != expected:
                    bad.append((start, len(record)))
        if not bad:  # Python's csv module disagrees with Arrow: still report what Arrow saw
            return DataValidationError(
                f"{self.source.display}: malformed CSV row ({arrow_message}); every row needs the same number of "
                "fields as the header"
            )
        details = "; ".join(f"line {line}: {count} fields" for line, count in bad[:MAX_LISTED])
        return DataValidationError(
            f"{self.source.display}: {len(bad)} malformed CSV row(s) at line(s) {_listed([b[0] for b in bad])} "
            f"(the header has {expected} fields; {details}). Fix or remove these lines (a value with a delimiter "
            "in it must be quoted; a truncated file must be uploaded again)"
        )

    # -------------------------------------------------------------------------------------------- Parquet

    def _parquet_file(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.source.path)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataValidationError(
                f"{self.source.display}: not a readable Parquet file ({error}); check the file or pass the right "
                "file_format"
            ) from error

    def _damaged(self, error: Exception) -> DataValidationError:
        return DataValidationError(f"{self.source.display}: the Parquet file is damaged: {error}")

    def _read_parquet(self) -> pa.Table:
        parquet = self._parquet_file()
        try:
            return parquet.read()
        except (pa.ArrowInvalid, OSError) as error:
            raise self._damaged(error) from error

    def _open_parquet(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        parquet = self._parquet_file()
        return parquet.schema_arrow, self._iter_parquet(parquet)

    def _iter_parquet(self, parquet: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
        except (pa.ArrowInvalid, OSError) as error:
            raise self._damaged(error) from error

    # ---------------------------------------------------------------------------------------- JSON Lines

    def _json_input(self):
        stream = pa.input_stream(str(self.source.path), compression="detect")
        if self.is_utf8:
            return stream
        return pa.transcoding_input_stream(stream, _arrow_encoding(self.encoding), "utf8")

    def _check_json_encoding(self) -> None:
        if self.is_utf8:
            # Arrow's JSON reader replaces invalid UTF-8 with U+FFFD silently: check the bytes first.
            failure = self._encoding_failure(quick=True)
            if failure is not None:
                raise failure

    def _read_jsonl(self) -> pa.Table:
        # The whole-file reader unifies blocks that add fields or change number types: a failure here is final.
        self._json_whole = True
        self._check_json_encoding()
        try:
            return pjson.read_json(self._json_input(), read_options=pjson.ReadOptions(block_size=BLOCK_SIZE))
        except (pa.ArrowInvalid, UnicodeError) as error:
            raise self._json_failure(error) from error

    def _open_jsonl(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        self._check_json_encoding()
        try:
            reader = pjson.open_json(
                self._json_input(), read_options=pjson.ReadOptions(block_size=BLOCK_SIZE)
            )
        except (pa.ArrowInvalid, UnicodeError) as error:
            raise self._json_failure(error) from error
        return reader.schema, _batches(reader, self._json_failure)

    def _json_failure(self, error: Exception) -> Exception:
        display, message = self.source.display, str(error)
        if isinstance(error, UnicodeError):
            return self._encoding_failure() or DataValidationError(
                f"{display}: {message}; pass the right encoding="
            )
        if "Empty JSON" in message:
            return DataValidationError(f"{display}: the file has no JSON records; upload the full table")
        syntax, conflicts = self._scan_json_lines()
        if syntax:
            lines = [line for line, _ in syntax]
            return DataValidationError(
                f"{display}: {len(syntax)} line(s) are not one JSON object each: line(s) {_listed(lines)} "
                f"(line {syntax[0][0]}: {syntax[0][1]}). JSON Lines needs one complete object per line"
            )
        if conflicts:
            details = "; ".join(
                f"`{key}` is {before} before line {line} and {after} there"
                for key, line, before, after in conflicts
            )
            return DataValidationError(
                f"{display}: column types change between records: {details}. Make every value of a column the "
                "same JSON type (quote numbers that are really codes)"
            )
        if not self._json_whole:
            self._json_whole = True
            return RestartRead("JSON schema changes across blocks: read the file whole")
        return DataValidationError(f"{display}: cannot be read as JSON Lines: {message}")

    def _scan_json_lines(self) -> tuple[list[tuple[int, str]], list[tuple[str, int, str, str]]]:
        syntax: list[tuple[int, str]] = []
        kinds: dict[str, str] = {}
        conflicts: list[tuple[str, int, str, str]] = []
        with _open_binary(self.source, self.fmt) as raw:
            text = io.TextIOWrapper(raw, encoding=self.encoding, errors="replace")
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    syntax.append((number, error.msg))
                    continue
                if not isinstance(record, dict):
                    syntax.append((number, f"a JSON {type(record).__name__}, not an object"))
                    continue
                for key, value in record.items():
                    kind = _json_kind(value)
                    if kind is None:
                        continue
                    before = kinds.setdefault(key, kind)
                    if before != kind and len(conflicts) < MAX_LISTED:
                        conflicts.append((key, number, before, kind))
                        kinds[key] = kind
        return syntax, conflicts

    # ----------------------------------------------------------------------------------------- encoding

    def _decodes(self) -> bool:
        """Whether the whole file decodes with the configured encoding (fast: large chunks, no line splitting)."""
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        with _open_binary(self.source, self.fmt) as raw:
            try:
                while chunk := raw.read(BLOCK_SIZE):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                return False
        return True

    def _encoding_failure(self, quick: bool = False) -> DataValidationError | None:
        """Scan the file line by line with the configured encoding; an error naming the bad lines, or None."""
        if quick and self._decodes():
            return None
        bad: list[tuple[int, int, int]] = []
        total = 0
        with _open_binary(self.source, self.fmt) as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    line.decode(self.encoding)
                except UnicodeDecodeError as error:
                    total += 1
                    if len(bad) < MAX_LISTED:
                        bad.append((number, error.start + 1, line[error.start]))
        if not bad:
            return None
        line, column, byte = bad[0]
        if self.is_utf8:
            advice = (
                'it was probably written as Latin-1 / Windows-1252: pass encoding="latin-1" (or "cp1252")'
            )
        else:
            advice = 'pass the file\'s real encoding (e.g. encoding="utf-8", "latin-1", "cp1252")'
        return DataValidationError(
            f"{self.source.display}: not valid {codecs.lookup(self.encoding).name} text at line(s) "
            f"{_listed([b[0] for b in bad], total)} (line {line}, column {column}: byte 0x{byte:02x}); {advice}"
        )


def _json_kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _wider_type(current: pa.DataType, value: str) -> pa.DataType:
    """The type a CSV column widens to so that ``value`` converts: integer, then float, then string."""
    candidates: list[tuple[pa.DataType, type]] = []
    if pa.types.is_null(current):
        candidates = [(pa.int64(), int), (pa.float64(), float)]
    elif pa.types.is_integer(current):
        candidates = [(pa.float64(), float)]
    for candidate, parse in candidates:
        try:
            parse(value)
        except ValueError:
            continue
        return candidate
    return pa.string()


def _batches(reader, failure: Callable[[Exception], Exception]) -> Iterator[pa.RecordBatch]:
    """Record batches of a streaming Arrow reader; a parse or decoding error becomes ``failure(error)``."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeError) as error:
            raise failure(error) from error
        yield batch
