"""The service in-process (httpx on the ASGI app, its real lifespan), against the real MinIO and fruit model.

These are the cases that need the test to control time: readiness while warm-up runs, a full queue, a
deadline passing, a runner that raises. The runner is the real FruitRunner with a gate the test holds
(`GatedFruitRunner`), so every path (fetch, decode, batcher, forward pass, error mapping) is the real one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from adapters.fruit_defect_runner import FruitRunner
from imagery.process import free_port
from schemas import HEALTHZ_ROUTE, INFER_BATCH_ROUTE, INFER_JSON_ROUTE, METRICS_ROUTE, READYZ_ROUTE
from services.inference_http.app import create_app
from services.inference_http.model_registry import UnknownTeam
from services.inference_http.settings import ServiceSettings
from tests.helpers import eventually, metric_samples, put

pytestmark = pytest.mark.integration


class GatedFruitRunner(FruitRunner):
    """The real fruit runner; forward passes wait while `gate` is closed, and an item whose `extra` says
    `{"explode": true}` makes `run_batch` raise (an adapter bug that only some inputs trigger)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.in_forward = threading.Event()

    def run_batch(self, images, model_tags=None, extras=None):
        self.in_forward.set()
        if not self.gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        if any((extra or {}).get("explode") for extra in extras or []):
            raise RuntimeError("boom: this adapter cannot take this image")
        return super().run_batch(images, model_tags, extras)


