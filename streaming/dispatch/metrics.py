"""The dispatcher's own numbers, kept in plain Python and handed to Flink's metric system as gauges.

Why gauges only: the counts are made on the operator's own event-loop thread (streaming/flink/operators.py), where
the calls run, not on Flink's task thread. So they live here (one event loop writes them), and Flink reads them
through gauges when it reports: PyFlink's embedded metric group wraps each gauge in a Java gauge that calls back into
Python. (Flink's Prometheus reporter exports counters as Prometheus gauges anyway; the cumulative ones below only
ever grow, so `rate()` and `increase()` work on them.)

What a gauge shows is the state when Flink reads it: `in_flight_peak` is the most images in flight since the last
read, and the breaker's time open arrives when it closes. Flink's own metrics, from the JVM, show a stall: the Kafka
source's `pendingRecords` (consumer lag) and the operator's `numRecordsOut`; the alerts use those for "stalled"
(ops/prometheus/alerts.yml).

Latency percentiles: PyFlink has no histogram that reaches Prometheus (a distribution becomes a gauge of a
non-number), so the p50/p95/p99 of the HTTP latency of the calls of the last `LATENCY_WINDOW_S` seconds are
gauges in milliseconds, per subtask. The service's own latency histograms (inference_request_seconds) are the ones
to aggregate across replicas.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, get_args

from schemas.dead_letter import Stage

GROUP = "imagery"  # every metric below sits in this group of the operator's metric group
STAGES: tuple[str, ...] = get_args(Stage)
LATENCY_WINDOW_S = 60.0
LATENCY_WINDOW_MAX = 10_000  # calls kept for the percentiles (the newest)
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}

# Flink's Prometheus reporter: its ports (a range: every JobManager, TaskManager and local MiniCluster takes the
# first free one), the plugin (in the PyFlink wheel's plugins/ and in Flink's own images)
PROMETHEUS_PORTS = "9250-9269"
REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"

# The names as Flink's Prometheus reporter exports them (scope `taskmanager_job_task_operator`, then the groups)
PROMETHEUS_PREFIX = f"flink_taskmanager_job_task_operator_{GROUP}_"
PROMETHEUS_STAGE_PREFIX = f"flink_taskmanager_job_task_operator_{GROUP}_stage_"


def reporter_options(ports: str = PROMETHEUS_PORTS) -> dict[str, str]:
    """Flink configuration for the Prometheus reporter on the first free port of `ports`; none for ""."""
    if not ports:
        return {}
    return {"metrics.reporter.prom.factory.class": REPORTER_FACTORY, "metrics.reporter.prom.port": ports}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class DispatcherMetrics:
    """Counts of one parallel instance of the dispatcher; `register` exposes them in a Flink metric group."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.records = 0  # Kafka records handled
        self.images = 0  # images those records named (an S3 event may name several)
        self.results = 0
        self.dead_letters = dict.fromkeys(STAGES, 0)
        self.retries = 0  # HTTP attempts beyond each image's first
        self.http_calls = 0  # images answered by the service (success or failure), attempts not counted
        self.in_flight = 0
        self._in_flight_peak = 0
        self._latencies: deque[tuple[float, float]] = deque(maxlen=LATENCY_WINDOW_MAX)  # (when, ms)
        self.breaker: Any = None  # the client's CircuitBreaker, once the client exists

    # ---- written by the dispatcher (one event loop)

    def record_handled(self, images: int) -> None:
        self.records += 1
        self.images += images

    def result(self) -> None:
        self.results += 1

    def dead_letter(self, stage: str) -> None:
        self.dead_letters[stage if stage in self.dead_letters else "dispatch"] += 1

    def call_started(self) -> None:
        self.in_flight += 1
        self._in_flight_peak = max(self._in_flight_peak, self.in_flight)

    def call_finished(self, attempts: int, http_ms: float | None) -> None:
        self.in_flight -= 1
        self.http_calls += 1
        self.retries += max(0, attempts - 1)
        if http_ms is not None:
            self._latencies.append((self._clock(), http_ms))

    # ---- read by Flink when it reports

    def in_flight_peak(self) -> int:
        """The most images in flight since the last read (the current count when that is higher)."""
        peak, self._in_flight_peak = self._in_flight_peak, self.in_flight
        return peak

    def latency_ms(self, q: float) -> int:
        horizon = self._clock() - LATENCY_WINDOW_S
        values = sorted(ms for when, ms in list(self._latencies) if when >= horizon)
        return int(round(percentile(values, q)))

    def circuit_opened(self) -> int:
        return self.breaker.opened_count if self.breaker is not None else 0

    def circuit_open_ms(self) -> int:
        return int(self.breaker.open_seconds * 1000) if self.breaker is not None else 0

    def gauges(self) -> dict[str, Any]:
        """Name -> callable, for the metrics without labels."""
        gauges = {
            "records": lambda: self.records,
            "images": lambda: self.images,
            "results": lambda: self.results,
            "dead_letters_total": lambda: sum(self.dead_letters.values()),
            "retries": lambda: self.retries,
            "http_calls": lambda: self.http_calls,
            "in_flight_peak": self.in_flight_peak,
            "circuit_opened": self.circuit_opened,
            "circuit_open_ms": self.circuit_open_ms,
        }
        for name, q in PERCENTILES.items():
            gauges[f"http_latency_{name}_ms"] = functools.partial(self.latency_ms, q)
        return gauges

    def register(self, metric_group: Any) -> None:
        """Expose every number in `metric_group` (the operator's, from `runtime_context.get_metrics_group()`):
        `imagery.<name>`, and `imagery.stage.<stage>.dead_letters` with the stage as a label."""
        group = metric_group.add_group(GROUP)
        for name, read in self.gauges().items():
            group.gauge(name, read)
        for stage in STAGES:
            group.add_group("stage", stage).gauge("dead_letters", lambda stage=stage: self.dead_letters[stage])
