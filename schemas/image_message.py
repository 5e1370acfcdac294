"""The input contract: what producers publish to `imagery.new.<team>`.

Two shapes are accepted on the wire: the plain `{bucket, key, ...}` message, and a MinIO (S3) bucket
event notification, so that an upload alone can start the flow. Both decode to `ImageMessage`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.limits import MAX_EVENT_RECORDS, MAX_JSON_DEPTH, MAX_KEY_BYTES, MAX_KEY_SEGMENT_BYTES, RESERVED_BUCKETS

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# a "." or ".." segment between "/" or "\\", after MinIO trims it (Go's unicode.IsSpace on each byte)
_DOT_SEGMENT_RE = re.compile(r"(?:^|[/\\])[ \t\n\v\f\r\x85\xa0]*\.\.?[ \t\n\v\f\r\x85\xa0]*(?:$|[/\\])")


class InvalidMessage(ValueError):
    """A message that can never be processed. `stage` is `parse` (not JSON) or `validate` (bad fields)."""

    def __init__(self, stage: Literal["parse", "validate"], message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def check_bucket_name(name: str) -> str:
    """S3 bucket naming rules (the subset MinIO enforces, plus AWS's reserved prefixes/suffixes)."""
    if not _BUCKET_RE.match(name):
        raise ValueError(
            "bucket must be 3-63 characters of lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise ValueError("bucket must not contain '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise ValueError("bucket must not be formatted as an IP address")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        raise ValueError("bucket uses a reserved prefix or suffix")
    if name in RESERVED_BUCKETS:
        raise ValueError(f"bucket {name!r} is reserved by MinIO")
    return name


def check_object_key(key: str) -> str:
    """S3's key rules plus every name MinIO refuses (cmd/object-api-utils.go `IsValidObjectName`), so a key that
    storage would refuse is a validation error here instead of a storage error for every retry."""
    if not key or key.isspace():
        raise ValueError("key must not be empty or only whitespace")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("key must be valid Unicode (it holds a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"key must be at most {MAX_KEY_BYTES} bytes (UTF-8)")
    if key[0] == "/":
        raise ValueError("key must not start with '/'")
    if key[-1] == "/":
        raise ValueError("key must not end with '/' (that names a folder, not an object)")
    if "\0" in key:
        raise ValueError("key must not contain a NUL character")
    if "//" in key:
        raise ValueError("key must not contain '//'")
    if "." in key and _DOT_SEGMENT_RE.search(key):
        raise ValueError("key must not contain '.' or '..' path segments (between '/' or '\\')")
    if size > MAX_KEY_SEGMENT_BYTES and any(len(s.encode("utf-8")) > MAX_KEY_SEGMENT_BYTES for s in key.split("/")):
        raise ValueError(f"each '/'-separated part of the key must be at most {MAX_KEY_SEGMENT_BYTES} bytes")
    return key


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE_RE.search(text) is not None


def check_json_tree(doc: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse what would break later stages: nesting deeper than `max_depth` and strings (names or values)
    holding a lone surrogate, which JSON allows as an escape but UTF-8 cannot encode. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InvalidMessage("validate", f"the message nests deeper than {max_depth} levels")
        for name, value in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(value, str):
                if _has_surrogate(value):
                    break
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
            if isinstance(name, str) and _has_surrogate(name):
                break
        else:
            continue
        raise InvalidMessage(
            "validate", "a string in the message holds a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
        )


class ImageMessage(BaseModel):
    """One image to infer on. Unknown fields are kept (and echoed into the result)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    bucket: str = Field(description="S3/MinIO bucket holding the image", examples=["fruit-hot"])
    key: str = Field(description="object key inside the bucket", examples=["cam1/2025/01/01/0001.jpg"])
    camera: str | None = Field(default=None, description="optional camera / source name")
    publish_ts_ms: int | None = Field(default=None, ge=0, description="producer's publish time, epoch ms")
    id: str | None = Field(default=None, description="producer's id; the dispatcher derives one if absent")
    model_tag: str | None = Field(default=None, description="optional model version/tag to ask for")
    extra: dict[str, Any] | None = Field(
        default=None,
        description="passed to the team's runner as `extra` (e.g. thresholds, a region of interest); "
        "echoed in the result under `echo`",
    )

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        return check_object_key(value)

    def extra_fields(self) -> dict[str, Any]:
        """What the result echoes: the unknown fields, and `extra` (which was one of them before the runner got it)."""
        echoed = dict(self.__pydantic_extra__ or {})
        if self.extra is not None:
            echoed["extra"] = self.extra
        return echoed


def _from_s3_event(doc: dict[str, Any]) -> list[dict[str, Any]]:
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise InvalidMessage("validate", "S3 event notification has no Records")
    if len(records) > MAX_EVENT_RECORDS:
        raise InvalidMessage(
            "validate", f"S3 event notification has {len(records)} Records; at most {MAX_EVENT_RECORDS} are taken"
        )
    out = []
    for rec in records:
        try:
            s3 = rec["s3"]
            bucket = s3["bucket"]["name"]
            key = unquote_plus(s3["object"]["key"])  # S3 events URL-query-escape the key
        except (KeyError, TypeError) as exc:
            raise InvalidMessage("validate", f"S3 event record lacks s3.bucket.name/s3.object.key: {exc!r}") from None
        item: dict[str, Any] = {"bucket": bucket, "key": key, "s3_event": rec.get("eventName")}
        event_time = rec.get("eventTime")
        if isinstance(event_time, str):
            item["event_time"] = event_time
        out.append(item)
    return out


def decode_image_messages(raw: bytes | str) -> list[ImageMessage]:
    """Decode one Kafka value into the images it names (a plain message names one; an S3 event one or more).

    Raises `InvalidMessage` with stage `parse` or `validate`; never anything else for bad input.
    """
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage("parse", f"value is not JSON: {exc}") from None
    except RecursionError:  # the stdlib parser recurses once per nesting level
        raise InvalidMessage("parse", "value is not JSON we can read: it nests too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidMessage("validate", f"value must be a JSON object, got {type(doc).__name__}")
    check_json_tree(doc)
    items = _from_s3_event(doc) if "Records" in doc and "bucket" not in doc else [doc]
    try:
        return [ImageMessage.model_validate(item) for item in items]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidMessage("validate", problems) from None
