"""`imagery audit` against the real broker: results and dead letters are built as the dispatcher builds them
(streaming/dispatch/records.py) for input records in a real topic, with a loss, a duplicate, a replay, an S3 event of
several images and records past the group's committed offsets; the job itself runs in tests/e2e/test_audit.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from imagery import kafka_io
from imagery.audit import Unit, audit, repair
from imagery.cli import app
from imagery.dlq import read_dlq, replay
from schemas import DispatcherIdentity, ErrorEnvelope, Stage, decode_image_messages, topics
from streaming.dispatch.records import KafkaInput, build_dead_letter, build_result
from tests.conftest import unique

pytestmark = pytest.mark.integration

TEAM = "fruit"
IDENTITY = DispatcherIdentity(job="audit-test/0", group_id="g", host="h")
RESPONSE = {
    "label": "clean",
    "score": 0.9,
    "confidence": 0.9,
    "latency_ms_model": 1.0,
    "model_name": "m",
    "batch_size": 1,
    "timings": {"fetch_ms": 1, "decode_ms": 1, "queue_ms": 1, "infer_ms": 1, "total_ms": 4},
}


class Job:
    """Plays the dispatcher's part by hand: reads input records and writes what the dispatcher would."""

    def __init__(self, bootstrap: str, inp: str, out: str, dlq: str, group: str) -> None:
        self.bootstrap, self.inp, self.out, self.dlq, self.group = bootstrap, inp, out, dlq, group

    def records(self) -> list[kafka_io.Record]:
        return kafka_io.read_to_end(self.bootstrap, self.inp).records

    def result(self, rec: kafka_io.Record, index: int = 0, event_record: int | None = None) -> None:
        record = as_input(rec)
        msg = decode_image_messages(rec.value or b"")[index]
        out = build_result(msg, record, index, TEAM, RESPONSE, 1.0, 1, 1, event_record)
        kafka_io.produce(self.bootstrap, self.out, [(out.key, out.value)])

    def dead(self, rec: kafka_io.Record, stage: Stage = "fetch", event_record: int | None = None) -> None:
        error = ErrorEnvelope(stage=stage, type="t", message="m", retryable=False, attempts=1)
        out = build_dead_letter(as_input(rec), TEAM, error, IDENTITY, 1, event_record=event_record)
        kafka_io.produce(self.bootstrap, self.dlq, [(out.key, out.value, list(out.headers.items()))])

    def commit(self) -> None:
        """Commit the group's offsets at the input's end: everything so far is the job's to have handled."""
        ends = {p: m.high for p, m in kafka_io.watermarks(self.bootstrap, self.inp).items()}
        kafka_io.commit_offsets(self.bootstrap, self.inp, self.group, ends)

    def audit(self):
        return audit(
            self.bootstrap, TEAM, input_topic=self.inp, output_topic=self.out, dlq_topic=self.dlq, group_id=self.group
        )


def as_input(rec: kafka_io.Record) -> KafkaInput:
    return KafkaInput(
        value=rec.value,
        key=rec.key,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        timestamp_ms=rec.timestamp_ms,
        headers=rec.headers,
    )


def s3_event(*keys: str) -> bytes:
    return json.dumps({"Records": [{"s3": {"bucket": {"name": "b-1"}, "object": {"key": k}}} for k in keys]}).encode()


@pytest.fixture
def job(bootstrap, new_topic) -> Job:
    return Job(bootstrap, new_topic("in"), new_topic("out"), new_topic("dlq"), unique("g"))


