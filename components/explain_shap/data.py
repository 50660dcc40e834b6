"""Reading the background and explained rows: Parquet from ``ingest_data``, checked against the model's features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kfp_tabular.components._shared.splits import read_split
from kfp_tabular.errors import DataValidationError


def read_rows(path: Path, features: list[str], role: str) -> pd.DataFrame:
    """Read a Parquet table and keep the model's raw feature columns (label and extra columns are dropped).

    Raises:
        DataSourceError: the file does not exist.
        DataValidationError: it is not Parquet, it is empty, or it lacks some of the model's feature columns.
    """
    frame = read_split(Path(path), role)
    missing = [column for column in features if column not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{role} {path} lacks the model's feature column(s) {missing}. The model was trained on {features}; "
            "pass a split of the same table (the label and extra columns may be present, they are ignored)."
        )
    return frame[features].reset_index(drop=True)


def sample(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most ``size`` rows drawn without replacement (seeded), in file order; the index keeps row positions."""
    if len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed).sort_index()


def align_dtypes(*frames: pd.DataFrame) -> list[pd.DataFrame]:
    """Give the frames common column dtypes (e.g. an int column that has NaN in one split becomes float in all).

    Hybrid rows mix values of the explained and the background rows, so both must share one dtype per column.
    """
    common = pd.concat([f.iloc[:0] if f.empty else f for f in frames]).dtypes.to_dict()
    return [f.astype(common) for f in frames]
