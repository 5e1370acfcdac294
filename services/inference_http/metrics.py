"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can build several).

With several worker processes (WORKERS > 1) every process writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, set up by server.py before the workers start), and /metrics, whichever
worker answers it, reads them all: counters and histograms add up over the workers, a crashed worker's counts
included; the gauges add up over the live workers (a dead worker's gauge files are dropped when /metrics is read).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MULTIPROC_ENV", "multiprocess_dir"]


def multiprocess_dir() -> Path | None:
    """The folder the workers share their metrics through, when the service runs several (else None)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inference_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "inference_request_seconds", "HTTP request latency by route", ["route"], buckets=_SECONDS, registry=r
        )
        self.images = Counter("inference_images", "images handled (both routes) by status", ["status"], registry=r)
        self.stage_seconds = Histogram(
            "inference_stage_seconds",
            "per-image time in fetch, decode and infer",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "inference_queue_seconds", "time an image waited for its forward pass", buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram("inference_batch_size", "images per forward pass", buckets=_BATCH_SIZES, registry=r)
        self.forward_seconds = Counter(
            "inference_forward_seconds",
            "time in forward passes (with a batch's GPU decode): the runner's share of the service's time",
            registry=r,
        )
        # with several workers: the sum over the live ones
        self.queue_depth = Gauge(
            "inference_queue_depth", "images waiting in the batcher", registry=r, multiprocess_mode="livesum"
        )
        self.in_flight = Gauge(
            "inference_in_flight",
            "images admitted and not finished (bounded by MAX_QUEUE per worker)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "inference_ready",
            "workers whose model is loaded and warmed up (1 with one worker)",
            registry=r,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's registry, or every worker's in multiprocess mode."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        _forget_dead_workers(folder)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(folder))
        return generate_latest(registry)


def _forget_dead_workers(folder: Path) -> None:
    """A worker that crashed left its live gauges' files behind; without this they would count forever."""
    for path in folder.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_this_worker_dead() -> None:
    """At a worker's orderly exit: its live gauges stop counting at once."""
    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.mark_process_dead(os.getpid(), str(folder))