def test_audit_finds_the_lost_and_the_doubled_follows_replays_and_repairs_once(job: Job):
    plain = [
        (f"k{i}".encode(), json.dumps({"id": f"m{i}", "bucket": "b-1", "key": f"{i}.jpg"}).encode()) for i in range(7)
    ]
    kafka_io.produce(job.bootstrap, job.inp, [*plain, (b"bad", b"not json"), (b"ev", s3_event("a", "b", "c"))])
    records = job.records()
    by_key = {r.key: r for r in records}
    for i in (0, 1, 2, 3, 4):
        job.result(by_key[f"k{i}".encode()])
    job.result(by_key[b"k4"])  # doubled
    job.dead(by_key[b"k5"])  # a dead letter: landed, and replayed below
    job.dead(by_key[b"bad"], stage="parse")  # the whole record, no image in it
    job.result(by_key[b"ev"], 0, 0)
    job.dead(by_key[b"ev"], event_record=1)
    job.result(by_key[b"ev"], 2, 2)
    # k6 and k7 never land: k6 before the committed offsets (missing), k7 after them (not yet the job's)
    job.commit()
    kafka_io.produce(job.bootstrap, job.inp, [(b"k7", b'{"bucket": "b-1", "key": "late.jpg"}')])
    by_key = {r.key: r for r in job.records()}

    report = job.audit()
    k = {key: Unit(job.inp, r.partition, r.offset) for key, r in by_key.items()}
    assert report.records == 9 and report.units == 11  # the event's three images, the rest one each
    assert report.missing == [k[b"k6"]]
    assert [u for u, _ in report.duplicated] == [k[b"k4"]]
    assert report.results == 8 and report.dead_letters == 3 and not report.pending

    # the operator replays k5's dead letter: pending until the job handles the replay, then one journey
    (letter,) = [
        e
        for e in read_dlq(job.bootstrap, job.dlq)
        if e.letter.source.offset == by_key[b"k5"].offset and e.letter.error.stage == "fetch"
    ]
    replay(job.bootstrap, [letter], dlq_topic=job.dlq)
    report = job.audit()
    assert report.pending == [k[b"k5"]] and report.missing == [k[b"k6"]]
    (replayed,) = [r for r in job.records() if r.headers.get(topics.HEADER_REPLAY_OF)]
    job.result(replayed)
    job.commit()
    report = job.audit()
    assert not report.pending and report.replayed == 1 and report.missing == [k[b"k6"], k[b"k7"]]

    # --repair re-publishes the missing once: a second repair finds them pending, not missing
    assert repair(job.bootstrap, report) == [k[b"k6"], k[b"k7"]]
    again = job.audit()
    assert not again.missing and again.pending == [k[b"k6"], k[b"k7"]]
    assert repair(job.bootstrap, again) == []
    for rec in job.records():
        if rec.headers.get(topics.HEADER_REPLAY_OF) and (rec.partition, rec.offset) != (
            replayed.partition,
            replayed.offset,
        ):
            job.result(rec)
    job.commit()
    final = job.audit()
    assert not final.missing and not final.pending and final.replayed == 3
    assert [u for u, _ in final.duplicated] == [k[b"k4"]], "the injected duplicate stays found"


def test_an_outcome_in_an_open_transaction_is_pending_not_missing(job: Job):

    kafka_io.produce(job.bootstrap, job.inp, [(b"k", b'{"bucket": "b-1", "key": "a.jpg"}')])
    (rec,) = job.records()
    job.commit()
    out = build_result(decode_image_messages(rec.value or b"")[0], as_input(rec), 0, TEAM, RESPONSE, 1.0, 1, 1)
    producer = kafka_io.producer(job.bootstrap, config={"transactional.id": unique("audit-open")})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(job.out, value=out.value, key=out.key)
    producer.flush(30)
    try:
        assert job.audit().pending == [Unit(job.inp, 0, rec.offset)]
    finally:
        producer.commit_transaction(30)
    report = job.audit()
    assert report.clean and not report.pending and report.results == 1


def test_the_cli_prints_the_verdict_as_json_and_exits_1_on_a_loss(job: Job):
    kafka_io.produce(
        job.bootstrap,
        job.inp,
        [(b"a", b'{"bucket": "b-1", "key": "a.jpg"}'), (b"b", b'{"bucket": "b-1", "key": "b.jpg"}')],
    )
    first, _ = job.records()
    job.result(first)
    job.commit()
    args = [
        "audit",
        "--team",
        TEAM,
        "--bootstrap",
        job.bootstrap,
        "--input-topic",
        job.inp,
        "--output-topic",
        job.out,
        "--dlq-topic",
        job.dlq,
        "--group-id",
        job.group,
    ]
    lost = CliRunner().invoke(app, [*args, "--json"])
    assert lost.exit_code == 1, lost.output
    body = json.loads(lost.stdout[lost.stdout.index("{") :])
    assert body["missing"] == [f"{job.inp}-0@1"] and body["results"] == 1 and not body["clean"]
    table = CliRunner().invoke(app, [*args, "--from", "0:0", "--to", "0:1"])
    assert table.exit_code == 0 and "clean" in table.stdout, table.output
