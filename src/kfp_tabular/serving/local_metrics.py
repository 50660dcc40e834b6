"""Prometheus metrics of the local server, named, labelled and bucketed as TF Serving exports them.

TF Serving (started with a monitoring config that enables Prometheus) serves the text format at
``/monitoring/prometheus/metrics``. Its metric ``/tensorflow/serving/request_count`` (labels ``model_name``,
``status``: the canonical code name, ``OK``, ``INVALID_ARGUMENT``...) counts every REST request under ``/v1/`` and
every gRPC Predict; ``/tensorflow/serving/request_latency`` (labels ``model_name``, ``API``, ``entrypoint``) is a
histogram in microseconds of the requests that succeeded (REST: ``API`` is the method, e.g. ``predict``, empty
for status and metadata requests; gRPC: ``Predict``). Prometheus names replace ``/`` with ``:``.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving: monitoring::Buckets::Exponential(10, 1.8, 33) in microseconds (~20 minutes); TF histograms put a
# value into the first bucket whose limit is greater than it, and the last bucket (+Inf) takes the rest.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_US) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        self.buckets[bisect.bisect_right(LATENCY_BUCKETS_US, value)] += 1
        self.total += value


def _labels(**labels: str) -> str:
    # Label values escape backslash and double quote, as TF Serving's exporter does.
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    return f"{value:.6g}"  # absl::StrCat(double), as TF Serving's exporter prints limits and sums


class ServingMetrics:
    """Thread-safe request counters and latency histograms, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}

    def record(self, model_name: str, status: str, api: str, entrypoint: str, seconds: float) -> None:
        """Count one request; its latency only counts when it succeeded (``status == "OK"``), as in TF Serving."""
        with self._lock:
            self._counts[(model_name, status)] = self._counts.get((model_name, status), 0) + 1
            if status == "OK":
                self._latency.setdefault((model_name, api, entrypoint), _Histogram()).add(seconds * 1e6)

    def count(self, model_name: str, status: str = "OK") -> int:
        """Requests counted for a model and status so far."""
        with self._lock:
            return self._counts.get((model_name, status), 0)

    def render(self) -> str:
        """The page TF Serving serves at ``/monitoring/prometheus/metrics``."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((key, list(h.buckets), h.total) for key, h in self._latency.items())
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        lines += [f"{REQUEST_COUNT}{{{_labels(model_name=m, status=s)}}} {n}" for (m, s), n in counts]
        lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
        for (model, api, entrypoint), buckets, total in latency:
            labels = _labels(model_name=model, API=api, entrypoint=entrypoint)
            cumulative = 0
            for index, count in enumerate(buckets):
                cumulative += count
                limit = _number(LATENCY_BUCKETS_US[index]) if index < len(LATENCY_BUCKETS_US) else "+Inf"
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{limit}"}} {cumulative}')
            lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {_number(total)}")
            lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {cumulative}")
        return "\n".join(lines) + "\n"
