"""Inspecting and replaying the DLQ through the real broker."""

from __future__ import annotations

import os

import pytest

from imagery import kafka_io
from imagery.dlq import DlqEntry, OriginalGone, plan, read_dlq, replay, replayed
from schemas import DispatcherIdentity, ErrorEnvelope, Stage, topics
from streaming.dispatch.records import KafkaInput, build_dead_letter
from tests.conftest import unique

pytestmark = pytest.mark.integration


def test_replay_republishes_original_bytes_key_and_headers_with_a_count(bootstrap, new_topic):
    dlq, target = new_topic("dlq"), new_topic("replayed")
    identity = DispatcherIdentity(job="j", group_id="g", host="h")
    letters = []
    stages_and_teams: list[tuple[Stage, str]] = [("fetch", "fruit"), ("parse", "fruit"), ("fetch", "other")]
    for i, (stage, team) in enumerate(stages_and_teams):
        record = KafkaInput(
            value=b"\x00raw" + bytes([i]),
            key=f"k{i}".encode(),
            topic="imagery.new.x",
            partition=0,
            offset=i,
            headers={"trace": b"t%d" % i},
        )
        error = ErrorEnvelope(stage=stage, type="t", message="m", retryable=False, attempts=1)
        out = build_dead_letter(record, team, error, identity, now_ms=1)
        letters.append((out.key, out.value, list(out.headers.items())))
    for key, value, headers in letters:
        kafka_io.produce(bootstrap, dlq, [(key, value)], headers=headers)
    kafka_io.produce(bootstrap, dlq, [b"not a dead letter"])  # other tools may share the topic

    fetch_fruit = read_dlq(bootstrap, dlq, team="fruit", stage="fetch")
    assert [e.letter.source.offset for e in fetch_fruit] == [0]
    assert len(read_dlq(bootstrap, dlq)) == 3

    assert replay(bootstrap, fetch_fruit, target) == 1
    (again,) = kafka_io.read_topic(bootstrap, target, until=1, timeout_s=20)
    assert (again.key, again.value) == (b"k0", b"\x00raw\x00")
    assert again.headers["trace"] == b"t0" and again.headers[topics.HEADER_REPLAY_COUNT] == b"1"
    assert not any(h.startswith(topics.HEADER_PREFIX) for h in again.headers)


def test_a_letter_that_kept_only_a_prefix_replays_the_whole_record_from_the_input_topic(bootstrap, new_topic):
    source, dlq, target = new_topic("in"), new_topic("dlq"), new_topic("replayed")
    value = os.urandom(900_000)  # base64 of it would not fit in one record beside the rest of the letter
    kafka_io.produce(bootstrap, source, [(b"key", value, [("trace", b"t")])])
    (record,) = kafka_io.read_topic(bootstrap, source, until=1, timeout_s=20)
    error = ErrorEnvelope(stage="fetch", type="t", message="m", retryable=False, attempts=1)
    out = build_dead_letter(
        KafkaInput(
            value=record.value, key=record.key, topic=source, partition=0, offset=record.offset, headers=record.headers
        ),
        "fruit",
        error,
        DispatcherIdentity(job="j", group_id="g", host="h"),
        now_ms=1,
    )
    kafka_io.produce(bootstrap, dlq, [(out.key, out.value, list(out.headers.items()))])
    (entry,) = read_dlq(bootstrap, dlq)
    assert not entry.letter.complete and len(entry.letter.original_value()) < len(value)

    assert replay(bootstrap, [entry], target) == 1
    (again,) = kafka_io.read_topic(bootstrap, target, until=1, timeout_s=20)
    assert (again.key, again.value, again.headers["trace"]) == (b"key", value, b"t")
    assert again.headers[topics.HEADER_REPLAY_COUNT] == b"1"

    gone = entry.letter.model_copy(update={"source": entry.letter.source.model_copy(update={"offset": 7})})
    with pytest.raises(OriginalGone):
        replay(bootstrap, [DlqEntry(entry.offset, entry.partition, gone, entry.headers)], target)


