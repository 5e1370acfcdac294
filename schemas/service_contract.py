"""What the inference service and the dispatcher agree on beside the bodies: the routes, the stages a failure is
placed at, and every error kind the service answers with (its status, its stage, and what the dispatcher does
about it).

The service's error classes (services/inference_http/errors.py) take their status and stage from ERROR_KINDS, and
the dispatcher's verdict on an answer of the service (streaming/dispatch/outcome.py) is the verdict of the kind
it names, so the two sides cannot drift apart; tests/unit/test_service_contract.py has the real app answer every
kind and the dispatcher read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Literal, get_args

# ---------------------------------------------------------------------------- routes

INFER_JSON_ROUTE = "/infer_json"  # POST an InferRequest, answered with an InferResponse
INFER_BATCH_ROUTE = "/infer_batch"  # POST a BatchRequest, answered with a BatchResponse (one answer per item)
# POST the image itself, as the `file` part of a multipart/form-data body, beside optional `model_tag` and `extra`
# (a JSON object) parts; answered like /infer_json
INFER_UPLOAD_ROUTE = "/infer_upload"
HEALTHZ_ROUTE = "/healthz"  # GET: 200 while the process serves HTTP
READYZ_ROUTE = "/readyz"  # GET: 200 once the model is warm and MinIO answers, else 503
METRICS_ROUTE = "/metrics"  # GET: Prometheus exposition

INFER_ROUTES = (INFER_JSON_ROUTE, INFER_BATCH_ROUTE, INFER_UPLOAD_ROUTE)

# ---------------------------------------------------------------------------- stages

# Where a message's processing failed: a dead letter's `stage`, and an error body's. `queue`: the service had no
# room for it; `http`: the exchange itself (no answer, or one that is not the service's); `dispatch`: the
# dispatcher itself failed on this message (a bug of ours, not the input's fault: replay it after the fix).
Stage = Literal["parse", "validate", "fetch", "decode", "queue", "infer", "http", "timeout", "dispatch"]
STAGES: tuple[Stage, ...] = get_args(Stage)

# ---------------------------------------------------------------------------- verdicts


class Verdict(str, Enum):
    """What an answer means for the message that caused it (the dispatcher acts on it)."""

    SUCCESS = "success"
    PERMANENT = "permanent"  # this message can never succeed: DLQ at once
    RETRYABLE = "retryable"  # this message may succeed later: retry within its budget, then DLQ
    OUTAGE = "outage"  # the service as a whole is unavailable: wait (circuit breaker), never DLQ
    MISCONFIGURED = "misconfigured"  # the deployment is wrong (token, URL, limits): pause the job, never DLQ


# ---------------------------------------------------------------------------- error kinds


@dataclass(frozen=True)
class ErrorKind:
    """One error `type` the service answers with (an ErrorBody's `error.type`)."""

    status: int
    stage: Stage
    verdict: Verdict
    # /infer_batch only: the request was refused for its shape, not for any one image, so each item still deserves
    # its own answer (the dispatcher sends them again one by one)
    whole_request: bool = False

    def __post_init__(self) -> None:
        if not 400 <= self.status < 600 or self.verdict is Verdict.SUCCESS:
            raise ValueError(f"an error kind answers a 4xx or 5xx and is no success: {self}")


_PERMANENT, _RETRYABLE, _OUTAGE, _MISCONFIGURED = (
    Verdict.PERMANENT,
    Verdict.RETRYABLE,
    Verdict.OUTAGE,
    Verdict.MISCONFIGURED,
)

ERROR_KINDS: Mapping[str, ErrorKind] = MappingProxyType(
    {
        # the request itself
        "bad_request": ErrorKind(422, "validate", _PERMANENT, whole_request=True),
        "too_many_items": ErrorKind(422, "validate", _PERMANENT, whole_request=True),  # over MAX_BATCH_ITEMS
        "request_too_large": ErrorKind(413, "validate", _PERMANENT, whole_request=True),  # over MAX_REQUEST_BYTES
        "request_timeout": ErrorKind(408, "validate", _RETRYABLE),  # the body did not arrive within BODY_TIMEOUT_S
        # the deployment: every message would get the same answer
        "unauthorized": ErrorKind(401, "validate", _MISCONFIGURED),  # a missing or wrong bearer token
        "route_not_found": ErrorKind(404, "validate", _MISCONFIGURED),  # a wrong path in the dispatcher's URL
        "method_not_allowed": ErrorKind(405, "validate", _MISCONFIGURED),
        # fetching the object
        "bucket_not_allowed": ErrorKind(403, "fetch", _PERMANENT),  # not one of the team's (ALLOWED_BUCKETS)
        "object_not_found": ErrorKind(404, "fetch", _PERMANENT),
        "bucket_not_found": ErrorKind(404, "fetch", _PERMANENT),
        "access_denied": ErrorKind(403, "fetch", _PERMANENT),
        "object_too_large": ErrorKind(413, "fetch", _PERMANENT),  # over MAX_OBJECT_BYTES
        "storage_refused": ErrorKind(422, "fetch", _PERMANENT),  # an S3 4xx: a name storage will not serve
        # an S3 5xx while MinIO is up: worth a few retries, not an outage (which would wait on one object forever)
        "storage_error": ErrorKind(502, "fetch", _RETRYABLE),
        "storage_unavailable": ErrorKind(503, "fetch", _OUTAGE),  # MinIO down, overloaded or refusing our credentials
        # decoding it
        "not_an_image": ErrorKind(415, "decode", _PERMANENT),
        "unsupported_image_format": ErrorKind(415, "decode", _PERMANENT),
        "decompression_bomb": ErrorKind(415, "decode", _PERMANENT),
        "too_costly_to_decode": ErrorKind(415, "decode", _PERMANENT),
        # capacity and time
        "queue_full": ErrorKind(429, "queue", _RETRYABLE),  # with Retry-After
        "not_ready": ErrorKind(503, "infer", _OUTAGE),  # the model is loading or warming up; with Retry-After
        "timeout": ErrorKind(504, "infer", _RETRYABLE),  # no answer within REQUEST_TIMEOUT_MS
        # bugs of the service or its adapter (never the input's fault)
        "internal_error": ErrorKind(500, "infer", _RETRYABLE),
        "runner_error": ErrorKind(500, "infer", _RETRYABLE),
    }
)
