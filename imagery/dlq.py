"""Inspect and replay the dead-letter topic, safely: running the same replay twice re-publishes nothing twice.

Every replay is recorded in `<dlq topic>.replayed` (the ledger), in the same Kafka transaction as the
re-published records: an entry is replayed once unless asked again, and never more than `max_replays` times
along its chain of replays (the count travels in the `__imagery.replay.count` header).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import get_args

from pydantic import ValidationError

from imagery import kafka_io
from imagery.errors import ToolError
from schemas import DeadLetter, topics
from schemas.dead_letter import Stage

DEFAULT_MAX_REPLAYS = 3


@dataclass
class DlqEntry:
    offset: int
    partition: int
    letter: DeadLetter
    headers: dict[str, bytes]
    timestamp_ms: int | None = None

    @property
    def replay_count(self) -> int:
        """How many replays led to the record this letter is about (0: it was never replayed)."""
        return replay_count(self.headers)


def replay_count(headers: dict[str, bytes]) -> int:
    value = headers.get(topics.HEADER_REPLAY_COUNT, b"0")
    return int(value) if value.isdigit() else 0


class OriginalGone(ToolError, LookupError):
    """A dead letter kept only part of its record, and the input topic no longer holds the whole of it."""


# the stages a dead letter can have (schemas.dead_letter.Stage), for the tools' choices
STAGES: tuple[str, ...] = get_args(Stage)


@dataclass
class DlqRead:
    """The DLQ's dead letters up to the end offsets taken when the read began, oldest first, and those offsets."""

    entries: list[DlqEntry]
    end_offsets: dict[int, int]


def read_letters(
    bootstrap: kafka_io.Target, dlq_topic: str = topics.DLQ_TOPIC, *, group_id: str | None = None
) -> DlqRead:
    """Every parseable record of the DLQ, read by partition up to the end offsets taken at the start (all of it,
    however large; no consumer group unless `group_id`: then from that group's committed offsets, see
    kafka_io.read_to_end). Raises kafka_io.NoSuchTopic when there is no such topic."""
    read = kafka_io.read_to_end(bootstrap, dlq_topic, group_id=group_id)
    entries = []
    for rec in read.records:
        try:
            letter = DeadLetter.model_validate_json(rec.value or b"")
        except ValidationError:
            continue  # not ours: the DLQ topic may be shared with other tools
        entries.append(DlqEntry(rec.offset, rec.partition, letter, rec.headers, rec.timestamp_ms))
    entries.sort(key=lambda e: (e.timestamp_ms or 0, e.partition, e.offset))
    return DlqRead(entries, read.end_offsets)


def select(
    entries: Iterable[DlqEntry],
    *,
    teams: Collection[str] = (),
    stages: Collection[str] = (),
    positions: Collection[tuple[int, int]] = (),
) -> list[DlqEntry]:
    """The entries of one of `teams`, at one of `stages` and at one of the (partition, offset) `positions`; an
    empty collection does not filter."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage {', '.join(sorted(unknown))}; the stages are {', '.join(STAGES)}")
    return [
        e
        for e in entries
        if (not teams or e.letter.team in teams)
        and (not stages or e.letter.error.stage in stages)
        and (not positions or (e.partition, e.offset) in positions)
    ]


def read_dlq(
    bootstrap: kafka_io.Target, dlq_topic: str = topics.DLQ_TOPIC, *, team: str | None = None, stage: str | None = None
) -> list[DlqEntry]:
    """Every parseable DLQ record (optionally of one team / stage), oldest first."""
    return select(
        read_letters(bootstrap, dlq_topic).entries, teams=[team] if team else (), stages=[stage] if stage else ()
    )


def ledger_key(entry: DlqEntry) -> str:
    return f"{entry.partition}/{entry.offset}"


def replayed(bootstrap: kafka_io.Target, dlq_topic: str = topics.DLQ_TOPIC) -> set[str]:
    """The ledger keys of every entry of `dlq_topic` replayed so far (none before the first replay made the
    ledger)."""
    try:
        records = kafka_io.read_to_end(bootstrap, topics.replay_ledger(dlq_topic)).records
    except kafka_io.NoSuchTopic:
        return set()
    return {(rec.key or b"").decode(errors="replace") for rec in records}


@dataclass
class ReplayPlan:
    go: list[DlqEntry]
    skipped: list[tuple[DlqEntry, str]]  # and why


def plan(
    entries: Iterable[DlqEntry], already: set[str], *, again: bool = False, max_replays: int = DEFAULT_MAX_REPLAYS
) -> ReplayPlan:
    """Which entries to replay: not those replayed before (unless `again`), not those whose record has been
    replayed `max_replays` times already (a message that keeps failing stops coming back)."""
    result = ReplayPlan([], [])
    for entry in entries:
        if entry.replay_count >= max_replays:
            result.skipped.append((entry, f"replayed {entry.replay_count} times already (--max-replays)"))
        elif not again and ledger_key(entry) in already:
            result.skipped.append((entry, "replayed before (--again to replay it again)"))
        else:
            result.go.append(entry)
    return result


def replay_headers(letter: DeadLetter, headers: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The headers of the replay of `letter`'s record (replay_headers_for)."""
    source = letter.source
    return replay_headers_for(f"{source.topic}-{source.partition}-{source.offset}", letter.event_record, headers)


