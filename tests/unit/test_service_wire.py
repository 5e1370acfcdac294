"""The scheduler's wire (services/inference_http/wire.py): every frame kind, every reply kind and every error kind
makes the round trip through the bytes a socket carries.

The kinds are enumerated from FrameKind, ReplyKind and the contract's ERROR_KINDS, so a new kind is covered without
editing this file (a frame or reply kind without an example here fails until it has one)."""

from __future__ import annotations

import asyncio

import pytest

from schemas import ERROR_KINDS
from services.inference_http.decode import ImageInfo
from services.inference_http.errors import ERROR_CLASSES, ServiceError, from_wire, to_wire
from services.inference_http.forward import Done, Item, ModelInfo
from services.inference_http.wire import (
    FRAME,
    Frame,
    FrameKind,
    Reply,
    ReplyKind,
    frame_parts,
    read_frame,
    read_reply,
    reply_parts,
)
from tests.helpers import example_error


def _reader_of(*parts: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(parts))
    reader.feed_eof()
    return reader


def frame_round_trip(frame: Frame) -> Frame:
    async def go() -> Frame:
        return await read_frame(_reader_of(*frame_parts(frame)))

    return asyncio.run(go())


def reply_round_trip(request_id: int, reply: Reply) -> tuple[int, Reply]:
    async def go() -> tuple[int, Reply]:
        return await read_reply(_reader_of(*reply_parts(request_id, reply)))

    return asyncio.run(go())


FRAME_EXAMPLES = {
    FrameKind.REQUEST: Frame(
        FrameKind.REQUEST,
        3,
        7,
        Item(b"\xff\xd8 the image's bytes \xff\xd9", ImageInfo("JPEG", 640, 480), "v2", {"crop": [1, 2.5]}),
    ),
    FrameKind.CANCEL: Frame(FrameKind.CANCEL, 2, 2**40),
    FrameKind.UPSTREAM: Frame(FrameKind.UPSTREAM, 9),
}

REPLY_EXAMPLES: dict[ReplyKind, Reply] = {
    ReplyKind.HELLO: ModelInfo("fruit_defect_cnn", "v1", "cuda:0", 128, "compiled (inductor, default)"),
    ReplyKind.RESULT: Done({"label": "defect", "scores": {"clean": 0.25, "defect": 0.75}}, 17, 1234.5678, 2.5, 3.25),
    ReplyKind.ERROR: ERROR_CLASSES["not_an_image"]("cannot identify image file"),
}


@pytest.mark.parametrize("kind", list(FrameKind), ids=lambda kind: kind.name)
def test_every_frame_kind_makes_the_round_trip(kind):
    frame = FRAME_EXAMPLES[kind]
    assert frame_round_trip(frame) == frame


@pytest.mark.parametrize("kind", list(ReplyKind), ids=lambda kind: kind.name)
def test_every_reply_kind_makes_the_round_trip(kind):
    reply = REPLY_EXAMPLES[kind]
    request_id, back = reply_round_trip(41, reply)
    assert request_id == 41 and type(back) is type(reply)
    if isinstance(reply, ServiceError):
        assert isinstance(back, ServiceError) and to_wire(back) == to_wire(reply)
    else:
        assert back == reply


@pytest.mark.parametrize("type_", list(ERROR_KINDS))
def test_every_error_kind_makes_the_round_trip_as_its_own_class(type_):
    sent = example_error(ERROR_CLASSES[type_])
    sent.limit = 1024
    request_id, back = reply_round_trip(5, sent)
    assert request_id == 5 and type(back) is type(sent) and isinstance(back, ServiceError)
    assert (back.type, back.status, back.stage) == (type_, ERROR_KINDS[type_].status, ERROR_KINDS[type_].stage)
    assert (back.message, back.headers, back.limit) == (sent.message, sent.headers, sent.limit)


def test_an_error_type_this_side_does_not_know_arrives_as_an_internal_error_with_its_message():
    back = from_wire(["a_newer_kind", "what went wrong", {}, None])
    assert (back.type, back.status, back.message) == ("internal_error", 500, "what went wrong")


def test_a_result_that_is_not_json_is_refused_before_it_is_sent():
    with pytest.raises(TypeError):
        reply_parts(1, Done({"label": object()}, 1, 0.0, 0.0, 0.0))


def test_a_frame_of_an_unknown_kind_is_refused():
    async def go() -> Frame:
        return await read_frame(_reader_of(FRAME.pack(b"?", 0, 1, 0, 0)))

    with pytest.raises(ValueError, match="not a frame kind"):
        asyncio.run(go())
