"""Wire contracts shared by the dispatcher and the inference service: pydantic models and the service contract's
tables (routes, stages, error kinds), no I/O.

`python -m schemas.generate` writes the `*.schema.json` files beside this package from these models;
tests/unit/test_schemas.py fails when the two drift.
"""

from schemas.dead_letter import DeadLetter, DispatcherIdentity, ErrorEnvelope
from schemas.image_message import ImageMessage, InvalidMessage, decode_image_messages
from schemas.inference_api import (
    BatchItemError,
    BatchItemOk,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    ErrorDetail,
    InferRequest,
    InferResponse,
    Timings,
)
from schemas.result import InferenceResult, SourceRecord
from schemas.service_contract import (
    ERROR_KINDS,
    HEALTHZ_ROUTE,
    INFER_BATCH_ROUTE,
    INFER_JSON_ROUTE,
    INFER_ROUTES,
    INFER_UPLOAD_ROUTE,
    METRICS_ROUTE,
    READYZ_ROUTE,
    STAGES,
    ErrorKind,
    Stage,
    Verdict,
)

__all__ = [
    "ERROR_KINDS",
    "HEALTHZ_ROUTE",
    "INFER_BATCH_ROUTE",
    "INFER_JSON_ROUTE",
    "INFER_ROUTES",
    "INFER_UPLOAD_ROUTE",
    "METRICS_ROUTE",
    "READYZ_ROUTE",
    "STAGES",
    "BatchItemError",
    "BatchItemOk",
    "BatchRequest",
    "BatchResponse",
    "DeadLetter",
    "DispatcherIdentity",
    "ErrorBody",
    "ErrorDetail",
    "ErrorEnvelope",
    "ErrorKind",
    "ImageMessage",
    "InferRequest",
    "InferResponse",
    "InferenceResult",
    "InvalidMessage",
    "SourceRecord",
    "Stage",
    "Timings",
    "Verdict",
    "decode_image_messages",
]
