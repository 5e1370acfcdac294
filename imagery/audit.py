"""`imagery audit`: where every input record of a dispatcher job landed, counted from Kafka itself.

The pipeline promises that every image of every input record ends in exactly one place: one result, or a dead
letter. The audit checks that promise from the outside, with nothing but the topics:

- every result and dead letter names its input by source coordinates (topic, partition, offset) and, for one
  record of an S3 event, `event_record`; the audit tallies them per input record;
- it then reads the input records of the range (default: from each partition's first record up to the job group's
  committed offsets, which Flink commits when a checkpoint completes), decodes each as the dispatcher does, and
  checks that each of its images landed once;
- a replay (`imagery dlq replay`, or `--repair` here) is a new input record whose `__imagery.replay.of` header
  names the record it replays: the audit follows it, so an image that went to the DLQ, was replayed and then got
  its result is one image with one journey, not a loss plus a stranger.

Verdicts, per image (a `Unit`), over its journey (the original record, then each replay, in time order):
- missing: its latest processing left no result and no dead letter, and no transaction that could still hold one
  is open;
- duplicated: two results along its journey, or one processing that landed twice;
- pending: its latest processing is past the committed offsets, or its outcome sits in an open transaction;
- else it is fine.

Memory: two bytes per input offset of the range (a tally of results and of dead letters), plus an entry per image
that has a problem or a replay; records are read one at a time (kafka_io.iter_range), never held.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from imagery import kafka_io
from imagery.dlq import replay_headers_for
from imagery.errors import ToolError
from schemas import InvalidMessage, decode_image_messages, topics

Progress = Callable[[str, int, int], None]  # (what, records read, records to read)


@dataclass(frozen=True, order=True)
class Unit:
    """One image of one input record: the record's coordinates and, for one of several records of an S3 event,
    which one (None: the record as a whole)."""

    topic: str
    partition: int
    offset: int
    record: int | None = None

    def __str__(self) -> str:
        base = f"{self.topic}-{self.partition}@{self.offset}"
        return base if self.record is None else f"{base}#{self.record}"


@dataclass
class Landing:
    """What one processing of a unit (the original record, or one replay) left behind."""

    partition: int
    offset: int
    timestamp_ms: int
    results: int
    dead: int
    due: bool  # below the committed offsets: its outcome should be there
    open: bool = False  # an open transaction of the outputs holds something of it


@dataclass
class AuditReport:
    team: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group_id: str | None
    ranges: dict[int, tuple[int, int]]  # partition -> [first offset, end offset) audited
    records: int = 0
    units: int = 0
    results: int = 0
    dead_letters: int = 0
    replayed: int = 0  # units whose journey went through a replay
    missing: list[Unit] = field(default_factory=list)
    duplicated: list[tuple[Unit, str]] = field(default_factory=list)
    pending: list[Unit] = field(default_factory=list)
    repaired: list[Unit] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.duplicated

    def as_dict(self) -> dict:
        return {
            "team": self.team,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
            "dlq_topic": self.dlq_topic,
            "group_id": self.group_id,
            "ranges": {str(p): {"from": lo, "to": hi} for p, (lo, hi) in sorted(self.ranges.items())},
            "records": self.records,
            "units": self.units,
            "results": self.results,
            "dead_letters": self.dead_letters,
            "replayed": self.replayed,
            "missing": [str(u) for u in self.missing],
            "duplicated": [{"unit": str(u), "why": why} for u, why in self.duplicated],
            "pending": [str(u) for u in self.pending],
            "repaired": [str(u) for u in self.repaired],
            "clean": self.clean,
        }


class AuditError(ToolError):
    """The audit cannot be made as asked (no such topic, an empty range)."""


class NotCaughtUp(ToolError, TimeoutError):
    """A job's consumer group had not committed every record of its input topic by the deadline."""


