"""Core of ``ingest_data``: read a table, validate it, profile it and split it into train / validation / test.

Plain Python (no kfp import). Two passes:

1. read the source as pieces of one table (readers.py): the whole table at once when it fits in memory (Arrow's
   threaded readers), else one piece per streamed block, spilled to a temporary Arrow IPC file so that memory stays
   bounded whatever the file size; keep the label column;
2. from the labels alone, resolve the problem type and assign every row to a split (seeded, stratified for
   classification); then, on one thread per core, write the three Parquet files (each goes through the pieces and
   keeps its own rows) and profile the table.

Outputs are written to temporary names and renamed at the end; on any failure none of the four outputs exists.
"""

from __future__ import annotations

import codecs
import difflib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfp_tabular.components._shared import markdown
from kfp_tabular.components._shared.files import all_or_nothing, sha256_file, write_text_atomic
from kfp_tabular.components._shared.table_schema import METADATA_KEY, TableSchema
from kfp_tabular.components.ingest_data.column_types import BAD_VALUES, ColumnInspector, ColumnPlan
from kfp_tabular.components.ingest_data.labels import (
    PROBLEM_TYPES,
    LabelSummary,
    analyse_label,
    describe_label,
    has_whole_classes,
)
from kfp_tabular.components.ingest_data.leakage import SAMPLE_ROWS, find_warnings
from kfp_tabular.components.ingest_data.profiling import DISTINCT_CAP, TableProfile, profile_table
from kfp_tabular.components.ingest_data.readers import RestartRead, TableReader, resolve_format
from kfp_tabular.components.ingest_data.sources import open_source
from kfp_tabular.components.ingest_data.splitting import SPLITS, SplitPlan, assign_splits
from kfp_tabular.errors import ConfigError, DataValidationError

FILE_FORMATS = ("auto", "csv", "parquet", "jsonl")
ROW_GROUP_BYTES = 64 << 20  # rows of one split gathered in memory before they are written
MAX_RESTARTS = 64
# Default of IngestConfig.min_rows: with the default fractions, 50 labelled rows leave 10 test and 8 validation
# rows; one test row then moves accuracy by 10 points. Fewer rows give metrics (and a blessing) that say more
# about the split than about the model.
MIN_ROWS = 50


@dataclass(frozen=True)
class IngestConfig:
    """Parameters of one ingestion (validated on construction).

    Attributes:
        label: Name of the column to predict.
        problem_type: ``auto`` (AutoGluon's rules), ``binary``, ``multiclass`` or ``regression``.
        file_format: ``auto`` (from the extension), ``csv``, ``parquet`` or ``jsonl``.
        encoding: Text encoding of CSV / JSON Lines input (any Python codec name).
        validation_fraction: Share of labelled rows in the validation split (0 allowed).
        test_fraction: Share of labelled rows in the test split (0 allowed).
        seed: Seed of the split.
        drop_columns: Columns left out of the splits (IDs, leaks, columns of an unusable type).
        bad_values: What to do with stray values in a column of numbers or dates (``"n/a?"`` in a price):
            ``error`` (refuse the table, naming the rows), ``missing`` (read them as missing) or ``text`` (keep the
            column as text).
        min_rows: Fewest labelled rows accepted (default ``MIN_ROWS`` = 50, where the default fractions leave
            10 test rows: fewer make the test metrics and the blessing a matter of which rows were drawn).
    """

    label: str
    problem_type: str = "auto"
    file_format: str = "auto"
    encoding: str = "utf-8"
    validation_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 0
    drop_columns: tuple[str, ...] = ()
    bad_values: str = "error"
    min_rows: int = MIN_ROWS

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ConfigError("label must name the column to predict (got an empty name)")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={self.problem_type!r}; choose one of {', '.join(PROBLEM_TYPES)}")
        if self.file_format not in FILE_FORMATS:
            raise ConfigError(f"file_format={self.file_format!r}; choose one of {', '.join(FILE_FORMATS)}")
        try:
            codecs.lookup(self.encoding)
        except LookupError as error:
            raise ConfigError(
                f"encoding={self.encoding!r} is not a known text encoding (try 'utf-8', 'latin-1')"
            ) from error
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigError(f"{name}={value!r}; it must be a number in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"validation_fraction + test_fraction = {self.validation_fraction + self.test_fraction:g} leaves no "
                "rows for training; their sum must be below 1"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}; it must be a non-negative integer")
        if self.bad_values not in BAD_VALUES:
            raise ConfigError(f"bad_values={self.bad_values!r}; choose one of {', '.join(BAD_VALUES)}")
        if isinstance(self.min_rows, bool) or not isinstance(self.min_rows, int) or self.min_rows < 3:
            raise ConfigError(
                f"min_rows={self.min_rows!r}; it must be an integer of at least 3 (a row each for train, "
                "validation and test)"
            )
        object.__setattr__(self, "drop_columns", tuple(self.drop_columns))
        if not all(isinstance(name, str) and name for name in self.drop_columns):
            raise ConfigError(f"drop_columns={self.drop_columns!r}; it must list column names")


