"""Small Kafka helpers on confluent-kafka for the CLI, the demo, the benchmarks and the tests.

(The Flink job itself reads and writes Kafka through Flink's own connector, not through these.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from imagery.errors import ToolError
from schemas import limits

# librdkafka settings by their own names ({"linger.ms": 5}; some have underscores, like "log_level")
ClientConfig = Mapping[str, str | int | float | bool]
# Kafka record headers as the tooling writes them: (name, value) pairs, names may repeat
Headers = Sequence[tuple[str, bytes]]


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Connection:
    """A Kafka cluster and how to reach it: its bootstrap servers and the librdkafka settings its security needs
    (imagery/kafka_config.py makes them from the properties file). Printed, it is its bootstrap servers alone: the
    settings hold secrets."""

    bootstrap: str
    settings: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.bootstrap


# What every function here takes as "where Kafka is": bootstrap servers (a plain cluster), or a Connection
Target = str | Connection


def connection(target: Target) -> Connection:
    return target if isinstance(target, Connection) else Connection(target)


def _client_settings(
    target: Target, defaults: ClientConfig, config: ClientConfig | None
) -> dict[str, str | int | float | bool]:
    """The settings of one client: the target's servers and security over the defaults, the caller's on top."""
    kafka = connection(target)
    return {**defaults, "bootstrap.servers": kafka.bootstrap, **kafka.settings, **(config or {})}


# Every client here is built by `admin`, `producer` or `consumer`; `config` adds librdkafka settings to theirs.
def admin(bootstrap: Target, config: ClientConfig | None = None) -> AdminClient:
    return AdminClient(_client_settings(bootstrap, {}, config))


def producer(bootstrap: Target, config: ClientConfig | None = None) -> Producer:
    """A producer whose records may be as large as Kafka's 1 MiB (librdkafka's own default, 1,000,000, is below
    it, and the dispatcher's records are built to fit Kafka's limit)."""
    return Producer(_client_settings(bootstrap, {"message.max.bytes": limits.KAFKA_MAX_RECORD_BYTES}, config))


@contextmanager
def consumer(
    bootstrap: Target,
    *,
    group_id: str | None = None,
    read_committed: bool = True,
    from_earliest: bool = False,
    config: ClientConfig | None = None,
) -> Iterator[Consumer]:
    """A consumer that never commits on its own, closed on leaving the block.

    `group_id` None names a throwaway reader (the client requires one; `assign()` joins no group with it).
    `read_committed` reads only records of committed transactions (what a downstream consumer sees).
    `from_earliest` starts a subscription where the group has no committed offset at the topic's first record."""
    settings: dict[str, object] = {
        **_client_settings(bootstrap, {}, None),
        "group.id": group_id or f"imagery-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        **({"auto.offset.reset": "earliest"} if from_earliest else {}),
        **(config or {}),
    }
    client = Consumer(settings)
    try:
        yield client
    finally:
        client.close()


def create_topics(bootstrap: Target, names: Iterable[str], partitions: int = 1, timeout_s: float = 30.0) -> None:
    """Create topics, treating 'already exists' as success."""
    client = admin(bootstrap)  # kept referenced: a collected client cancels its pending futures
    futures = client.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=timeout_s,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaCallError(f"could not create topic {name}: {exc}") from exc


def delete_topics(bootstrap: Target, names: Iterable[str], timeout_s: float = 30.0) -> None:
    names = list(names)
    if not names:
        return
    client = admin(bootstrap)
    for fut in client.delete_topics(names, operation_timeout=timeout_s).values():
        try:
            fut.result(timeout_s)
        except KafkaException:
            pass  # already gone is fine for cleanup


def _wire(headers: Headers | None) -> list[tuple[str, str | bytes | None]] | None:
    return None if headers is None else list(headers)


