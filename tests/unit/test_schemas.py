"""The wire contracts: validation rules, S3 event decoding, and the generated JSON Schema files."""

from __future__ import annotations

import json

import pytest

from schemas import ImageMessage, InvalidMessage, decode_image_messages, generate


def one(raw: bytes | str) -> ImageMessage:
    messages = decode_image_messages(raw)
    assert len(messages) == 1
    return messages[0]


def test_plain_message_keeps_unknown_fields():
    msg = one(b'{"bucket": "imagery-hot", "key": "a/b.jpg", "camera": "c1", "publish_ts_ms": 5, "site": "north"}')
    assert (msg.bucket, msg.key, msg.camera, msg.publish_ts_ms) == ("imagery-hot", "a/b.jpg", "c1", 5)
    assert msg.extra_fields() == {"site": "north"}
    assert json.loads(msg.model_dump_json())["site"] == "north"


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"", b"{"])
def test_not_json_is_a_parse_error(raw):
    with pytest.raises(InvalidMessage) as err:
        decode_image_messages(raw)
    assert err.value.stage == "parse"


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"key": "a.jpg"}, "bucket"),
        ({"bucket": "imagery-hot"}, "key"),
        ({"bucket": "Imagery", "key": "a.jpg"}, "bucket"),
        ({"bucket": "ab", "key": "a.jpg"}, "bucket"),
        ({"bucket": "a" * 64, "key": "a.jpg"}, "bucket"),
        ({"bucket": "my..bucket", "key": "a.jpg"}, "bucket"),
        ({"bucket": "192.168.1.1", "key": "a.jpg"}, "IP"),
        ({"bucket": "xn--bucket", "key": "a.jpg"}, "reserved"),
        ({"bucket": "imagery-hot", "key": ""}, "empty"),
        ({"bucket": "imagery-hot", "key": "/abs.jpg"}, "start with '/'"),
        ({"bucket": "imagery-hot", "key": "a/../etc/passwd"}, ".."),
        ({"bucket": "imagery-hot", "key": "k" * 1025}, "1024"),
        ({"bucket": "imagery-hot", "key": "é" * 513}, "1024"),
        ({"bucket": "imagery-hot", "key": "a.jpg", "publish_ts_ms": -1}, "publish_ts_ms"),
        ([1, 2], "JSON object"),
        # names MinIO refuses (each answered 503 or 500 by the service before, and stalled the pipeline)
        ({"bucket": "minio", "key": "a.jpg"}, "reserved by MinIO"),
        ({"bucket": "imagery-hot", "key": "a\u0000b.jpg"}, "NUL"),
        ({"bucket": "imagery-hot", "key": "a//b.jpg"}, "'//'"),
        ({"bucket": "imagery-hot", "key": "./a.jpg"}, "'.' or '..'"),
        ({"bucket": "imagery-hot", "key": "a/ . /b.jpg"}, "'.' or '..'"),
        ({"bucket": "imagery-hot", "key": "a\\..\\b.jpg"}, "'.' or '..'"),
        ({"bucket": "imagery-hot", "key": "a/" + "x" * 256}, "255 bytes"),
        ({"bucket": "imagery-hot", "key": "   "}, "whitespace"),
        ({"bucket": "imagery-hot", "key": "folder/"}, "end with '/'"),
        ({"bucket": "imagery-hot", "key": "a\ud800.jpg"}, "surrogate"),
        ({"bucket": "imagery-hot", "key": "a.jpg", "id": "\ud800"}, "surrogate"),
        ({"bucket": "imagery-hot", "key": "a.jpg", "note": {"\udfff": 1}}, "surrogate"),
        ({"bucket": "imagery-hot", "key": "a.jpg", "deep": json.loads("[" * 40 + "]" * 40)}, "deeper than"),
        ({"Records": [{"s3": {"bucket": {"name": "abc"}, "object": {"key": "k"}}}] * 101}, "at most 100"),
    ],
)
def test_invalid_fields_are_validate_errors_naming_the_field(doc, fragment):
    with pytest.raises(InvalidMessage) as err:
        decode_image_messages(json.dumps(doc))  # a lone surrogate goes over the wire as a JSON escape
    assert err.value.stage == "validate"
    assert fragment in err.value.message


