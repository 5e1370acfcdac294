"""The hot path: admit -> fetch (async) -> decode (threads, or batched on the GPU) -> dynamic batch -> runner.

One `InferenceEngine` per process, made by the app's lifespan. The event loop never blocks: MinIO fetches are
awaited on it (obstore does the I/O in Rust, off the GIL), CPU decodes run in a pool sized for the cores, and
every runner call in one dedicated thread (one model, one forward pass at a time; torch uses its own threads
inside it). Results are plain dicts, serialised once by the route (no second validation of what the service
built itself: a pydantic model per response cost about 10% of the GIL's time under load).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from PIL import Image

from adapters.base import BatchRunner, Runner
from schemas import InferRequest
from schemas.inference_api import check_runner_output
from services.inference_http import decode
from services.inference_http.batching import BatcherClosed, DynamicBatcher
from services.inference_http.errors import (
    BucketNotAllowed,
    DeadlineExceeded,
    InternalError,
    NotReady,
    ObjectTooLarge,
    QueueFull,
    RunnerFailed,
    ServiceError,
)
from services.inference_http.metrics import Metrics
from services.inference_http.settings import ServiceSettings, usable_cores
from services.inference_http.storage import ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@dataclass
class _Item:
    """One image on its way into a forward pass."""

    model_tag: str | None
    extra: dict[str, Any] | None
    image: torch.Tensor | None = None  # decoded and resized (CPU decode)
    data: bytes | None = None  # still encoded (GPU decode, or a runner without run_batch)
    info: decode.ImageInfo | None = None


@dataclass(frozen=True)
class Upload:
    """An image sent in the request itself (/infer_upload), with what /infer_json's body would carry."""

    data: bytes
    filename: str | None = None
    model_tag: str | None = None
    extra: dict[str, Any] | None = None


@dataclass
class _Trace:
    """Where one request is, for the message of its timeout."""

    received: float  # time.monotonic() when the request arrived
    stage: str = "admission"


@dataclass
class _Done:
    """What the forward pass gives back for one item."""

    result: dict[str, Any]
    batch_size: int
    started: float  # time.monotonic() when its batch began
    decode_ms: float  # the batch's GPU decode (0 when decoded on the CPU before queueing)
    infer_ms: float


