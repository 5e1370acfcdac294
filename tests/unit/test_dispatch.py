"""The dispatcher's pure logic: classifying answers, backoff, the circuit breaker, records, config, client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

import httpx
import pytest

from schemas import (
    INFER_BATCH_ROUTE,
    INFER_JSON_ROUTE,
    READYZ_ROUTE,
    DeadLetter,
    DispatcherIdentity,
    ErrorEnvelope,
    InferenceResult,
    InferRequest,
    decode_image_messages,
    limits,
    topics,
)
from streaming.dispatch.client import Failure, InferenceClient, Success, service_base_url
from streaming.dispatch.config import parse_args
from streaming.dispatch.handler import Dispatcher
from streaming.dispatch.http import Answer, ConnectFailed, ConnectionBroken, RequestTimedOut
from streaming.dispatch.outcome import Verdict, classify_exception, classify_status
from streaming.dispatch.records import KafkaInput, build_dead_letter, build_result, message_id
from streaming.dispatch.retry import CircuitBreaker, RetryPolicy


class MockService:
    """The client's transport, answered by an httpx.MockTransport handler (request in, response or exception out)."""

    def __init__(self, handler) -> None:
        self._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://svc")

    async def request(self, method: str, path: str, body: bytes = b"", answer_timeout_s: float = 30.0) -> Answer:
        try:
            response = await self._client.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise RequestTimedOut(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionBroken(str(exc)) from exc
        return Answer(response.status_code, response.content, dict(response.headers))

    async def aclose(self) -> None:
        await self._client.aclose()


IDENTITY = DispatcherIdentity(job="http-dispatcher-fruit/0", group_id="g", host="h")
RESPONSE = {
    "label": "defect",
    "score": 0.9,
    "confidence": 0.9,
    "latency_ms_model": 1.5,
    "team": "fruit",
    "bucket": "b-1",
    "key": "a.jpg",
    "model_name": "fruit_cls",
    "batch_size": 4,
    "spots": 3,
    "timings": {"fetch_ms": 1, "decode_ms": 2, "queue_ms": 3, "infer_ms": 4, "total_ms": 10},
}


def err(status: int, type_: str = "x", stage: str | None = None) -> dict:
    return {"error": {"type": type_, "message": "m", **({"stage": stage} if stage else {})}}


@pytest.mark.parametrize(
    "status, verdict, stage",
    [
        (200, Verdict.SUCCESS, ""),
        (404, Verdict.PERMANENT, "fetch"),
        (413, Verdict.PERMANENT, "fetch"),
        (415, Verdict.PERMANENT, "decode"),
        (422, Verdict.PERMANENT, "validate"),
        (401, Verdict.MISCONFIGURED, "http"),
        (408, Verdict.RETRYABLE, "timeout"),
        (429, Verdict.RETRYABLE, "http"),
        (500, Verdict.RETRYABLE, "infer"),
        (502, Verdict.RETRYABLE, "http"),
        (504, Verdict.RETRYABLE, "timeout"),
        (503, Verdict.OUTAGE, "http"),
    ],
)
def test_status_classification(status, verdict, stage):
    body = RESPONSE if status == 200 else err(status)
    outcome = classify_status(status, body)
    assert (outcome.verdict, outcome.stage) == (verdict, stage)


def test_service_stage_wins_over_status_guess():
    assert classify_status(404, err(404, "no_such_bucket", "fetch")).type == "no_such_bucket"
    assert classify_status(500, err(500, "runner_error", "decode")).stage == "decode"
    assert classify_status(200, ["not", "a", "dict"]).verdict is Verdict.MISCONFIGURED


def test_transport_errors():
    assert classify_exception(ConnectFailed("refused")).verdict is Verdict.OUTAGE
    assert classify_exception(ConnectionBroken("reset by peer")).verdict is Verdict.OUTAGE
    timeout = classify_exception(RequestTimedOut("slow"))
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
    record = KafkaInput(
        value=raw, key=b"k", topic="in", partition=1, offset=9, timestamp_ms=5, headers={"trace": b"abc"}
    )
    error = ErrorEnvelope(
        stage="fetch", type="object_not_found", message="no such key", http_status=404, retryable=False, attempts=1
    )
    out = build_dead_letter(record, "fruit", error, IDENTITY, now_ms=10)
    letter = DeadLetter.model_validate_json(out.value)
    assert out.dlq and letter.original_value() == raw and letter.original_value_text is None
    assert letter.original_key() == b"k" and letter.source.partition == 1
    assert out.headers[topics.HEADER_STAGE] == b"fetch" and out.headers[topics.HEADER_HTTP_STATUS] == b"404"
    assert out.headers[topics.HEADER_OFFSET] == b"9" and out.headers["trace"] == b"abc"


def test_config_from_seed_args_and_environment():
    cfg = parse_args(
        ["--team", "fruit", "--parallelism", "3"], env={"HTTP_URL": "http://svc:8000/infer_json", "ATTEMPTS": "7"}
    )
    assert (cfg.input_topic, cfg.output_topic, cfg.dlq_topic) == (
        "imagery.new.fruit",
        "inference.results.fruit",
        "dlq.inference.http",
    )
    assert (cfg.group_id, cfg.parallelism, cfg.attempts, cfg.http_url) == (
        "http-dispatcher-fruit",
        3,
        7,
        "http://svc:8000/infer_json",
    )
    assert cfg.connector_jars == ()
    assert parse_args(["--team", "x", "--connector-jars", ""], env={}).connector_jars == ()
    with pytest.raises(SystemExit):
        parse_args([], env={})
    with pytest.raises(SystemExit):
        parse_args(["--team", "x", "--delivery-guarantee", "maybe"], env={})


def test_each_job_identity_has_its_own_transactional_id_prefix_stable_across_restarts():
    base = ["--team", "fruit", "--delivery-guarantee", "exactly-once"]
    prod = parse_args(base, env={})
    assert prod.transactional_id_prefix("results") == parse_args(base, env={}).transactional_id_prefix("results")
    assert prod.transactional_id_prefix("results") != prod.transactional_id_prefix("dlq")
    assert prod.transactional_id_prefix("results").startswith("imagery-http-dispatcher-fruit-")
    # a canary or a staging job of the same team (same job name): another group, or other topics
    others = [
        parse_args([*base, *more], env={})
        for more in (
            ["--group-id", "canary"],
            ["--output-topic", "staging.results"],
            ["--input-topic", "staging.in"],
            ["--dlq-topic", "staging.dlq"],
        )
    ]
    prefixes = {cfg.transactional_id_prefix("results") for cfg in [prod, *others]}
    assert len(prefixes) == 1 + len(others)


def test_every_setting_is_one_field_with_its_own_flag_and_variable():
    from streaming.dispatch.config import DispatcherConfig, variable

    names = [variable(name) for name in DispatcherConfig.model_fields]
    assert len(names) == len(set(names)) and all(f.description for f in DispatcherConfig.model_fields.values())
    env = {
        "TEAM": "fruit",
        "GROUP_SIZE": "8",
        "MAX_BATCH_WAIT_MS": "2.5",
        "CONNECTOR_JARS": "a.jar,b.jar",
        "IMAGERY_DETACHED": "1",
        "DELIVERY_GUARANTEE": "exactly-once",
        "AUTH_TOKEN": "",
    }
    cfg = parse_args([], env=env)
    assert (
        cfg.group_size,
        cfg.max_batch_wait_ms,
        cfg.connector_jars,
        cfg.detached,
        cfg.delivery_guarantee,
        cfg.auth_token,
    ) == (8, 2.5, ("a.jar", "b.jar"), True, "exactly-once", None)
    assert parse_args(["--group-size", "4"], env=env).group_size == 4  # a flag wins over the variable
    assert not parse_args(["--team", "x"], env={}).detached


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


# ---------------------------------------------------------------------------- poison pills (issue 7)

ERROR = ErrorEnvelope(
    stage="fetch", type="object_not_found", message="no such key", http_status=404, retryable=False, attempts=1
)


@pytest.mark.parametrize(
    "value, key, headers",
    [
        (b'{"bucket": "b-1", "key": "' + b"k" * 500_000 + b'"}', b"k", {}),  # text: once, not twice
        (b"x" * 3_000_000, b"k", {"trace": b"t"}),
        (bytes(range(256)) * 8_000, None, {}),  # binary
        ("é".encode() * 700_000, b"k" * 900_000, {"h": b"v" * 600_000}),  # key and headers alone are too large
        (b"\x00" * 400_000, None, {}),  # control characters would grow sixfold as JSON text: base64 instead
    ],
)
def test_every_dead_letter_fits_in_one_kafka_record(value, key, headers):
    record = KafkaInput(value=value, key=key, topic="in", partition=0, offset=3, headers=headers)
    out = build_dead_letter(record, "fruit", ERROR, IDENTITY, now_ms=1)
    letter = DeadLetter.model_validate_json(out.value)
    assert out.size_bytes <= limits.KAFKA_MAX_RECORD_BYTES - limits.RECORD_HEADROOM_BYTES
    assert letter.original_value_bytes == len(value)
    assert letter.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert (letter.original_value_text is None) != (letter.original_value_b64 is None), "the original once"
    assert value.startswith(letter.original_value())
    assert letter.complete == (letter.original_value() == value)
    if not letter.complete:
        assert "value_tail" in letter.omitted and len(letter.original_value()) > 100_000  # a useful prefix


def test_a_dead_letter_that_fits_keeps_everything():
    value = b'{"bucket": "b-1", "key": "' + b"k" * 200_000 + b'"}'
    record = KafkaInput(value=value, key=b"key", topic="in", partition=0, offset=3, headers={"trace": b"t"})
    out = build_dead_letter(record, "fruit", ERROR, IDENTITY, now_ms=1)
    letter = DeadLetter.model_validate_json(out.value)
    assert letter.complete and not letter.omitted and letter.original_value() == value
    assert letter.original_value_text is not None and out.key == b"key" and out.headers["trace"] == b"t"
    assert len(out.value) < 1.2 * len(value)


def dispatcher_with(handler, **kwargs) -> Dispatcher:
    client = InferenceClient(
        f"http://svc{INFER_JSON_ROUTE}",
        policy=RetryPolicy(attempts=2, base_ms=1, max_ms=2),
        transport=MockService(handler),
    )
    return Dispatcher(client, "fruit", IDENTITY, **kwargs)


def handle(
    dispatcher: Dispatcher, value: bytes, key: bytes | None = None, headers: dict[str, bytes] | None = None
) -> list:
    record = KafkaInput(value=value, key=key, topic="in", partition=0, offset=1, headers=headers or {})
    return asyncio.run(dispatcher.handle(record))


def only_letter(outputs: list) -> DeadLetter:
    (out,) = outputs
    assert out.dlq
    return DeadLetter.model_validate_json(out.value)


def never_called(request):
    raise AssertionError(f"no HTTP call expected, got {request.url}")


@pytest.mark.parametrize(
    "value, key, headers, stage, type_",
    [
        (
            b'{"bucket": "b-1", "key": "a.jpg", "note": "' + b"n" * 300_000 + b'"}',
            None,
            None,
            "validate",
            "message_too_large",
        ),
        (b'{"bucket": "b-1", "key": "a.jpg"}', b"k" * 300_000, None, "validate", "message_too_large"),
        (b'{"bucket": "b-1", "key": "a.jpg"}', None, {"h": b"v" * 300_000}, "validate", "message_too_large"),
        (b"[" * 200_000, None, None, "parse", "invalid_parse"),
        (b'{"bucket": "b-1", "key": "a.jpg", "id": "\\ud800"}', None, None, "validate", "invalid_validate"),
        (b'{"bucket": "b-1", "key": "a.jpg", "x": {"\\udbff": 1}}', None, None, "validate", "invalid_validate"),
    ],
)
def test_hostile_records_become_one_dead_letter_without_a_call(value, key, headers, stage, type_):
    letter = only_letter(handle(dispatcher_with(never_called), value, key, headers))
    assert (letter.error.stage, letter.error.type) == (stage, type_)


def test_a_failure_nobody_foresaw_is_one_dead_letter_not_an_exception():
    def answers_a_result_that_breaks_the_contract(request):
        return httpx.Response(200, json={**RESPONSE, "timings": "not a dict"})

    letter = only_letter(
        handle(dispatcher_with(answers_a_result_that_breaks_the_contract), b'{"bucket": "b-1", "key": "a.jpg"}')
    )
    assert letter.error.stage == "dispatch" and letter.error.retryable


def test_a_result_too_large_for_kafka_is_a_dead_letter():
    def huge(request):
        return httpx.Response(200, json={**RESPONSE, "embedding": [0.123456789] * 200_000})

    letter = only_letter(handle(dispatcher_with(huge), b'{"bucket": "b-1", "key": "a.jpg"}'))
    assert (letter.error.stage, letter.error.type) == ("infer", "result_too_large")


@pytest.mark.parametrize(
    "status, body, verdict",
    [
        (401, err(401, "unauthorized", "validate"), Verdict.MISCONFIGURED),  # a wrong AUTH_TOKEN
        (404, err(404, "route_not_found", "validate"), Verdict.MISCONFIGURED),  # a wrong path in HTTP_URL
        (405, err(405, "method_not_allowed"), Verdict.MISCONFIGURED),
        (404, "<html>not found</html>", Verdict.MISCONFIGURED),  # not the service at all
        (403, None, Verdict.MISCONFIGURED),  # a proxy refuses
        (301, None, Verdict.MISCONFIGURED),
        (200, {"status": "ok"}, Verdict.SUCCESS),  # classify_status; the client then checks it is a result
        (404, err(404, "object_not_found", "fetch"), Verdict.PERMANENT),
        (403, err(403, "bucket_not_allowed", "fetch"), Verdict.PERMANENT),
        (422, err(422, "storage_refused", "fetch"), Verdict.PERMANENT),
        (502, err(502, "storage_error", "fetch"), Verdict.RETRYABLE),
        (502, None, Verdict.OUTAGE),  # a gateway in front of a service that is down
        (504, None, Verdict.OUTAGE),
    ],
)
def test_answers_that_say_the_deployment_is_wrong_are_not_the_message_s_fault(status, body, verdict):
    assert classify_status(status, body).verdict is verdict


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


# ---------------------------------------------------------------------------- replays (issue 8)


def s3_event(*keys: str) -> bytes:
    return json.dumps({"Records": [{"s3": {"bucket": {"name": "b-1"}, "object": {"key": k}}} for k in keys]}).encode()


def test_each_record_of_an_s3_event_has_its_own_id_and_its_own_dead_letter():
    asked = []

    def handler(request):
        key = json.loads(request.content)["key"]
        asked.append(key)
        if key == "gone.jpg":
            return httpx.Response(404, json=err(404, "object_not_found", "fetch"))
        return httpx.Response(200, json=RESPONSE)

    outputs = handle(dispatcher_with(handler), s3_event("a.jpg", "gone.jpg", "c.jpg"))
    results = [InferenceResult.model_validate_json(o.value) for o in outputs if not o.dlq]
    (letter,) = [DeadLetter.model_validate_json(o.value) for o in outputs if o.dlq]
    assert sorted(r.id for r in results) == ["in-0-1", "in-0-1#2"] and letter.event_record == 1
    assert sorted(r.event_record for r in results) == [0, 2], "each result says which record of the event it is"

    asked.clear()  # the replay of that dead letter: the same event, one record, the first record's identity
    record = KafkaInput(
        value=s3_event("a.jpg", "gone.jpg", "c.jpg"),
        key=None,
        topic="in",
        partition=0,
        offset=9,
        headers={topics.HEADER_REPLAY_OF: b"in-0-1", topics.HEADER_REPLAY_RECORD: b"1"},
    )
    (out,) = asyncio.run(dispatcher_with(handler).handle(record))
    assert asked == ["gone.jpg"] and DeadLetter.model_validate_json(out.value).event_record == 1


def test_a_replayed_message_keeps_its_id():
    record = KafkaInput(
        value=b'{"bucket": "b-1", "key": "a.jpg"}',
        key=None,
        topic="in",
        partition=0,
        offset=42,
        headers={topics.HEADER_REPLAY_OF: b"in-0-7"},
    )
    (out,) = asyncio.run(dispatcher_with(lambda request: httpx.Response(200, json=RESPONSE)).handle(record))
    assert InferenceResult.model_validate_json(out.value).id == "in-0-7"


def test_settings_that_cannot_work_are_refused_at_start():
    with pytest.raises(SystemExit):  # a transaction open longer than the broker allows
        parse_args(
            ["--team", "x", "--delivery-guarantee", "exactly-once", "--checkpoint-interval-ms", "600000"], env={}
        )
    with pytest.raises(SystemExit):  # results and dead letters of such messages would not fit a record
        parse_args(["--team", "x", "--max-message-bytes", "400000"], env={})
    cfg = parse_args(["--team", "x", "--checkpoint-dir", "/var/ckpt"], env={})
    assert (cfg.checkpoint_dir, cfg.resume) == ("file:///var/ckpt", "latest")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (
            ["--attempt-timeout-s", "-1"],
            {},
            "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) '-1': Input should be greater than 0",
        ),
        ([], {"ATTEMPT_TIMEOUT_S": "0"}, "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) '0'"),
        ([], {"REQUEST_TIMEOUT_S": "soon"}, "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) 'soon'"),
        (
            ["--starting-offsets", "newest"],
            {},
            "--starting-offsets (STARTING_OFFSETS) 'newest': Input should be 'group'",
        ),
        (["--restart-strategy", "always"], {}, "--restart-strategy (RESTART_STRATEGY) 'always'"),
        (["--capacity", "0"], {}, "--capacity (CAPACITY) '0'"),
        (["--backoff-ms", "-5"], {}, "--backoff-ms (BACKOFF_MS) '-5'"),
        (["--http-url", "svc:8000/infer_json"], {}, "--http-url (HTTP_URL) 'svc:8000/infer_json': must be an http"),
        ([], {"IMAGERY_DETACHED": "perhaps"}, "--detached (IMAGERY_DETACHED) 'perhaps'"),
        (["--prometheus-port", "high"], {}, "--prometheus-port (PROMETHEUS_PORT) 'high'"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_its_flag_and_variable(argv, env, named, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--team", "x", *argv], env=env)
    assert exited.value.code == 2 and named in capsys.readouterr().err


def test_the_attempt_timeout_s_former_names_are_still_read_and_the_settings_travel_to_the_workers():
    import pickle

    assert parse_args(["--team", "x", "--request-timeout-s", "3"], env={}).attempt_timeout_s == 3.0
    assert parse_args(["--team", "x"], env={"REQUEST_TIMEOUT_S": "4"}).attempt_timeout_s == 4.0
    assert parse_args(["--team", "x"], env={"REQUEST_TIMEOUT_S": "4", "ATTEMPT_TIMEOUT_S": "5"}).attempt_timeout_s == 5
    cfg = parse_args(["--team", "x", "--attempt-timeout-s", "6"], env={"ATTEMPT_TIMEOUT_S": "5"})
    assert cfg.attempt_timeout_s == 6.0 and pickle.loads(pickle.dumps(cfg)) == cfg  # pickled to PyFlink's workers


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


def test_the_message_s_extra_reaches_the_service_and_is_echoed():
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=RESPONSE)

    (out,) = handle(dispatcher_with(handler), b'{"bucket": "b-1", "key": "a.jpg", "extra": {"min_score": 0.5}}')
    assert sent == [{"bucket": "b-1", "key": "a.jpg", "extra": {"min_score": 0.5}}]
    assert InferenceResult.model_validate_json(out.value).echo == {"extra": {"min_score": 0.5}}


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
