"""Every failure the service reports, as one small class hierarchy: each class names its error type, and takes
its status and stage from that type's entry in schemas.service_contract.ERROR_KINDS.

The dispatcher reads the same table: the type's verdict says whether trying again can help (permanent: to the
DLQ at once; retryable: retried with backoff; outage or misconfigured: waited out), and its stage becomes the DLQ
envelope's stage. A class whose type has no entry fails at import.
"""

from __future__ import annotations

from typing import Any, ClassVar

from schemas import ERROR_KINDS, Stage


def _take_status_and_stage(cls: type[ServiceError]) -> None:
    kind = ERROR_KINDS[cls.type]
    cls.status, cls.stage = kind.status, kind.stage


class ServiceError(Exception):
    type: ClassVar[str] = "internal_error"
    status: ClassVar[int]  # from ERROR_KINDS[type]
    stage: ClassVar[Stage]  # from ERROR_KINDS[type]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _take_status_and_stage(cls)

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.limit = limit

    def detail_dict(self) -> dict:
        """The ErrorDetail this error answers with, as the plain dict it serialises to (`limit` only when set),
        without building the model: the hot path's per-item errors of /infer_batch."""
        detail: dict[str, object] = {"type": self.type, "message": self.message, "stage": self.stage}
        if self.limit is not None:
            detail["limit"] = self.limit
        return detail


_take_status_and_stage(ServiceError)


# --- the request itself (permanent)
class BadRequest(ServiceError):
    type = "bad_request"


class TooManyItems(BadRequest):
    """A /infer_batch request with more items than MAX_BATCH_ITEMS: the request's shape, not any one image."""

    type = "too_many_items"


class RequestTooLarge(BadRequest):
    """A request body over MAX_REQUEST_BYTES (decided from Content-Length before it is read, when there is one)."""

    type = "request_too_large"


class Unauthorized(ServiceError):
    type = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class BucketNotAllowed(ServiceError):
    """The bucket is not one of this team's (ALLOWED_BUCKETS); decided before storage is asked."""

    type = "bucket_not_allowed"


# --- fetching the object
class ObjectNotFound(ServiceError):
    type = "object_not_found"


class BucketNotFound(ObjectNotFound):
    type = "bucket_not_found"


class AccessDenied(ServiceError):
    type = "access_denied"


class ObjectTooLarge(ServiceError):
    type = "object_too_large"


class StorageRefused(ServiceError):
    """MinIO answered, and refused this object's request (an S3 4xx): the message names something storage won't
    serve, so trying again cannot help."""

    type = "storage_refused"


class StorageFailed(ServiceError):
    """MinIO answered this request with a server error while it is up: worth a few retries, not a service outage
    (a 503 would make the dispatcher wait for the whole service, forever, on one object)."""

    type = "storage_error"


class StorageUnavailable(ServiceError):
    """MinIO did not answer, is overloaded or starting, or rejected our credentials: the whole service is down,
    nothing is wrong with the message."""

    type = "storage_unavailable"


# --- decoding it
class NotAnImage(ServiceError):
    type = "not_an_image"


class UnsupportedImageFormat(NotAnImage):
    type = "unsupported_image_format"


class DecompressionBomb(NotAnImage):
    type = "decompression_bomb"


class TooCostlyToDecode(NotAnImage):
    """A JPEG whose progressive scans would cost more CPU to decode than any real photo (refused before decoding:
    a decode cannot be stopped once it runs)."""

    type = "too_costly_to_decode"


# --- capacity and time (retryable)
class RequestTimeout(ServiceError):
    """The request body did not arrive within BODY_TIMEOUT_S: the client's pace, not the request's content, so
    worth retrying (hence not a BadRequest, whose kinds are permanent)."""

    type = "request_timeout"


class QueueFull(ServiceError):
    type = "queue_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    type = "not_ready"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceeded(ServiceError):
    type = "timeout"


# --- bugs
class InternalError(ServiceError):
    """A bug of the service itself (never the input's fault); the traceback is in the log."""


class RunnerFailed(ServiceError):
    """The runner raised: a bug in the adapter (or a model that cannot take this input)."""

    type = "runner_error"


class RouteNotFound(ServiceError):
    """No route at this path: whoever calls has the wrong URL."""

    type = "route_not_found"


class MethodNotAllowed(ServiceError):
    type = "method_not_allowed"


def to_wire(exc: ServiceError) -> list[Any]:
    """`exc` as plain JSON values, for the scheduler's answer to a front: [type, message, headers, limit], keyed
    by its public `type` (ERROR_KINDS), so `from_wire` rebuilds the same class whatever the classes are named."""
    return [exc.type, exc.message, exc.headers, exc.limit]


def from_wire(value: list[Any]) -> ServiceError:
    """The ServiceError `to_wire` described, of the class of its `type` (so the same status and stage); a type this
    side does not know (a newer scheduler) is an InternalError with the same message."""
    type_, message, headers, limit = value
    cls = ERROR_CLASSES.get(type_, InternalError)
    exc = cls.__new__(cls)  # not cls(): some constructors compute headers (Retry-After) the wire already carries
    ServiceError.__init__(exc, message, headers=headers, limit=limit)
    return exc


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _subclasses(direct)]


# every error class by its public type (one class per type: the contract test holds it so)
ERROR_CLASSES: dict[str, type[ServiceError]] = {cls.type: cls for cls in _subclasses(ServiceError)}
