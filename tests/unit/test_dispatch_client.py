"""The inference client: retries, outages waited out, batches split per item, misconfiguration paused on, and
answers that are not the service's (streaming/dispatch/client.py)."""

from __future__ import annotations

import asyncio
import json

import httpx

from schemas import INFER_BATCH_ROUTE, INFER_JSON_ROUTE, READYZ_ROUTE, InferRequest
from streaming.dispatch.client import Failure, InferenceClient, Success, service_base_url
from streaming.dispatch.outcome import Verdict
from streaming.dispatch.retry import CircuitBreaker, RetryPolicy
from tests.unit.standin_service import RESPONSE, MockService, err


def test_base_url_from_seed_url():
    assert service_base_url(f"http://svc:8000{INFER_JSON_ROUTE}") == "http://svc:8000"
    assert service_base_url("http://svc:8000/") == "http://svc:8000"


def run_client(handler, **kwargs):
    async def go():
        client = InferenceClient(
            f"http://svc{INFER_JSON_ROUTE}",
            policy=RetryPolicy(attempts=3, base_ms=1, max_ms=2),
            transport=MockService(handler),
            **kwargs,
        )
        try:
            requests = [InferRequest(bucket="abc", key=f"k{i}") for i in range(4)]
            return await asyncio.gather(*(client.infer(r) for r in requests)), client
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_client_retries_then_gives_up_with_attempts_counted():
    calls = []

    def handler(request):
        calls.append(request.url.path)
        return httpx.Response(500, json=err(500, "boom", "infer"))

    results, _ = run_client(handler)
    assert all(isinstance(r, Failure) and r.attempts == 3 and r.outcome.type == "boom" for r in results)
    assert len(calls) == 12


def test_client_waits_out_an_outage_without_spending_budget():
    state = {"down": 6}  # the service comes back after six refused connections or failed probes

    def handler(request):
        if state["down"] > 0:
            state["down"] -= 1
            if request.url.path == READYZ_ROUTE:
                return httpx.Response(503, json=err(503, "not_ready"))
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=RESPONSE if request.url.path == INFER_JSON_ROUTE else {"ready": True})

    results, client = run_client(handler)
    assert all(isinstance(r, Success) and r.attempts == 1 for r in results)
    assert client.breaker.opened_count >= 1


def test_client_batches_items_and_splits_per_item_outcomes():
    bodies = []

    def handler(request):
        items = json.loads(request.content)["items"]
        bodies.append(len(items))
        return httpx.Response(
            200,
            json={
                "items": [
                    {"ok": True, "result": RESPONSE}
                    if it["key"] != "k2"
                    else {"ok": False, "status": 404, "error": {"type": "object_not_found", "message": "gone"}}
                    for it in items
                ]
            },
        )

    results, _ = run_client(handler, items_per_request=4, max_batch_wait_ms=50)
    assert bodies == [4]
    assert [type(r).__name__ for r in results] == ["Success", "Success", "Failure", "Success"]
    assert results[2].outcome.verdict is Verdict.PERMANENT and results[2].outcome.stage == "fetch"


def test_misconfiguration_pauses_every_call_until_fixed_and_condemns_nothing():
    state = {"token_ok": False, "probes": 0}

    def handler(request):
        if request.headers.get("authorization") != "Bearer right" and not state["token_ok"]:
            if request.content == b"{}":
                state["probes"] += 1
                if state["probes"] == 3:
                    state["token_ok"] = True  # the operator fixed the service's AUTH_TOKEN meanwhile
            return httpx.Response(401, json=err(401, "unauthorized", "validate"))
        if request.content == b"{}":
            return httpx.Response(422, json=err(422, "bad_request", "validate"))
        return httpx.Response(200, json=RESPONSE)

    async def go():
        client = InferenceClient(
            f"http://svc{INFER_JSON_ROUTE}",
            policy=RetryPolicy(attempts=2, base_ms=1, max_ms=2),
            transport=MockService(handler),
            auth_token="wrong",
        )
        client.breaker = CircuitBreaker(client._accepts_us, min_pause_s=0.01, max_pause_s=0.02)
        try:
            requests = [InferRequest(bucket="abc", key=f"k{i}") for i in range(5)]
            return await asyncio.gather(*(client.infer(r) for r in requests)), client
        finally:
            await client.aclose()

    results, client = asyncio.run(go())
    assert all(isinstance(r, Success) and r.attempts == 1 for r in results)
    assert state["probes"] >= 3 and client.breaker.opened_count == 1