def dead_letters(
    bootstrap: str,
    dlq: str,
    values: list[bytes],
    headers: dict[str, bytes] | None = None,
    stage: Stage = "fetch",
    keyed: bool = False,
) -> None:
    identity = DispatcherIdentity(job="j", group_id="g", host="h")
    error = ErrorEnvelope(stage=stage, type="object_not_found", message="m", retryable=False, attempts=1)
    outs = [
        build_dead_letter(
            KafkaInput(
                value=v,
                key=f"k{i}".encode() if keyed else None,
                topic="imagery.new.x",
                partition=0,
                offset=i,
                headers=headers or {},
            ),
            "fruit",
            error,
            identity,
            now_ms=1,
        )
        for i, v in enumerate(values)
    ]
    kafka_io.produce(bootstrap, dlq, [(o.key, o.value, list(o.headers.items())) for o in outs])


def test_running_the_same_replay_twice_replays_each_entry_once(bootstrap, new_topic):
    dlq, target = new_topic("dlq"), new_topic("replayed")
    ledger = topics.replay_ledger(dlq)
    try:
        dead_letters(bootstrap, dlq, [b"a", b"b"])
        first = plan(read_dlq(bootstrap, dlq), replayed(bootstrap, dlq))
        assert len(first.go) == 2 and replay(bootstrap, first.go, target, dlq) == 2
        second = plan(read_dlq(bootstrap, dlq), replayed(bootstrap, dlq))
        assert not second.go and len(second.skipped) == 2
        assert all(why.startswith("replayed before") for _, why in second.skipped)
        again = plan(read_dlq(bootstrap, dlq), replayed(bootstrap, dlq), again=True)
        assert len(again.go) == 2
        assert sorted(r.value or b"" for r in kafka_io.read_to_end(bootstrap, target).records) == [b"a", b"b"]
    finally:
        kafka_io.delete_topics(bootstrap, [ledger])


def test_a_record_replayed_too_often_is_not_replayed_again(bootstrap, new_topic):
    dlq = new_topic("dlq")
    dead_letters(bootstrap, dlq, [b"x"], headers={topics.HEADER_REPLAY_COUNT: b"3"})
    (entry,) = read_dlq(bootstrap, dlq)
    assert not plan([entry], set()).go
    assert plan([entry], set(), max_replays=4).go == [entry]


