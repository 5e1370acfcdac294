"""The HTTP contract between the dispatcher and the inference service (`/infer_json`, `/infer_batch`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.image_message import check_bucket_name, check_object_key


class InferRequest(BaseModel):
    """One object to run the team's model on."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(examples=["fruit-hot"])
    key: str = Field(examples=["fruit/clean-0001.jpg"])
    model_tag: str | None = None
    extra: dict[str, Any] | None = Field(default=None, description="passed to the runner as `extra`")

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        return check_object_key(value)


class Timings(BaseModel):
    fetch_ms: float = Field(description="MinIO GET of the object")
    decode_ms: float = Field(description="image decode + preprocessing")
    queue_ms: float = Field(description="time waiting in the batcher before its forward pass started")
    infer_ms: float = Field(description="the forward pass this item was part of")
    total_ms: float = Field(description="request received to response ready, inside the service")


class InferResponse(BaseModel):
    """The runner's dict (seed-compatible keys at top level, plus the runner's own fields), plus timings."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    label: str
    score: float
    confidence: float
    latency_ms_model: float
    team: str
    bucket: str
    key: str
    model_name: str
    model_tag: str | None = None
    batch_size: int = Field(description="how many items shared this item's forward pass")
    timings: Timings


class ErrorDetail(BaseModel):
    type: str = Field(examples=["object_not_found"])
    message: str
    stage: str | None = Field(
        default=None,
        description="where it failed: validate, fetch, decode, infer or queue (the dispatcher's DLQ stage)",
    )
    limit: int | None = Field(default=None, exclude_if=lambda v: v is None,
                              description="the limit a request went over (too_many_items, request_too_large), "
                              "so a client can fit its next requests under it")


class ErrorBody(BaseModel):
    """Every non-2xx answer of the service has this body."""

    error: ErrorDetail


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[InferRequest] = Field(min_length=1)


class BatchItemOk(BaseModel):
    ok: Literal[True] = True
    result: InferResponse


class BatchItemError(BaseModel):
    ok: Literal[False] = False
    status: int = Field(description="the status /infer_json would have answered for this item alone")
    error: ErrorDetail


class BatchResponse(BaseModel):
    """Per-item outcome, in request order: one bad image never fails its neighbours."""

    items: list[BatchItemOk | BatchItemError]