class _Tally:
    """Results and dead letters per input offset (a byte each, saturating: 2 already means doubled), and per image
    of a several-record S3 event (a dict: such events are rare)."""

    def __init__(self, first: dict[int, int], end: dict[int, int]) -> None:
        self.first = first
        self.results = {p: bytearray(max(0, end[p] - first[p])) for p in end}
        self.dead = {p: bytearray(max(0, end[p] - first[p])) for p in end}
        self.events: dict[tuple[int, int, int], list[int]] = {}
        self.open: set[tuple[int, int, int | None]] = set()

    def add(self, partition: int, offset: int, record: int | None, is_result: bool) -> bool:
        if partition not in self.results:
            return False
        i = offset - self.first[partition]
        if not 0 <= i < len(self.results[partition]):
            return False  # before the audited range, or written for a record after it
        if record is None:
            counts = self.results[partition] if is_result else self.dead[partition]
            counts[i] = min(255, counts[i] + 1)
        else:
            self.events.setdefault((partition, offset, record), [0, 0])[0 if is_result else 1] += 1
        return True

    def whole(self, partition: int, offset: int) -> tuple[int, int]:
        i = offset - self.first[partition]
        return self.results[partition][i], self.dead[partition][i]

    def of(self, partition: int, offset: int, record: int | None) -> tuple[int, int]:
        if record is None:
            return self.whole(partition, offset)
        counts = self.events.get((partition, offset, record))
        return (counts[0], counts[1]) if counts else (0, 0)


def parse_coordinates(text: str) -> tuple[str, int, int] | None:
    """`topic-partition-offset` (as `__imagery.replay.of` holds it) -> its parts; a topic may hold '-'."""
    topic, _, rest = text.rpartition("-")
    topic, _, partition = topic.rpartition("-")
    if not topic or not partition.isdigit() or not rest.isdigit():
        return None
    return topic, int(partition), int(rest)


def _images(value: bytes | None) -> int:
    """How many images the dispatcher makes of this value: 0 when it is a dead letter as a whole (unparseable,
    invalid), else the S3 event's records or 1."""
    try:
        return len(decode_image_messages(value or b""))
    except InvalidMessage:
        return 0


def _unit_records(rec: kafka_io.Record, tally: _Tally) -> list[int | None]:
    """The images a processing of `rec` is answerable for, as the dispatcher handles it (streaming/dispatch/
    handler.py): the whole record when it failed as a whole (or is one image), else one per S3 event record, or
    only the replayed one."""
    whole_results, whole_dead = tally.whole(rec.partition, rec.offset)
    n = _images(rec.value)
    if n <= 1 or whole_results or whole_dead:
        return [None]
    replayed = rec.headers.get(topics.HEADER_REPLAY_RECORD, b"")
    if replayed.isdigit() and int(replayed) < n:
        return [int(replayed)]
    return list(range(n))


def _verdict(journey: list[Landing]) -> tuple[str, str]:
    """("ok" | "missing" | "duplicated" | "pending", why) of one unit's journey, oldest processing first."""
    doubled = [j for j in journey if j.results + j.dead > 1]
    if doubled:
        j = doubled[0]
        return "duplicated", (
            f"{j.results} results and {j.dead} dead letters for the record at {j.partition}@{j.offset}"
        )
    results = sum(j.results for j in journey)
    if results > 1:
        return "duplicated", f"{results} results along its replays"
    last = journey[-1]
    if last.results + last.dead:
        return "ok", ""
    if not last.due or last.open:
        return "pending", ""
    return "missing", ""


