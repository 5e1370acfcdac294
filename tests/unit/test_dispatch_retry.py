"""Backoff and the circuit breaker (streaming/dispatch/retry.py)."""

from __future__ import annotations

import asyncio
import random

from streaming.dispatch.retry import CircuitBreaker, RetryPolicy


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    policy = RetryPolicy(attempts=6, base_ms=100, max_ms=1000)
    rng = random.Random(1)
    delays = [policy.delay_s(n, rng=rng) for n in range(1, 7)]
    for n, d in enumerate(delays, start=1):
        cap = min(1.0, 0.1 * 2 ** (n - 1))
        assert cap / 2 <= d <= cap
    assert policy.delay_s(1, retry_after_s=3.0) == 3.0
    assert policy.can_retry(5) and not policy.can_retry(6)


def test_circuit_breaker_holds_callers_until_probe_passes():
    async def scenario():
        answers = iter([False, False, True])  # the probe's: asyncio.sleep(0, answer) yields once and returns it
        breaker = CircuitBreaker(lambda: asyncio.sleep(0, next(answers)), min_pause_s=0.01, max_pause_s=0.02)
        breaker.trip()
        breaker.trip()  # tripping an open breaker is a no-op
        assert breaker.is_open and breaker.opened_count == 1
        await asyncio.wait_for(breaker.wait_closed(), 2)
        assert not breaker.is_open

    asyncio.run(scenario())
