"""Inspect and replay the dead-letter topic."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from schemas import DeadLetter, topics
from streaming import kafka_io


@dataclass
class DlqEntry:
    offset: int
    partition: int
    letter: DeadLetter
    headers: dict[str, bytes]


def read_dlq(bootstrap: str, dlq_topic: str = topics.DLQ_TOPIC, *, team: str | None = None,
             stage: str | None = None, idle_s: float = 2.0, timeout_s: float = 60.0) -> list[DlqEntry]:
    """Every parseable DLQ record (optionally of one team / stage), oldest first."""
    entries = []
    for rec in kafka_io.read_topic(bootstrap, dlq_topic, idle_s=idle_s, timeout_s=timeout_s):
        try:
            letter = DeadLetter.model_validate_json(rec.value or b"")
        except ValidationError:
            continue  # not ours: the DLQ topic may be shared with other tools
        if (team and letter.team != team) or (stage and letter.error.stage != stage):
            continue
        entries.append(DlqEntry(rec.offset, rec.partition, letter, rec.headers))
    return entries


def replay_headers(entry: DlqEntry) -> list[tuple[str, bytes]]:
    """The original headers (the error facts dropped) plus a replay count one higher than before."""
    count = int(entry.headers.get(topics.HEADER_REPLAY_COUNT, b"0") or 0) + 1
    kept = [(k, v) for k, v in entry.headers.items()
            if not k.startswith(topics.HEADER_PREFIX) and k != topics.HEADER_REPLAY_COUNT]
    return kept + [(topics.HEADER_REPLAY_COUNT, str(count).encode())]


class OriginalGone(LookupError):
    """A dead letter kept only part of its record, and the input topic no longer holds the whole of it."""


def original_record(bootstrap: str, entry: DlqEntry) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) to re-publish: from the letter itself, or, when it had to leave parts out to fit in
    one Kafka record, from the input record at its source coordinates (checked against the letter's hash)."""
    letter = entry.letter
    if not letter.omitted:
        return letter.original_key(), letter.original_value(), replay_headers(entry)
    source = letter.source
    record = kafka_io.read_record(bootstrap, source.topic, source.partition, source.offset)
    value = record.value or b"" if record else b""
    if record is None or hashlib.sha256(value).hexdigest() != letter.original_value_sha256:
        raise OriginalGone(f"{source.topic}-{source.partition}@{source.offset} is no longer in the input topic "
                           f"(the dead letter at {entry.partition}:{entry.offset} kept only part of it)")
    headers = {**record.headers, **{k: v for k, v in entry.headers.items() if k == topics.HEADER_REPLAY_COUNT}}
    return record.key, value, replay_headers(DlqEntry(entry.offset, entry.partition, letter, headers))


def replay(bootstrap: str, entries: Iterable[DlqEntry], target_topic: str | None = None) -> int:
    """Re-publish each entry's original bytes, key and headers to its source topic (or `target_topic`).
    Raises OriginalGone (before publishing anything) when an entry's whole record cannot be had."""
    by_topic: dict[str, list] = {}
    for entry in entries:
        letter = entry.letter
        topic = target_topic or letter.source.topic or topics.input_topic(letter.team)
        by_topic.setdefault(topic, []).append(original_record(bootstrap, entry))
    return sum(kafka_io.produce(bootstrap, topic, records) for topic, records in by_topic.items())
