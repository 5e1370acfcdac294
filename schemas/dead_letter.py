"""The DLQ contract: what the dispatcher writes to `dlq.inference.http` when a message cannot succeed."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, Field

from schemas.result import SourceRecord
from schemas.service_contract import Stage

# What of the original record a dead letter may leave out to fit in one Kafka record.
Omitted = Literal["value_tail", "key", "headers"]


class ErrorEnvelope(BaseModel):
    stage: Stage
    type: str = Field(description="machine-readable error type, e.g. object_not_found, not_json")
    message: str
    http_status: int | None = None
    retryable: bool = Field(description="true if a later replay might succeed (e.g. budget spent on 5xx)")
    attempts: int = Field(ge=0, description="HTTP attempts made (0 for parse/validate failures)")
    first_attempt_ms: int | None = None
    last_attempt_ms: int | None = None


class DispatcherIdentity(BaseModel):
    job: str
    group_id: str
    host: str


class DeadLetter(BaseModel):
    """Everything needed to understand and replay one failed message; the original value byte for byte, once.

    The value is kept as `original_value_text` when it is UTF-8 text (encoding the text gives the exact bytes
    back) and as `original_value_b64` otherwise. A dead letter always fits in one Kafka record: when the original
    does not fit, only a prefix of it is kept (`omitted` holds "value_tail"), with the whole value's length and
    SHA-256, and the record itself is found in the input topic at `source`."""

    team: str
    source: SourceRecord
    original_value_text: str | None = Field(
        default=None, description="the original Kafka value (or its kept prefix) as text, when it is UTF-8"
    )
    original_value_b64: str | None = Field(
        default=None, description="the original Kafka value (or its kept prefix), base64, when it is not text"
    )
    original_value_bytes: int | None = Field(default=None, ge=0, description="length of the whole original value")
    original_value_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole original value")
    event_record: int | None = Field(
        default=None,
        ge=0,
        description="for an S3 event with several records: the one this letter is about (replay re-processes only it)",
    )
    omitted: list[Omitted] = Field(
        default_factory=list,
        description="what of the original record did not fit in this dead letter: "
        "value_tail (only a prefix of the value is kept), key, headers; the record is still at `source`",
    )
    error: ErrorEnvelope
    dispatcher: DispatcherIdentity
    failed_at_ms: int

    @property
    def complete(self) -> bool:
        """True when the value kept here is the whole original value."""
        return "value_tail" not in self.omitted

    def original_value(self) -> bytes:
        """The value kept here: the whole original unless `complete` is False (then a prefix)."""
        if self.original_value_b64 is not None:
            return base64.b64decode(self.original_value_b64)
        return (self.original_value_text or "").encode("utf-8")

    def original_key(self) -> bytes | None:
        return None if self.source.key_b64 is None else base64.b64decode(self.source.key_b64)
