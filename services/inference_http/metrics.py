"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("inference_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.request_seconds = Histogram("inference_request_seconds", "HTTP request latency by route", ["route"],
                                         buckets=_SECONDS, registry=r)
        self.images = Counter("inference_images", "images handled (both routes) by status", ["status"], registry=r)
        self.stage_seconds = Histogram("inference_stage_seconds", "per-image time in fetch, decode and infer",
                                       ["stage"], buckets=_SECONDS, registry=r)
        self.queue_seconds = Histogram("inference_queue_seconds", "time an image waited for its forward pass",
                                       buckets=_SECONDS, registry=r)
        self.batch_size = Histogram("inference_batch_size", "images per forward pass", buckets=_BATCH_SIZES,
                                    registry=r)
        self.queue_depth = Gauge("inference_queue_depth", "images waiting in the batcher", registry=r)
        self.in_flight = Gauge("inference_in_flight", "images admitted and not finished (bounded by MAX_QUEUE)",
                               registry=r)
        self.ready = Gauge("inference_ready", "1 once the model is loaded and warmed up", registry=r)