@dataclass
class IngestResult:
    """What the KFP shell logs: per split artifact metadata, table metrics, the resolved problem type."""

    splits: dict[str, dict]
    metrics: dict[str, float]
    problem_type: str
    profile_markdown: str
    schema: TableSchema
    warnings: tuple[str, ...] = ()


def ingest(
    source_uri: str,
    config: IngestConfig,
    train_path: Path,
    validation_path: Path,
    test_path: Path,
    profile_path: Path,
) -> IngestResult:
    """Read ``source_uri``, validate, profile and split it into three Parquet files plus a Markdown profile.

    Raises:
        DataSourceError: the source cannot be reached (missing file, bucket or key, credentials, scheme).
        DataValidationError: the table cannot be used (malformed rows, encoding, empty, label problems...).
    """
    outputs = dict(zip(SPLITS, (Path(train_path), Path(validation_path), Path(test_path)), strict=True))
    staged: dict[str, Path] = {}
    with all_or_nothing(*outputs.values(), Path(profile_path)):
        try:
            with (
                open_source(source_uri) as source,
                tempfile.TemporaryDirectory(prefix="kfp-tabular-ingest-") as tmp,
            ):
                fmt = resolve_format(source.name, config.file_format, source.display)
                reader = TableReader(source, fmt, config.encoding)
                spill = Path(tmp) / "rows.arrow"
                scan = _scan(reader, config, spill)
                # Arrow's allocator keeps the parser's scratch memory (more than the table itself): give it back.
                pa.default_memory_pool().release_unused()
                # The column inspector may still be looking at the last piece: the labels are analysed and split
                # meanwhile, and a column error still comes before a split error, as if done in that order.
                label = analyse_label(scan.label, config.label, config.problem_type, source.display)
                _check_enough_rows(label, config, source.display)
                split_error = None
                try:
                    plan = assign_splits(
                        label, config.validation_fraction, config.test_fraction, config.seed, source.display
                    )
                except DataValidationError as error:
                    split_error = error
                columns = scan.inspected().plan(config.bad_values, label.problem_type, has_whole_classes(label))
                if split_error is not None:
                    raise split_error
                schema = TableSchema(config.label, label.problem_type, columns.decisions)
                for name, path in outputs.items():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    staged[name] = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                stored = _Converted(scan.pieces, columns, schema)
                written, profile = _write_and_profile(stored, plan, staged)
                warnings = find_warnings(_first_rows(stored, SAMPLE_ROWS), schema, label, profile)
            splits = {
                name: {
                    "rows": written[name][0],
                    "sha256": written[name][1],
                    "columns": stored.schema.names,
                    "column_types": schema.as_metadata(),
                    "label": config.label,
                    "problem_type": label.problem_type,
                }
                for name in SPLITS
            }
            text = render_profile(source_uri, fmt.kind, config, profile, label, plan, splits, schema, warnings)
            write_text_atomic(Path(profile_path), text)
            for name, path in outputs.items():
                os.replace(staged.pop(name), path)
        finally:
            for leftover in staged.values():
                leftover.unlink(missing_ok=True)

    metrics = {
        "rows": profile.rows,
        "columns": len(profile.columns),
        "missing_fraction": profile.missing_fraction,
        "duplicate_rows": profile.duplicate_rows,
        "dropped_label_rows": label.dropped,
        "warnings": len(warnings),
        **{f"{name}_rows": splits[name]["rows"] for name in SPLITS},
    }
    if label.classes:
        metrics["classes"] = len(label.classes)
    return IngestResult(
        splits=splits,
        metrics={key: float(value) for key, value in metrics.items()},
        problem_type=label.problem_type,
        profile_markdown=text,
        schema=schema,
        warnings=tuple(warnings),
    )