def test_a_dry_run_lists_what_would_go_and_replays_nothing(bootstrap, new_topic):
    from typer.testing import CliRunner

    from imagery.cli import app

    dlq, target = new_topic("dlq"), new_topic("replayed")
    dead_letters(bootstrap, dlq, [b'{"bucket": "fruit-x", "key": "a.jpg"}'])
    result = CliRunner().invoke(
        app,
        ["dlq", "replay", "--bootstrap", bootstrap, "--topic", dlq, "--to", target, "--dry-run"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "1 to replay (dry run)" in result.output and "would replay" in result.output
    assert not kafka_io.read_to_end(bootstrap, target).records
    assert not replayed(bootstrap, dlq)


def cli(*args: str):
    from typer.testing import CliRunner

    from imagery.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def consumer_groups(bootstrap: str) -> set[str]:
    client = kafka_io.admin(bootstrap)  # kept referenced: a collected client drops its pending requests
    listed = client.list_consumer_groups(request_timeout=10).result(10)
    return {group.group_id for group in listed.valid}


def test_a_large_dlq_on_several_partitions_is_read_whole_without_a_consumer_group(bootstrap, new_topic):
    dlq = new_topic("dlq", partitions=3)
    values = [b'{"bucket": "fruit-x", "key": "%d.jpg"}' % i for i in range(3000)]
    dead_letters(bootstrap, dlq, values, keyed=True)  # keyed: spread over the partitions
    groups_before = consumer_groups(bootstrap)

    entries = read_dlq(bootstrap, dlq)
    assert sorted(e.letter.original_value() for e in entries) == sorted(values)
    assert {e.partition for e in entries} == {0, 1, 2}
    # no consumer group: nothing waits for a group rebalance (group.initial.rebalance.delay.ms), nothing is left
    assert consumer_groups(bootstrap) - groups_before == set()
    ambiguous = cli("dlq", "replay", "--bootstrap", bootstrap, "--topic", dlq, "--offset", "5", "--dry-run")
    assert ambiguous.exit_code == 1 and "3 partitions; give PARTITION:OFFSET" in ambiguous.output


def test_a_read_ends_at_the_last_stable_offset_past_transaction_markers(bootstrap, new_topic):

    topic = new_topic("ledger")
    kafka_io.produce_in_transaction(bootstrap, [(topic, b"k1", b"v1", []), (topic, b"k2", b"v2", [])])
    open_txn = kafka_io.producer(bootstrap, config={"transactional.id": unique("test-open-txn")})
    open_txn.init_transactions(10)
    open_txn.begin_transaction()
    open_txn.produce(topic, value=b"not committed yet")
    open_txn.flush(10)
    try:  # the committed records, at once: neither the marker nor the open transaction holds the read up
        read = kafka_io.read_to_end(bootstrap, topic, stall_timeout_s=5)
        assert [r.value for r in read.records] == [b"v1", b"v2"]
    finally:
        open_txn.abort_transaction(10)


def test_replay_replays_only_what_is_asked(bootstrap, new_topic):
    dlq, target = new_topic("dlq"), new_topic("replayed")
    dead_letters(bootstrap, dlq, [b"a", b"b"], stage="fetch")
    dead_letters(bootstrap, dlq, [b"c"], stage="decode")
    common = ("--bootstrap", bootstrap, "--topic", dlq, "--to", target)
    try:
        refused = cli("dlq", "replay", *common)
        assert refused.exit_code == 1 and "--all" in refused.output
        unknown = cli("dlq", "replay", *common, "--stage", "fetc")
        assert unknown.exit_code == 2 and "'fetc' is not one of" in unknown.output
        assert not kafka_io.read_to_end(bootstrap, target).records and not replayed(bootstrap, dlq)

        dry = cli("dlq", "replay", *common, "--stage", "decode", "--dry-run")
        assert dry.exit_code == 0 and "1 to replay (dry run)" in dry.output and "0:2" in dry.output
        assert not kafka_io.read_to_end(bootstrap, target).records

        one = cli("dlq", "replay", *common, "--offset", "0:1")
        assert one.exit_code == 0 and "replayed 1 dead letters" in one.output, one.output
        assert [r.value for r in kafka_io.read_to_end(bootstrap, target).records] == [b"b"]

        everything = cli("dlq", "replay", *common, "--all")
        assert everything.exit_code == 0 and "replayed 2 dead letters" in everything.output, everything.output
        # the entry replayed by --offset is skipped (replayed before); the other two go
        assert sorted(r.value or b"" for r in kafka_io.read_to_end(bootstrap, target).records) == [b"a", b"b", b"c"]
    finally:
        kafka_io.delete_topics(bootstrap, [topics.replay_ledger(dlq)])


def test_show_with_a_group_shows_what_is_new_since_its_last_run(bootstrap, new_topic):
    dlq, group = new_topic("dlq"), f"ops-{new_topic('g')}"
    dead_letters(bootstrap, dlq, [b"a", b"b"])
    try:
        first = cli("dlq", "show", "--bootstrap", bootstrap, "--topic", dlq, "--group-id", group)
        assert first.exit_code == 0 and "2 dead letters" in first.output, first.output
        assert (
            "0 dead letters" in cli("dlq", "show", "--bootstrap", bootstrap, "--topic", dlq, "--group-id", group).output
        )
        dead_letters(bootstrap, dlq, [b"c"])
        assert (
            "1 dead letters" in cli("dlq", "show", "--bootstrap", bootstrap, "--topic", dlq, "--group-id", group).output
        )
        assert "3 dead letters" in cli("dlq", "show", "--bootstrap", bootstrap, "--topic", dlq).output  # no group
    finally:
        client = kafka_io.admin(bootstrap)  # kept referenced: a collected client drops its pending requests
        client.delete_consumer_groups([group], request_timeout=10)[group].result(10)


def test_show_names_a_dlq_topic_that_does_not_exist_and_creates_none(bootstrap):
    name = unique("dlq.no-such-topic")
    for _ in range(2):  # the second time too: the first did not create it (the broker auto-creates topics)
        result = cli("dlq", "show", "--bootstrap", bootstrap, "--topic", name)
        assert result.exit_code == 1 and f"no topic '{name}'" in result.output, result.output