def test_nesting_beyond_the_parser_is_a_parse_error_not_a_crash():
    for raw in ("[" * 100_000, '{"bucket": "abc", "key": "k", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        with pytest.raises(InvalidMessage) as err:
            decode_image_messages(raw)
        assert err.value.stage == "parse"


def test_key_limits_are_inclusive():
    longest = "/".join(["k" * 255] * 3 + ["k" * 254, "k"])  # 1024 bytes, segments of at most 255
    assert one(json.dumps({"bucket": "abc", "key": longest})).key == longest
    assert one(json.dumps({"bucket": "a.b-c", "key": "x/..y/z"})).key == "x/..y/z"


def test_minio_event_notification_is_read_and_key_unescaped():
    event = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "imagery-hot/fruit/a b+c.jpg",
        "Records": [
            {
                "eventName": "s3:ObjectCreated:Put",
                "eventTime": "2026-11-22T10:00:00.000Z",
                "s3": {"bucket": {"name": "imagery-hot"}, "object": {"key": "fruit%2Fa+b%2Bc.jpg", "size": 10}},
            }
        ],
    }
    msg = one(json.dumps(event))
    assert (msg.bucket, msg.key) == ("imagery-hot", "fruit/a b+c.jpg")
    assert msg.extra_fields()["s3_event"] == "s3:ObjectCreated:Put"


def test_event_without_usable_records_is_a_validate_error():
    events: list[dict[str, list]] = [{"Records": []}, {"Records": [{"s3": {}}]}]
    for doc in events:
        with pytest.raises(InvalidMessage) as err:
            decode_image_messages(json.dumps(doc))
        assert err.value.stage == "validate"


def test_schema_files_match_models():
    stale = [
        stem
        for stem, model in generate.CONTRACTS.items()
        if not generate.schema_path(stem).exists() or generate.schema_path(stem).read_text() != generate.render(model)
    ]
    assert not stale, f"run `make schemas`: these *.schema.json files drifted from the models: {stale}"


def test_schema_check_detects_drift(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "HERE", tmp_path)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    (tmp_path / "image_message.schema.json").write_text("{}")
    assert generate.main(["--check"]) == 1


def test_extra_must_be_an_object_and_is_echoed():
    msg = one(b'{"bucket": "imagery-hot", "key": "a.jpg", "extra": {"min_score": 0.5}, "site": "n"}')
    assert msg.extra == {"min_score": 0.5}
    assert msg.extra_fields() == {"site": "n", "extra": {"min_score": 0.5}}
    with pytest.raises(InvalidMessage) as err:
        one(b'{"bucket": "imagery-hot", "key": "a.jpg", "extra": "min_score=0.5"}')
    assert err.value.stage == "validate" and "extra" in err.value.message


@pytest.mark.parametrize(
    "result",
    [
        {"detections": [{"label": "spot", "score": 0.9, "box": [0, 0, 4, 4]}], "count": 1},  # a detector's
        {"mask_rle": [0, 5, 3], "classes": ["bg", "rot"]},  # a segmenter's
        {
            "label": "clean",
            "score": 1,
            "confidence": 0.5,
            "latency_ms_model": 2.0,
            "probabilities": {},
        },  # a classifier's
        {},
    ],
)
def test_a_runner_may_answer_with_any_json_object(result):
    from schemas.inference_api import check_runner_output

    assert check_runner_output(result) is None


@pytest.mark.parametrize(
    "result, fragment",
    [
        ([{"label": "x"}], "list, not a dict"),
        ({"label": 3}, "'label' is int"),
        ({"score": "0.9"}, "'score' is str"),
        ({"confidence": True}, "'confidence' is bool"),
        ({"latency_ms_model": [1]}, "'latency_ms_model' is list"),
    ],
)
def test_the_recommended_keys_are_checked_when_present(result, fragment):
    from schemas.inference_api import check_runner_output

    assert fragment in (check_runner_output(result) or "")
