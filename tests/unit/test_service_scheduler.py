"""The scheduler (one owner of the model) and its fronts, in one process: the real fruit runner, the real socket.

The scheduler runs in its own thread and event loop as in the server's parent process; each `SchedulerClient` is
what a worker process's engine holds. No MinIO: the fronts are handed the image bytes a fetch would return.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from adapters.fruit_defect.model import FruitDefectNet
from adapters.fruit_defect_runner import FruitRunner
from services.inference_http.errors import NotAnImage, NotReady
from services.inference_http.forward import PipelinedBatchPath, in_process_path
from services.inference_http.metrics import Metrics
from services.inference_http.scheduler import Scheduler, SchedulerClient
from services.inference_http.settings import ServiceSettings


def settings(socket_path: str = "", **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = dict(
        team="fruit",
        device="cpu",
        max_batch_size=16,
        max_batch_delay_ms=1000,
        warmup_batches=1,
        scheduler_socket=socket_path or None,
    )
    values.update(overrides)
    return ServiceSettings(**values)


class GatedFruitRunner(FruitRunner):
    """The real fruit runner; its forward passes wait while `gate` is closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.in_forward = threading.Event()
        self.batch_sizes: list[int] = []

    def run_batch(self, images, model_tags=None, extras=None):
        self.in_forward.set()
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        self.batch_sizes.append(len(images))
        return super().run_batch(images, model_tags, extras)


@pytest.fixture
def scheduler(tmp_path, fruit_weights):
    socket_path = str(tmp_path / "scheduler.sock")
    runner = GatedFruitRunner(str(fruit_weights))
    started = Scheduler(settings(socket_path), runner, Metrics(), socket_path).start()
    assert started.ready.wait(60), started.error
    yield started
    runner.gate.set()
    started.stop()


def front(scheduler: Scheduler, upstream: list[int] | None = None) -> SchedulerClient:
    waiting = upstream if upstream is not None else [0]
    return SchedulerClient(settings(scheduler.socket_path), lambda: waiting[0])


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Wait until `condition()` holds (it reads state another thread changes), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        await asyncio.sleep(0.005)


async def infer(client: SchedulerClient, data: bytes, remaining: list[int] | None = None):
    """An image through the front as the engine sends it; `remaining` (the front's upstream count) goes down by
    one as it leaves for the scheduler."""
    item = await client.prepare(data, None, None)
    if remaining is not None:
        remaining[0] -= 1
    return await client.run(item)


def test_two_fronts_share_one_batch_and_get_their_own_answers(scheduler, fruit_images):
    runner = scheduler.runner
    assert isinstance(runner, GatedFruitRunner)

    async def main():
        remaining = [[0], [0]]  # per front: images admitted and not yet sent to the scheduler
        fronts = [front(scheduler, remaining[0]), front(scheduler, remaining[1])]
        for client in fronts:
            await client.warm_up(fruit_images.clean)
        assert fronts[0].info.name == "fruit_defect_cnn" and fronts[0].info.device == "cpu"
        runner.batch_sizes.clear()
        kinds = ["clean", "defect", "defect", "clean"]
        remaining[0][0] = remaining[1][0] = 2
        for client in fronts:
            client.poke()  # as the engine does when it admits requests: the scheduler learns some are coming
        # each front sends two images; the window stays open while a front says more are coming, and closes as
        # soon as none are: all four go in one forward pass
        done = await asyncio.gather(
            *(infer(fronts[i % 2], fruit_images.make(kind, i), remaining[i % 2]) for i, kind in enumerate(kinds))
        )
        for client in fronts:
            await client.close()
        return done

    done = asyncio.run(asyncio.wait_for(main(), 60))
    assert [d.result["label"] for d in done] == ["clean", "defect", "defect", "clean"]
    assert runner.batch_sizes == [4] and {d.batch_size for d in done} == {4}


def test_an_undecodable_image_fails_alone_with_its_own_error(scheduler, fruit_images):
    broken = fruit_images.defect[:200]  # a valid header, then nothing to decode

    async def main():
        client = front(scheduler)
        await client.warm_up(fruit_images.clean)
        results = await asyncio.gather(infer(client, fruit_images.clean), infer(client, broken), return_exceptions=True)
        await client.close()
        return results

    good, bad = asyncio.run(asyncio.wait_for(main(), 60))
    assert good.result["label"] == "clean"
    assert isinstance(bad, NotAnImage) and bad.status == 415 and bad.type == "not_an_image"


def test_an_item_its_front_gave_up_on_never_runs(scheduler, fruit_images):
    runner = scheduler.runner
    assert isinstance(runner, GatedFruitRunner)

    async def main():
        upstream = [0]
        client = front(scheduler, upstream)
        await client.warm_up(fruit_images.clean)
        runner.batch_sizes.clear()
        runner.in_forward.clear()
        runner.gate.clear()
        first = asyncio.create_task(infer(client, fruit_images.clean))
        await asyncio.to_thread(runner.in_forward.wait, 30)  # the first holds the model
        upstream[0] = 1  # "one more is coming": the next batch's window (1 s) stays open
        client.poke()
        given_up = asyncio.create_task(infer(client, fruit_images.defect))
        assert scheduler.path is not None
        batcher = scheduler.path.batcher
        await until(lambda: batcher.depth == 1, "the second image waits in the scheduler's queue")
        given_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await given_up  # its cancel frame is sent: any later frame on this socket reaches the scheduler after it
        runner.gate.set()
        await first
        upstream[0] = 0
        # one more request: the batch after the first holds it alone, not the cancelled one
        third = await infer(client, fruit_images.defect)
        await client.close()
        return third

    third = asyncio.run(asyncio.wait_for(main(), 60))
    assert third.result["label"] == "defect"
    assert runner.batch_sizes == [1, 1]


