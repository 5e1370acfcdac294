"""The scheduler's wire: what crosses the Unix socket between the HTTP fronts and the one scheduler that owns the
model (scheduler.py), in both directions length-prefixed, so a reader never scans for a delimiter.

    front -> scheduler  FRAME (kind, upstream, request id, header length, data length) + header + data, the
                        kind a `FrameKind`. `upstream` is how many images the front has admitted that have not
                        reached the scheduler yet: the batch window waits only while some are coming.
    scheduler -> front  REPLY (request id, kind, body length) + an orjson array, the kind a `ReplyKind`: the
                        model's `ModelInfo` (the hello, on connecting), a `Done`, or an error (errors.to_wire).

Records travel as positional arrays in their dataclass's field order, and are rebuilt by calling the dataclass
with them: a field added on one side only is a TypeError at once, not a silently dropped key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from services.inference_http.decode import ImageInfo
from services.inference_http.errors import ServiceError, from_wire, to_wire
from services.inference_http.forward import Done, Item, ModelInfo
from services.inference_http.json_encoding import dumps

FRAME = struct.Struct("!cIQII")  # kind, upstream, request id, header length, data length
REPLY = struct.Struct("!QcI")  # request id, kind, body length
# how much a connection buffers before it stops reading: asyncio's default (64 KiB, pausing beyond twice that) is
# less than two 80 KB images, so the scheduler's loop would pause and resume the socket for nearly every frame
STREAM_LIMIT = 8 * 1024 * 1024


class FrameKind(bytes, enum.Enum):
    """What a front's frame asks of the scheduler."""

    REQUEST = b"R"  # an image: the header [model_tag, extra, format, width, height], then its bytes
    CANCEL = b"C"  # the front stopped waiting for `request_id` (deadline, client gone): skip it if not yet batched
    UPSTREAM = b"U"  # only `upstream` changed


class ReplyKind(bytes, enum.Enum):
    """What a scheduler's reply carries."""

    HELLO = b"H"  # the ModelInfo of the model it serves, once per connection, first
    RESULT = b"D"  # a Done: the runner's result for `request_id`, with its batch's figures
    ERROR = b"E"  # that item's ServiceError, as errors.to_wire


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from a front; `item` is a REQUEST's image (None for the other kinds)."""

    kind: FrameKind
    upstream: int
    request_id: int = 0
    item: Item | None = None


Reply = ModelInfo | Done | ServiceError

_FRAME_KINDS = {kind.value: kind for kind in FrameKind}
_REPLY_KINDS = {kind.value: kind for kind in ReplyKind}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per record class: dataclasses.fields() per image would cost more


def as_array(record: Any) -> list[Any]:
    """A dataclass instance as the list of its fields' values, in their order (what `type(record)(*array)`
    rebuilds)."""
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(field.name for field in dataclasses.fields(record))
    return [getattr(record, name) for name in names]


def frame_parts(frame: Frame) -> tuple[bytes, ...]:
    """`frame` as the byte strings to write, in order (a writer sends them together: writelines)."""
    if frame.kind is FrameKind.REQUEST:
        item = frame.item
        assert item is not None, "a REQUEST frame carries its item"
        header = orjson.dumps([item.model_tag, item.extra, *as_array(item.info)])
        return (
            FRAME.pack(frame.kind.value, frame.upstream, frame.request_id, len(header), len(item.data)),
            header,
            item.data,
        )
    return (FRAME.pack(frame.kind.value, frame.upstream, frame.request_id, 0, 0),)


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame on `reader`; asyncio.IncompleteReadError when the front went away, ValueError for a kind
    this side does not know."""
    kind_byte, upstream, request_id, header_len, data_len = FRAME.unpack(await reader.readexactly(FRAME.size))
    kind = _FRAME_KINDS.get(kind_byte)
    if kind is None:
        raise ValueError(f"not a frame kind of this wire: {kind_byte!r}")
    if kind is not FrameKind.REQUEST:
        return Frame(kind, upstream, request_id)
    model_tag, extra, *info = orjson.loads(await reader.readexactly(header_len))
    data = await reader.readexactly(data_len)
    return Frame(kind, upstream, request_id, Item(data, ImageInfo(*info), model_tag, extra))


def reply_parts(request_id: int, reply: Reply) -> tuple[bytes, bytes]:
    """`reply` to `request_id` as the byte strings to write; TypeError when a Done's result is not JSON (an
    adapter's bug: the caller answers that item's error instead)."""
    if isinstance(reply, Done):
        kind, body = ReplyKind.RESULT, dumps(as_array(reply))
    elif isinstance(reply, ModelInfo):
        kind, body = ReplyKind.HELLO, orjson.dumps(as_array(reply))
    else:
        kind, body = ReplyKind.ERROR, orjson.dumps(to_wire(reply))
    return REPLY.pack(request_id, kind.value, len(body)), body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, Reply]:
    """The next reply on `reader`: the request id it answers and the record; asyncio.IncompleteReadError when the
    scheduler went away, ValueError for a kind this side does not know."""
    request_id, kind_byte, length = REPLY.unpack(await reader.readexactly(REPLY.size))
    values = orjson.loads(await reader.readexactly(length))
    kind = _REPLY_KINDS.get(kind_byte)
    if kind is ReplyKind.RESULT:
        return request_id, Done(*values)
    if kind is ReplyKind.ERROR:
        return request_id, from_wire(values)
    if kind is ReplyKind.HELLO:
        return request_id, ModelInfo(*values)
    raise ValueError(f"not a reply kind of this wire: {kind_byte!r}")
