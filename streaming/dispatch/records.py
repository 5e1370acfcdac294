"""Build what the dispatcher writes: result records and dead letters (value + Kafka headers)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from schemas import DeadLetter, DispatcherIdentity, ErrorEnvelope, ImageMessage, InferenceResult, SourceRecord
from schemas import topics


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

    def source(self) -> SourceRecord:
        return SourceRecord(
            topic=self.topic, partition=self.partition, offset=self.offset, timestamp_ms=self.timestamp_ms,
            key_b64=None if self.key is None else base64.b64encode(self.key).decode(),
        )


@dataclass(frozen=True)
class Output:
    """One record to write: to the result topic (`dlq=False`) or the dead-letter topic."""

    dlq: bool
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)


def message_id(msg: ImageMessage, record: KafkaInput, index: int) -> str:
    """The producer's id when given; else the record's coordinates, stable across retries and replays of
    the same record. `index` tells apart the images of one S3 event with several Records."""
    if msg.id:
        return msg.id if index == 0 else f"{msg.id}#{index}"
    base = f"{record.topic}-{record.partition}-{record.offset}"
    return base if index == 0 else f"{base}#{index}"


def build_result(
    msg: ImageMessage, record: KafkaInput, index: int, team: str, response: dict, http_ms: float, attempts: int,
    now_ms: int,
) -> Output:
    """The service's answer merged with the input's identity and the dispatcher's timings."""
    origin_ms = msg.publish_ts_ms or record.timestamp_ms
    result = InferenceResult.model_validate({
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
        "echo": msg.extra_fields(),
    })
    return Output(dlq=False, key=record.key, value=result.model_dump_json(exclude_none=True).encode())


def build_dead_letter(
    record: KafkaInput, team: str, error: ErrorEnvelope, identity: DispatcherIdentity, now_ms: int
) -> Output:
    raw = record.value or b""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    letter = DeadLetter(
        team=team, source=record.source(), original_value_b64=base64.b64encode(raw).decode(),
        original_value_text=text, error=error, dispatcher=identity, failed_at_ms=now_ms,
    )
    headers = {
        topics.HEADER_STAGE: error.stage,
        topics.HEADER_TYPE: error.type,
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
    # the original headers ride along too (replay re-publishes them), under their own names
    encoded = {**{k: v for k, v in record.headers.items() if not k.startswith(topics.HEADER_PREFIX)},
               **{k: v.encode() for k, v in headers.items()}}
    return Output(dlq=True, key=record.key, value=letter.model_dump_json(exclude_none=True).encode(),
                  headers=encoded)
