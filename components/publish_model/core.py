"""Publish an exported SavedModel as a numbered, checksummed version of a model repository.

``publish`` hands the SavedModel to :func:`kfp_tabular.serving.repository.publish_savedmodel` (files first,
``manifest.json`` last, both versions and manifest created exclusively so two publishers never share a
version), records the lineage of the model next to its files, and writes a Markdown report and a small JSON
pointer to the published version. Publishing a model that the repository already holds is a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_tabular import __version__
from kfp_tabular.components._shared.files import all_or_nothing, write_text_atomic
from kfp_tabular.errors import ConfigError
from kfp_tabular.serving.repository import PublishResult, check_repository_uri, publish_savedmodel


@dataclass(frozen=True)
class PublishConfig:
    """Where and as what to publish.

    Attributes:
        repository_uri: ``s3://bucket/prefix/<model_name>``, a local folder or ``file:///folder``; versions are
            its integer-named sub-folders, as TF Serving reads them.
        version: A positive version number, or None for the next free one (or the version that already holds
            this model).
        require_conditional_writes: Refuse an S3 store that ignores ``If-None-Match`` (detected by a probe);
            False falls back to an existence check and a read-back, safe with one publisher at a time only.
    """

    repository_uri: str
    version: int | None = None
    require_conditional_writes: bool = True

    def __post_init__(self) -> None:
        if self.version is not None and (isinstance(self.version, bool) or not isinstance(self.version, int)
                                         or self.version < 1):
            raise ConfigError(
                f"version must be a positive integer, or unset for the next free one; got {self.version!r}"
            )
        check_repository_uri(self.repository_uri)


@dataclass(frozen=True)
class PublishModelResult:
    """What ``publish`` did.

    Attributes:
        published: The repository's account of it (version, URI, root digest, status, commit mechanism...).
        metadata: For the ``published_model`` artifact: ``uri``, ``version``, ``root_digest``, ``status``...
        report_markdown: The Markdown report.
    """

    published: PublishResult
    metadata: dict[str, Any]
    report_markdown: str


def build_lineage(savedmodel_metadata: Mapping[str, Any], train_data_metadata: Mapping[str, Any] | None = None,
                  model_metadata: Mapping[str, Any] | None = None, component_image: str = "") -> dict[str, Any]:
    """The lineage recorded in the manifest, from the metadata of the upstream artifacts.

    Unknown values stay ``None`` rather than being guessed.

    Args:
        savedmodel_metadata: Metadata of export_savedmodel's ``savedmodel`` (TensorFlow version, parity).
        train_data_metadata: Metadata of ingest_data's ``train_data`` (its ``sha256`` and ``rows``).
        model_metadata: Metadata of train_autogluon's ``model`` (``autogluon_version``, ``best_model``).
        component_image: The image the step runs in.
    """
    train = dict(train_data_metadata or {})
    model = dict(model_metadata or {})
    return {
        "training_data_sha256": train.get("sha256"),
        "training_data_rows": train.get("rows"),
        "autogluon_version": model.get("autogluon_version"),
        "autogluon_best_model": model.get("best_model"),
        "tensorflow_version": savedmodel_metadata.get("tensorflow_version"),
        "exported_model": savedmodel_metadata.get("model_name"),
        "parity": {"max_abs_diff": savedmodel_metadata.get("parity_max_abs_diff"),
                   "rows_checked": savedmodel_metadata.get("parity_rows_checked")},
        "kfp_tabular_version": __version__,
        "component_image": component_image or None,
    }


def publish(savedmodel_dir: Path, config: PublishConfig, lineage: Mapping[str, Any] | None,
            report_path: Path, pointer_path: Path) -> PublishModelResult:
    """Publish ``savedmodel_dir`` into the repository; write the report and the pointer only on success.

    Args:
        savedmodel_dir: The SavedModel folder (export_savedmodel's ``savedmodel`` output).
        config: Repository and version.
        lineage: Recorded in the manifest (see :func:`build_lineage`); not part of the root digest.
        report_path: Output Markdown report.
        pointer_path: Output JSON file ``{"uri", "version", "root_digest", "repository_uri"}``.

    Raises:
        VersionConflictError: the version holds, or is being published with, another model.
        ConditionalWriteUnsupportedError: the S3 store ignores If-None-Match and conditional writes are required.
        ModelError / IntegrityError: the SavedModel is incomplete or does not match its manifest.
        DataSourceError: the repository cannot be read or written.
    """
    report_path, pointer_path = Path(report_path), Path(pointer_path)
    with all_or_nothing(report_path, pointer_path):
        published = publish_savedmodel(Path(savedmodel_dir), config.repository_uri, config.version,
                                       lineage=lineage, require_conditional_writes=config.require_conditional_writes)
        metadata = {
            "uri": published.uri,
            "repository_uri": published.repository_uri,
            "version": published.version,
            "root_digest": published.root_digest,
            "status": published.status,
            "files": published.files,
            "size_bytes": published.size,
            "uploaded_files": published.uploaded_files,
            "commit_mechanism": published.commit_mechanism,
            "lineage": published.manifest.get("lineage", {}),
        }
        markdown = render_report(published)
        write_text_atomic(report_path, markdown)
        write_text_atomic(pointer_path, json.dumps({key: metadata[key] for key in
                                                    ("uri", "repository_uri", "version", "root_digest")},
                                                   indent=2) + "\n")
    return PublishModelResult(published, metadata, markdown)


def render_report(published: PublishResult) -> str:
    """Markdown: what was published where, the root digest, how the version was claimed, and the lineage."""
    headline = {
        "published": f"Published **version {published.version}**",
        "resumed": f"Published **version {published.version}** (finished an interrupted publish of this model)",
        "unchanged": f"**Version {published.version}** already held this model: nothing was uploaded",
    }[published.status]
    lines = [
        "# Published model", "", f"{headline}.", "",
        "| | |", "|---|---|",
        f"| URI | `{published.uri}` |",
        f"| root digest (sha256 of the file listing) | `{published.root_digest}` |",
        f"| files | {published.files} ({published.size / 1e3:.1f} kB), {published.uploaded_files} written now |",
        f"| exclusive create | {published.commit_mechanism} |",
        "", "## Lineage (recorded in manifest.json, not part of the digest)", "",
        "| | |", "|---|---|",
    ]
    for key, value in sorted(published.manifest.get("lineage", {}).items()):
        shown = json.dumps(value) if isinstance(value, dict) else ("unknown" if value is None else str(value))
        lines.append(f"| {key} | {shown} |")
    lines += ["", f"Serve it: `kfp-tabular fetch-model --source-uri {published.uri} --dest /models/<name>`", ""]
    return "\n".join(lines)
