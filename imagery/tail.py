"""`imagery tail --team T`: a team's results and dead letters as they land.

Results come from the team's result topic (inference.results.<team>), dead letters from the DLQ
(dlq.inference.http), only those of the team. Both are read as `imagery dlq show` reads the DLQ (kafka_io): by
assigned partitions, so no consumer group takes part and nothing is committed, and committed records only
(read_committed: the dispatcher writes both topics in transactions, and a record of a transaction that is later
aborted never landed). `read_now` reads each topic up to its end when the command starts; `follow` goes on from
there. Partitions added to a topic after the start are not followed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from imagery import kafka_io
from schemas import DeadLetter

Kind = Literal["result", "dead_letter"]
# topic -> partition -> the next offset to read
Positions = dict[str, dict[int, int]]


@dataclass(frozen=True)
class TailTopics:
    """Where a team's results and dead letters land."""

    results: str
    dlq: str


@dataclass(frozen=True)
class Landed:
    """A result or a dead letter of the team: the record as it is on the wire (its value, JSON) and where it is."""

    kind: Kind
    record: kafka_io.Record
    value: Any  # the record's value, parsed (a JSON object for the pipeline's own records)

    def as_json(self) -> dict[str, Any]:
        """One line of `--json`: where the record is, which kind it is, and the record as on the wire."""
        key = self.record.key
        return {
            "kind": self.kind,
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "timestamp_ms": self.record.timestamp_ms,
            "key": key.decode(errors="replace") if key is not None else None,
            "record": self.value,
        }

    def line(self) -> str:
        """A short line for eyes: kind, where, and what it says."""
        where = f"{self.record.topic} {self.record.partition}:{self.record.offset}"
        value = self.value if isinstance(self.value, dict) else {}
        if self.kind == "result":
            answer = " ".join(f"{name}={value[name]}" for name in ("label", "score") if value.get(name) is not None)
            return (
                f"result       {where}  {value.get('bucket')}/{value.get('key')}  "
                f"{answer or 'model ' + str(value.get('model_name'))}"
            )
        error, source = value.get("error") or {}, value.get("source") or {}
        return (
            f"dead letter  {where}  from {source.get('topic')} {source.get('partition')}:{source.get('offset')}"
            f"  {error.get('stage')} {error.get('type')}: {str(error.get('message'))[:120]}"
        )


def landed(record: kafka_io.Record, topics: TailTopics, team: str) -> Landed | None:
    """RECORD as one of TEAM's results or dead letters; None for anything else (another team's dead letter, a record
    that is not the pipeline's)."""
    if record.topic == topics.results:
        try:
            return Landed("result", record, json.loads(record.value or b""))
        except ValueError:
            return None
    try:
        letter = DeadLetter.model_validate_json(record.value or b"")
    except ValidationError:
        return None  # not ours: the DLQ topic may be shared with other tools
    return Landed("dead_letter", record, json.loads(record.value or b"")) if letter.team == team else None


@dataclass
class TailRead:
    """What was there when the read began, oldest first, and where each topic's partitions go on from."""

    landed: list[Landed]
    positions: Positions


def read_now(bootstrap: kafka_io.Target, team: str, topics: TailTopics) -> TailRead:
    """TEAM's results and dead letters up to each topic's end when the read begins, oldest first (by the records'
    timestamps). Raises kafka_io.NoSuchTopic when a topic is not there."""
    found: list[Landed] = []
    positions: Positions = {}
    for topic in (topics.results, topics.dlq):
        read = kafka_io.read_to_end(bootstrap, topic)
        found += [item for record in read.records if (item := landed(record, topics, team)) is not None]
        positions[topic] = read.end_offsets
    found.sort(
        key=lambda item: (item.record.timestamp_ms or 0, item.record.topic, item.record.partition, item.record.offset)
    )
    return TailRead(found, positions)


def follow(bootstrap: kafka_io.Target, team: str, topics: TailTopics, positions: Positions) -> Iterator[Landed]:
    """TEAM's results and dead letters written after POSITIONS, as they land; endless (stop iterating, or Ctrl-C)."""
    for record in kafka_io.follow(bootstrap, positions):
        if (item := landed(record, topics, team)) is not None:
            yield item