def _tally_outputs(bootstrap: kafka_io.Target, report: AuditReport, tally: _Tally, progress: Progress | None) -> None:
    """Count every committed result and dead letter that names an input record of the range; note those that sit
    in still-open transactions (read uncommitted between the last stable and the high offset) as open."""

    def source_of(value: bytes | None, is_result: bool) -> tuple[int, int, int | None] | None:
        try:
            doc = json.loads(value or b"")
            source = doc["source"]
        except (ValueError, KeyError, TypeError):
            return None  # not ours: the DLQ may be shared with other tools
        if source.get("topic") != report.input_topic or (not is_result and doc.get("team") != report.team):
            return None
        record = doc.get("event_record")
        return int(source["partition"]), int(source["offset"]), None if record is None else int(record)

    for topic, is_result in ((report.output_topic, True), (report.dlq_topic, False)):
        try:
            marks = kafka_io.watermarks(bootstrap, topic)
        except kafka_io.NoSuchTopic as exc:
            raise AuditError(str(exc)) from None
        stable = {p: m.stable for p, m in marks.items()}
        total = sum(m.stable - m.low for m in marks.values())
        read = 0
        for rec in kafka_io.iter_range(bootstrap, topic, {}, stable):
            read += 1
            if progress and read % 50_000 == 0:
                progress(topic, read, total)
            if (
                not is_result
                and rec.headers.get(topics.HEADER_TOPIC, report.input_topic.encode()) != report.input_topic.encode()
            ):
                continue  # another team's or topic's dead letter: skip it without parsing
            where = source_of(rec.value, is_result)
            if where and tally.add(*where, is_result):
                if is_result:
                    report.results += 1
                else:
                    report.dead_letters += 1
        if progress:
            progress(topic, read, total)
        open_from = {p: m.stable for p, m in marks.items() if m.high > m.stable}
        if open_from:
            ends = {p: marks[p].high for p in open_from}
            for rec in kafka_io.iter_range(bootstrap, topic, open_from, ends, read_committed=False):
                where = source_of(rec.value, is_result)
                if where:
                    tally.open.add(where)