@dataclass
class _Scan:
    schema: pa.Schema
    label: pa.Array
    pieces: _Pieces
    inspector: ColumnInspector
    observing: Future | None = None  # the inspector's look at the last piece, still running

    def inspected(self) -> ColumnInspector:
        """The inspector once it has seen every piece (re-raises what went wrong while it looked)."""
        if self.observing is not None:
            self.observing.result()
        return self.inspector


class _Converted:
    """The pieces as the splits store them (converted by the column plan), under the schema with the decision."""

    def __init__(self, pieces: _Pieces, plan: ColumnPlan, decision: TableSchema) -> None:
        self.pieces = pieces
        self.plan = plan
        self.schema = plan.schema.with_metadata({METADATA_KEY: decision.to_json().encode()})

    def __iter__(self) -> Iterator[pa.Table]:
        for piece in self.pieces:
            yield self.plan.convert(piece)


class _Pieces:
    """The table between the two passes: kept as read when it was read whole, else spilled to an Arrow IPC file.

    Iterating yields the pieces in order; several threads may iterate at once (each reads the spill on its own).
    """

    def __init__(self, schema: pa.Schema, spill: Path | None) -> None:
        self.schema = schema
        self.spill = spill
        self._kept: list[pa.Table] = []
        self._sink = None if spill is None else pa.OSFile(str(spill), "wb")
        self._writer = None if self._sink is None else pa.ipc.new_file(self._sink, schema)

    def add(self, piece: pa.Table) -> None:
        if self._writer is None:
            self._kept.append(piece)
        else:
            self._writer.write_table(piece)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()

    def __iter__(self) -> Iterator[pa.Table]:
        if self.spill is None:
            yield from self._kept
            return
        with pa.OSFile(str(self.spill), "rb") as source:
            spilled = pa.ipc.open_file(source)
            for index in range(spilled.num_record_batches):
                yield pa.Table.from_batches([spilled.get_batch(index)])


def _scan(reader: TableReader, config: IngestConfig, spill: Path) -> _Scan:
    """Pass 1: collect the label, keep or spill the pieces; read again when the reader widens a column."""
    for _ in range(MAX_RESTARTS):
        try:
            return _scan_once(reader, config, spill)
        except RestartRead:
            continue
    raise DataValidationError(
        f"{reader.source.display}: column types kept changing while reading; pass a cleaner file (one type per "
        "column)"
    )


