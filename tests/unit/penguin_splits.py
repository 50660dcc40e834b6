"""Train / validation / test Parquet splits of the bundled penguins, shaped as ``ingest_data`` writes them."""

from pathlib import Path

import pandas as pd


def write_splits(csv: Path, folder: Path, label: str, seed: int = 0) -> tuple[Path, Path, Path]:
    """Shuffle penguins, drop rows without a label, write 60/20/20 Parquet splits as ingest_data would."""
    frame = pd.read_csv(csv).dropna(subset=[label]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    first, second = int(len(frame) * 0.6), int(len(frame) * 0.8)
    folder.mkdir(parents=True, exist_ok=True)
    paths = tuple(folder / f"{name}.parquet" for name in ("train", "validation", "test"))
    for part, path in zip((frame[:first], frame[first:second], frame[second:]), paths, strict=True):
        part.to_parquet(path, index=False)
    return paths
