"""One Kafka record through the dispatcher: hostile records, failures nobody foresaw, S3 events and replays each end
as results or dead letters, never as an exception (streaming/dispatch/handler.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from schemas import INFER_JSON_ROUTE, DeadLetter, InferenceResult, topics
from streaming.dispatch.client import InferenceClient
from streaming.dispatch.handler import Dispatcher
from streaming.dispatch.records import KafkaInput
from streaming.dispatch.retry import RetryPolicy
from tests.unit.standin_service import IDENTITY, RESPONSE, MockService, err


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
    assert sorted(r.event_record for r in results if r.event_record is not None) == [0, 2], (
        "each result says which record of the event it is"
    )

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


def test_the_message_s_extra_reaches_the_service_and_is_echoed():
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=RESPONSE)

    (out,) = handle(dispatcher_with(handler), b'{"bucket": "b-1", "key": "a.jpg", "extra": {"min_score": 0.5}}')
    assert sent == [{"bucket": "b-1", "key": "a.jpg", "extra": {"min_score": 0.5}}]
    assert InferenceResult.model_validate_json(out.value).echo == {"extra": {"min_score": 0.5}}
