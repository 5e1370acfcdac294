"""Dynamic batching: concurrent callers each submit one item; one handler call serves many of them.

Like Ray Serve's `@serve.batch`: a batch is handed to the handler when it holds `max_batch_size` items or
when its oldest item has waited `max_delay_s`, whichever comes first. Each caller awaits its own future.
The window counts from the oldest item's arrival, so items that queued up while the previous batch ran go
at once instead of waiting a second window. One batch runs at a time: the model is one resource, and
batches formed while it is busy are bigger, which is the point.

The window is only worth waiting when more items are on their way. With `more_coming` (e.g. "requests
admitted upstream are still fetching or decoding"), the batcher flushes as soon as it says no: a lone
request at low load runs at once instead of paying the window for company that is not coming.

A caller that stops waiting (its deadline passed, its client went away) cancels its future; the item is
then skipped instead of taking a place in the next batch.

With `concurrency=2` a second batch is formed while the first still runs, so a handler made of two stages (decode,
then the forward pass under a lock of its own) decodes batch k+1 while batch k is in its forward pass; the third
batch waits until the first is done. The default, 1, is the one-batch-at-a-time behaviour above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# the handler returns, for each item in order, either its result or the exception that item alone gets
BatchHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class BatcherClosed(RuntimeError):
    """The batcher was closed (the service is shutting down) before this item ran."""


@dataclass
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        handler: BatchHandler[T, R],
        *,
        max_batch_size: int,
        max_delay_s: float,
        on_depth: Callable[[int], None] | None = None,
        more_coming: Callable[[], bool] | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must not be negative")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.handler = handler
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._on_depth = on_depth or (lambda depth: None)
        self._more_coming = more_coming or (lambda: True)
        self._pending: deque[_Entry[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def depth(self) -> int:
        """Items waiting for a batch (not counting the one running)."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        """Queue `item`; return its result once the batch holding it has run (or raise its exception)."""
        return await self.submit_future(item)

    def submit_future(self, item: T) -> asyncio.Future[R]:
        """`submit` without a coroutine: the future the batch resolves (cancel it to withdraw the item). The
        scheduler takes thousands of items a second from its sockets; a task per item would cost more than the
        item's own work there."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._run(), name="dynamic-batcher")
        entry: _Entry[T, R] = _Entry(item, loop.create_future())
        self._pending.append(entry)
        self._on_depth(len(self._pending))
        self._arrived.set()
        return entry.future

    def poke(self) -> None:
        """Make a waiting batcher ask `more_coming` again (call it when an expected item will not come)."""
        self._arrived.set()

    async def close(self) -> None:
        """Stop taking items; items still waiting fail with BatcherClosed. A running batch is cancelled."""
        self._closed = True
        for task in (self._worker, *self._running):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(BatcherClosed("the service is shutting down"))
        self._on_depth(0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                await self._wait_for_batch()
                batch = self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _wait_for_batch(self) -> None:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        flush_at = self._pending[0].enqueued + self.max_delay_s
        while len(self._pending) < self.max_batch_size:
            remaining = flush_at - time.monotonic()
            if remaining <= 0 or not self._more_coming():
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Entry[T, R]]:
        batch: list[_Entry[T, R]] = []
        while self._pending and len(batch) < self.max_batch_size:
            entry = self._pending.popleft()
            if not entry.future.done():  # a caller that gave up leaves a cancelled future behind
                batch.append(entry)
        self._on_depth(len(self._pending))
        return batch

    async def _run_batch(self, batch: list[_Entry[T, R]]) -> None:
        try:
            results = await self.handler([entry.item for entry in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch handler returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(BatcherClosed("the service is shutting down"))
            raise
        except Exception as exc:  # the handler's own bug: every item of this batch gets it, the loop goes on
            log.exception("batch handler failed for a batch of %d", len(batch))
            results = [exc] * len(batch)
        for entry, result in zip(batch, results, strict=True):
            if entry.future.done():
                continue
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)
