"""KFP shell of ``publish_model``."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish_model(
    savedmodel: Input[Model],
    repository_uri: str,
    published_model: Output[Model],
    report: Output[Markdown],
    version: int = 0,
    require_conditional_writes: bool = True,
    train_data: Optional[Input[Dataset]] = None,  # noqa: UP045 - KFP reads Optional[...] as "optional input"
    model: Optional[Input[Model]] = None,  # noqa: UP045
):
    """Publish the exported SavedModel as a numbered, checksummed version of a model repository.

    Every file goes to ``<repository_uri>/<version>/``, then ``manifest.json`` (sha256 and size of each file, a
    root digest over that listing, and the lineage) is created last and exclusively (``If-None-Match: *`` on
    S3), so a half-finished publish is never served and two publishers never share a version. Publishing a
    model the repository already holds uploads nothing; a different model at an existing version fails.
    S3 credentials come from the environment (``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``), which the pipeline fills from a Kubernetes Secret.

    Args:
        savedmodel: SavedModel folder from ``export_savedmodel`` (its metadata gives TensorFlow version and
            parity).
        repository_uri: ``s3://bucket/prefix/<model_name>`` or a local folder / ``file://`` URI.
        published_model: A JSON pointer to the version; metadata ``uri`` (``<repository_uri>/<version>``, what
            the TF Serving init container fetches), ``version``, ``root_digest``, ``status`` (published /
            resumed / unchanged), ``commit_mechanism`` and ``lineage``.
        report: Markdown: version, URI, digest and lineage.
        version: Version to publish as; 0 (or negative) means the next free one.
        require_conditional_writes: Refuse an S3 store that ignores ``If-None-Match``; False falls back to an
            existence check and a read-back, safe with one publisher at a time only.
        train_data: Optional training split from ``ingest_data``: its sha256 goes into the lineage.
        model: Optional predictor from ``train_autogluon``: its AutoGluon version goes into the lineage.
    """
    import os
    from pathlib import Path

    from kfp_tabular.components._image import IMAGE
    from kfp_tabular.components.publish_model.core import PublishConfig, build_lineage, publish

    lineage = build_lineage(savedmodel.metadata, train_data.metadata if train_data else None,
                            model.metadata if model else None, os.environ.get("KFP_TABULAR_IMAGE") or IMAGE)
    result = publish(Path(savedmodel.path), PublishConfig(repository_uri, version if version > 0 else None,
                                                              require_conditional_writes),
                     lineage, Path(report.path), Path(published_model.path))
    published_model.metadata.update(result.metadata)
