"""KFP shell of ``ingest_data``: artifacts to paths, the core does the work."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest_data(
    source_uri: str,
    label: str,
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    test_data: Output[Dataset],
    profile: Output[Markdown],
    metrics: Output[Metrics],
    problem_type: str = "auto",
    file_format: str = "auto",
    encoding: str = "utf-8",
    validation_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    drop_columns: str = "",
    bad_values: str = "error",
    min_rows: int = 50,
):
    """Read a table, validate it, profile it and split it into train / validation / test Parquet datasets.

    S3 credentials are never parameters: ``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` come
    from a Kubernetes Secret that the pipeline mounts as environment variables.

    Args:
        source_uri: Where the table is: a local path or ``file://``, ``s3://bucket/key`` (any S3-compatible store),
            or ``builtin://penguins`` (the bundled demo dataset).
        label: Name of the column to predict.
        train_data: Training split (Parquet file); metadata has ``rows``, ``sha256``, ``columns`` and
            ``column_types`` (the logical type ingest decided for each column, also stored in the file).
        validation_data: Validation split, used by AutoGluon as tuning data.
        test_data: Held-out test split, used only by evaluation.
        profile: Markdown data profile: per column type, missing fraction, distinct values; duplicate rows.
        metrics: Rows, columns, missing fraction, duplicate rows.
        problem_type: ``auto``, ``binary``, ``multiclass`` or ``regression``; decides stratified splitting.
        file_format: ``auto`` (from the extension), ``csv``, ``parquet`` or ``jsonl``.
        encoding: Text encoding of CSV / JSON Lines input.
        validation_fraction: Share of rows in the validation split.
        test_fraction: Share of rows in the test split.
        seed: Seed of the (stratified) split.
        drop_columns: Columns to leave out (IDs, copies of the label, unusable types): a JSON list or names
            separated by commas.
        bad_values: Stray values in a column of numbers or dates: ``error`` (fail, naming the rows), ``missing``
            (read them as missing) or ``text`` (keep the column as text).
        min_rows: Fewest labelled rows accepted. 50 by default: the default fractions then leave 10 test rows,
            and fewer make the test metrics and the blessing depend on which rows were drawn.
    """
    import sys
    from pathlib import Path

    from kfp_tabular.components.ingest_data.column_types import parse_drop_columns
    from kfp_tabular.components.ingest_data.core import IngestConfig, ingest

    config = IngestConfig(
        label=label, problem_type=problem_type, file_format=file_format, encoding=encoding,
        validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed,
        drop_columns=parse_drop_columns(drop_columns), bad_values=bad_values, min_rows=min_rows,
    )
    result = ingest(
        source_uri, config, Path(train_data.path), Path(validation_data.path), Path(test_data.path),
        Path(profile.path),
    )
    for artifact, split in ((train_data, "train"), (validation_data, "validation"), (test_data, "test")):
        artifact.metadata.update(result.splits[split])
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    for warning in result.warnings:
        print(f"kfp-tabular warning: {warning}", file=sys.stderr)