def test_a_batch_refused_for_its_size_is_sent_again_item_by_item_and_later_batches_shrink():
    sizes = []

    def handler(request):
        if request.url.path == INFER_BATCH_ROUTE:
            items = json.loads(request.content)["items"]
            sizes.append(len(items))
            if len(items) > 2:
                return httpx.Response(422, json=err(422, "too_many_items", "validate"))
            return httpx.Response(200, json={"items": [{"ok": True, "result": RESPONSE} for _ in items]})
        return httpx.Response(200, json=RESPONSE)

    results, client = run_client(handler, items_per_request=4, max_batch_wait_ms=50)
    assert all(isinstance(r, Success) for r in results)
    assert sizes[0] == 4 and client.items_per_request == 2


def test_a_503_for_one_message_while_the_service_is_ready_ends_in_the_dlq_and_spares_the_rest():
    def handler(request):
        if request.url.path == READYZ_ROUTE:
            return httpx.Response(200, json={"ready": True})
        if json.loads(request.content)["key"] == "k2":
            return httpx.Response(503, json=err(503, "storage_unavailable", "fetch"))
        return httpx.Response(200, json=RESPONSE)

    async def go():
        client = InferenceClient(
            f"http://svc{INFER_JSON_ROUTE}",
            policy=RetryPolicy(attempts=3, base_ms=1, max_ms=2),
            transport=MockService(handler),
        )
        client.breaker = CircuitBreaker(client._ready, min_pause_s=0.01, max_pause_s=0.02)
        try:
            return await asyncio.gather(*(client.infer(InferRequest(bucket="abc", key=f"k{i}")) for i in range(4)))
        finally:
            await client.aclose()

    results = asyncio.run(go())
    assert [type(r).__name__ for r in results] == ["Success", "Success", "Failure", "Success"]
    assert results[2].outcome.verdict is Verdict.RETRYABLE and results[2].attempts == 3


def test_the_client_the_pool_and_the_retry_policy_default_as_the_settings_do():
    import inspect

    from streaming.dispatch.config import DispatcherConfig
    from streaming.dispatch.http import KeepAlivePool

    fields, client = DispatcherConfig.model_fields, inspect.signature(InferenceClient).parameters
    assert (RetryPolicy().attempts, RetryPolicy().base_ms, RetryPolicy().max_ms) == (
        fields["attempts"].default,
        fields["backoff_ms"].default,
        fields["backoff_max_ms"].default,
    )
    for name in ("attempt_timeout_s", "items_per_request", "max_batch_wait_ms"):
        assert client[name].default == fields[name].default
    assert (
        inspect.signature(KeepAlivePool.request).parameters["answer_timeout_s"].default
        == fields["attempt_timeout_s"].default
    )


def test_a_detector_s_answer_without_the_seed_keys_is_a_result():
    detector = {k: v for k, v in RESPONSE.items() if k not in ("label", "score", "confidence", "latency_ms_model")}
    detector["detections"] = [{"label": "spot", "score": 0.8, "box": [1, 2, 3, 4]}]
    for items in (1, 4):  # /infer_json and /infer_batch

        def handler(request):
            if request.url.path == INFER_BATCH_ROUTE:
                n = len(json.loads(request.content)["items"])
                return httpx.Response(200, json={"items": [{"ok": True, "result": detector}] * n})
            return httpx.Response(200, json=detector)

        client = InferenceClient(
            f"http://svc{INFER_JSON_ROUTE}", transport=MockService(handler), items_per_request=items
        )
        outcome = asyncio.run(client.infer(InferRequest(bucket="b-1", key="a.jpg")))
        assert isinstance(outcome, Success) and outcome.response["detections"][0]["box"] == [1, 2, 3, 4]


def test_a_2xx_without_the_service_s_own_keys_is_not_the_service():
    from streaming.dispatch.client import _result_or_misconfigured
    from streaming.dispatch.outcome import Outcome

    judged = _result_or_misconfigured(Outcome(Verdict.SUCCESS, "", "", "", 200, body={"label": "x"}))
    assert judged.verdict is Verdict.MISCONFIGURED and judged.type == "not_the_service"
    detector = {k: v for k, v in RESPONSE.items() if k != "label"}
    assert _result_or_misconfigured(Outcome(Verdict.SUCCESS, "", "", "", 200, body=detector)).verdict is Verdict.SUCCESS
