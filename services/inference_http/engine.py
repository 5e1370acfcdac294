"""The hot path: admit -> fetch (async) -> a forward path (forward.py: decode, dynamic batch, runner) -> the answer.

One `InferenceEngine` per process, made by the app's lifespan. The event loop never blocks: MinIO fetches are
awaited on it (obstore does the I/O in Rust, off the GIL), and the forward path does its decoding and forward
passes in threads of its own, or, in a front of a multi-process service, in the one scheduler that owns the device
(scheduler.py). Results are plain dicts, serialised once by the route (no second validation of what the service
built itself: a pydantic model per response cost about 10% of the GIL's time under load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from schemas import InferRequest
from services.inference_http.errors import (
    BucketNotAllowed,
    DeadlineExceeded,
    InternalError,
    NotReady,
    ObjectTooLarge,
    QueueFull,
    ServiceError,
)
from services.inference_http.forward import ForwardPath
from services.inference_http.metrics import Metrics
from services.inference_http.sample_images import photo_like_jpeg
from services.inference_http.settings import ServiceSettings
from services.inference_http.storage import ObjectStore
from services.inference_http.upload import Upload

log = logging.getLogger(__name__)


@dataclass
class _Trace:
    """Where one request is, for the message of its timeout."""

    received: float  # time.monotonic() when the request arrived
    stage: str = "admission"


class InferenceEngine:
    """Admission, fetch, deadlines, timings and counts around a forward path. `make_path(upstream)` builds the
    path; `upstream()` tells it how many admitted images are still on their way to it (fetching, probing), so a
    batch waits for company only when some is coming."""

    def __init__(
        self,
        settings: ServiceSettings,
        make_path: Callable[[Callable[[], int]], ForwardPath],
        store: ObjectStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.team = settings.team
        self.in_flight = 0
        self.submitted = 0  # admitted images handed to the path and not yet back
        self.path = make_path(lambda: self.in_flight - self.submitted)
        self._fetch_slots = asyncio.Semaphore(settings.fetch_concurrency)
        # the metrics' children, resolved once (a .labels() call takes a lock and a dict lookup per image)
        self._images_ok = metrics.images.labels("200")
        self._stage_fetch, self._stage_decode, self._stage_infer = (
            metrics.stage_seconds.labels(stage) for stage in ("fetch", "decode", "infer")
        )
        self.warmed = False
        self.warmup_error: str | None = None

    # what the path says about the model (a front learns it from the scheduler when it connects, at warm-up)
    @property
    def model_name(self) -> str:
        return self.path.info.name

    @property
    def model_tag(self) -> str | None:
        return self.path.info.tag

    @property
    def device(self) -> str:
        return self.path.info.device

    @property
    def max_batch_size(self) -> int:
        return self.path.info.max_batch_size

    @property
    def forward(self) -> str:
        """How the forward pass runs (eager, compiled), as the path found at warm-up."""
        return self.path.info.forward

    # ------------------------------------------------------------------ requests

    async def infer(self, request: InferRequest, received: float) -> dict[str, Any]:
        """One image, end to end: the body of /infer_json (schemas.InferResponse's shape); raises a ServiceError
        for every failure. `received` is time.monotonic()."""
        return await self._counted(self._run_one, request, received, lambda: f"s3://{request.bucket}/{request.key}")

    async def infer_upload(self, upload: Upload, received: float) -> dict[str, Any]:
        """One uploaded image (the body of /infer_upload): the same admission, limits, decode, batching, runner
        and errors as `infer`, without storage. `received` is time.monotonic()."""
        return await self._counted(self._run_upload, upload, received, lambda: f"the upload {upload.filename!r}")

    async def _counted(self, run: Callable, item: Any, received: float, what: Callable[[], str]) -> dict[str, Any]:
        """One item through admission and `run`, counted by its outcome; a bug of ours is that item's 500."""
        try:
            response = await self._admitted(run, item, _Trace(received))
        except ServiceError as exc:
            self.metrics.images.labels(str(exc.status)).inc()
            raise
        except Exception as exc:
            raise self._bug(exc, what) from exc
        self._images_ok.inc()
        return response

    def _bug(self, exc: Exception, what: Callable[[], str]) -> InternalError:
        """A bug of ours: still one item's 500, counted, with the traceback in the log."""
        log.error("unexpected error on %s", what(), exc_info=exc)
        self.metrics.images.labels("500").inc()
        return InternalError(f"{type(exc).__name__} (see the service log)")

    async def infer_item(self, request: InferRequest, received: float) -> dict[str, Any]:
        """`infer` for one item of /infer_batch (schemas.BatchItemOk or BatchItemError): its failure is its own."""
        try:
            return {"ok": True, "result": await self.infer(request, received)}
        except ServiceError as exc:
            return {"ok": False, "status": exc.status, "error": exc.detail_dict()}

    async def _admitted(
        self, run: Callable[[Any, _Trace], Awaitable[dict[str, Any]]], what: Any, trace: _Trace
    ) -> dict[str, Any]:
        if not self.warmed:
            why = f"warm-up failed: {self.warmup_error}" if self.warmup_error else "the model is still warming up"
            raise NotReady(why, self.settings.retry_after_s)
        # admission control: at most MAX_QUEUE images in the service at once; the rest get 429 at once
        # (inline, not a context manager: a generator per image cost 6-10% of the GIL's time under load, issue 10)
        if self.in_flight >= self.settings.max_queue:
            raise QueueFull(
                f"{self.in_flight} images are in progress (MAX_QUEUE={self.settings.max_queue}); retry later",
                self.settings.retry_after_s,
            )
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        self.path.poke()  # one more on its way (a scheduler learns that some are coming)
        try:
            timeout_s = self.settings.request_timeout_ms / 1000.0
            async with asyncio.timeout(trace.received + timeout_s - time.monotonic()):
                return await run(what, trace)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer within REQUEST_TIMEOUT_MS={self.settings.request_timeout_ms:g} "
                f"(it was at the {trace.stage} stage)"
            ) from None
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            self.path.poke()  # one fewer on its way: a batch waiting for it may go now

    async def _run_one(self, request: InferRequest, trace: _Trace) -> dict[str, Any]:
        trace.stage = "fetch"
        if not self.settings.bucket_allowed(request.bucket):
            raise BucketNotAllowed(
                f"bucket {request.bucket!r} is not one of team {self.team}'s "
                f"({', '.join(self.settings.bucket_patterns)}; ALLOWED_BUCKETS)"
            )
        async with self._fetch_slots:
            data = await self.store.fetch(request.bucket, request.key)
        return await self._decode_and_run(
            data, request.model_tag, request.extra, trace, {"bucket": request.bucket, "key": request.key}
        )

    async def _run_upload(self, upload: Upload, trace: _Trace) -> dict[str, Any]:
        if len(upload.data) > self.settings.max_object_bytes:
            raise ObjectTooLarge(
                f"the upload is {len(upload.data)} bytes, over MAX_OBJECT_BYTES={self.settings.max_object_bytes}",
                limit=self.settings.max_object_bytes,
            )
        return await self._decode_and_run(
            upload.data, upload.model_tag, upload.extra, trace, {"filename": upload.filename} if upload.filename else {}
        )

    async def _decode_and_run(
        self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None, trace: _Trace, source: dict[str, Any]
    ) -> dict[str, Any]:
        """Decode `data`, run it in a forward pass, and answer with the runner's dict plus what the service adds
        (`source`: which object or upload it was)."""
        received = trace.received
        fetched = time.monotonic()
        trace.stage = "decode"
        item = await self.path.prepare(data, model_tag, extra)
        decoded = time.monotonic()
        trace.stage = "infer"  # queued for, or in, a forward pass
        self.submitted += 1
        try:
            done = await self.path.run(item)
        finally:
            self.submitted -= 1
        finished = time.monotonic()
        queue_s = max(0.0, done.started - decoded)
        self.metrics.queue_seconds.observe(queue_s)
        self._stage_fetch.observe(fetched - received)
        self._stage_decode.observe(decoded - fetched + done.decode_ms / 1000.0)
        self._stage_infer.observe(done.infer_ms / 1000.0)
        if finished - received > self.settings.request_timeout_ms / 1000.0:
            raise TimeoutError  # finished, but too late: the caller has given up on this answer by now
        return {
            **done.result,
            "team": self.team,
            **source,
            "model_name": self.model_name,
            "model_tag": self.model_tag,
            "batch_size": done.batch_size,
            "timings": {
                "fetch_ms": (fetched - received) * 1000.0,
                "decode_ms": (decoded - fetched) * 1000.0 + done.decode_ms,
                "queue_ms": queue_s * 1000.0,
                "infer_ms": done.infer_ms,
                "total_ms": (finished - received) * 1000.0,
            },
        }

    # ------------------------------------------------------------------ lifecycle

    async def warm_up(self) -> None:
        """Warm the path through the same prepare and batch handler as requests (forward.InProcessPath.warm_up; in a
        front, through the scheduler). Readiness waits for this."""
        started = time.monotonic()
        try:
            what = await self.path.warm_up(photo_like_jpeg(0))
        except Exception as exc:
            self.warmup_error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed; the service stays unready")
            return
        self.warmed = True
        self.metrics.ready.set(1)
        log.info(
            "team %s: %s (%s) warmed up on %s in %.1fs (%s; forward pass: %s)",
            self.team,
            self.model_name,
            self.model_tag,
            self.device,
            time.monotonic() - started,
            what,
            self.forward,
        )

    async def readiness(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        reasons = []
        if self.warmup_error:
            reasons.append(f"warm-up failed: {self.warmup_error}")
        elif not self.warmed:
            reasons.append("the model is warming up")
        reasons += self.path.not_ready()
        try:
            await asyncio.to_thread(self.store.check)  # not the fetch pool: a busy service must still answer
        except ServiceError as exc:
            reasons.append(f"storage: {exc.message}")
        return reasons

    async def close(self) -> None:
        await self.path.close()
