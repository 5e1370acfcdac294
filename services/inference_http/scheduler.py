"""One scheduler per GPU: the one owner of the model, fed by every HTTP front process over a Unix socket.

With WORKERS > 1 the server's parent process (server.py) loads the model once and runs the `Scheduler` in a thread
of its own beside uvicorn's supervisor; the worker processes are HTTP fronts: each parses requests, fetches the
objects, probes their headers under the service's limits and sends the encoded bytes here (`SchedulerClient`).
The scheduler forms batches of up to MAX_BATCH_SIZE across all fronts under MAX_BATCH_DELAY_MS, decodes each
batch together (nvJPEG on a GPU) while the previous batch runs its forward pass, and answers each image on the
connection it came from. Before, each worker held its own model and formed its own small batches, and their
forward passes took turns on the GPU: more workers made the batches smaller (bench/RESULTS.md, "Goal 1 (issue 10):
resnet50 service on NVIDIA H100 80GB HBM3", the code before the scheduler: 8 workers at 252 clients formed batches
of 14.9 on average and reached 0.42 of the same run's ceiling). What the scheduler does on a GPU is not measured yet
(bench/RESULTS.md, "Issue 19's GPU goals: not measured on a GPU").

Why a socket of our own and not PyTriton or Ray Serve: the fronts already do what those servers' HTTP layers
would (admission, deadlines, per-item errors, the dispatcher's error contract), and the hop that remains is one
write and one read per image on a local socket, measured on the 2-core CPU machine only (bench/results/2026-12-04.md,
"Issue 19: one scheduler per GPU, a compiled forward pass"): 31 us of the scheduler loop's CPU per image for 2 KB
JPEGs and 80 us for 107 KB ones, two thirds of it in `recv`. Either server would add a second HTTP or gRPC hop and
a runtime of its own to deploy (Triton's C++ server, or a Ray cluster) for the same dynamic batching.

What crosses the socket, and how, is wire.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from adapters.base import Runner
from services.inference_http import decode
from services.inference_http.batching import BatcherClosed
from services.inference_http.errors import InternalError, NotReady, ServiceError
from services.inference_http.forward import (
    Done,
    ForwardPath,
    InProcessPath,
    Item,
    ModelInfo,
    in_process_path,
    in_thread,
)
from services.inference_http.metrics import Metrics
from services.inference_http.sample_images import photo_like_jpeg
from services.inference_http.settings import ServiceSettings
from services.inference_http.wire import (
    STREAM_LIMIT,
    Frame,
    FrameKind,
    frame_parts,
    read_frame,
    read_reply,
    reply_parts,
)

log = logging.getLogger(__name__)
HELLO_ID = 0  # the request id of the hello (request ids start after it)


# ---------------------------------------------------------------------------- the scheduler (server's parent)


class _Coalescing:
    """Writes of one event-loop turn go out together: one sendmsg for a batch's answers to a front, or for the
    requests a front's handlers sent in one turn, instead of a system call per image."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._out: list[bytes] = []

    def send(self, *parts: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.extend(parts)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if not self.writer.is_closing():
            self.writer.writelines(out)


class _Front:
    """One front's connection, as the scheduler sees it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.out = _Coalescing(writer)
        self.upstream = 0
        self.pending: dict[int, asyncio.Future] = {}

    def answer(self, request_id: int, future: asyncio.Future) -> None:
        self.pending.pop(request_id, None)
        if future.cancelled() or self.writer.is_closing():
            return
        exc = future.exception()
        reply: Done | ServiceError
        if exc is None:
            reply = future.result()
        elif isinstance(exc, BatcherClosed):
            reply = NotReady(str(exc))
        elif isinstance(exc, ServiceError):
            reply = exc
        else:
            log.error("the batch failed", exc_info=exc)
            reply = InternalError(f"{type(exc).__name__} (see the service log)")
        try:
            parts = reply_parts(request_id, reply)
        except TypeError as err:
            log.error("a result that is not JSON: %s", err)
            parts = reply_parts(request_id, InternalError(f"TypeError: {err} (see the service log)"))
        self.out.send(*parts)


class Scheduler:
    """Owns the model: warms it (compiling the forward pass), then serves the fronts on `socket_path`. Runs in a
    thread with its own event loop; `ready` is set once it listens, `failed` (with `error`) if it cannot."""

    def __init__(self, settings: ServiceSettings, runner: Runner, metrics: Metrics, socket_path: str) -> None:
        self.settings = settings
        self.runner = runner
        self.metrics = metrics
        self.socket_path = socket_path
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.error: str | None = None
        self.on_failure: Callable[[], None] = lambda: None
        self.path: InProcessPath | None = None
        self._fronts: set[_Front] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 20) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # noqa: BLE001  (anything that stops the scheduler stops the service)
            self._fail(f"{type(exc).__name__}: {exc}")

    def _fail(self, error: str) -> None:
        self.error = error
        log.error("the scheduler failed: %s", error)
        self.failed.set()
        self.on_failure()

    def _more_coming(self) -> bool:
        return any(front.upstream > 0 for front in self._fronts)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        path = self.path = in_process_path(
            self.settings, self.runner, self.metrics, self._more_coming, batch_decode=True
        )
        started = time.monotonic()
        try:
            what = await path.warm_up(photo_like_jpeg(0))
        except Exception as exc:  # noqa: BLE001
            log.exception("scheduler warm-up failed")
            self._fail(f"warm-up failed: {type(exc).__name__}: {exc}")
            await path.close()
            return
        log.info(
            "scheduler: %s warmed up on %s in %.1fs (%s; forward pass: %s)",
            path.info.name,
            path.info.device,
            time.monotonic() - started,
            what,
            path.info.forward,
        )
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        server = await asyncio.start_unix_server(self._serve_front, path=self.socket_path, limit=STREAM_LIMIT)
        self.ready.set()
        try:
            async with server:
                await self._stop.wait()
        finally:
            await path.close()

    async def _serve_front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.path is not None
        path, front = self.path, _Front(writer)
        self._fronts.add(front)
        writer.writelines(reply_parts(HELLO_ID, path.info))
        try:
            while True:
                frame = await read_frame(reader)
                front.upstream = frame.upstream
                if frame.kind is FrameKind.REQUEST:
                    assert frame.item is not None
                    try:
                        future = path.submit(frame.item)
                    except BatcherClosed:
                        future = asyncio.get_running_loop().create_future()
                        future.set_exception(NotReady("the scheduler is shutting down"))
                    front.pending[frame.request_id] = future
                    future.add_done_callback(partial(front.answer, frame.request_id))
                    continue
                if frame.kind is FrameKind.CANCEL:
                    cancelled = front.pending.pop(frame.request_id, None)
                    if cancelled is not None:
                        cancelled.cancel()
                path.poke()  # CANCEL or UPSTREAM: a batch waiting for company asks again whether any is coming
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front went away (it exited, or crashed): its images are not waited for
        except asyncio.CancelledError:
            pass  # the scheduler is stopping
        finally:
            self._fronts.discard(front)
            for future in front.pending.values():
                future.cancel()
            path.poke()
            writer.close()


# ---------------------------------------------------------------------------- the front's side


class SchedulerClient(ForwardPath):
    """The forward path of an HTTP front: probe here (a hostile image is refused before it costs the device
    anything), then the bytes go to the scheduler, which answers with the runner's result or the item's error."""

    def __init__(self, settings: ServiceSettings, upstream: Callable[[], int]) -> None:
        super().__init__(settings)
        assert settings.scheduler_socket, "a front needs SCHEDULER_SOCKET"
        self.socket_path = settings.scheduler_socket
        self.upstream = upstream
        self.info = ModelInfo(
            "(from the scheduler)", None, "(the scheduler's)", settings.max_batch_size, "(the scheduler's)"
        )
        self._probe_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="probe")
        self._ids = itertools.count(HELLO_ID + 1)
        self._pending: dict[int, asyncio.Future[Done]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._out: _Coalescing | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[ModelInfo] | None = None
        self._coming = False  # what the scheduler was last told: this front has images on their way to it
        self._closed = False

    async def prepare(self, data: bytes, model_tag: str | None, extra: dict[str, Any] | None) -> Item:
        info = await in_thread(self._probe_pool, decode.probe, data, *self.limits)
        return Item(data, info, model_tag, extra)

    async def run(self, item: Item) -> Done:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise NotReady("the scheduler is not reachable (restarting?)", self.settings.retry_after_s)
        request_id = next(self._ids)
        future: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        upstream = max(0, self.upstream())
        self._coming = upstream > 0
        out = self._out
        assert out is not None
        out.send(*frame_parts(Frame(FrameKind.REQUEST, upstream, request_id, item)))
        try:
            return await future
        finally:
            if self._pending.pop(request_id, None) is not None and not writer.is_closing():
                # still pending, so the caller gave up (deadline): the scheduler skips it if not yet in a batch
                out.send(*frame_parts(Frame(FrameKind.CANCEL, max(0, self.upstream()), request_id)))

    def poke(self) -> None:
        """The engine admitted an image, or one left: tell the scheduler when "images on their way here" turns
        true or false (only then: one small frame per change, not per image)."""
        upstream = max(0, self.upstream())
        if (upstream > 0) != self._coming and self._out is not None and not self._out.writer.is_closing():
            self._coming = upstream > 0
            self._out.send(*frame_parts(Frame(FrameKind.UPSTREAM, upstream)))

    async def warm_up(self, sample: bytes) -> str:
        """Connect (waiting while the scheduler compiles and warms the model), then send a few images through the
        same prepare and run as requests."""
        await self._connect(wait=True)
        for _ in range(max(1, self.settings.warmup_batches)):
            await self.run(await self.prepare(sample, None, None))
        return f"through the scheduler at {self.socket_path}"

    async def _connect(self, wait: bool) -> None:
        while not self._closed:
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=STREAM_LIMIT)
            except (FileNotFoundError, ConnectionError):
                if not wait:
                    raise
                await asyncio.sleep(0.1)  # the scheduler listens only once its model is warm
                continue
            self._hello = asyncio.get_running_loop().create_future()
            self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))
            self.info = await self._hello
            self._writer, self._out = writer, _Coalescing(writer)
            return

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_id, reply = await read_reply(reader)
                if isinstance(reply, ModelInfo):
                    if self._hello is not None and not self._hello.done():
                        self._hello.set_result(reply)
                    continue
                future = self._pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if isinstance(reply, ServiceError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._writer = self._out = None
            lost = NotReady("the scheduler went away before answering", self.settings.retry_after_s)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            if self._hello is not None and not self._hello.done():
                self._hello.set_exception(lost)
            if not self._closed:
                log.error("lost the scheduler; reconnecting")
                asyncio.get_running_loop().create_task(self._connect(wait=True))

    def not_ready(self) -> list[str]:
        return [] if self._writer is not None else ["the scheduler is not reachable"]

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
