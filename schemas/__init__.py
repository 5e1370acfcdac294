"""Wire contracts shared by the dispatcher and the inference service: pydantic models only, no I/O.

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

__all__ = [
    "BatchItemError",
    "BatchItemOk",
    "BatchRequest",
    "BatchResponse",
    "DeadLetter",
    "DispatcherIdentity",
    "ErrorBody",
    "ErrorDetail",
    "ErrorEnvelope",
    "ImageMessage",
    "InferRequest",
    "InferResponse",
    "InferenceResult",
    "InvalidMessage",
    "SourceRecord",
    "Timings",
    "decode_image_messages",
]