def settings_for(stack_settings, fruit_weights, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = dict(
        team="fruit",
        weights_path=str(fruit_weights),
        minio_endpoint=stack_settings.minio_endpoint,
        minio_access_key=stack_settings.minio_access_key,
        minio_secret_key=stack_settings.minio_secret_key,
        max_batch_size=8,
        max_batch_delay_ms=2,
        warmup_batches=1,
    )
    values.update(overrides)
    return ServiceSettings(**values)


@asynccontextmanager
async def serving(settings: ServiceSettings, runner: FruitRunner | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that talks to it in-process."""
    app = create_app(settings, runner=runner)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30) as client:
            yield client


async def wait_until_ready(client: httpx.AsyncClient, timeout_s: float = 30) -> dict:
    async def ready() -> bool:
        return (await client.get(READYZ_ROUTE)).status_code == 200

    await eventually(ready, "/readyz to answer 200", timeout_s)
    return (await client.get(READYZ_ROUTE)).json()


async def metric(client: httpx.AsyncClient, name: str) -> float:
    samples = metric_samples((await client.get(METRICS_ROUTE)).text)
    assert (name, ()) in samples, f"no metric {name}"
    return samples[(name, ())]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def fruit_object(minio, bucket, fruit_images):
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    put(minio, bucket, "defect.jpg", fruit_images.defect)
    return bucket


def test_not_ready_until_warm_up_is_done(stack_settings, fruit_weights, fruit_object):
    runner = GatedFruitRunner(str(fruit_weights))
    runner.gate.clear()  # warm-up's first forward pass will wait here

    async def main():
        async with serving(settings_for(stack_settings, fruit_weights), runner) as client:
            await asyncio.to_thread(runner.in_forward.wait, 30)
            health = await client.get(HEALTHZ_ROUTE)
            assert (health.status_code, health.json()) == (200, {"ok": True, "team": "fruit"})
            ready = await client.get(READYZ_ROUTE)
            assert ready.status_code == 503
            assert ready.json()["ready"] is False and ready.json()["reasons"] == ["the model is warming up"]
            early = await client.post(INFER_JSON_ROUTE, json={"bucket": fruit_object, "key": "clean.jpg"})
            assert early.status_code == 503 and early.headers["Retry-After"]
            assert early.json()["error"]["type"] == "not_ready"
            runner.gate.set()
            body = await wait_until_ready(client)
            assert body["ready"] is True and body["reasons"] == [] and body["device"] == "cpu"
            late = await client.post(INFER_JSON_ROUTE, json={"bucket": fruit_object, "key": "clean.jpg"})
            assert late.status_code == 200 and late.json()["label"] == "clean"
            assert await metric(client, "inference_ready") == 1

    run(main())


def test_storage_down_is_503_for_readiness_and_requests(stack_settings, fruit_weights):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there

    async def main():
        async with serving(settings_for(stack_settings, fruit_weights, minio_endpoint=dead)) as client:

            async def warmed_up() -> bool:
                return "the model is warming up" not in (await client.get(READYZ_ROUTE)).json()["reasons"]

            await eventually(warmed_up, "the warm-up to finish", 30)
            body = (await client.get(READYZ_ROUTE)).json()
            assert body["ready"] is False and len(body["reasons"]) == 1
            assert body["reasons"][0].startswith(f"storage: MinIO at {dead} did not answer")
            response = await client.post(INFER_JSON_ROUTE, json={"bucket": "fruit-hot", "key": "a.jpg"})
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "storage_unavailable"
            assert response.json()["error"]["stage"] == "fetch"

    run(main())


def test_a_full_queue_answers_429_with_retry_after(stack_settings, fruit_weights, fruit_object):
    runner = GatedFruitRunner(str(fruit_weights))
    settings = settings_for(stack_settings, fruit_weights, max_queue=2, max_batch_size=1, retry_after_s=3)

    async def main():
        async with serving(settings, runner) as client:
            await wait_until_ready(client)
            runner.gate.clear()
            runner.in_forward.clear()
            body = {"bucket": fruit_object, "key": "clean.jpg"}
            first = asyncio.create_task(client.post(INFER_JSON_ROUTE, json=body))
            await asyncio.to_thread(runner.in_forward.wait, 30)  # the first holds the model
            second = asyncio.create_task(client.post(INFER_JSON_ROUTE, json=body))

            async def both_admitted() -> bool:
                return await metric(client, "inference_in_flight") == 2

            await eventually(both_admitted, "the second request to be admitted")
            refused = await client.post(INFER_JSON_ROUTE, json=body)
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
            assert refused.json()["error"] == {
                "type": "queue_full",
                "stage": "queue",
                "message": refused.json()["error"]["message"],
            }
            batch = await client.post(INFER_BATCH_ROUTE, json={"items": [body]})
            assert batch.status_code == 200 and batch.json()["items"][0]["status"] == 429
            runner.gate.set()
            assert [(await t).status_code for t in (first, second)] == [200, 200]
            assert (await client.post(INFER_JSON_ROUTE, json=body)).status_code == 200  # room again

    run(main())


def test_past_its_deadline_a_request_gets_504_and_never_runs(stack_settings, fruit_weights, fruit_object):
    runner = GatedFruitRunner(str(fruit_weights))
    settings = settings_for(stack_settings, fruit_weights, request_timeout_ms=400, max_batch_size=1)

    async def main():
        async with serving(settings, runner) as client:
            await wait_until_ready(client)
            passes_before = await metric(client, "inference_batch_size_count")
            runner.gate.clear()
            runner.in_forward.clear()
            body = {"bucket": fruit_object, "key": "defect.jpg"}
            held = asyncio.create_task(client.post(INFER_JSON_ROUTE, json=body))  # runs, but finishes too late
            await asyncio.to_thread(runner.in_forward.wait, 30)
            queued = await client.post(INFER_JSON_ROUTE, json=body)  # waits behind it and times out there
            assert queued.status_code == 504
            assert queued.json()["error"]["type"] == "timeout" and queued.json()["error"]["stage"] == "infer"
            assert "infer stage" in queued.json()["error"]["message"]
            late = await held
            assert late.status_code == 504  # a late answer is not given
            runner.gate.set()

            async def held_pass_done() -> bool:
                return await metric(client, "inference_batch_size_count") == passes_before + 1

            await eventually(held_pass_done, "the held forward pass to finish")  # the queued one never runs
            fresh = await client.post(INFER_JSON_ROUTE, json=body)
            assert fresh.status_code == 200 and fresh.json()["label"] == "defect"
            assert await metric(client, "inference_batch_size_count") == passes_before + 2

    run(main())


def test_a_runner_exception_fails_only_its_own_item(stack_settings, fruit_weights, fruit_object):
    runner = GatedFruitRunner(str(fruit_weights))
    settings = settings_for(stack_settings, fruit_weights, max_batch_size=8, max_batch_delay_ms=200)

    async def main():
        async with serving(settings, runner) as client:
            await wait_until_ready(client)
            items = [
                {"bucket": fruit_object, "key": "clean.jpg"},
                {"bucket": fruit_object, "key": "defect.jpg", "extra": {"explode": True}},
                {"bucket": fruit_object, "key": "defect.jpg"},
            ]
            response = await client.post(INFER_BATCH_ROUTE, json={"items": items})
            assert response.status_code == 200
            ok1, bad, ok2 = response.json()["items"]
            assert ok1["ok"] and ok1["result"]["label"] == "clean"
            assert ok2["ok"] and ok2["result"]["label"] == "defect"
            assert bad == {
                "ok": False,
                "status": 500,
                "error": {
                    "type": "runner_error",
                    "stage": "infer",
                    "message": "the fruit runner failed on this image (see the service log)",
                },
            }
            alone = await client.post(INFER_JSON_ROUTE, json=items[1])
            assert alone.status_code == 500 and alone.json()["error"]["type"] == "runner_error"
            assert (await client.get(HEALTHZ_ROUTE)).status_code == 200  # and the service carries on

    run(main())


def test_a_bearer_token_guards_the_infer_routes_only(stack_settings, fruit_weights, fruit_object):
    settings = settings_for(stack_settings, fruit_weights, auth_token="s3cret")

    async def main():
        async with serving(settings) as client:
            await wait_until_ready(client)  # /readyz is open
            body = {"bucket": fruit_object, "key": "clean.jpg"}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                refused = await client.post(INFER_JSON_ROUTE, json=body, headers=headers)
                assert refused.status_code == 401, headers
                assert refused.headers["WWW-Authenticate"] == "Bearer"
                assert refused.json()["error"]["type"] == "unauthorized"
                batch = await client.post(INFER_BATCH_ROUTE, json={"items": [body]}, headers=headers)
                assert batch.status_code == 401
            good = {"Authorization": "Bearer s3cret"}
            assert (await client.post(INFER_JSON_ROUTE, json=body, headers=good)).status_code == 200
            assert (await client.post(INFER_BATCH_ROUTE, json={"items": [body]}, headers=good)).status_code == 200
            for open_route in (HEALTHZ_ROUTE, READYZ_ROUTE, METRICS_ROUTE):
                assert (await client.get(open_route)).status_code == 200

    run(main())


def test_an_unknown_team_refuses_to_start_naming_the_known_ones(stack_settings, fruit_weights):
    async def main():
        app = create_app(settings_for(stack_settings, fruit_weights, team="bananas"))
        async with app.router.lifespan_context(app):
            pass

    # membership, not the exact list: `imagery new-team` adds teams and must never break the suite
    with pytest.raises(UnknownTeam, match=r"known teams: .*\bfruit\b") as err:
        run(main())
    assert "resnet50" in str(err.value)


def test_the_resnet50_team_serves_through_the_same_path(stack_settings, tmp_path, minio, bucket, fruit_images):
    import subprocess
    import sys

    weights = tmp_path / "resnet50.pt"
    subprocess.run([sys.executable, "-m", "adapters.resnet50_weights", "--out", str(weights)], check=True)
    put(minio, bucket, "a.jpg", fruit_images.clean)
    settings = settings_for(
        stack_settings, weights, team="resnet50", max_batch_size=2, allowed_buckets=bucket
    )  # the test bucket is named for the fruit team

    async def main():
        async with serving(settings) as client:
            ready = await wait_until_ready(client, timeout_s=120)
            assert (ready["team"], ready["model_name"]) == ("resnet50", "resnet50")
            response = await client.post(INFER_JSON_ROUTE, json={"bucket": bucket, "key": "a.jpg"})
            assert response.status_code == 200, response.text
            return response.json()

    result = run(main())
    assert result["team"] == "resnet50" and len(result["top5"]) == 5
    assert result["label"] == result["top5"][0]["label"]  # random-init weights: any class, but consistent