def replay_headers_for(origin: str, event_record: int | None, headers: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The original `headers` (the error facts dropped), a replay count one higher than before, the record it
    replays (`origin`, topic-partition-offset: kept from the first replay on, so message ids stay the same) and,
    for one record of an S3 event, which one."""
    own = (topics.HEADER_REPLAY_COUNT, topics.HEADER_REPLAY_RECORD)
    kept = {k: v for k, v in headers.items() if not k.startswith(topics.HEADER_PREFIX) and k not in own}
    kept.setdefault(topics.HEADER_REPLAY_OF, origin.encode())
    kept[topics.HEADER_REPLAY_COUNT] = str(replay_count(headers) + 1).encode()
    if event_record is not None:
        kept[topics.HEADER_REPLAY_RECORD] = str(event_record).encode()
    return list(kept.items())


def original_record(bootstrap: kafka_io.Target, entry: DlqEntry) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) to re-publish: from the letter itself, or, when it had to leave parts out to fit in
    one Kafka record, from the input record at its source coordinates (checked against the letter's hash)."""
    letter = entry.letter
    if not letter.omitted:
        return letter.original_key(), letter.original_value(), replay_headers(letter, entry.headers)
    source = letter.source
    record = kafka_io.read_record(bootstrap, source.topic, source.partition, source.offset)
    value = record.value or b"" if record else b""
    if record is None or hashlib.sha256(value).hexdigest() != letter.original_value_sha256:
        raise OriginalGone(
            f"{source.topic}-{source.partition}@{source.offset} is no longer in the input topic "
            f"(the dead letter at {entry.partition}:{entry.offset} kept only part of it)"
        )
    return record.key, value, replay_headers(letter, record.headers)


def replay(
    bootstrap: kafka_io.Target,
    entries: Iterable[DlqEntry],
    target_topic: str | None = None,
    dlq_topic: str = topics.DLQ_TOPIC,
) -> int:
    """Re-publish each entry's original bytes, key and headers to its source topic (or `target_topic`), and record
    it in the ledger, all in one transaction. Raises OriginalGone (before publishing anything) when an entry's
    whole record cannot be had."""
    records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
    for entry in entries:
        letter = entry.letter
        topic = target_topic or letter.source.topic or topics.input_topic(letter.team)
        records.append((topic, *original_record(bootstrap, entry)))
        note = {
            "partition": entry.partition,
            "offset": entry.offset,
            "to": topic,
            "replay_count": entry.replay_count + 1,
            "replayed_at_ms": int(time.time() * 1000),
        }
        records.append((topics.replay_ledger(dlq_topic), ledger_key(entry).encode(), json.dumps(note).encode(), []))
    kafka_io.produce_in_transaction(bootstrap, records)
    return len(records) // 2
