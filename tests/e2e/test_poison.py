"""No poison pill: hostile messages among good ones, through the whole pipeline on real parts.

The job runs with `--restart-strategy none`: a single record that fails the job ends the process, which the
collector notices at once, so "0 restarts" is asserted, not hoped for.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest

from imagery import kafka_io
from imagery.local.inference_service import InferenceService
from imagery.pipeline_run import DispatcherProcess, collect
from schemas import DeadLetter
from services.inference_http.settings import service_environment
from tests.conftest import remove_bucket, unique
from tests.e2e.test_dispatcher import JOB_TIMEOUT_S, dispatcher_args
from tests.helpers import put, wait_for
from tests.hostile_inputs import progressive_jpeg_with_scans
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.e2e


def poison_corpus(bucket: str, other_bucket: str, run: str) -> list[tuple[str, str, bytes | None, bytes, list]]:
    """(kind, expected DLQ stage, key, value, headers) of one record per way a message used to hurt."""

    def msg(key: str, bucket_: str = bucket, **extra) -> bytes:
        return json.dumps({"id": f"{run}-{key[:20]}", "bucket": bucket_, "key": key, **extra}).encode()

    return [
        ("oversized value naming a missing object", "validate", None, msg("gone.jpg", pad="x" * 500_000), []),
        ("oversized Kafka key", "validate", b"k" * 300_000, msg("clean.jpg"), []),
        ("oversized headers", "validate", None, msg("clean.jpg"), [("h", b"v" * 300_000)]),
        (
            "JSON nested 100,000 deep",
            "parse",
            None,
            b'{"bucket": "'
            + bucket.encode()
            + b'", "key": "clean.jpg", "x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            [],
        ),
        (
            "lone surrogate in id",
            "validate",
            None,
            b'{"id": "\\ud800", "bucket": "' + bucket.encode() + b'", "key": "clean.jpg"}',
            [],
        ),
        (
            "lone surrogate in an extra field",
            "validate",
            None,
            b'{"bucket": "' + bucket.encode() + b'", "key": "clean.jpg", "note": "a\\udfffb"}',
            [],
        ),
        ("NUL in key", "validate", None, msg("a\x00b.jpg"), []),
        ("'//' in key", "validate", None, msg("a//b.jpg"), []),
        ("'./' segment", "validate", None, msg("./clean.jpg"), []),
        ("backslash '..'", "validate", None, msg("a\\..\\clean.jpg"), []),
        ("key segment of 256 bytes", "validate", None, msg("s" * 256), []),
        ("whitespace-only key", "validate", None, msg("   "), []),
        ("reserved bucket 'minio'", "validate", None, msg("clean.jpg", bucket_="minio"), []),
        (
            "S3 event with 101 records",
            "validate",
            None,
            json.dumps(
                {"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": "clean.jpg"}}}] * 101}
            ).encode(),
            [],
        ),
        ("another team's bucket", "fetch", None, msg("clean.jpg", bucket_=other_bucket), []),
        ("missing object", "fetch", None, msg("nowhere.jpg"), []),
        ("JPEG with 3,000 progressive scans", "decode", None, msg("bomb.jpg"), []),
        ("not an image", "decode", None, msg("notes.jpg"), []),
        ("not JSON", "parse", None, f"not json {run}".encode(), []),
    ]


def test_a_poison_stream_drains_with_nothing_lost_duplicated_or_restarted(
    stack_settings, bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    other = unique("orchard")  # another team's bucket, with a real image in it
    minio.make_bucket(other)
    put(minio, other, "clean.jpg", fruit_images.clean)
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    put(minio, bucket, "defect.jpg", fruit_images.defect)
    put(minio, bucket, "bomb.jpg", progressive_jpeg_with_scans(3000))
    put(minio, bucket, "notes.jpg", b"this is text, not a JPEG")
    poison = poison_corpus(bucket, other, run)
    # good and poison interleaved, one record at a time, so offsets tell every record apart afterwards
    records: list[tuple[tuple[str, str], bytes | None, bytes, list]] = []  # ((kind, stage), key, value, headers)
    expected: dict[int, tuple[str, str]] = {}
    for i in range(2 * len(poison)):
        kind = ("clean", "defect")[i % 2]
        good = {
            "id": f"{run}-good-{i}",
            "bucket": bucket,
            "key": f"{kind}.jpg",
            "publish_ts_ms": int(time.time() * 1000),
        }
        records.append((("good", kind), None, json.dumps(good).encode(), []))
        if i % 2:
            name, stage, key, value, headers = poison[i // 2]
            records.append(((name, stage), key, value, headers))
    for offset, (what, key, value, headers) in enumerate(records):
        kafka_io.produce(bootstrap, inp, [(key, value, headers)])
        expected[offset] = what
    assert kafka_io.end_offsets(bootstrap, inp) == {0: len(records)}

    args = dispatcher_args(
        bootstrap,
        "fruit",
        fruit_service,
        inp,
        out,
        dlq,
        "--delivery-guarantee",
        "exactly-once",
        "--items-per-request",
        "4",
        "--restart-strategy",
        "none",
    )
    try:
        with DispatcherProcess(args, tmp_path / "dispatcher.log") as job:
            got = collect(
                bootstrap,
                out,
                dlq,
                lambda c: c.result_count + len(c.dead) >= len(records),
                JOB_TIMEOUT_S,
                watch=job.check_alive,
            )
            job.check_alive()  # never failed: with no restart strategy, one failure would have ended it
            # a fixed window kept on purpose: this test runs no audit, so only this look sees a result or dead letter
            # written after the drain (2.5 checkpoint intervals of 2 s)
            late = collect(
                bootstrap, out, dlq, lambda c: c.result_count + len(c.dead) > len(records), 5, watch=job.check_alive
            )
    finally:
        remove_bucket(minio, other)

    landed: Counter[int] = Counter()
    table = []
    for result in got.results.values():
        landed[result["source"]["offset"]] += 1
        assert expected[result["source"]["offset"]] == ("good", result["label"]), result
    for letter in got.dead:
        landed[letter.source.offset] += 1
        name, stage = expected[letter.source.offset]
        assert name != "good", letter.error
        assert letter.error.stage == stage, (name, letter.error)
        table.append((name, "DLQ", letter.error.stage, letter.error.type, letter.error.http_status))
    assert got.result_count == len(got.results), "no result twice"
    assert late.result_count + len(late.dead) == len(records), "nothing more after the drain"
    assert sorted(landed) == sorted(expected) and set(landed.values()) == {1}, "each record in exactly one place"
    assert all(DeadLetter.model_validate_json(letter.model_dump_json()) for letter in got.dead)
    print("\n| input kind | landed in | stage | type | HTTP |\n|---|---|---|---|---|")
    print(f"| {len(got.results)} good images | results | - | - | 200 |")
    for row in sorted(table, key=lambda r: ("parse", "validate", "fetch", "decode").index(r[2])):
        print("| " + " | ".join(str(c if c is not None else "-") for c in row) + " |")


def test_a_wrong_token_pauses_the_job_and_the_fix_resumes_it_with_nothing_in_the_dlq(
    stack_settings, bootstrap, new_topic, minio, bucket, fruit_weights, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    messages = [{"id": f"{run}-{i}", "bucket": bucket, "key": "clean.jpg"} for i in range(6)]
    kafka_io.produce(bootstrap, inp, [json.dumps(m).encode() for m in messages])
    service = InferenceService(
        stack_settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env={**FRUIT_SERVICE_ENV, **service_environment(auth_token="the-right-one")},
        log_path=tmp_path / "service.log",
    ).start()
    log = tmp_path / "dispatcher.log"
    try:
        with DispatcherProcess(
            dispatcher_args(
                bootstrap, "fruit", service, inp, out, dlq, "--auth-token", "stale", "--restart-strategy", "none"
            ),
            log,
        ) as job:
            wait_for(
                lambda: "pausing every call" in log.read_text(errors="replace"),
                "the job to log its pause",
                timeout_s=JOB_TIMEOUT_S,
                every_s=0.5,
                watch=job.check_alive,
            )
            assert "unauthorized" in log.read_text(errors="replace"), "the pause is logged, with its reason"
            paused = collect(bootstrap, out, dlq, lambda c: bool(c.results or c.dead), 8, watch=job.check_alive)
            assert not paused.results and not paused.dead, "a wrong token condemns no message"
            # the operator fixes the deployment: here the service is redeployed with the token the job has
            service.stop()
            service = InferenceService(
                stack_settings,
                team="fruit",
                weights_path=str(fruit_weights),
                port=service.port,
                env={**FRUIT_SERVICE_ENV, **service_environment(auth_token="stale")},
                log_path=tmp_path / "service.log",
            ).start()
            got = collect(
                bootstrap,
                out,
                dlq,
                lambda c: len(c.results) >= len(messages) or bool(c.dead),
                JOB_TIMEOUT_S,
                watch=job.check_alive,
            )
    finally:
        service.stop()
    assert sorted(got.results) == sorted(m["id"] for m in messages) and not got.dead
    assert "resuming after" in log.read_text(errors="replace")
