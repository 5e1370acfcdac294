"""The dispatcher's keep-alive pool against real HTTP servers on localhost: uvicorn (the service's server), and raw
sockets for what a server may do wrong (close an idle connection, never answer, hang up mid-answer)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest
import uvicorn

from imagery.process import free_port
from streaming.dispatch.http import ConnectFailed, ConnectionBroken, KeepAlivePool, RequestTimedOut, _Connection
from tests.helpers import eventually


class EchoApp:
    """An ASGI app that answers with the body it got (201, or 200 for none). Its `/slow` answers wait until
    `overlap` of them are being served at once, so that many requests really are in flight together."""

    def __init__(self, overlap: int = 1) -> None:
        self.overlap = overlap
        self.arrived = 0
        self.overlapping = asyncio.Event()  # bound to uvicorn's loop when first awaited there

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            self.arrived += 1
            if self.arrived >= self.overlap:
                self.overlapping.set()
            await asyncio.wait_for(self.overlapping.wait(), 10)  # never that many at once: a 500, and the test fails
        await send(
            {
                "type": "http.response.start",
                "status": 201 if body else 200,
                "headers": [(b"content-type", b"application/json"), (b"x-path", scope["path"].encode())],
            }
        )
        await send({"type": "http.response.body", "body": b'{"echo": ' + (body or b"null") + b"}"})


@contextlib.contextmanager
def uvicorn_server(app: EchoApp, keep_alive_s: float = 5.0):
    # the socket listens before uvicorn runs: a request made at once waits in the kernel's backlog until uvicorn
    # accepts it, so there is no start to wait for
    listening = socket.create_server(("127.0.0.1", 0))
    # uvicorn annotates timeout_keep_alive as int, but hands it to loop.call_later, which takes seconds as a float
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            http="httptools",
            timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()


class CountingPool(KeepAlivePool):
    """The pool, counting the connections it opens."""

    opened = 0

    async def _connect(self) -> _Connection:
        self.opened += 1
        return await super()._connect()


def test_many_concurrent_requests_share_at_most_max_connections():
    async def go():
        pool = CountingPool(base, max_connections=8)
        answers = await asyncio.gather(*(pool.request("POST", "/slow", b'{"i": %d}' % i) for i in range(200)))
        await pool.aclose()
        return answers, pool.opened

    with uvicorn_server(EchoApp(overlap=8)) as base:
        answers, opened = asyncio.run(go())
    assert [a.status for a in answers] == [201] * 200
    assert answers[7].body == b'{"echo": {"i": 7}}' and answers[7].headers["x-path"] == "/slow"
    assert opened <= 8


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error_or_a_stall():
    async def go():
        pool = KeepAlivePool(base, max_connections=2)
        first = await pool.request("GET", "/a")
        (idle,) = pool._idle
        await eventually(lambda: idle.closed, "uvicorn to close the connection idle for 0.2 s", timeout_s=5)
        started = time.monotonic()
        second = await pool.request("GET", "/b", answer_timeout_s=5)
        await pool.aclose()
        return first, second, time.monotonic() - started

    with uvicorn_server(EchoApp(), keep_alive_s=0.2) as base:
        first, second, took = asyncio.run(go())
    assert (first.status, second.status) == (200, 200) and took < 1.0


async def raw_server(handle):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_server_that_hangs_up_as_a_request_arrives_on_a_reused_connection_gets_it_sent_again():
    served = []

    async def handle(reader, writer):
        n = 0
        while await reader.readuntil(b"\r\n\r\n"):
            n += 1
            served.append(n)
            if n == 2:  # the second request on this connection: hang up without a byte, like an idle timeout race
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def go():
        server, base = await raw_server(handle)
        pool = KeepAlivePool(base, max_connections=1)
        answers = [await pool.request("GET", "/x", answer_timeout_s=5) for _ in range(3)]
        server.close()
        await pool.aclose()
        return answers

    assert [a.body for a in asyncio.run(go())] == [b"ok"] * 3
    assert served == [1, 2, 1, 2, 1]


def test_nothing_listening_is_connect_failed():
    pool = KeepAlivePool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectFailed):
        asyncio.run(pool.request("GET", "/x"))


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_reused():
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if len(connections) == 1:
            await asyncio.sleep(30)  # the server under test never answers in time (not a wait: the client's is)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate")
        await writer.drain()

    async def go():
        server, base = await raw_server(handle)
        pool = KeepAlivePool(base)
        started = time.monotonic()
        with pytest.raises(RequestTimedOut):
            await pool.request("GET", "/x", answer_timeout_s=0.2)
        took = time.monotonic() - started
        again = await pool.request("GET", "/x", answer_timeout_s=5)
        server.close()
        await pool.aclose()
        return took, again

    took, again = asyncio.run(go())
    assert took < 2 and again.body == b"late" and len(connections) == 2


def test_a_hang_up_in_the_middle_of_an_answer_is_connection_broken():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async def go():
        server, base = await raw_server(handle)
        pool = KeepAlivePool(base)
        try:
            await pool.request("GET", "/x", answer_timeout_s=5)
        finally:
            server.close()

    with pytest.raises(ConnectionBroken):
        asyncio.run(go())


def test_connection_close_answers_are_read_and_the_connection_dropped():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 3\r\n\r\ndown")
        await writer.drain()
        writer.close()

    async def go():
        server, base = await raw_server(handle)
        pool = KeepAlivePool(base)
        answers = [await pool.request("GET", "/x", answer_timeout_s=5) for _ in range(2)]
        server.close()
        return answers, pool._idle

    answers, idle = asyncio.run(go())
    assert [(a.status, a.body, a.headers["retry-after"]) for a in answers] == [(503, b"down", "3")] * 2
    assert idle == []