def produce(
    bootstrap: Target,
    topic: str,
    values: Iterable[bytes | tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    headers: Headers | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Produce values, (key, value) pairs or (key, value, headers) triples; wait until every one is acknowledged."""
    client = producer(bootstrap, config={"enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []
    count = 0
    for item in values:
        if not isinstance(item, tuple):
            item = (None, item)
        key, value, item_headers = item if len(item) == 3 else (*item, headers)
        client.produce(
            topic,
            value=value,
            key=key,
            headers=_wire(item_headers),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
        client.poll(0)
        count += 1
    remaining = client.flush(timeout_s)
    if remaining or errors:
        raise KafkaCallError(f"produce to {topic}: {remaining} unacknowledged, errors: {errors[:3]}")
    return count


def produce_in_transaction(
    bootstrap: Target, records: Iterable[tuple[str, bytes | None, bytes, Headers]], timeout_s: float = 30.0
) -> int:
    """Produce (topic, key, value, headers) records in one Kafka transaction: all become visible, or none."""
    client = producer(bootstrap, config={"transactional.id": f"imagery-tools-{uuid.uuid4().hex}"})
    client.init_transactions(timeout_s)
    client.begin_transaction()
    count = 0
    try:
        for topic, key, value, headers in records:
            client.produce(topic, value=value, key=key, headers=_wire(headers))
            client.poll(0)
            count += 1
        client.commit_transaction(timeout_s)
    except BaseException:
        client.abort_transaction(timeout_s)
        raise
    return count


def _to_record(msg: Message) -> Record:
    """A consumed message (not an error event: those carry no topic, partition or offset) as a Record."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None, msg.error()
    ts_type, ts = msg.timestamp()
    headers: dict[str, bytes] = {}
    received = msg.headers() or []  # a list of pairs from a consumer (the type also allows a dict)
    for name, value in received.items() if isinstance(received, dict) else received:
        headers[name] = value.encode() if isinstance(value, str) else (value or b"")
    key = msg.key()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode() if isinstance(key, str) else key,
        value=msg.value(),
        headers=headers,
        timestamp_ms=ts if ts_type else None,
    )


class ReadOptions(TypedDict, total=False):
    """`iter_topic`'s options, for `read_topic` to pass on."""

    until: int | None
    timeout_s: float
    idle_s: float | None
    read_committed: bool


def read_topic(bootstrap: Target, topic: str, **options: Unpack[ReadOptions]) -> list[Record]:
    """Every record `iter_topic` reads, as a list."""
    return list(iter_topic(bootstrap, topic, **options))


def iter_topic(
    bootstrap: Target,
    topic: str,
    *,
    until: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float | None = None,
    read_committed: bool = True,
) -> Iterator[Record]:
    """Read a topic from the beginning, without a consumer group commit.

    Stops when `until` records were read, when nothing new arrived for `idle_s`, or at `timeout_s` (a deadline,
    not a sleep: the caller asserts on what was read).
    """
    with consumer(
        bootstrap,
        read_committed=read_committed,
        from_earliest=True,
        config={"topic.metadata.refresh.interval.ms": 1000},
    ) as reader:
        reader.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        n = 0
        while time.monotonic() < deadline and (until is None or n < until):
            if idle_s is not None and time.monotonic() - last > idle_s:
                break
            msg = reader.poll(0.2)
            if msg is None:
                continue
            if (error := msg.error()) is not None:
                if error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise KafkaCallError(f"reading {topic}: {error}")
            last = time.monotonic()
            n += 1
            yield _to_record(msg)


def read_record(bootstrap: Target, topic: str, partition: int, offset: int, timeout_s: float = 10.0) -> Record | None:
    """The record at topic/partition/offset, or None when it is gone (retention, compaction) or never was."""
    with consumer(bootstrap) as reader:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if not low <= offset < high:
            return None
        reader.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is None:
                continue
            if (error := msg.error()) is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                return None
            return _to_record(msg) if msg.offset() == offset else None
        return None


def end_offsets(bootstrap: Target, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """partition -> its high watermark (the next offset to be written); {} when there is no such topic (asked for
    through the admin client, so a broker that auto-creates topics does not create it)."""
    try:
        return _stable_end_offsets(bootstrap, topic, read_committed=False, timeout_s=timeout_s)
    except NoSuchTopic:
        return {}


class KafkaCallError(ToolError, RuntimeError):
    """A Kafka call of the tooling failed: a topic not created, records not acknowledged, a read refused (not
    authorized, say); the message names the topic and Kafka's own error."""


class NoSuchTopic(ToolError, LookupError):
    """The topic a read was asked for does not exist."""


class ReadStalled(ToolError, TimeoutError):
    """A bounded read got nothing for too long while some partitions were still short of their end offsets."""


@dataclass
class TopicRead:
    """Every record of a topic from its start (or a group's committed offsets) up to the end offsets taken when the
    read began, with those end offsets (what a group commits, so its next read starts after them)."""

    records: list[Record]
    end_offsets: dict[int, int]


def _partition_offsets(
    client: AdminClient, bootstrap: Target, topic: str, timeout_s: float, *specs: tuple[OffsetSpec, bool]
) -> list[dict[int, int]]:
    """For each (spec, read_committed) of `specs`, partition -> that offset of `topic`, from one metadata request.
    Raises NoSuchTopic."""
    # every topic's metadata, not the one topic's: asking for it by name creates it on a broker that auto-creates
    meta = client.list_topics(timeout=timeout_s)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        raise NoSuchTopic(f"there is no topic {topic!r} on {bootstrap}")
    answers = []
    for spec, read_committed in specs:
        level = IsolationLevel.READ_COMMITTED if read_committed else IsolationLevel.READ_UNCOMMITTED
        futures = client.list_offsets(
            {TopicPartition(topic, p): spec for p in meta.topics[topic].partitions},
            isolation_level=level,
            request_timeout=timeout_s,
        )
        answers.append({tp.partition: fut.result(timeout_s).offset for tp, fut in futures.items()})
    return answers


def _stable_end_offsets(bootstrap: Target, topic: str, read_committed: bool, timeout_s: float) -> dict[int, int]:
    """partition -> the offset a read stops at: the last stable offset under read_committed (records of open
    transactions after it are not readable yet), else the high watermark."""
    client = admin(bootstrap)  # kept referenced while its futures are awaited
    (ends,) = _partition_offsets(client, bootstrap, topic, timeout_s, (OffsetSpec.latest(), read_committed))
    return ends


def read_to_end(
    bootstrap: Target,
    topic: str,
    *,
    group_id: str | None = None,
    stall_timeout_s: float = 30.0,
    read_committed: bool = True,
    timeout_s: float = 10.0,
) -> TopicRead:
    """Every record of `topic`, partition by partition, up to the end offsets taken when the read starts: all of
    it however large, whatever the broker's group rebalance delay, and nothing written after the start.

    Without `group_id` no consumer group takes part (partitions are assigned, nothing is committed). With one,
    each partition is read from the group's committed offset (from its start where there is none); committing is
    the caller's (`commit_offsets`). Raises ReadStalled when nothing arrives for `stall_timeout_s` before the end
    offsets are reached (the broker is gone, say): a partial answer is never returned as if it were the whole."""
    ends = _stable_end_offsets(bootstrap, topic, read_committed, timeout_s)
    starts = committed_offsets(bootstrap, topic, group_id, list(ends), timeout_s) if group_id else {}
    records = list(
        iter_range(
            bootstrap,
            topic,
            starts,
            ends,
            group_id=group_id,
            stall_timeout_s=stall_timeout_s,
            read_committed=read_committed,
            timeout_s=timeout_s,
        )
    )
    return TopicRead(records, ends)


@dataclass(frozen=True)
class Watermarks:
    """A partition's offsets: its first (`low`), the last stable offset (`stable`: below it every transaction is
    decided; records of open transactions start there) and the next to be written (`high`)."""

    low: int
    stable: int
    high: int


def watermarks(bootstrap: Target, topic: str, timeout_s: float = 10.0) -> dict[int, Watermarks]:
    """partition -> its Watermarks, from one admin client. Raises NoSuchTopic."""
    client = admin(bootstrap)  # kept referenced while its futures are awaited
    low, stable, high = _partition_offsets(
        client,
        bootstrap,
        topic,
        timeout_s,
        (OffsetSpec.earliest(), False),
        (OffsetSpec.latest(), True),
        (OffsetSpec.latest(), False),
    )
    return {p: Watermarks(low[p], stable[p], high[p]) for p in sorted(high)}


def committed_offsets(
    bootstrap: Target, topic: str, group_id: str, partitions: list[int], timeout_s: float = 10.0
) -> dict[int, int]:
    """partition -> `group_id`'s committed offset in `topic` (the next record it reads); partitions where the group
    has committed nothing are left out."""
    with consumer(bootstrap, group_id=group_id) as reader:
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout_s)
        return {c.partition: c.offset for c in committed if c.offset >= 0}


def iter_range(
    bootstrap: Target,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    *,
    group_id: str | None = None,
    stall_timeout_s: float = 30.0,
    read_committed: bool = True,
    timeout_s: float = 10.0,
) -> Iterator[Record]:
    """The records of `topic` from `starts` (partition -> offset; a partition left out: from its first record) up to
    `ends` (partition -> offset, exclusive; only these partitions are read), one at a time: a read of any size in
    bounded memory. Assigned, not subscribed: no group takes part (`group_id` only names the reader). Raises
    ReadStalled when nothing arrives for `stall_timeout_s` while partitions are short of their ends."""
    with consumer(
        bootstrap, group_id=group_id, read_committed=read_committed, config={"enable.partition.eof": True}
    ) as reader:
        low = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[0] for p in ends}
        start = {p: max(starts.get(p, low[p]), low[p]) for p in ends}
        pending = {p for p in ends if start[p] < ends[p]}
        reader.assign([TopicPartition(topic, p, start[p]) for p in sorted(pending)])
        last_progress = time.monotonic()
        count = 0

        def finish(partition: int) -> None:
            pending.discard(partition)
            reader.pause([TopicPartition(topic, partition)])  # fetch no further than its end

        while pending:
            msg = reader.poll(0.2)
            if msg is None:
                if time.monotonic() - last_progress > stall_timeout_s:
                    short = {p: ends[p] for p in sorted(pending)}
                    raise ReadStalled(
                        f"reading {topic}: nothing arrived for {stall_timeout_s:g}s with partitions "
                        f"short of their end offsets {short} ({count} records read)"
                    )
                continue
            last_progress = time.monotonic()
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaCallError(f"reading {topic}: {error.str()}")  # e.g. not authorized: it has no partition
            # an assigned consumer's messages and partition-EOF events always carry both
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            if error is not None:
                if offset >= ends.get(partition, 0):
                    finish(partition)  # past the end (e.g. only a transaction marker was left)
                continue
            if partition not in pending or offset >= ends[partition]:
                finish(partition)  # written after the read began: not ours to return
                continue
            count += 1
            yield _to_record(msg)
            if offset >= ends[partition] - 1:
                finish(partition)


def follow(
    bootstrap: Target, starts: Mapping[str, Mapping[int, int]], *, read_committed: bool = True, poll_s: float = 0.5
) -> Iterator[Record]:
    """The records of each topic of `starts` (topic -> partition -> the offset to start at), as they land; endless:
    the caller stops iterating (or Ctrl-C stops it, within `poll_s`). Assigned, not subscribed: no group takes part
    and nothing is committed."""
    with consumer(bootstrap, read_committed=read_committed) as reader:
        reader.assign(
            [TopicPartition(topic, p, offset) for topic, offsets in starts.items() for p, offset in offsets.items()]
        )
        while True:
            msg = reader.poll(poll_s)
            if msg is None:
                continue
            if (error := msg.error()) is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaCallError(f"reading {msg.topic()}: {error.str()}")
            yield _to_record(msg)


def commit_offsets(
    bootstrap: Target, topic: str, group_id: str, offsets: dict[int, int], timeout_s: float = 10.0
) -> None:
    """Record `offsets` (partition -> next offset to read) as `group_id`'s position in `topic`."""
    with consumer(bootstrap, group_id=group_id) as reader:
        reader.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
