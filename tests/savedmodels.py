"""Copies of the tiny test SavedModel (``tests/conftest.py::tiny_savedmodel``) as the export leaves them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kfp_tabular.serving.verify import write_manifest

SIGNATURE = "assets.extra/kfp_tabular_signature.json"


def variant(tiny_savedmodel: Path, folder: Path, tag: str = "") -> Path:
    """A copy with the manifest the export writes; a ``tag`` makes it another model (another root digest)."""
    shutil.copytree(tiny_savedmodel, folder)
    if tag:
        path = folder / SIGNATURE
        path.write_text(path.read_text().replace('"tiny"', json.dumps(f"tiny-{tag}")))
    write_manifest(folder)
    return folder
