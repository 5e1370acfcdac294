"""The HTTP server: uvicorn, with the limits a service facing many clients needs and uvicorn lacks.

    python -m services.inference_http      (configured by the environment: services/inference_http/settings.py)

uvicorn closes idle keep-alive connections, but a connection that sends nothing, or sends its request head a
byte at a time, is held for as long as the client likes. `HeadTimeoutProtocol` gives every request head a
deadline; `RequestGuard` (app.py) gives the body one; `limit_concurrency` bounds connections and requests (503
beyond it, which the dispatcher waits out like any overload).
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.inference_http.settings import ServiceSettings

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus: a request's head (request line and headers) must arrive within
    `head_timeout_s` of the connection opening or of the request's first byte, else 408 and the connection
    closes. (httptools is what uvicorn[standard] runs; the hooks below are its parser's callbacks.)"""

    head_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def uvicorn_config(settings: ServiceSettings) -> uvicorn.Config:
    protocol = type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": settings.header_timeout_s})
    return uvicorn.Config(
        "services.inference_http.app:app", host=settings.host, port=settings.port, http=protocol,
        limit_concurrency=settings.max_connections, timeout_keep_alive=settings.keep_alive_s,
        access_log=settings.access_log, log_level=settings.log_level, timeout_graceful_shutdown=20,
    )


def main() -> None:
    uvicorn.Server(uvicorn_config(ServiceSettings())).run()
