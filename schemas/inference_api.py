"""The inference service's HTTP bodies: `/infer_json`, `/infer_batch` (the dispatcher's) and `/infer_upload`; the
routes, stages and error kinds are in schemas/service_contract.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.image_message import check_bucket_name, check_object_key
from schemas.service_contract import Stage

# the multipart/form-data part of POST /infer_upload that carries the image
UPLOAD_FILE_FIELD = "file"


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
    fetch_ms: float = Field(description="MinIO GET of the object (/infer_upload: reading the upload)")
    decode_ms: float = Field(description="image decode + preprocessing")
    queue_ms: float = Field(description="time waiting in the batcher before its forward pass started")
    infer_ms: float = Field(description="the forward pass this item was part of")
    total_ms: float = Field(description="request received to response ready, inside the service")


class RunnerOutput(BaseModel):
    """What a runner returns: any JSON object. A classifier's keys (label, score, confidence, latency_ms_model,
    probabilities) are recommended, not required (a detector's or a segmenter's answer has no single label); when
    present they must have these types."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    label: str | None = Field(default=None, description="recommended: the top answer (a classifier's class)")
    score: float | None = Field(default=None, description="recommended: the top answer's score")
    confidence: float | None = Field(default=None, description="recommended: how sure the runner is")
    latency_ms_model: float | None = Field(default=None, description="recommended: the forward pass's duration")


# the recommended keys and the JSON types each must have when a runner returns it (bool is no number here)
RECOMMENDED_RUNNER_KEYS: dict[str, tuple[type, ...]] = {
    "label": (str,),
    "score": (float, int),
    "confidence": (float, int),
    "latency_ms_model": (float, int),
}
assert set(RECOMMENDED_RUNNER_KEYS) == set(RunnerOutput.model_fields)


def check_runner_output(result: object) -> str | None:
    """Why `result` is not a runner's answer (a JSON object, with the recommended keys well typed when present);
    None when it is one."""
    if not isinstance(result, dict):
        return f"the runner returned {type(result).__name__}, not a dict"
    for name, types in RECOMMENDED_RUNNER_KEYS.items():
        value = result.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"the runner's {name!r} is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}"
    return None


class InferResponse(RunnerOutput):
    """The runner's dict (a classifier's keys at top level when it has them, plus the runner's own fields), plus what
    the service adds: which team and model, the object or upload it ran on, batch size and timings."""

    team: str
    bucket: str | None = Field(default=None, description="the object's bucket (absent for /infer_upload)")
    key: str | None = Field(default=None, description="the object's key (absent for /infer_upload)")
    filename: str | None = Field(default=None, description="the uploaded file's name (/infer_upload only)")
    model_name: str
    model_tag: str | None = None
    batch_size: int = Field(description="how many items shared this item's forward pass")
    timings: Timings


def service_response_keys() -> frozenset[str]:
    """The keys every success of the service carries whatever the runner returns: a 2xx without them comes from
    something that is not the service."""
    return frozenset(name for name, field in InferResponse.model_fields.items() if field.is_required())


class ErrorDetail(BaseModel):
    type: str = Field(examples=["object_not_found"])
    message: str
    stage: Stage | None = Field(default=None, description="where it failed (the dispatcher's DLQ stage)")
    limit: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="the limit a request went over (too_many_items, request_too_large), "
        "so a client can fit its next requests under it",
    )


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
