"""The result contract: what the dispatcher writes to `inference.results.<team>` (Kafka key = input key)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from schemas.inference_api import RunnerOutput, Timings


class SourceRecord(BaseModel):
    """Where a message came from, so any output can be traced back to (and replayed from) its input."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key_b64: str | None = Field(default=None, description="the Kafka key, base64 (keys are bytes)")


class InferenceResult(RunnerOutput):
    """The input's identity, the runner's answer (any JSON object), the model, and timings."""

    # the input's identity
    id: str
    team: str
    bucket: str
    key: str
    camera: str | None = None
    publish_ts_ms: int | None = None
    # the runner's output (RunnerOutput: a classifier's keys when it has them, its own fields as extra keys)
    model_name: str
    model_tag: str | None = None
    batch_size: int
    # timings: the service's own, plus the dispatcher's view
    timings: Timings
    http_ms: float = Field(description="dispatcher-side duration of the successful HTTP call")
    attempts: int = Field(description="HTTP attempts it took (1 = first try)")
    e2e_ms: float | None = Field(default=None, description="publish_ts_ms (or Kafka timestamp) to result")
    result_ts_ms: int
    source: SourceRecord
    event_record: int | None = Field(
        default=None,
        ge=0,
        description="for an S3 event with several records: the one this result is about (as a "
        "dead letter's event_record), so that every output is traced to one image of one input record",
    )
    echo: dict[str, Any] = Field(default_factory=dict, description="the input's unknown fields and its `extra`, echoed")
