"""The one type decision of a table, made by ``ingest_data`` and read by every later step.

Ingest decides each column's logical type and the problem type once. The decision travels inside every Parquet
split (schema metadata key ``kfp_tabular``) and in the split artifacts' metadata, so training, evaluation,
explanation and export read it instead of inferring it again from pandas dtypes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METADATA_KEY = b"kfp_tabular"

NUMERIC = "numeric"
BOOLEAN = "boolean"
CATEGORICAL = "categorical"
DATETIME = "datetime"
LOGICAL_TYPES = (NUMERIC, BOOLEAN, CATEGORICAL, DATETIME)

# How a datetime column is stored in the splits and sent to the exported model.
EPOCH_SECONDS = "epoch_seconds_utc"


@dataclass(frozen=True)
class ColumnType:
    """The decision for one column of the splits.

    Attributes:
        name: Column name in the splits.
        logical_type: ``numeric``, ``boolean``, ``categorical`` or ``datetime``.
        source_type: Arrow type of the column as read from the source (``decimal128(10, 2)``, ``timestamp[s]``…).
        stored_type: Arrow type written to the splits.
        conversion: What ingest did to the values, in words ("" when they are stored as read).
    """

    name: str
    logical_type: str
    source_type: str
    stored_type: str
    conversion: str = ""


@dataclass(frozen=True)
class TableSchema:
    """Problem type, label and the decision for every column (label included)."""

    label: str
    problem_type: str
    columns: tuple[ColumnType, ...]

    def to_json(self) -> str:
        """Compact JSON, as stored in the Parquet metadata."""
        return json.dumps({"label": self.label, "problem_type": self.problem_type,
                           "columns": [asdict(column) for column in self.columns]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TableSchema:
        """Parse :meth:`to_json`'s output."""
        data = json.loads(text)
        columns = tuple(ColumnType(**column) for column in data["columns"])
        return cls(label=data["label"], problem_type=data["problem_type"], columns=columns)

    def column(self, name: str) -> ColumnType | None:
        """The decision for one column, or None when the splits have no such column."""
        return next((column for column in self.columns if column.name == name), None)

    def of_type(self, logical_type: str) -> list[str]:
        """Names of the columns of one logical type."""
        return [column.name for column in self.columns if column.logical_type == logical_type]

    def as_metadata(self) -> dict[str, Any]:
        """A short form for KFP artifact metadata: ``{column: logical type}``."""
        return {column.name: column.logical_type for column in self.columns}


def read_table_schema(path: Path) -> TableSchema | None:
    """The decision stored in a Parquet split, or None for a file that ingest_data did not write."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    text = metadata.get(METADATA_KEY)
    return TableSchema.from_json(text) if text else None