def audit(
    bootstrap: kafka_io.Target,
    team: str,
    *,
    input_topic: str | None = None,
    output_topic: str | None = None,
    dlq_topic: str = topics.DLQ_TOPIC,
    group_id: str | None = None,
    start: dict[int, int] | None = None,
    end: dict[int, int] | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit the input records of `team` from `start` (partition -> offset; default each partition's first) up to
    `end` (default: `group_id`'s committed offsets, the team's dispatcher group unless given; a partition the
    group never committed is audited up to nothing). Raises AuditError."""
    input_topic = input_topic or topics.input_topic(team)
    output_topic = output_topic or topics.result_topic(team)
    group_id = group_id or topics.dispatcher_group(team)
    try:
        marks = kafka_io.watermarks(bootstrap, input_topic)
    except kafka_io.NoSuchTopic as exc:
        raise AuditError(str(exc)) from None
    if end is None:
        end = kafka_io.committed_offsets(bootstrap, input_topic, group_id, list(marks))
    first = {p: max(m.low, (start or {}).get(p, m.low)) for p, m in marks.items()}
    due_end = {p: max(first[p], min(end.get(p, first[p]), marks[p].high)) for p in marks}
    report = AuditReport(
        team, input_topic, output_topic, dlq_topic, group_id, {p: (first[p], due_end[p]) for p in sorted(marks)}
    )
    # the tally spans up to the high offsets: replays past the committed offsets decide what is pending
    tally = _Tally(first, {p: m.high for p, m in marks.items()})
    _tally_outputs(bootstrap, report, tally, progress)

    problems: dict[Unit, Landing] = {}  # originals that did not land once: judged again with their replays
    replays: dict[Unit, list[Landing]] = {}
    total = sum(m.high - first[p] for p, m in marks.items())
    read = 0
    for rec in kafka_io.iter_range(bootstrap, input_topic, first, {p: m.high for p, m in marks.items()}):
        read += 1
        if progress and read % 50_000 == 0:
            progress(input_topic, read, total)
        due = rec.offset < due_end[rec.partition]
        origin = parse_coordinates(rec.headers.get(topics.HEADER_REPLAY_OF, b"").decode(errors="replace"))
        if origin is None and not due:
            continue  # not yet the job's to have handled, and no replay: outside the audit
        report.records += origin is None
        for record in _unit_records(rec, tally):
            landing = _landing(tally, rec.partition, rec.offset, record, rec.timestamp_ms or 0, due)
            if origin is not None:  # a replay: part of the journey of the image it replays
                replays.setdefault(Unit(*origin, record), []).append(landing)
                continue
            report.units += 1
            if _verdict([landing])[0] != "ok":
                problems[Unit(input_topic, rec.partition, rec.offset, record)] = landing
    if progress:
        progress(input_topic, read, total)

    for unit in sorted(problems.keys() | replays.keys()):
        journey = sorted(replays.get(unit, []), key=lambda j: (j.timestamp_ms, j.partition, j.offset))
        original = problems.get(unit)
        if (
            original is None
            and unit.topic == input_topic
            and first.get(unit.partition, 0) <= unit.offset < due_end.get(unit.partition, 0)
        ):
            original = _landing(tally, unit.partition, unit.offset, unit.record, 0, True)
        if original is not None:
            journey.insert(0, original)
        elif not any(j.due for j in journey):
            continue  # replays of a record outside the range, none of them due yet
        else:
            report.units += 1  # its original is outside the range (before --from, or gone): judged by its replays
        report.replayed += unit in replays
        verdict, why = _verdict(journey)
        if verdict == "missing":
            report.missing.append(unit)
        elif verdict == "duplicated":
            report.duplicated.append((unit, why))
        elif verdict == "pending":
            report.pending.append(unit)
    return report


def _landing(tally: _Tally, partition: int, offset: int, record: int | None, timestamp_ms: int, due: bool) -> Landing:
    results, dead = tally.of(partition, offset, record)
    return Landing(partition, offset, timestamp_ms, results, dead, due, (partition, offset, record) in tally.open)


def repair(bootstrap: kafka_io.Target, report: AuditReport) -> list[Unit]:
    """Re-publish the input record of every missing unit to the input topic, as a replay of it (the same bytes, key
    and headers, `__imagery.replay.of` naming the original, a replay count one higher), all in one transaction.

    Idempotent: a re-published record sits past the job's committed offsets until the job has handled it, so a
    second audit finds the unit pending, never missing, and repairs nothing twice."""
    records = []
    for unit in report.missing:
        original = kafka_io.read_record(bootstrap, unit.topic, unit.partition, unit.offset)
        if original is None:
            continue  # gone by retention: nothing left to re-publish; the report still names it
        origin = f"{unit.topic}-{unit.partition}-{unit.offset}"
        headers = replay_headers_for(origin, unit.record, original.headers)
        records.append((report.input_topic, original.key, original.value or b"", headers))
        report.repaired.append(unit)
    if records:
        kafka_io.produce_in_transaction(bootstrap, records)
    return report.repaired


def describe(units: Iterable[Unit], limit: int = 20) -> str:
    units = list(units)
    text = ", ".join(str(u) for u in units[:limit])
    return text + (f" ... and {len(units) - limit} more" if len(units) > limit else "")


def wait_until_caught_up(
    bootstrap: kafka_io.Target,
    input_topic: str,
    group_id: str,
    timeout_s: float,
    watch: Callable[[], None] = lambda: None,
) -> dict[int, int]:
    """Wait until `group_id` has committed every record of `input_topic` written so far (Flink commits a job's
    offsets when a checkpoint completes; a stop with a savepoint commits none), calling `watch` between looks;
    the committed offsets. Raises NotCaughtUp (a TimeoutError) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        watch()
        ends = {p: m.high for p, m in kafka_io.watermarks(bootstrap, input_topic).items()}
        committed = kafka_io.committed_offsets(bootstrap, input_topic, group_id, list(ends))
        short = {p: end for p, end in ends.items() if committed.get(p, 0) < end}
        # a transaction's commit marker takes an offset of its own and is never handed to the job: a partition
        # whose only records left are markers is done
        if not short or not any(True for _ in kafka_io.iter_range(bootstrap, input_topic, committed, short)):
            return committed
        if time.monotonic() > deadline:
            raise NotCaughtUp(f"{group_id} has committed {committed} of {input_topic}, whose ends are {ends}")
        time.sleep(0.5)
