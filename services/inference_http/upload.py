"""The body of POST /infer_upload: a multipart/form-data form (what curl -F and browser forms send) with the image
in a `file` part and, as in /infer_json's body, optional `model_tag` and `extra` (a JSON object) parts.

Parsed with the standard library's `email` package (MIME is what multipart/form-data is): the body is already
in memory, bounded by the route's size limit, so a streaming parser (python-multipart) would add a dependency
for nothing. Nothing here imports torch: parsing a form is the HTTP front's work, not the model's (a test holds
it so).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass
from email.message import Message
from typing import Any

from schemas.inference_api import UPLOAD_FILE_FIELD
from services.inference_http.errors import BadRequest

FILE_FIELD = UPLOAD_FILE_FIELD
TEXT_FIELDS = ("model_tag", "extra")
# what a multipart body adds around the file: boundaries, part headers and the small text fields
MULTIPART_OVERHEAD_BYTES = 64 * 1024

_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)


@dataclass(frozen=True)
class Upload:
    """An image sent in the request itself (/infer_upload), with what /infer_json's body would carry."""

    data: bytes
    filename: str | None = None
    model_tag: str | None = None
    extra: dict[str, Any] | None = None


def parse_upload(content_type: str, body: bytes) -> Upload:
    """The upload in `body`; BadRequest (422) saying what is wrong when it is not the form this route takes."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise BadRequest(
            "POST /infer_upload takes multipart/form-data with the image in a `file` part (curl -F file=@image.jpg)"
        )
    message = _PARSER.parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise BadRequest(
            "the multipart/form-data body is malformed: "
            + (", ".join(type(d).__name__ for d in message.defects) or "it holds no parts")
        )
    parts: dict[str, Message] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise BadRequest("every part of the form needs a name (Content-Disposition: form-data; name=...)")
        if name != FILE_FIELD and name not in TEXT_FIELDS:
            raise BadRequest(
                f"unknown form field {name!r}; this route takes {FILE_FIELD!r}, "
                + ", ".join(repr(f) for f in TEXT_FIELDS)
            )
        if name in parts:
            raise BadRequest(f"the form field {name!r} is given twice; send one image per request")
        parts[name] = part
    if FILE_FIELD not in parts:
        raise BadRequest(f"no {FILE_FIELD!r} part: send the image as `{FILE_FIELD}` (curl -F {FILE_FIELD}=@image.jpg)")
    data = parts[FILE_FIELD].get_payload(decode=True)
    return Upload(
        data=data if isinstance(data, bytes) else b"",
        filename=parts[FILE_FIELD].get_filename(),
        model_tag=_text(parts.get("model_tag")) or None,
        extra=_extra(_text(parts.get("extra"))),
    )


def _text(part: Message | None) -> str:
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    try:
        return payload.decode("utf-8").strip() if isinstance(payload, bytes) else ""
    except UnicodeDecodeError:
        raise BadRequest(
            f"the form field {part.get_param('name', header='content-disposition')!r} is not UTF-8 text"
        ) from None


def _extra(text: str) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"extra: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"extra: must be a JSON object, got {type(value).__name__}")
    return value
