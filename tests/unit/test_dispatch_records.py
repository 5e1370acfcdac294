"""What the dispatcher writes: message ids, results, and dead letters that always fit in one Kafka record
(streaming/dispatch/records.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from schemas import DeadLetter, ErrorEnvelope, InferenceResult, decode_image_messages, limits, topics
from streaming.dispatch.records import KafkaInput, build_dead_letter, build_result, message_id
from tests.unit.standin_service import IDENTITY, RESPONSE


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