def _scan_once(reader: TableReader, config: IngestConfig, spill: Path) -> _Scan:
    opened = reader.open()
    schema = opened.schema
    display = reader.source.display
    label = config.label
    _check_columns(schema, label, display, len(config.drop_columns))
    inspector = ColumnInspector(schema, label, config.drop_columns, display, csv_lines=reader.fmt.kind == "csv")
    labels: list[pa.Array] = []
    rows = 0
    pieces = _Pieces(schema, None if opened.whole else spill)
    # The inspector looks at each piece on its own thread, one piece at a time and in order, while the next piece
    # is read, and at the last one while the caller analyses the labels.
    observer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-inspect")
    observing: Future | None = None
    try:
        for piece in opened.pieces:
            if piece.num_rows == 0:
                continue
            rows += piece.num_rows
            labels += piece.column(label).chunks
            if observing is not None:
                observing.result()
            observing = observer.submit(inspector.observe, piece)
            pieces.add(piece)
    except BaseException:
        observer.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pieces.close()
        observer.shutdown(wait=False)  # lets the last look finish; _Scan.inspected() waits for it
    if rows == 0:
        raise DataValidationError(
            f"{display}: the table has columns ({', '.join(schema.names[:10])}{', …' if len(schema) > 10 else ''}) "
            "but no data rows; upload the full table"
        )
    label_values = pa.chunked_array(labels, schema.field(label).type).combine_chunks()
    return _Scan(schema=schema, label=label_values, pieces=pieces, inspector=inspector, observing=observing)


def _first_rows(stored: _Converted, rows: int) -> pa.Table:
    """Up to ``rows`` first rows of the table as stored (from its first piece)."""
    pieces = iter(stored.pieces)
    try:
        first = next(pieces)
    finally:
        pieces.close()
    return stored.plan.convert(first.slice(0, rows))


def _check_columns(schema: pa.Schema, label: str, display: str, dropped: int = 0) -> None:
    if len(schema) == 0:
        raise DataValidationError(f"{display}: the file holds no columns and no rows; upload the full table")
    duplicates = [name for name, count in Counter(schema.names).items() if count > 1]
    if duplicates:
        raise DataValidationError(
            f"{display}: duplicate column name(s) {', '.join(repr(d) for d in duplicates)}; every column needs a "
            "unique name: rename them in the header"
        )
    if label not in schema.names:
        close = difflib.get_close_matches(label, schema.names, n=1, cutoff=0.6)
        close += [name for name in schema.names if name.lower() == label.lower() and name not in close]
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise DataValidationError(
            f"{display}: label column `{label}` not found. Available columns: "
            f"{', '.join(f'`{name}`' for name in schema.names)}.{hint}"
        )
    if len(schema) - dropped < 2:
        raise DataValidationError(
            f"{display}: the table has only the label column `{label}`"
            + (" once drop_columns are left out; drop fewer columns" if dropped else "; add feature columns")
        )


def _check_enough_rows(label: LabelSummary, config: IngestConfig, display: str) -> None:
    labelled = len(label.valid) - label.dropped
    if labelled >= config.min_rows:
        return
    read = f" ({len(label.valid)} read, {label.dropped} without a label)" if label.dropped else ""
    raise DataValidationError(
        f"{display}: only {labelled} rows have a label{read}, fewer than min_rows={config.min_rows}, the "
        "minimum to train and still keep enough validation and test rows to judge the model on. Supply more "
        "rows, or lower the minimum with min_rows (kfp-tabular run --min-rows) to accept metrics measured on "
        f"about {max(1, round(config.test_fraction * labelled))} test rows"
    )


def _write_and_profile(
    pieces: _Converted, plan: SplitPlan, staged: dict[str, Path]
) -> tuple[dict[str, tuple[int, str]], TableProfile]:
    """Pass 2: write the three Parquet files and profile the table, on one thread per core.

    Parquet encoding and the profile's Arrow / NumPy work release the GIL. Writing one file is serial work, and
    the train file is the biggest: it starts first, the other files next, and the profile's column work fills the
    cores as they come free.
    """
    workers = _cores()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        futures = {
            name: pool.submit(_write_split, pieces, plan.assignment, code, staged[name])
            for code, name in enumerate(SPLITS)
        }
        profile = profile_table(pieces, pieces.schema, pool, workers)
        return {name: future.result() for name, future in futures.items()}, profile


