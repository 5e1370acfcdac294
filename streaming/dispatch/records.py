"""Build what the dispatcher writes: result records and dead letters (value + Kafka headers)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from schemas import (
    DeadLetter,
    DispatcherIdentity,
    ErrorEnvelope,
    ImageMessage,
    InferenceResult,
    InferRequest,
    SourceRecord,
    limits,
    topics,
)

MAX_ERROR_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class KafkaInput:
    """One record as the Kafka source hands it over: the value exactly as produced, and where it came from."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    def source(self, keep_key: bool = True) -> SourceRecord:
        return SourceRecord(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
            key_b64=None if self.key is None or not keep_key else base64.b64encode(self.key).decode(),
        )

    @property
    def size_bytes(self) -> int:
        """What the record weighs in Kafka's terms: key + value + headers."""
        return record_size(self.key, self.value, self.headers)

    @property
    def origin(self) -> str:
        """The record's identity: its coordinates, or those of the record it replays."""
        replayed = self.headers.get(topics.HEADER_REPLAY_OF)
        return replayed.decode(errors="replace") if replayed else f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def replayed_record(self) -> int | None:
        """For the replay of one record of an S3 event: which one."""
        value = self.headers.get(topics.HEADER_REPLAY_RECORD, b"")
        return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class Output:
    """One record to write: to the result topic (`dlq=False`) or the dead-letter topic."""

    dlq: bool
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return record_size(self.key, self.value, self.headers)


def record_size(key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v or b"") for k, v in headers.items())


def record_budget(max_record_bytes: int = limits.KAFKA_MAX_RECORD_BYTES) -> int:
    """The most key + value + headers the dispatcher puts in one record it writes."""
    return max_record_bytes - limits.RECORD_HEADROOM_BYTES


def message_id(msg: ImageMessage, record: KafkaInput, index: int) -> str:
    """The producer's id when given; else the record's coordinates (those of the record it replays, for a
    replay), stable across retries and replays. `index` tells apart the images of one S3 event."""
    base = msg.id or record.origin
    return base if index == 0 else f"{base}#{index}"


def infer_request(msg: ImageMessage) -> InferRequest:
    """What the service is asked for `msg`: its object, model tag and `extra` (for the runner)."""
    # bucket and key were validated by the same rules when `msg` was decoded
    return InferRequest.model_construct(bucket=msg.bucket, key=msg.key, model_tag=msg.model_tag, extra=msg.extra)


def build_result(
    msg: ImageMessage,
    record: KafkaInput,
    index: int,
    team: str,
    response: dict,
    http_ms: float,
    attempts: int,
    now_ms: int,
    event_record: int | None = None,
) -> Output:
    """The service's answer merged with the input's identity and the dispatcher's timings."""
    origin_ms = msg.publish_ts_ms or record.timestamp_ms
    result = InferenceResult.model_validate(
        {
            **response,
            "id": message_id(msg, record, index),
            "team": team,
            "bucket": msg.bucket,
            "key": msg.key,
            "camera": msg.camera,
            "publish_ts_ms": msg.publish_ts_ms,
            "http_ms": round(http_ms, 3),
            "attempts": attempts,
            "e2e_ms": None if origin_ms is None else float(now_ms - origin_ms),
            "result_ts_ms": now_ms,
            "source": record.source(),
            "event_record": event_record,
            "echo": msg.extra_fields(),
        }
    )
    return Output(dlq=False, key=record.key, value=result.model_dump_json(exclude_none=True).encode())


def build_dead_letter(
    record: KafkaInput,
    team: str,
    error: ErrorEnvelope,
    identity: DispatcherIdentity,
    now_ms: int,
    max_record_bytes: int = limits.KAFKA_MAX_RECORD_BYTES,
    event_record: int | None = None,
) -> Output:
    """The dead letter of `record`, built to fit in one record of `max_record_bytes`: a dead letter that does not
    fit would fail the DLQ sink, and with it the job, on the same record after every restart.

    The original is kept once (text or base64). When that is too large, bulky original headers and key go first,
    then the value's tail; what went is listed in `omitted`, and the whole record stays at `source`."""
    raw = record.value or b""
    if len(error.message) > MAX_ERROR_MESSAGE_CHARS:
        error = error.model_copy(update={"message": error.message[:MAX_ERROR_MESSAGE_CHARS] + "..."})
    budget = record_budget(max_record_bytes)
    error_headers = _error_headers(record, team, error, identity)
    original_headers = {k: v for k, v in record.headers.items() if not k.startswith(topics.HEADER_PREFIX)}
    digest = hashlib.sha256(raw).hexdigest()

    def build(omitted: list, keep_bytes: int) -> Output:
        letter = DeadLetter(
            team=team,
            source=record.source(keep_key="key" not in omitted),
            **_kept_value(raw[:keep_bytes], cut=keep_bytes < len(raw)),
            original_value_bytes=len(raw),
            original_value_sha256=digest,
            omitted=omitted,
            event_record=event_record,
            error=error,
            dispatcher=identity,
            failed_at_ms=now_ms,
        )
        # the original headers ride along (replay re-publishes them) under their own names
        headers = {**({} if "headers" in omitted else original_headers), **error_headers}
        return Output(
            dlq=True,
            key=None if "key" in omitted else record.key,
            value=letter.model_dump_json(exclude_none=True).encode(),
            headers=headers,
        )

    out = build([], len(raw))
    if out.size_bytes <= budget:
        return out
    # too large: the bulky parts besides the value go first (a small key or header costs nothing to keep)
    bulky = {"headers": record_size(None, None, original_headers), "key": len(record.key or b"") * 2}
    omitted: list = [part for part, size in bulky.items() if size > budget // 8]
    out = build(omitted, len(raw))
    if out.size_bytes <= budget:
        return out
    omitted.append("value_tail")
    empty = build(omitted, 0).size_bytes
    keep = max(0, (budget - empty) * 3 // 4 - 8)  # base64's 4/3 is the worst the shorter encoding can cost
    while True:
        out = build(omitted, keep)
        if out.size_bytes <= budget or keep == 0:
            return out
        keep //= 2


def _kept_value(data: bytes, cut: bool) -> dict[str, str]:
    """`data` once, in the shorter of text (when it is UTF-8) and base64. `cut`: it is a prefix of the original,
    which may end inside a multi-byte character; the text then stops before that character."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not (cut and exc.reason == "unexpected end of data"):
            return {"original_value_b64": base64.b64encode(data).decode()}
        data = data[: exc.start]
        text = data.decode("utf-8")
    encoded = base64.b64encode(data).decode()
    if len(json.dumps(text, ensure_ascii=False).encode()) <= len(encoded) + 2:
        return {"original_value_text": text}
    return {"original_value_b64": encoded}


def _error_headers(
    record: KafkaInput, team: str, error: ErrorEnvelope, identity: DispatcherIdentity
) -> dict[str, bytes]:
    headers = {
        topics.HEADER_STAGE: error.stage,
        topics.HEADER_TYPE: error.type[:200],
        topics.HEADER_MESSAGE: error.message[:1000],
        topics.HEADER_RETRYABLE: str(error.retryable).lower(),
        topics.HEADER_ATTEMPTS: str(error.attempts),
        topics.HEADER_TEAM: team,
        topics.HEADER_TOPIC: record.topic,
        topics.HEADER_PARTITION: str(record.partition),
        topics.HEADER_OFFSET: str(record.offset),
        topics.HEADER_DISPATCHER: identity.job,
    }
    if error.http_status is not None:
        headers[topics.HEADER_HTTP_STATUS] = str(error.http_status)
    return {k: v.encode() for k, v in headers.items()}