def test_a_lone_image_does_not_wait_the_window_when_nothing_else_is_coming(scheduler, fruit_images):
    async def main():
        client = front(scheduler)
        await client.warm_up(fruit_images.clean)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await infer(client, fruit_images.clean)
        elapsed = loop.time() - started
        await client.close()
        return elapsed

    # the window is 1 s; the front says nothing else is on its way, so the batch goes at once
    assert asyncio.run(asyncio.wait_for(main(), 60)) < 0.5


def test_a_front_whose_scheduler_is_gone_answers_not_ready(scheduler, fruit_images):
    async def main():
        client = front(scheduler)
        await client.warm_up(fruit_images.clean)
        await asyncio.to_thread(scheduler.stop)
        await until(lambda: client.not_ready() != [], "the front sees the connection close")
        with pytest.raises(NotReady):
            await infer(client, fruit_images.clean)
        assert client.not_ready() == ["the scheduler is not reachable"]
        await client.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_decode_of_the_next_batch_overlaps_the_forward_pass(fruit_weights, fruit_images):
    runner = GatedFruitRunner(str(fruit_weights))

    async def main():
        path = in_process_path(settings(max_batch_delay_ms=0), runner, Metrics(), batch_decode=True)
        assert isinstance(path, PipelinedBatchPath)
        runner.gate.clear()
        first = asyncio.create_task(path.run(await path.prepare(fruit_images.clean, None, None)))
        await asyncio.to_thread(runner.in_forward.wait, 30)
        second = asyncio.create_task(path.run(await path.prepare(fruit_images.defect, None, None)))
        # batch 2 is decoded while batch 1 is still in its forward pass (held by the gate)
        assert await asyncio.to_thread(path.overlapped.wait, 30)
        assert not first.done()
        runner.gate.set()
        labels = [(await first).result["label"], (await second).result["label"]]
        await path.close()
        return labels

    assert asyncio.run(asyncio.wait_for(main(), 60)) == ["clean", "defect"]


class TinyClassifier(FruitRunner):
    """A batchable classifier of plain nn.Module weights (random, seeded): what torch.compile can trace."""

    def __init__(self, weights_path: str) -> None:
        super().__init__(weights_path)
        torch.manual_seed(0)
        self.model = FruitDefectNet().eval()


def test_a_compiled_forward_pass_is_checked_against_eager_and_serves(fruit_weights, fruit_images):
    runner = TinyClassifier(str(fruit_weights))

    async def main():
        path = in_process_path(settings(compile="aot_eager", max_batch_size=4), runner, Metrics())
        await path.warm_up(fruit_images.clean)
        done = await path.run(await path.prepare(fruit_images.defect, None, None))
        await path.close()
        return path.info.forward, done

    forward, done = asyncio.run(asyncio.wait_for(main(), 120))
    assert forward.startswith("compiled (aot_eager, default)"), forward
    assert runner.forward_scores is not runner.probabilities
    assert done.result["label"] in ("clean", "defect")


def test_a_compiled_forward_pass_that_disagrees_with_eager_is_dropped(fruit_weights, fruit_images, monkeypatch):
    runner = TinyClassifier(str(fruit_weights))

    def wrong_compile(backend: str = "inductor", mode: str = "default") -> None:
        # a miscompiled graph: every probability off by at least a quarter
        runner.forward_scores = lambda images: runner.probabilities(images).roll(1, dims=1) * 0.5

    monkeypatch.setattr(runner, "compile_forward", wrong_compile)

    async def main():
        path = in_process_path(settings(compile="aot_eager", max_batch_size=2), runner, Metrics())
        await path.warm_up(fruit_images.clean)
        await path.close()
        return path.info.forward

    forward = asyncio.run(asyncio.wait_for(main(), 60))
    assert forward.startswith("eager (compiled aot_eager differed"), forward
    assert runner.forward_scores == runner.probabilities


def test_a_forward_pass_that_fails_to_compile_leaves_the_eager_one_serving(fruit_weights, fruit_images, monkeypatch):
    runner = TinyClassifier(str(fruit_weights))

    def failing_compile(backend: str = "inductor", mode: str = "default") -> None:
        def compiled(images):
            raise RuntimeError("InductorError: no C compiler for Triton's launcher")  # what a bare machine raises

        runner.forward_scores = compiled

    monkeypatch.setattr(runner, "compile_forward", failing_compile)

    async def main():
        path = in_process_path(settings(compile="inductor", max_batch_size=2), runner, Metrics())
        await path.warm_up(fruit_images.clean)
        done = await path.run(await path.prepare(fruit_images.defect, None, None))
        await path.close()
        return path.info.forward, done

    forward, done = asyncio.run(asyncio.wait_for(main(), 60))
    assert forward.startswith("eager (compiling with inductor failed"), forward
    assert done.result["label"] in ("clean", "defect")
