"""How an image gets from its bytes to the runner's answer: one interface, one class per way of doing it.

    ForwardPath            prepare(bytes) in the request's process, then run(item) -> Done
    |- PerImagePath        a runner without run_batch: its run(bytes), one image per call
    |- CpuBatchPath        decode + resize on CPU threads as each image arrives, then dynamic batches of run_batch
    |- PipelinedBatchPath  the batch is decoded together (nvJPEG on a GPU, threads on the CPU) in one thread while
    |                      the previous batch runs its forward pass in another: two batches in flight, on two CUDA
    |                      streams
    `- SchedulerClient     (scheduler.py) an HTTP front of a multi-process service: the bytes go to the one
                           scheduler that owns the device, which runs one of the paths above for every front

`prepare` always probes the header under the same limits (pixels, a JPEG's scans x pixels) so a hostile image is
refused in the front, before it costs the device anything; warm-up goes through `prepare` and the batch handler
too, so it passes the same checks as a request. Per-item failures come back as ServiceErrors in the results,
never as an exception that would fail the item's neighbours. `in_process_path` picks the path for a runner run in
this process; the compile check of warm-up is compile_check.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from adapters.base import BatchRunner, CompilableRunner, Runner
from schemas.inference_api import check_runner_output
from services.inference_http import decode
from services.inference_http.batching import BatcherClosed, DynamicBatcher
from services.inference_http.compile_check import check_compiled
from services.inference_http.errors import InternalError, NotReady, RunnerFailed, ServiceError
from services.inference_http.metrics import Metrics
from services.inference_http.settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@dataclass
class Item:
    """One image on its way into a forward pass: its bytes, what its header said, the request's own options, and
    (CpuBatchPath only) the decoded, model-sized image."""

    data: bytes
    info: decode.ImageInfo
    model_tag: str | None = None
    extra: dict[str, Any] | None = None
    image: torch.Tensor | None = None


@dataclass
class Done:
    """What the forward pass gives back for one item."""

    result: dict[str, Any]
    batch_size: int
    started: float  # time.monotonic() when its batch began (CLOCK_MONOTONIC: the same clock in every process)
    decode_ms: float  # the batch's decode when done in the batch (0 when decoded before queueing)
    infer_ms: float


@dataclass(frozen=True)
class ModelInfo:
    """What the service reports about the model it serves (/readyz, every result)."""

    name: str
    tag: str | None
    device: str
    max_batch_size: int
    forward: str  # how the forward pass runs: "eager", "compiled (inductor)", ...


def model_info_of(runner: Runner, device: torch.device, max_batch_size: int, forward: str = "eager") -> ModelInfo:
    name = getattr(runner, "model_name", None) or getattr(runner, "name", None) or type(runner).__name__
    return ModelInfo(str(name), getattr(runner, "model_tag", None), str(device), max_batch_size, forward)


def checked_result(result: Any) -> dict[str, Any] | RunnerFailed:
    """The runner's result if it is a runner's answer (schemas.check_runner_output: any JSON object, a classifier's
    recommended keys well typed when present; checked here, once, instead of validating every response against
    the model), else RunnerFailed: an adapter bug, not the input's."""
    problem = check_runner_output(result)
    return result if problem is None else RunnerFailed(problem)


