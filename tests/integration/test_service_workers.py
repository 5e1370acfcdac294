"""Several worker processes on one port (WORKERS), as users run them: a real service process, MinIO, the fruit model.

What a user relies on: every worker is warm before it takes a request, /metrics counts every worker's work
whichever worker answers it, and one worker's crash leaves the others serving while a new one replaces it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from imagery.local.inference_service import InferenceService
from schemas import INFER_JSON_ROUTE, METRICS_ROUTE, READYZ_ROUTE
from services.inference_http.settings import service_environment
from tests.helpers import MetricKey, metric_samples, put, wait_for
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.integration

WORKERS = 2


def worker_pids(service: InferenceService) -> set[int]:
    """The service's worker processes: the children of uvicorn's supervisor, less multiprocessing's helper."""
    assert service.process is not None, "the service is not started"
    pid = service.process.pid
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children |= {int(c) for c in (task / "children").read_text().split()}
    return {c for c in children if b"multiprocessing.resource_tracker" not in _cmdline(c)}


def all_workers(service: InferenceService) -> set[int]:
    """The worker processes once there are `WORKERS` of them; none before."""
    pids = worker_pids(service)
    return pids if len(pids) == WORKERS else set()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def metric_values(service: InferenceService) -> dict[MetricKey, float]:
    """/metrics over a fresh connection (so any worker may answer), as {(sample, labels): value}."""
    return metric_samples(
        httpx.get(f"{service.base_url}{METRICS_ROUTE}", headers={"Connection": "close"}, timeout=10).text
    )


def images_ok(service: InferenceService) -> float:
    return metric_values(service).get(("inference_images_total", (("status", "200"),)), 0.0)


async def infer_many(service: InferenceService, stored: tuple[str, str], count: int) -> list[int]:
    """`count` requests for the `(bucket, key)` object, each on a connection of its own, all at once: the workers
    share them."""
    bucket, key = stored
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post(INFER_JSON_ROUTE, json={"bucket": bucket, "key": key}) for _ in range(count))
        )
    return [r.status_code for r in responses]


@pytest.fixture(scope="module")
def workers_service(stack_settings, fruit_weights):
    service = InferenceService(
        stack_settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env={**FRUIT_SERVICE_ENV, **service_environment(workers=WORKERS, keep_alive_s=1)},
    )
    with service.start():
        yield service


@pytest.fixture
def fruit_object(minio, bucket, fruit_images) -> tuple[str, str]:
    return bucket, put(minio, bucket, "clean.jpg", fruit_images.clean)


def test_no_request_meets_a_cold_worker(workers_service, fruit_object):
    # the service answered /readyz, so one worker is warm; the other may still be warming: it takes no
    # connection until it is, so every request now is served, none is a 503 "warming up"
    assert asyncio.run(infer_many(workers_service, fruit_object, 20)) == [200] * 20
    wait_for(
        lambda: metric_values(workers_service)[("inference_ready", ())] == WORKERS, f"all {WORKERS} workers to be warm"
    )
    assert len(worker_pids(workers_service)) == WORKERS
    body = httpx.get(f"{workers_service.base_url}{READYZ_ROUTE}").json()
    assert body["ready"] is True and body["workers"] == WORKERS


def test_metrics_count_every_worker_s_requests(workers_service, fruit_object):
    before = images_ok(workers_service)
    statuses = asyncio.run(infer_many(workers_service, fruit_object, 40))
    assert statuses == [200] * 40
    # whichever worker answers /metrics, it counts all 40
    seen = {images_ok(workers_service) - before for _ in range(6)}
    assert seen == {40.0}
    values = metric_values(workers_service)
    assert values[("inference_in_flight", ())] == 0 and values[("inference_queue_depth", ())] == 0


def test_a_crashed_worker_does_not_take_the_others_down(workers_service, fruit_object):
    pids = wait_for(lambda: all_workers(workers_service), f"{WORKERS} workers")
    before = images_ok(workers_service)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker_pids(workers_service), "the killed worker to be gone")
    # the other worker serves at once, while the killed one is being replaced
    assert asyncio.run(infer_many(workers_service, fruit_object, 10)) == [200] * 10
    replaced = wait_for(lambda: all_workers(workers_service), "a replacement worker")
    assert victim not in replaced
    wait_for(
        lambda: metric_values(workers_service)[("inference_ready", ())] == WORKERS,
        "the replacement to be warm",
        timeout_s=60,
    )
    assert asyncio.run(infer_many(workers_service, fruit_object, 20)) == [200] * 20
    # the dead worker's counts stay in the totals; its live gauges do not
    assert images_ok(workers_service) - before == 30
    assert metric_values(workers_service)[("inference_in_flight", ())] == 0
