"""The Markdown report of deploy_tf_serving: what was deployed where, the rollout timeline, the smoke test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .guard import SkewCheck
from .rollout import PodFailure, Timeline
from .smoke import SmokeResult


@dataclass
class ReportData:
    """Everything the report shows; filled in as the step goes."""

    namespace: str
    deployment: str
    service: str
    model_name: str
    version: int
    digest: str
    uri: str
    rest_url: str
    grpc_target: str
    timeline: Timeline
    outcome: str = ""
    revision: int | None = None
    replicaset: str = ""
    skew: SkewCheck | None = None
    manifest_note: str = ""
    golden_source: str = ""
    smoke: SmokeResult | None = None
    failure: PodFailure | None = None
    cause: str = ""
    rollback: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def md_cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def render(data: ReportData) -> str:
    """The report as Markdown."""
    lines = [f"# TF Serving deploy of `{data.model_name}` version {data.version}", "", f"**{data.outcome}**", "",
             "| | |", "|---|---|",
             f"| Deployment | `{data.namespace}/{data.deployment}`"
             + (f", revision {data.revision} (ReplicaSet `{data.replicaset}`)" if data.revision else "") + " |",
             f"| model | version {data.version}, root digest `{data.digest}` |",
             f"| model URI (MODEL_URI of fetch-model) | `{data.uri}` |",
             f"| REST | `{data.rest_url}/v1/models/{data.model_name}/versions/{data.version}:predict` |",
             f"| gRPC | `{data.grpc_target}` (model_spec name `{data.model_name}`, version {data.version}) |",
             f"| Service | `{data.service}` |", ""]
    lines += ["## Checks before the rollout", ""]
    if data.skew is not None:
        lines.append(f"- version skew: {'passed' if data.skew.passed else 'NOT checked'}: {data.skew.note}")
    if data.manifest_note:
        lines.append(f"- repository: {data.manifest_note}")
    if data.golden_source:
        lines.append(f"- golden requests: {data.golden_source}")
    lines += ["", "## Timeline", "", "| t (s) | event |", "|---:|---|"]
    lines += [f"| {t:.1f} | {md_cell(message)} |" for t, message in data.timeline.lines]
    if data.failure is not None or data.cause:
        lines += ["", "## Failure", "", f"{data.cause or data.failure.describe()}"]
        if data.failure is not None and data.failure.events:
            lines += ["", "Warning events of the pod:", ""] + [f"- {md_cell(e)}" for e in data.failure.events]
        if data.failure is not None and data.failure.log:
            lines += ["", f"Last log lines of `{data.failure.container}` in `{data.failure.pod}`:", "", "```",
                      data.failure.log, "```"]
    if data.rollback:
        lines += ["", "## Rollback", "", data.rollback]
    smoke = data.smoke
    if smoke is not None:
        stats = smoke.stats()
        lines += ["", "## Smoke test (through the Service, version-pinned)", "", "| check | result |", "|---|---|",
                  f"| `GET /v1/models/{data.model_name}/versions/{smoke.version}` | {smoke.state or 'not reached'} |",
                  f"| gRPC GetModelStatus | {smoke.grpc_state or 'not reached'} |",
                  f"| signature matches the golden rows | {'yes' if smoke.signature_ok else 'no'} |",
                  f"| REST :predict, {smoke.rows} golden rows | max abs diff {smoke.rest.max_abs_diff:.3g} "
                  f"(scaled {smoke.rest.max_scaled_diff:.3g}) |",
                  f"| gRPC Predict, {smoke.rows} golden rows | max abs diff {smoke.grpc.max_abs_diff:.3g} "
                  f"(scaled {smoke.grpc.max_scaled_diff:.3g}) |",
                  f"| Prometheus request_count (OK) | {smoke.count_before} -> {smoke.count_after} |",
                  f"| result | {'passed' if smoke.passed else 'FAILED: ' + md_cell('; '.join(smoke.all_problems[:5]))} |",
                  "", f"Latency over {smoke.requests} single-row requests each (ms):", "",
                  "| | p50 | p99 |", "|---|---:|---:|",
                  f"| REST | {_ms(stats['rest_p50_ms'])} | {_ms(stats['rest_p99_ms'])} |",
                  f"| gRPC | {_ms(stats['grpc_p50_ms'])} | {_ms(stats['grpc_p99_ms'])} |"]
    return "\n".join(lines) + "\n"