async def in_thread(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


class ForwardPath(ABC):
    """The decode/forward half of the hot path. The engine admits, fetches and times; a path turns bytes into the
    runner's answer."""

    info: ModelInfo

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.limits = settings.max_image_pixels, settings.max_jpeg_scan_pixels

    @abstractmethod
    async def prepare(self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None) -> Item:
        """Probe (and, for some paths, decode) `data`, in the request's process; raises the ServiceError for an
        image that must be refused."""

    @abstractmethod
    async def run(self, item: Item) -> Done:
        """`item` through a forward pass; raises its ServiceError."""

    async def warm_up(self, sample: bytes) -> str:
        """Make the first requests fast (lazy initialisation, kernel selection, compilation); returns what was
        done, for the log."""
        return ""

    def poke(self) -> None:
        """The engine admitted an image, or one left without reaching the path: a batch waiting for company asks
        again whether any is coming."""
        return None

    def not_ready(self) -> list[str]:
        """Why the path cannot serve now (the scheduler unreachable, say); empty when it can."""
        return []

    async def close(self) -> None:
        return None


class InProcessPath(ForwardPath):
    """A path that runs the runner in this process: a dynamic batcher feeding the forward thread."""

    def __init__(
        self,
        settings: ServiceSettings,
        runner: Runner,
        device: torch.device,
        metrics: Metrics,
        more_coming: Callable[[], bool] | None,
        max_batch_size: int,
        concurrency: int = 1,
    ) -> None:
        super().__init__(settings)
        self.runner = runner
        self.device = device
        self.metrics = metrics
        self.forward = "eager"
        self.info = model_info_of(runner, device, max_batch_size)
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.batcher: DynamicBatcher[Item, Done | ServiceError] = DynamicBatcher(
            self._handle,
            max_batch_size=max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000.0,
            on_depth=metrics.queue_depth.set,
            more_coming=more_coming,
            concurrency=concurrency,
        )

    async def prepare(self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None) -> Item:
        info = await in_thread(self._decode_pool, decode.probe, data, *self.limits)
        return Item(data, info, model_tag, extra)

    async def run(self, item: Item) -> Done:
        try:
            done = await self.batcher.submit(item)
        except BatcherClosed as exc:
            raise NotReady(str(exc), self.settings.retry_after_s) from exc
        if isinstance(done, ServiceError):
            raise done
        return done

    def submit(self, item: Item) -> asyncio.Future[Done | ServiceError]:
        """`item` into the batcher, without awaiting it (the scheduler's fronts): the future its batch resolves."""
        return self.batcher.submit_future(item)

    def poke(self) -> None:
        self.batcher.poke()

    async def _handle(self, items: list[Item]) -> list[Done | ServiceError]:
        return await in_thread(self._infer_pool, self.forward_batch, items, True)

    @abstractmethod
    def forward_batch(self, items: list[Item], record: bool) -> list[Done | ServiceError]:
        """One forward pass for `items` (in the forward thread); per-item failures are returned, not raised."""

    async def warm_up(self, sample: bytes) -> str:
        """Forward passes at each batch size the batcher can form (powers of two up to the maximum), each item
        through `prepare` and the batch handler as a request goes: allocator growth, kernel selection and
        compilation happen here instead of in the first requests. A compiled forward pass is then checked against
        the eager one, and dropped for it if they disagree."""
        backend = self._compile_backend()
        runner = self.runner
        compilable = runner if backend != "off" and isinstance(runner, CompilableRunner) else None
        compiling = compilable is not None
        if compilable is not None:
            await in_thread(self._infer_pool, compilable.compile_forward, backend, self.settings.compile_mode)
        sizes = warmup_sizes(self.batcher.max_batch_size)
        try:
            await self._warm_sizes(sample, sizes)
        except RuntimeError:
            if compilable is None:
                raise
            # compiling itself failed (no C compiler for Triton's launcher, an unsupported operator...): the eager
            # pass still serves, and /readyz says so; a failure of the eager pass is the warm-up's failure
            log.exception("the compiled forward pass failed during warm-up; serving the eager one")
            compilable.eager_forward()
            compiling = False
            self.forward = f"eager (compiling with {backend} failed at warm-up: see the log)"
            self.info = dataclasses.replace(self.info, forward=self.forward)
            await self._warm_sizes(sample, sizes)
        if compiling:
            self.forward = await in_thread(
                self._infer_pool,
                check_compiled,
                self.runner,
                self.device,
                self.limits,
                backend,
                self.settings.compile_mode,
                sample,
            )
            self.info = dataclasses.replace(self.info, forward=self.forward)
        return f"batch sizes {sizes}"

    async def _warm_sizes(self, sample: bytes, sizes: list[int]) -> None:
        for batch_size in sizes:
            for _ in range(max(1, self.settings.warmup_batches)):
                items = [await self.prepare(sample, None, None) for _ in range(batch_size)]
                results = await self._warm_batch(items)
                failed = [r for r in results if isinstance(r, ServiceError)]
                if failed:
                    raise RuntimeError(f"warm-up forward pass failed: {failed[0].message}")
        if self.device.type == "cuda":
            await in_thread(self._infer_pool, torch.cuda.synchronize, self.device)

    def _compile_backend(self) -> str:
        backend = self.settings.compile
        if backend == "auto":
            return "inductor" if self.device.type == "cuda" else "off"
        return backend

    async def _warm_batch(self, items: list[Item]) -> list[Done | ServiceError]:
        return await in_thread(self._infer_pool, self.forward_batch, items, False)

    def run_isolated(self, batch: torch.Tensor, items: list[Item]) -> list[dict[str, Any] | ServiceError]:
        """`run_batch` on the whole batch; if it raises, once per item, so only the failing items fail."""
        runner = self.runner
        assert isinstance(runner, BatchRunner)
        try:
            results = runner.run_batch(batch, [item.model_tag for item in items], [item.extra for item in items])
            if len(results) != len(items):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} images")
            return list(results)
        except Exception:
            if len(items) == 1:
                return [self.runner_failed()]
        isolated: list[dict[str, Any] | ServiceError] = []
        for index, item in enumerate(items):
            try:
                isolated.append(runner.run_batch(batch[index : index + 1], [item.model_tag], [item.extra])[0])
            except Exception:
                isolated.append(self.runner_failed())
        return isolated

    def answers(
        self,
        items: list[Item],
        images: list[torch.Tensor | ServiceError],
        started: float,
        decode_ms: float,
        record: bool,
        wait: Callable[[], None] | None = None,
    ) -> list[Done | ServiceError]:
        """Stack the decoded images, run them, and pair each item with its answer or its own error. `wait`, when
        given, runs just before the batch goes to the device (the forward stream's wait for the decode)."""
        began = time.monotonic()
        out: list[Done | ServiceError | None] = [image if isinstance(image, ServiceError) else None for image in images]
        ok = [i for i, image in enumerate(images) if isinstance(image, torch.Tensor)]
        if ok:
            if wait is not None:
                wait()
            batch = torch.stack([image for image in images if isinstance(image, torch.Tensor)]).to(self.device)
            infer_started = time.monotonic()
            results = self.run_isolated(batch, [items[i] for i in ok])
            infer_ms = (time.monotonic() - infer_started) * 1000.0
            if record:
                self.metrics.batch_size.observe(len(ok))
            for i, result in zip(ok, results, strict=True):
                checked = result if isinstance(result, ServiceError) else checked_result(result)
                out[i] = (
                    checked
                    if isinstance(checked, ServiceError)
                    else Done(checked, len(ok), started, decode_ms, infer_ms)
                )
        if record:  # the batch's own decode and forward pass, not its wait for the previous batch's
            self.metrics.forward_seconds.inc(decode_ms / 1000.0 + time.monotonic() - began)
        return [answer if answer is not None else InternalError("no answer for this item") for answer in out]

    def runner_failed(self) -> RunnerFailed:
        log.exception("the %s runner raised", self.settings.team)
        return RunnerFailed(f"the {self.settings.team} runner failed on this image (see the service log)")

    async def close(self) -> None:
        await self.batcher.close()
        for pool in (self._decode_pool, self._infer_pool):
            pool.shutdown(wait=False, cancel_futures=True)


