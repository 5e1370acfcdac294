"""Every failure the service reports, as one small class hierarchy: status code, error type and stage.

The dispatcher routes on the status (4xx other than 408/429: permanent, to the DLQ at once; 408/429/5xx:
retried with backoff), so each class's status is a promise about whether trying again can help. The
`stage` becomes the DLQ envelope's stage.
"""

from __future__ import annotations

from schemas import ErrorBody, ErrorDetail


class ServiceError(Exception):
    status: int = 500
    type: str = "internal_error"
    stage: str = "infer"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.limit = limit

    def detail(self) -> ErrorDetail:
        return ErrorDetail(type=self.type, message=self.message, stage=self.stage, limit=self.limit)

    def body(self) -> dict:
        return ErrorBody(error=self.detail()).model_dump()

    def detail_dict(self) -> dict:
        """`detail()` as the plain dict it serialises to (`limit` only when set), without building the model: the
        hot path's per-item errors of /infer_batch."""
        detail = {"type": self.type, "message": self.message, "stage": self.stage}
        if self.limit is not None:
            detail["limit"] = self.limit
        return detail


# --- the request itself (permanent)
class BadRequest(ServiceError):
    status, type, stage = 422, "bad_request", "validate"


class TooManyItems(BadRequest):
    """A /infer_batch request with more items than MAX_BATCH_ITEMS: the request's shape, not any one image."""

    type = "too_many_items"


class RequestTooLarge(BadRequest):
    """A request body over MAX_REQUEST_BYTES (decided from Content-Length before it is read, when there is one)."""

    status, type = 413, "request_too_large"


class RequestTimeout(BadRequest):
    """The request body did not arrive within BODY_TIMEOUT_S: the client's pace, worth retrying."""

    status, type = 408, "request_timeout"


class Unauthorized(ServiceError):
    status, type, stage = 401, "unauthorized", "validate"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class BucketNotAllowed(ServiceError):
    """The bucket is not one of this team's (ALLOWED_BUCKETS); decided before storage is asked."""

    status, type, stage = 403, "bucket_not_allowed", "fetch"


# --- fetching the object
class ObjectNotFound(ServiceError):
    status, type, stage = 404, "object_not_found", "fetch"


class BucketNotFound(ObjectNotFound):
    type = "bucket_not_found"


class AccessDenied(ServiceError):
    status, type, stage = 403, "access_denied", "fetch"


class ObjectTooLarge(ServiceError):
    status, type, stage = 413, "object_too_large", "fetch"


class StorageRefused(ServiceError):
    """MinIO answered, and refused this object's request (an S3 4xx): the message names something storage won't
    serve, so trying again cannot help."""

    status, type, stage = 422, "storage_refused", "fetch"


class StorageFailed(ServiceError):
    """MinIO answered this request with a server error while it is up: worth a few retries, not a service outage
    (a 503 would make the dispatcher wait for the whole service, forever, on one object)."""

    status, type, stage = 502, "storage_error", "fetch"


class StorageUnavailable(ServiceError):
    """MinIO did not answer, is overloaded or starting, or rejected our credentials: the whole service is down,
    nothing is wrong with the message."""

    status, type, stage = 503, "storage_unavailable", "fetch"


# --- decoding it
class NotAnImage(ServiceError):
    status, type, stage = 415, "not_an_image", "decode"


class UnsupportedImageFormat(NotAnImage):
    type = "unsupported_image_format"


class DecompressionBomb(NotAnImage):
    type = "decompression_bomb"


class TooCostlyToDecode(NotAnImage):
    """A JPEG whose progressive scans would cost more CPU to decode than any real photo (refused before decoding:
    a decode cannot be stopped once it runs)."""

    type = "too_costly_to_decode"


# --- capacity and time (retryable)
class QueueFull(ServiceError):
    status, type, stage = 429, "queue_full", "queue"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status, type, stage = 503, "not_ready", "infer"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceeded(ServiceError):
    status, type, stage = 504, "timeout", "infer"


# --- bugs
class InternalError(ServiceError):
    """A bug of the service itself (never the input's fault); the traceback is in the log."""


class RunnerFailed(ServiceError):
    """The runner raised: a bug in the adapter (or a model that cannot take this input)."""

    status, type, stage = 500, "runner_error", "infer"


def to_wire(exc: ServiceError) -> list:
    """`exc` as plain JSON values, for the scheduler's answer to a front (see `from_wire`)."""
    return [type(exc).__name__, exc.message, exc.headers, exc.limit]


def from_wire(value: list) -> ServiceError:
    """The ServiceError `to_wire` described, of the same class (so the same status, type and stage)."""
    name, message, headers, limit = value
    cls = _ERROR_CLASSES.get(name, InternalError)
    exc = cls.__new__(cls)
    ServiceError.__init__(exc, message, headers=headers, limit=limit)
    return exc


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _subclasses(direct)]


_ERROR_CLASSES = {cls.__name__: cls for cls in _subclasses(ServiceError)}