def _cores() -> int:
    """The cores this process may use (a container may restrict them below ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _write_split(pieces: _Converted, assignment: np.ndarray, code: int, path: Path) -> tuple[int, str]:
    """Write the rows assigned ``code``, in order; return their count and the file's sha256.

    Rows are gathered until they make ``ROW_GROUP_BYTES`` (or the table ends), then written as row groups of
    Parquet's default size: a table read whole is written in one call, a streamed one in bounded steps.
    """
    rows = offset = pending_bytes = 0
    pending: list[pa.Table] = []
    with pq.ParquetWriter(str(path), pieces.schema) as writer:
        for piece in pieces:
            mask = assignment[offset : offset + piece.num_rows] == code
            offset += piece.num_rows
            count = int(np.count_nonzero(mask))
            if count == 0:
                continue
            part = piece if count == piece.num_rows else piece.filter(pa.array(mask))
            pending.append(part)
            pending_bytes += part.nbytes
            rows += count
            if pending_bytes >= ROW_GROUP_BYTES:
                writer.write_table(pa.concat_tables(pending))
                pending, pending_bytes = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending))
    return rows, sha256_file(path)


def _percent(fraction: float) -> str:
    if 0 < fraction < 0.001:
        return "<0.1%"
    return f"{100 * fraction:.1f}%"


def render_profile(
    source_uri: str,
    kind: str,
    config: IngestConfig,
    profile: TableProfile,
    label: LabelSummary,
    plan: SplitPlan,
    splits: dict[str, dict],
    schema: TableSchema,
    warnings: list[str],
) -> str:
    """The Markdown profile: a headline, facts about the label and splits, warnings, then one row per column."""
    headline = (
        f"{profile.rows} rows × {len(profile.columns)} columns, {_percent(profile.missing_fraction)} missing, "
        f"{profile.duplicate_rows} duplicate rows, label `{label.name}` ({describe_label(label)})"
    )
    split_rows = ", ".join(f"{name} {splits[name]['rows']}" for name in SPLITS)
    how = f"stratified by `{label.name}`" if plan.stratified else "random"
    lines = [
        headline,
        "",
        f"- Source: `{source_uri}` ({kind}{'' if config.encoding.lower() in ('utf-8', 'utf8') else ', ' + config.encoding})",
        f"- Problem type: {label.problem_type} ({label.reason})",
        f"- Rows with a missing label dropped: {label.dropped}",
        f"- Splits ({how}, seed {config.seed}): {split_rows}",
    ]
    short = [
        f"{name} {splits[name]['rows']} instead of {planned}"
        for name, planned in zip(SPLITS, plan.planned, strict=True)
        if splits[name]["rows"] != planned
    ]
    if short:
        lines.append(
            f"- Split sizes differ from the fractions ({', '.join(short)}): classes with one row stay in train"
        )
    if plan.small_classes:
        lines.append(
            f"- {plan.small_classes} class(es) have too few rows to appear in every split; each keeps its rows in "
            "train first"
        )
    if config.drop_columns:
        lines.append(f"- Left out (drop_columns): {', '.join(f'`{name}`' for name in config.drop_columns)}")
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {warning}" for warning in warnings]
    converted = [column for column in schema.columns if column.conversion]
    if converted:
        lines += ["", "Converted columns:", ""] + [
            f"- `{column.name}`: {column.source_type} → {column.stored_type} ({column.conversion})"
            for column in converted
        ]
    rows = [
        (
            column.name + (" (label)" if column.name == label.name else ""),
            column.type,
            column.missing,
            _percent(column.missing / profile.rows),
            f"> {DISTINCT_CAP}" if column.distinct is None else column.distinct,
            schema.column(column.name).logical_type,
        )
        for column in profile.columns
    ]
    lines += ["", markdown.table(["column", "type", "missing", "missing %", "distinct", "used as"], rows), ""]
    return "\n".join(lines)