class PerImagePath(InProcessPath):
    """A runner without run_batch: its run(bytes) decodes and infers one image per call."""

    def __init__(
        self,
        settings: ServiceSettings,
        runner: Runner,
        device: torch.device,
        metrics: Metrics,
        more_coming: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(settings, runner, device, metrics, more_coming, max_batch_size=1)

    def forward_batch(self, items: list[Item], record: bool) -> list[Done | ServiceError]:
        return [self._run_single(item, record) for item in items]

    def _run_single(self, item: Item, record: bool) -> Done | ServiceError:
        started = time.monotonic()
        try:
            result = self.runner.run(item.data, item.model_tag, item.extra)
        except Exception:
            return self.runner_failed()
        if record:
            self.metrics.forward_seconds.inc(time.monotonic() - started)
        checked = checked_result(result)
        if isinstance(checked, ServiceError):
            return checked
        if record:
            self.metrics.batch_size.observe(1)
        return Done(checked, 1, started, 0.0, (time.monotonic() - started) * 1000.0)


class CpuBatchPath(InProcessPath):
    """On the CPU: each image is decoded and resized in a thread as soon as it arrives (while the batch it will
    join is still filling), then dynamic batches of run_batch."""

    def __init__(
        self,
        settings: ServiceSettings,
        runner: BatchRunner,
        device: torch.device,
        metrics: Metrics,
        more_coming: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(settings, runner, device, metrics, more_coming, max_batch_size=settings.max_batch_size)
        self.size = (int(runner.input_size[0]), int(runner.input_size[1]))

    async def prepare(self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None) -> Item:
        info, image = await in_thread(self._decode_pool, decode.decode_cpu_probed, data, self.size, *self.limits)
        return Item(data, info, model_tag, extra, image)

    def forward_batch(self, items: list[Item], record: bool) -> list[Done | ServiceError]:
        images: list[torch.Tensor | ServiceError] = []
        for item in items:
            images.append(item.image if item.image is not None else decode.NotAnImage("the image was not decoded"))
        return self.answers(items, images, time.monotonic(), 0.0, record)


@dataclass
class _Decoded:
    """A batch between its two stages: decoded (on the decode stream), waiting for the forward pass."""

    images: list[torch.Tensor | ServiceError]
    started: float
    decode_ms: float
    ready: torch.cuda.Event | None  # recorded on the decode stream after the batch's last decode kernel


class PipelinedBatchPath(InProcessPath):
    """The batch is decoded together in the decode thread, then run in the forward thread; two batches are in
    flight (DynamicBatcher(concurrency=2)), so batch k+1 decodes while batch k runs its forward pass. On a GPU each
    stage has its own CUDA stream and the forward stream waits for the decode stream's event, not for the host, so
    nvJPEG and the forward pass can overlap on the device; what that gains on a GPU is not measured yet
    (bench/RESULTS.md, "Issue 19's GPU goals: not measured on a GPU"). On the CPU, where it was measured at 1.07x
    (the same file, "Issue 19 on the CPU: the table, ceilings included, and each goal"), the decode stage
    decodes the batch's images on the decode threads, in parallel."""

    def __init__(
        self,
        settings: ServiceSettings,
        runner: BatchRunner,
        device: torch.device,
        metrics: Metrics,
        more_coming: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(
            settings, runner, device, metrics, more_coming, max_batch_size=settings.max_batch_size, concurrency=2
        )
        self.size = (int(runner.input_size[0]), int(runner.input_size[1]))
        self._stage_pool = ThreadPoolExecutor(1, thread_name_prefix="batch-decode")
        self._forward_lock = asyncio.Lock()  # FIFO: batches run their forward passes in the order they formed
        cuda = device.type == "cuda"
        self.decode_stream = torch.cuda.Stream(device) if cuda else None
        self.forward_stream = torch.cuda.Stream(device) if cuda else None
        self.overlapped = threading.Event()  # set once a decode ran while another batch was in its forward pass
        self._in_forward = 0

    async def _handle(self, items: list[Item]) -> list[Done | ServiceError]:
        decoded = await in_thread(self._stage_pool, self._decode_stage, items)
        async with self._forward_lock:
            return await in_thread(self._infer_pool, self._forward_stage, items, decoded, True)

    async def _warm_batch(self, items: list[Item]) -> list[Done | ServiceError]:
        decoded = await in_thread(self._stage_pool, self._decode_stage, items)
        async with self._forward_lock:
            return await in_thread(self._infer_pool, self._forward_stage, items, decoded, False)

    def forward_batch(self, items: list[Item], record: bool) -> list[Done | ServiceError]:
        """Both stages in the calling thread (one batch alone, no overlap)."""
        return self._forward_stage(items, self._decode_stage(items), record)

    def _decode_stage(self, items: list[Item]) -> _Decoded:
        started = time.monotonic()
        if self._in_forward:
            self.overlapped.set()
        if self.decode_stream is not None:
            with torch.cuda.stream(self.decode_stream):
                images = decode.decode_batch_cuda([(item.data, item.info) for item in items], self.size, self.device)
                ready = torch.cuda.Event()
                ready.record(self.decode_stream)
            # the host waits for the decode here, in the decode thread, so decode_ms is the decode's own; the
            # forward thread meanwhile keeps the device busy with the previous batch
            ready.synchronize()
        else:
            ready = None
            images = list(self._stage_pool_map(items))
        return _Decoded(images, started, (time.monotonic() - started) * 1000.0, ready)

    def _stage_pool_map(self, items: list[Item]) -> list[torch.Tensor | ServiceError]:
        def one(item: Item) -> torch.Tensor | ServiceError:
            try:
                return decode.decode_cpu(item.data, self.size, *self.limits)
            except ServiceError as exc:
                return exc

        return list(self._decode_pool.map(one, items))

    def _forward_stage(self, items: list[Item], decoded: _Decoded, record: bool) -> list[Done | ServiceError]:
        self._in_forward += 1
        try:
            if self.forward_stream is None:
                return self.answers(items, decoded.images, decoded.started, decoded.decode_ms, record)
            stream, ready = self.forward_stream, decoded.ready
            with torch.cuda.stream(stream):

                def wait_for_decode() -> None:
                    if ready is not None:
                        stream.wait_event(ready)

                return self.answers(
                    items, decoded.images, decoded.started, decoded.decode_ms, record, wait=wait_for_decode
                )
        finally:
            self._in_forward -= 1

    async def close(self) -> None:
        await super().close()
        self._stage_pool.shutdown(wait=False, cancel_futures=True)


def warmup_sizes(max_batch_size: int) -> list[int]:
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def in_process_path(
    settings: ServiceSettings,
    runner: Runner,
    metrics: Metrics,
    more_coming: Callable[[], bool] | None = None,
    batch_decode: bool = False,
) -> InProcessPath:
    """The path for a runner run in this process: PerImagePath for a runner without run_batch, else PipelinedBatchPath
    on a GPU (batched nvJPEG overlapping the forward pass) or where images come in still encoded (`batch_decode`:
    the scheduler), else CpuBatchPath (on the CPU, decoding each image as it arrives, in the request's own task,
    keeps the cores busy while the batch fills)."""
    device = resolve_device(settings.device)
    if not isinstance(runner, BatchRunner):
        return PerImagePath(settings, runner, device, metrics, more_coming)
    runner.to_device(device)
    if device.type == "cuda" or batch_decode:
        return PipelinedBatchPath(settings, runner, device, metrics, more_coming)
    return CpuBatchPath(settings, runner, device, metrics, more_coming)
