"""The dynamic batcher on its own: sizes, the wait window, per-item results, giving up, closing."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.inference_http.batching import BatcherClosed, DynamicBatcher


class Recorder:
    """A batch handler that doubles its inputs and remembers the batches it saw."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.entered = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return [ValueError(f"bad {x}") if x < 0 else 2 * x for x in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_concurrent_submits_share_one_call():
    async def main():
        handler = Recorder()
        batcher = DynamicBatcher(handler, max_batch_size=8, max_delay_s=0.05)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.close()
        return handler.batches, results

    batches, results = run(main())
    assert results == [0, 2, 4, 6, 8]
    assert batches == [[0, 1, 2, 3, 4]]


def test_a_full_batch_goes_without_waiting_for_the_window():
    async def main():
        handler = Recorder()
        batcher = DynamicBatcher(handler, max_batch_size=4, max_delay_s=30.0)
        started = time.monotonic()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        elapsed = time.monotonic() - started
        await batcher.close()
        return handler.batches, results, elapsed

    batches, results, elapsed = run(main())
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert results == [2 * i for i in range(8)]
    assert elapsed < 5.0  # nowhere near the 30 s window


def test_a_lone_item_waits_at_most_the_window():
    async def main():
        handler = Recorder()
        batcher = DynamicBatcher(handler, max_batch_size=64, max_delay_s=0.05)
        started = time.monotonic()
        result = await batcher.submit(21)
        elapsed = time.monotonic() - started
        await batcher.close()
        return result, elapsed

    result, elapsed = run(main())
    assert result == 42
    assert 0.04 <= elapsed < 2.0


def test_items_queued_while_a_batch_runs_form_the_next_batch():
    async def main():
        gate = asyncio.Event()
        handler = Recorder(gate)
        batcher = DynamicBatcher(handler, max_batch_size=16, max_delay_s=0.0)
        first = asyncio.create_task(batcher.submit(1))
        await handler.entered.wait()  # batch [1] is running and held
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 7)]
        while batcher.depth < 5:
            await asyncio.sleep(0)
        gate.set()
        results = [await first] + [await task for task in rest]
        await batcher.close()
        return handler.batches, results

    batches, results = run(main())
    assert batches == [[1], [2, 3, 4, 5, 6]]
    assert results == [2, 4, 6, 8, 10, 12]


def test_each_item_gets_its_own_exception():
    async def main():
        batcher = DynamicBatcher(Recorder(), max_batch_size=4, max_delay_s=0.05)
        results = await asyncio.gather(*(batcher.submit(x) for x in (1, -1, 2)), return_exceptions=True)
        await batcher.close()
        return results

    ok1, bad, ok2 = run(main())
    assert (ok1, ok2) == (2, 4)
    assert isinstance(bad, ValueError) and str(bad) == "bad -1"


def test_a_failing_handler_fails_its_batch_and_the_batcher_goes_on():
    calls = []

    async def handler(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
        return items

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=4, max_delay_s=0.0)
        with pytest.raises(RuntimeError, match="handler bug"):
            await batcher.submit(1)
        after = await batcher.submit(2)
        await batcher.close()
        return after

    assert run(main()) == 2


def test_a_handler_returning_the_wrong_count_fails_the_batch():
    async def handler(items: list[int]) -> list[int]:
        return items[:-1]

    async def main():
        batcher = DynamicBatcher(handler, max_batch_size=4, max_delay_s=0.05)
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.close()
        return results

    assert all(isinstance(r, RuntimeError) and "2 items" in str(r) for r in run(main()))


def test_a_caller_that_gives_up_is_skipped_not_run():
    async def main():
        gate = asyncio.Event()
        handler = Recorder(gate)
        batcher = DynamicBatcher(handler, max_batch_size=8, max_delay_s=0.0)
        running = asyncio.create_task(batcher.submit(1))
        await handler.entered.wait()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await batcher.submit(99)  # waits behind the held batch, then gives up
        kept = asyncio.create_task(batcher.submit(3))
        while batcher.depth < 2:
            await asyncio.sleep(0)
        gate.set()
        results = (await running, await kept)
        await batcher.close()
        return handler.batches, results

    batches, results = run(main())
    assert results == (2, 6)
    assert batches == [[1], [3]]  # 99 never reached the handler


def test_close_fails_waiting_items_and_refuses_new_ones():
    async def main():
        gate = asyncio.Event()
        handler = Recorder(gate)
        batcher = DynamicBatcher(handler, max_batch_size=1, max_delay_s=0.0)
        running = asyncio.create_task(batcher.submit(1))
        await handler.entered.wait()
        waiting = asyncio.create_task(batcher.submit(2))
        while batcher.depth < 1:
            await asyncio.sleep(0)
        await batcher.close()
        outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
        with pytest.raises(BatcherClosed):
            await batcher.submit(3)
        return outcomes

    outcomes = run(main())
    assert all(isinstance(o, BatcherClosed) for o in outcomes)


def test_depth_is_reported():
    depths: list[int] = []

    async def main():
        batcher = DynamicBatcher(Recorder(), max_batch_size=4, max_delay_s=0.02, on_depth=depths.append)
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        await batcher.close()

    run(main())
    assert max(depths) == 3 and depths[-1] == 0


@pytest.mark.parametrize(
    "kwargs", [{"max_batch_size": 0, "max_delay_s": 0.0}, {"max_batch_size": 1, "max_delay_s": -1.0}]
)
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), **kwargs)


def test_no_waiting_for_items_that_are_not_coming():
    async def main():
        handler = Recorder()
        batcher = DynamicBatcher(handler, max_batch_size=64, max_delay_s=30.0, more_coming=lambda: False)
        started = time.monotonic()
        result = await batcher.submit(5)
        elapsed = time.monotonic() - started
        await batcher.close()
        return result, elapsed

    result, elapsed = run(main())
    assert result == 10 and elapsed < 5.0  # not the 30 s window


def test_the_window_stays_open_while_more_are_coming():
    async def main():
        handler = Recorder()
        on_the_way = 2
        batcher = DynamicBatcher(handler, max_batch_size=64, max_delay_s=30.0, more_coming=lambda: on_the_way > 0)
        submitted = [asyncio.create_task(batcher.submit(1))]
        for value in (2, 3):
            await asyncio.sleep(0.02)
            assert not submitted[0].done()  # still waiting for the ones on their way
            on_the_way -= 1
            submitted.append(asyncio.create_task(batcher.submit(value)))
        results = await asyncio.gather(*submitted)
        await batcher.close()
        return handler.batches, results

    assert run(main()) == ([[1, 2, 3]], [2, 4, 6])


def test_poke_flushes_when_the_last_expected_item_never_arrives():
    async def main():
        handler = Recorder()
        on_the_way = 1
        batcher = DynamicBatcher(handler, max_batch_size=64, max_delay_s=30.0, more_coming=lambda: on_the_way > 0)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        assert not first.done()
        on_the_way = 0  # the other item failed upstream (say, a 404) and will never come
        batcher.poke()
        result = await first
        await batcher.close()
        return result

    assert run(main()) == 2
