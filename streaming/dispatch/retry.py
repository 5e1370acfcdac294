"""Backoff for one message's retries, and a circuit breaker for outages of the whole service."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `attempts` counts every try, the first included."""

    attempts: int = 5
    base_ms: int = 200
    max_ms: int = 10_000
    multiplier: float = 2.0

    def can_retry(self, attempts_made: int) -> bool:
        return attempts_made < self.attempts

    def delay_s(self, attempts_made: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        cap = min(self.max_ms, self.base_ms * self.multiplier ** max(0, attempts_made - 1)) / 1000
        jittered = (rng or random).uniform(cap / 2, cap)
        # a server's Retry-After is a floor: asking sooner only earns another 429
        return max(jittered, retry_after_s or 0.0)


class CircuitBreaker:
    """Closed while the service answers. When it stops answering (connection refused, 503), the breaker opens:
    every caller waits on it, and one probe at a time checks readiness with growing pauses, so an outage
    costs neither retry budgets nor DLQ entries, and the service is not hammered while it restarts."""

    def __init__(self, probe: Callable[[], Awaitable[bool]], min_pause_s: float = 0.2, max_pause_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._min_pause_s = min_pause_s
        self._max_pause_s = max_pause_s
        self._clock = clock
        self._closed = asyncio.Event()
        self._closed.set()
        self._prober: asyncio.Task[None] | None = None
        self.opened_count = 0
        self.open_seconds = 0.0

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def trip(self) -> None:
        if self._closed.is_set():
            self._closed.clear()
            self.opened_count += 1
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_ready())

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _probe_until_ready(self) -> None:
        started = self._clock()
        pause = self._min_pause_s
        while True:
            await asyncio.sleep(pause)
            try:
                if await self._probe():
                    break
            except Exception:  # any probe failure just means "not yet"
                pass
            pause = min(self._max_pause_s, pause * 2)
        self.open_seconds += self._clock() - started
        self._closed.set()
