"""The dispatcher's pure logic: classifying answers, backoff, the circuit breaker, records, config, client."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from schemas import DeadLetter, DispatcherIdentity, ErrorEnvelope, InferRequest, InferenceResult, topics
from schemas import decode_image_messages
from streaming.dispatch.client import Failure, InferenceClient, Success, service_base_url
from streaming.dispatch.config import parse_args
from streaming.dispatch.outcome import Verdict, classify_exception, classify_status
from streaming.dispatch.records import KafkaInput, build_dead_letter, build_result, message_id
from streaming.dispatch.retry import CircuitBreaker, RetryPolicy

IDENTITY = DispatcherIdentity(job="http-dispatcher-fruit/0", group_id="g", host="h")
RESPONSE = {"label": "defect", "score": 0.9, "confidence": 0.9, "latency_ms_model": 1.5, "team": "fruit",
            "bucket": "b-1", "key": "a.jpg", "model_name": "fruit_cls", "batch_size": 4, "spots": 3,
            "timings": {"fetch_ms": 1, "decode_ms": 2, "queue_ms": 3, "infer_ms": 4, "total_ms": 10}}


def err(status: int, type_: str = "x", stage: str | None = None) -> dict:
    return {"error": {"type": type_, "message": "m", **({"stage": stage} if stage else {})}}


@pytest.mark.parametrize("status, verdict, stage", [
    (200, Verdict.SUCCESS, ""),
    (404, Verdict.PERMANENT, "fetch"),
    (413, Verdict.PERMANENT, "fetch"),
    (415, Verdict.PERMANENT, "decode"),
    (422, Verdict.PERMANENT, "validate"),
    (401, Verdict.PERMANENT, "http"),
    (408, Verdict.RETRYABLE, "timeout"),
    (429, Verdict.RETRYABLE, "http"),
    (500, Verdict.RETRYABLE, "infer"),
    (502, Verdict.RETRYABLE, "http"),
    (504, Verdict.RETRYABLE, "timeout"),
    (503, Verdict.OUTAGE, "http"),
])
def test_status_classification(status, verdict, stage):
    body = RESPONSE if status == 200 else err(status)
    outcome = classify_status(status, body)
    assert (outcome.verdict, outcome.stage) == (verdict, stage)


def test_service_stage_wins_over_status_guess():
    assert classify_status(404, err(404, "no_such_bucket", "fetch")).type == "no_such_bucket"
    assert classify_status(500, err(500, "runner_error", "decode")).stage == "decode"
    assert classify_status(200, ["not", "a", "dict"]).verdict is Verdict.RETRYABLE


def test_transport_errors():
    assert classify_exception(httpx.ConnectError("refused")).verdict is Verdict.OUTAGE
    assert classify_exception(httpx.ReadError("reset by peer")).verdict is Verdict.OUTAGE
    timeout = classify_exception(httpx.ReadTimeout("slow"))
    assert (timeout.verdict, timeout.stage) == (Verdict.RETRYABLE, "timeout")


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
        answers = iter([False, False, True])
        breaker = CircuitBreaker(lambda: asyncio.sleep(0, next(answers)), min_pause_s=0.01, max_pause_s=0.02)
        breaker.trip()
        breaker.trip()  # tripping an open breaker is a no-op
        assert breaker.is_open and breaker.opened_count == 1
        await asyncio.wait_for(breaker.wait_closed(), 2)
        assert not breaker.is_open
    asyncio.run(scenario())


def test_message_id_is_stable_and_distinct_per_image():
    record = KafkaInput(value=b"{}", key=None, topic="t", partition=2, offset=7)
    msg = decode_image_messages(b'{"bucket":"abc","key":"k"}')[0]
    assert message_id(msg, record, 0) == "t-2-7" and message_id(msg, record, 1) == "t-2-7#1"
    named = decode_image_messages(b'{"bucket":"abc","key":"k","id":"p-1"}')[0]
    assert message_id(named, record, 0) == "p-1"


def test_result_merges_identity_timings_and_echo():
    record = KafkaInput(value=b"", key=b"key-1", topic="imagery.new.fruit", partition=0, offset=5, timestamp_ms=1000)
    msg = decode_image_messages(b'{"bucket":"b-1","key":"a.jpg","camera":"c","publish_ts_ms":900,"site":"n"}')[0]
    out = build_result(msg, record, 0, "fruit", RESPONSE, http_ms=12.5, attempts=2, now_ms=1500)
    result = InferenceResult.model_validate_json(out.value)
    assert not out.dlq and out.key == b"key-1"
    assert (result.label, result.camera, result.attempts, result.e2e_ms) == ("defect", "c", 2, 600.0)
    assert result.source.offset == 5 and result.echo == {"site": "n"}
    assert json.loads(out.value)["spots"] == 3  # the runner's own fields ride along


def test_dead_letter_keeps_original_bytes_and_mirrors_headers():
    raw = b"\xff\x00 not utf8"
    record = KafkaInput(value=raw, key=b"k", topic="in", partition=1, offset=9, timestamp_ms=5,
                        headers={"trace": b"abc"})
    error = ErrorEnvelope(stage="fetch", type="object_not_found", message="no such key", http_status=404,
                          retryable=False, attempts=1)
    out = build_dead_letter(record, "fruit", error, IDENTITY, now_ms=10)
    letter = DeadLetter.model_validate_json(out.value)
    assert out.dlq and letter.original_value() == raw and letter.original_value_text is None
    assert letter.original_key() == b"k" and letter.source.partition == 1
    assert out.headers[topics.HEADER_STAGE] == b"fetch" and out.headers[topics.HEADER_HTTP_STATUS] == b"404"
    assert out.headers[topics.HEADER_OFFSET] == b"9" and out.headers["trace"] == b"abc"


def test_config_from_seed_args_and_environment():
    cfg = parse_args(["--team", "fruit", "--parallelism", "3"], env={"HTTP_URL": "http://svc:8000/infer_json",
                                                                     "ATTEMPTS": "7"})
    assert (cfg.input_topic, cfg.output_topic, cfg.dlq_topic) == (
        "imagery.new.fruit", "inference.results.fruit", "dlq.inference.http")
    assert (cfg.group_id, cfg.parallelism, cfg.attempts, cfg.http_url) == (
        "http-dispatcher-fruit", 3, 7, "http://svc:8000/infer_json")
    assert cfg.connector_jars is None
    assert parse_args(["--team", "x", "--connector-jars", ""], env={}).connector_jars == ()
    with pytest.raises(SystemExit):
        parse_args([], env={})
    with pytest.raises(SystemExit):
        parse_args(["--team", "x", "--delivery-guarantee", "maybe"], env={})


def test_base_url_from_seed_url():
    assert service_base_url("http://svc:8000/infer_json") == "http://svc:8000"
    assert service_base_url("http://svc:8000/") == "http://svc:8000"


def run_client(handler, **kwargs):
    async def go():
        client = InferenceClient("http://svc/infer_json", policy=RetryPolicy(attempts=3, base_ms=1, max_ms=2),
                                 transport=httpx.MockTransport(handler), **kwargs)
        try:
            return await asyncio.gather(*(client.infer(InferRequest(bucket="abc", key=f"k{i}")) for i in range(4))), client
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
            if request.url.path == "/readyz":
                return httpx.Response(503, json=err(503, "not_ready"))
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=RESPONSE if request.url.path == "/infer_json" else {"ready": True})
    results, client = run_client(handler)
    assert all(isinstance(r, Success) and r.attempts == 1 for r in results)
    assert client.breaker.opened_count >= 1


def test_client_batches_items_and_splits_per_item_outcomes():
    bodies = []

    def handler(request):
        items = json.loads(request.content)["items"]
        bodies.append(len(items))
        return httpx.Response(200, json={"items": [
            {"ok": True, "result": RESPONSE} if it["key"] != "k2" else
            {"ok": False, "status": 404, "error": {"type": "object_not_found", "message": "gone"}}
            for it in items]})
    results, _ = run_client(handler, items_per_request=4, max_batch_wait_ms=50)
    assert bodies == [4]
    assert [type(r).__name__ for r in results] == ["Success", "Success", "Failure", "Success"]
    assert results[2].outcome.verdict is Verdict.PERMANENT and results[2].outcome.stage == "fetch"
