"""Backoff for one message's retries, and a circuit breaker for outages of the whole service."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streaming.dispatch import defaults


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `attempts` counts every try, the first included."""

    attempts: int = defaults.ATTEMPTS
    base_ms: int = defaults.BACKOFF_MS
    max_ms: int = defaults.BACKOFF_MAX_MS
    multiplier: float = 2.0

    def can_retry(self, attempts_made: int) -> bool:
        return attempts_made < self.attempts

    def delay_s(
        self, attempts_made: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        cap = min(self.max_ms, self.base_ms * self.multiplier ** max(0, attempts_made - 1)) / 1000
        jittered = (rng or random).uniform(cap / 2, cap)
        # a server's Retry-After is a floor: asking sooner only earns another 429
        return max(jittered, retry_after_s or 0.0)


Probe = Callable[[], Awaitable[bool]]


class CircuitBreaker:
    """Closed while the service answers. When it stops answering (connection refused, 503), or answers in a way
    that says the deployment is wrong (401, an unknown route), the breaker opens: every caller waits on it, and
    one probe at a time checks, with growing pauses, whether the condition is over, so neither an outage nor a
    misconfiguration costs retry budgets or DLQ entries, and the service is not hammered meanwhile.

    `reason` says why it is open (for the logs); `last_probes` how many probes the last open period took:
    1 means the service looked fine as soon as it was asked."""

    def __init__(
        self,
        probe: Probe,
        min_pause_s: float = 0.2,
        max_pause_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self._probe = probe
        self._min_pause_s = min_pause_s
        self._max_pause_s = max_pause_s
        self._clock = clock
        self._log = log or logging.getLogger(__name__)
        self._closed = asyncio.Event()
        self._closed.set()
        self._prober: asyncio.Task[None] | None = None
        self.reason = ""
        self.misconfigured = False
        self.opened_count = 0
        self.open_seconds = 0.0
        self.last_probes = 0

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def trip(
        self, reason: str = "the service is unavailable", probe: Probe | None = None, misconfigured: bool = False
    ) -> None:
        """Open the breaker (a no-op when it is open). `probe` replaces the readiness probe for this period."""
        if not self._closed.is_set():
            return
        self._closed.clear()
        self.opened_count += 1
        self.reason, self.misconfigured = reason, misconfigured
        (self._log.error if misconfigured else self._log.warning)(
            "pausing every call: %s%s",
            reason,
            " (the deployment is wrong: fix it; the job resumes by itself once the probe passes)"
            if misconfigured
            else "",
        )
        self._prober = asyncio.get_running_loop().create_task(self._probe_until_ok(probe or self._probe))

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _probe_until_ok(self, probe: Probe) -> None:
        started = self._clock()
        pause = self._min_pause_s
        probes = 0
        next_reminder = started + 60.0
        while True:
            await asyncio.sleep(pause)
            probes += 1
            try:
                if await probe():
                    break
            except Exception:  # any probe failure just means "not yet"
                pass
            pause = min(self._max_pause_s, pause * 2)
            if self.misconfigured and self._clock() >= next_reminder:
                self._log.error("still paused after %.0fs: %s", self._clock() - started, self.reason)
                next_reminder += 60.0
        self.open_seconds += self._clock() - started
        self.last_probes = probes
        if self.misconfigured or probes > 1:
            self._log.warning("resuming after %.1fs: %s is over", self._clock() - started, self.reason)
        self.reason, self.misconfigured = "", False
        self._closed.set()
