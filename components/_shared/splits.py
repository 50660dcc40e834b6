"""Reading the Parquet splits that ``ingest_data`` writes, with errors that say which input is wrong."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfp_tabular.errors import DataSourceError, DataValidationError


def _existing(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"The {what} {path} does not exist: pass a Parquet split written by ingest_data.")
    return path


def _unreadable(path: Path, what: str, exc: Exception) -> DataValidationError:
    return DataValidationError(f"Cannot read the {what} {path} as Parquet ({exc}); it should come from ingest_data.")


def read_split(path: Path, what: str) -> pd.DataFrame:
    """Read one split; a missing, unreadable or empty file raises a clear error.

    Args:
        path: Parquet file written by ``ingest_data``.
        what: How to name the input in errors, e.g. ``"train split"`` or ``"background_data"``.
    """
    path = _existing(path, what)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt or non-Parquet file
        raise _unreadable(path, what, exc) from exc
    if frame.empty:
        raise DataValidationError(f"The {what} {path} has no rows: ingest more data or resize the splits.")
    return frame


def split_rows(path: Path, what: str) -> int:
    """Rows of one split, from its Parquet footer (the data is not read); errors as :func:`read_split`."""
    import pyarrow.parquet as pq

    path = _existing(path, what)
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # as in read_split
        raise _unreadable(path, what, exc) from exc