class InferenceEngine:
    def __init__(self, settings: ServiceSettings, runner: Runner, store: ObjectStore, metrics: Metrics) -> None:
        self.settings = settings
        self.runner = runner
        self.store = store
        self.metrics = metrics
        self.team = settings.team
        self.model_name: str = getattr(runner, "model_name", None) or getattr(runner, "name", None) \
            or type(runner).__name__
        self.model_tag: str | None = getattr(runner, "model_tag", None)
        self.batchable = isinstance(runner, BatchRunner)
        self.device = resolve_device(settings.device)
        self.input_size: tuple[int, int] | None = None
        if isinstance(runner, BatchRunner):
            runner.to_device(self.device)
            self.input_size = (int(runner.input_size[0]), int(runner.input_size[1]))
        self.gpu_decode = self.batchable and self.device.type == "cuda"
        if self.device.type == "cpu" and settings.worker_count > 1:
            # the workers share the cores: each takes its part for torch's threads instead of all of them
            torch.set_num_threads(max(1, usable_cores() // settings.worker_count))
        self._fetch_slots = asyncio.Semaphore(settings.fetch_concurrency)
        # the metrics' children, resolved once (a .labels() call takes a lock and a dict lookup per image)
        self._images_ok = metrics.images.labels("200")
        self._stage_fetch, self._stage_decode, self._stage_infer = (
            metrics.stage_seconds.labels(stage) for stage in ("fetch", "decode", "infer"))
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.batcher: DynamicBatcher[_Item, _Done | ServiceError] = DynamicBatcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size if self.batchable else 1,
            max_delay_s=settings.max_batch_delay_ms / 1000.0,
            on_depth=metrics.queue_depth.set,
            # while the batcher waits no batch runs, so admitted items not in its queue are still upstream
            more_coming=lambda: self.in_flight > self.batcher.depth,
        )
        self.in_flight = 0
        self.warmed = False
        self.warmup_error: str | None = None

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

    async def _admitted(self, run: Callable[[Any, _Trace], Awaitable[dict[str, Any]]], what: Any,
                        trace: _Trace) -> dict[str, Any]:
        if not self.warmed:
            why = f"warm-up failed: {self.warmup_error}" if self.warmup_error else "the model is still warming up"
            raise NotReady(why, self.settings.retry_after_s)
        # admission control: at most MAX_QUEUE images in the service at once; the rest get 429 at once
        # (inline, not a context manager: a generator per image cost 6-10% of the GIL's time under load, issue 10)
        if self.in_flight >= self.settings.max_queue:
            raise QueueFull(f"{self.in_flight} images are in progress (MAX_QUEUE={self.settings.max_queue}); "
                            f"retry later", self.settings.retry_after_s)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            timeout_s = self.settings.request_timeout_ms / 1000.0
            async with asyncio.timeout(trace.received + timeout_s - time.monotonic()):
                return await run(what, trace)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer within REQUEST_TIMEOUT_MS={self.settings.request_timeout_ms:g} "
                f"(it was at the {trace.stage} stage)") from None
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            self.batcher.poke()  # one fewer on its way: a batch waiting for it may go now

    async def _run_one(self, request: InferRequest, trace: _Trace) -> dict[str, Any]:
        trace.stage = "fetch"
        if not self.settings.bucket_allowed(request.bucket):
            raise BucketNotAllowed(f"bucket {request.bucket!r} is not one of team {self.team}'s "
                                   f"({', '.join(self.settings.bucket_patterns)}; ALLOWED_BUCKETS)")
        async with self._fetch_slots:
            data = await self.store.fetch(request.bucket, request.key)
        return await self._decode_and_run(data, request.model_tag, request.extra, trace,
                                          {"bucket": request.bucket, "key": request.key})

    async def _run_upload(self, upload: Upload, trace: _Trace) -> dict[str, Any]:
        if len(upload.data) > self.settings.max_object_bytes:
            raise ObjectTooLarge(f"the upload is {len(upload.data)} bytes, over MAX_OBJECT_BYTES="
                                 f"{self.settings.max_object_bytes}", limit=self.settings.max_object_bytes)
        return await self._decode_and_run(upload.data, upload.model_tag, upload.extra, trace,
                                          {"filename": upload.filename} if upload.filename else {})

    async def _decode_and_run(self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None,
                              trace: _Trace, source: dict[str, Any]) -> dict[str, Any]:
        """Decode `data`, run it in a forward pass, and answer with the runner's dict plus what the service adds
        (`source`: which object or upload it was)."""
        received = trace.received
        fetched = time.monotonic()
        trace.stage = "decode"
        item = _Item(model_tag=model_tag, extra=extra)
        image_limits = self.settings.max_image_pixels, self.settings.max_jpeg_scan_pixels
        if self.batchable and not self.gpu_decode:
            item.image = await self._in_thread(self._decode_pool, decode.decode_cpu, data, self.input_size,
                                               *image_limits)
        else:  # decoded in the forward pass's thread: batched on the GPU, or by the runner itself
            item.info = await self._in_thread(self._decode_pool, decode.probe, data, *image_limits)
            item.data = data
        decoded = time.monotonic()
        trace.stage = "infer"  # queued for, or in, a forward pass
        try:
            done = await self.batcher.submit(item)
        except BatcherClosed as exc:
            raise NotReady(str(exc), self.settings.retry_after_s) from exc
        if isinstance(done, ServiceError):
            raise done
        finished = time.monotonic()
        queue_s = max(0.0, done.started - decoded)
        self.metrics.queue_seconds.observe(queue_s)
        self._stage_fetch.observe(fetched - received)
        self._stage_decode.observe(decoded - fetched + done.decode_ms / 1000.0)
        self._stage_infer.observe(done.infer_ms / 1000.0)
        if finished - received > self.settings.request_timeout_ms / 1000.0:
            raise TimeoutError  # finished, but too late: the caller has given up on this answer by now
        return {**done.result, "team": self.team, **source,
                "model_name": self.model_name, "model_tag": self.model_tag, "batch_size": done.batch_size,
                "timings": {"fetch_ms": (fetched - received) * 1000.0,
                            "decode_ms": (decoded - fetched) * 1000.0 + done.decode_ms,
                            "queue_ms": queue_s * 1000.0, "infer_ms": done.infer_ms,
                            "total_ms": (finished - received) * 1000.0}}

    @staticmethod
    async def _in_thread(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # ------------------------------------------------------------------ forward passes

    async def _run_batch(self, items: list[_Item]) -> list[_Done | ServiceError]:
        return await self._in_thread(self._infer_pool, self._forward, items)

    def _forward(self, items: list[_Item], record: bool = True) -> list[_Done | ServiceError]:
        """One forward pass for `items` (in the inference thread). Per-item failures are returned, not raised."""
        started = time.monotonic()
        if not self.batchable:
            return [self._run_single(item, started, record) for item in items]
        out: list[_Done | ServiceError | None] = [None] * len(items)
        if self.gpu_decode:
            images = decode.decode_batch_cuda([(item.data, item.info) for item in items],  # type: ignore[misc]
                                              self.input_size, self.device)  # type: ignore[arg-type]
            torch.cuda.synchronize(self.device)  # so decode_ms is the decode's, not queued into infer_ms
        else:
            images = [item.image for item in items]  # type: ignore[misc]
        decode_ms = (time.monotonic() - started) * 1000.0
        ok = [i for i, image in enumerate(images) if isinstance(image, torch.Tensor)]
        for i, image in enumerate(images):
            if isinstance(image, ServiceError):
                out[i] = image
        if ok:
            batch = torch.stack([images[i] for i in ok]).to(self.device)  # type: ignore[misc]
            infer_started = time.monotonic()
            results = self._run_batch_isolated(batch, [items[i] for i in ok])
            infer_ms = (time.monotonic() - infer_started) * 1000.0
            if record:
                self.metrics.batch_size.observe(len(ok))
            for i, result in zip(ok, results, strict=True):
                if not isinstance(result, ServiceError):
                    result = _checked_result(result)
                out[i] = result if isinstance(result, ServiceError) else _Done(result, len(ok), started, decode_ms,
                                                                               infer_ms)
        if record:
            self.metrics.forward_seconds.inc(time.monotonic() - started)
        return out  # type: ignore[return-value]

    def _run_batch_isolated(self, batch: torch.Tensor, items: list[_Item]) -> list[dict[str, Any] | ServiceError]:
        """`run_batch` on the whole batch; if it raises, once per item, so only the failing items fail."""
        runner: BatchRunner = self.runner  # type: ignore[assignment]
        try:
            results = runner.run_batch(batch, [item.model_tag for item in items], [item.extra for item in items])
            if len(results) != len(items):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} images")
            return list(results)
        except Exception:
            if len(items) == 1:
                return [self._runner_failed()]
        isolated: list[dict[str, Any] | ServiceError] = []
        for index, item in enumerate(items):
            try:
                isolated.append(runner.run_batch(batch[index:index + 1], [item.model_tag], [item.extra])[0])
            except Exception:
                isolated.append(self._runner_failed())
        return isolated

    def _run_single(self, item: _Item, started: float, record: bool) -> _Done | ServiceError:
        """A runner without run_batch: the seed's run(), one image per call."""
        try:
            result = self.runner.run(item.data, item.model_tag, item.extra)
        except Exception:
            return self._runner_failed()
        if record:
            self.metrics.forward_seconds.inc(time.monotonic() - started)
        result = _checked_result(result)
        if isinstance(result, ServiceError):
            return result
        if record:
            self.metrics.batch_size.observe(1)
        return _Done(result, 1, started, 0.0, (time.monotonic() - started) * 1000.0)

    def _runner_failed(self) -> RunnerFailed:
        log.exception("the %s runner raised", self.team)
        return RunnerFailed(f"the {self.team} runner failed on this image (see the service log)")

    # ------------------------------------------------------------------ lifecycle

    async def warm_up(self) -> None:
        """Run forward passes at each batch size the batcher can form (powers of two up to the maximum), through
        the same decode path as requests: lazy initialisation, allocator growth and kernel selection happen
        here instead of in the first requests. Readiness waits for this."""
        started = time.monotonic()
        try:
            sample = _warmup_jpeg()
            size = 1
            sizes = []
            while size < self.batcher.max_batch_size:
                sizes.append(size)
                size *= 2
            sizes.append(self.batcher.max_batch_size)
            for batch_size in sizes:
                for _ in range(self.settings.warmup_batches):
                    items = [await self._warmup_item(sample) for _ in range(batch_size)]
                    results = await self._in_thread(self._infer_pool, self._forward, items, False)
                    failed = [r for r in results if isinstance(r, ServiceError)]
                    if failed:
                        raise RuntimeError(f"warm-up forward pass failed: {failed[0].message}")
            if self.device.type == "cuda":
                await self._in_thread(self._infer_pool, torch.cuda.synchronize)
        except Exception as exc:
            self.warmup_error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed; the service stays unready")
            return
        self.warmed = True
        self.metrics.ready.set(1)
        log.info("team %s: %s (%s) warmed up on %s in %.1fs (batch sizes %s)", self.team, self.model_name,
                 self.model_tag, self.device, time.monotonic() - started, sizes)

    async def _warmup_item(self, sample: bytes) -> _Item:
        item = _Item(model_tag=None, extra=None)
        if self.batchable and not self.gpu_decode:
            item.image = await self._in_thread(self._decode_pool, decode.decode_cpu, sample, self.input_size,
                                               self.settings.max_image_pixels)
        else:
            item.info, item.data = decode.probe(sample, self.settings.max_image_pixels), sample
        return item

    async def readiness(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        reasons = []
        if self.warmup_error:
            reasons.append(f"warm-up failed: {self.warmup_error}")
        elif not self.warmed:
            reasons.append("the model is warming up")
        try:
            await asyncio.to_thread(self.store.check)  # not the fetch pool: a busy service must still answer
        except ServiceError as exc:
            reasons.append(f"storage: {exc.message}")
        return reasons

    async def close(self) -> None:
        await self.batcher.close()
        for pool in (self._decode_pool, self._infer_pool):
            pool.shutdown(wait=False, cancel_futures=True)


def _checked_result(result: Any) -> dict[str, Any] | RunnerFailed:
    """The runner's result if it is a runner's answer (schemas.check_runner_output: any JSON object, the seed's
    recommended keys well typed when present; checked here, once, instead of validating every response against
    the model), else RunnerFailed: an adapter bug, not the input's. (A runner's own key that the service sets,
    e.g. `team`, is overwritten by the service's.)"""
    problem = check_runner_output(result)
    return result if problem is None else RunnerFailed(problem)


def _warmup_jpeg(size: int = 320) -> bytes:
    """A photo-sized JPEG with real entropy (a flat image would decode unrealistically fast)."""
    gradient = torch.linspace(0, 255, size).to(torch.uint8)
    noise = torch.randint(0, 64, (size, size, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels = (noise + gradient[None, :, None] // 2 + gradient[:, None, None] // 4).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()
