"""The DLQ contract: what the dispatcher writes to `dlq.inference.http` when a message cannot succeed."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, Field

from schemas.result import SourceRecord

Stage = Literal["parse", "validate", "fetch", "decode", "infer", "http", "timeout"]


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
    """Everything needed to understand and replay one failed message; the original value byte for byte."""

    team: str
    source: SourceRecord
    original_value_b64: str = Field(description="the original Kafka value, base64 of the exact bytes")
    original_value_text: str | None = Field(
        default=None, description="the same value as text when it is valid UTF-8 (for people, not replay)"
    )
    error: ErrorEnvelope
    dispatcher: DispatcherIdentity
    failed_at_ms: int

    def original_value(self) -> bytes:
        return base64.b64decode(self.original_value_b64)

    def original_key(self) -> bytes | None:
        return None if self.source.key_b64 is None else base64.b64decode(self.source.key_b64)
