"""A lean HTTP/1.1 keep-alive client for the dispatcher's hot path: one service, POSTs of JSON, answers in memory.

Why not httpx here (httpx stays everywhere else): under the dispatcher's load its pool was the costliest code in
the job. py-spy of the job's Python (then a worker process) against a fast stand-in put httpx and its libraries at
67% of the samples: the pool rescans every connection for every queued request (cost grows with the square of the
concurrency), a failed `import sniffio` per request, a liveness check per connection. This pool takes an idle
connection from a stack and waits on a semaphore when all are busy, so its cost per request does not depend on the
concurrency; httptools (already the service's parser under uvicorn) reads the answers. (The py-spy profile was not
kept; what bench/RESULTS.md keeps is the job's pace with this client: "Issue 28", and the earlier runs "Dispatcher pace
vs Flink SQL passthrough" in bench/results/.)

Errors are a small hierarchy, classified by streaming/dispatch/outcome.py: `ConnectFailed` and `ConnectionBroken`
mean the service is not there (an outage, waited out), `RequestTimedOut` that it did not answer in time.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from streaming.dispatch import defaults


class HttpError(Exception):
    """A request that got no complete answer."""


class ConnectFailed(HttpError):
    """No connection could be opened (refused, unreachable, name not found, connect timeout)."""


class ConnectionBroken(HttpError):
    """The connection closed, was reset, or sent something that is not HTTP before the answer was complete."""


class RequestTimedOut(HttpError):
    """No complete answer within the request's `answer_timeout_s`."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._received = False
        self._head_done = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection's transport is a Transport (asyncio's signature names the base class)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionBroken(f"not an HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        if self._head_done and "content-length" not in self._headers and "transfer-encoding" not in self._headers:
            self._complete(keep_alive=False)  # an answer whose body runs until the server closes
        self._fail(ConnectionBroken("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionBroken(f"connection lost: {exc}" if exc else "the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete(self._parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        answer = Answer(self._parser.get_status_code(), b"".join(self._body), self._headers)
        self._headers, self._body, self._received, self._head_done = {}, [], False, False
        if not keep_alive:
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def _fail(self, error: HttpError) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, raw: bytes) -> Answer:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = False
        self.transport.write(raw)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    @property
    def answered_nothing(self) -> bool:
        return not self._received


class KeepAlivePool:
    """Keep-alive connections to one origin (`http://host:port` or `https://...`), at most `max_connections`.

    A connection the server closed while idle is found either when it is taken (its EOF already arrived) or by a
    request on it that got no byte back: that request is sent once more on a new connection (the service's
    routes are idempotent: the same image gives the same answer)."""

    def __init__(
        self,
        base_url: str,
        max_connections: int = defaults.MAX_CONNECTIONS,
        connect_timeout_s: float = defaults.CONNECT_TIMEOUT_S,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`ca_file`: a PEM bundle of the CAs an https:// server's certificate may chain to (default: the system's)."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context(cafile=ca_file) if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        host_header = url.netloc.rsplit("@", 1)[-1]
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in {"host": host_header, **(headers or {})}.items())
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []  # a stack: the most recently used is the least likely to have timed out
        self._slots: asyncio.Semaphore | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        answer_timeout_s: float = defaults.ATTEMPT_TIMEOUT_S,
        content_type: str = "application/json",
    ) -> Answer:
        """One request and its complete answer within `answer_timeout_s`, counted from a free connection slot:
        connecting (at most `connect_timeout_s` of it) and a resend on a stale idle connection included."""
        if self._slots is None:  # made inside the running loop that uses the pool
            self._slots = asyncio.Semaphore(self.max_connections)
        head = (
            f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._fixed_headers}"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        raw = head.encode("latin-1") + body
        async with self._slots:
            try:
                async with asyncio.timeout(answer_timeout_s):
                    return await self._send(raw)
            except TimeoutError:
                raise RequestTimedOut(f"no answer to {method} {path} within {answer_timeout_s:g} s") from None

    async def _send(self, raw: bytes) -> Answer:
        conn = self._take_idle()
        if conn is not None:
            try:
                return self._release(conn, await conn.exchange(raw))
            except ConnectionBroken:
                if not conn.answered_nothing:
                    raise
                # the server closed this idle connection as we wrote: not an answer, try a fresh one
            except BaseException:
                conn.close()  # a cancelled or timed-out request leaves its answer unread on the connection
                raise
        conn = await self._connect()
        try:
            return self._release(conn, await conn.exchange(raw))
        except BaseException:
            conn.close()
            raise

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: _Connection, answer: Answer) -> Answer:
        if not conn.closed:
            self._idle.append(conn)
        return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self._ssl)
        except TimeoutError:
            raise ConnectFailed(
                f"could not connect to {self.host}:{self.port} within {self.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"could not connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
