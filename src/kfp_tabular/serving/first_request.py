"""One prediction through the local stand-in for TF Serving: what ``kfp-tabular run --serve`` shows at the end.

The request is built as a client of TF Serving would send it: REST row format, inputs named by their signature
tensor names (the names TF Serving itself accepts), missing values as ``null``.
"""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_tabular.serving.local_server import LocalServer
from kfp_tabular.serving.repository import resolve_version


@dataclass(frozen=True)
class ServedAnswer:
    """The URL posted to, the body sent, and TF Serving's JSON answer."""

    url: str
    version: int
    request: dict[str, Any]
    response: dict[str, Any]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def request_rows(test_split: Path, repository: str, rows: int = 1) -> list[dict[str, Any]]:
    """The first ``rows`` rows of a test split, keyed by the served model's tensor names."""
    import pandas as pd

    from kfp_tabular.components.export_savedmodel.signature import read_signature
    from kfp_tabular.serving.fetch import fetch_model

    version = resolve_version(repository)
    local = Path(repository.removeprefix("file://")) / str(version)
    if not local.is_dir():  # an S3 repository: read the signature from a fetched copy
        import tempfile

        local = fetch_model(f"{repository.rstrip('/')}/{version}", Path(tempfile.mkdtemp()))
    signature = read_signature(local)
    frame = pd.read_parquet(test_split).head(rows)
    return [{column.name: _plain(row[column.column]) for column in signature.inputs} for _, row in frame.iterrows()]


def predict_once(repository: str, rows: list[dict[str, Any]], timeout_s: float = 60.0) -> ServedAnswer:
    """Start the local server on a free port, POST ``rows`` to ``:predict``, stop the server."""
    with LocalServer(repository, port=0) as server:
        url = f"{server.rest_url}/v1/models/{server.name}:predict"
        body = {"instances": rows}
        request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.load(response)
        version = server.model.available_versions[-1]
    return ServedAnswer(url=url, version=version, request=body, response=answer)
