"""The inference service as the dispatcher's unit tests see it: a transport answered by a handler, a result in the
service's shape, its error bodies, and the dispatcher's identity (tests/unit/test_dispatch_*.py share them)."""

from __future__ import annotations

import httpx

from schemas import DispatcherIdentity
from streaming.dispatch.http import Answer, ConnectFailed, ConnectionBroken, RequestTimedOut


class MockService:
    """The client's transport, answered by an httpx.MockTransport handler (request in, response or exception out)."""

    def __init__(self, handler) -> None:
        self._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://svc")

    async def request(self, method: str, path: str, body: bytes = b"", answer_timeout_s: float = 30.0) -> Answer:
        try:
            response = await self._client.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise RequestTimedOut(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionBroken(str(exc)) from exc
        return Answer(response.status_code, response.content, dict(response.headers))

    async def aclose(self) -> None:
        await self._client.aclose()


IDENTITY = DispatcherIdentity(job="http-dispatcher-fruit/0", group_id="g", host="h")


RESPONSE = {
    "label": "defect",
    "score": 0.9,
    "confidence": 0.9,
    "latency_ms_model": 1.5,
    "team": "fruit",
    "bucket": "b-1",
    "key": "a.jpg",
    "model_name": "fruit_cls",
    "batch_size": 4,
    "spots": 3,
    "timings": {"fetch_ms": 1, "decode_ms": 2, "queue_ms": 3, "infer_ms": 4, "total_ms": 10},
}


def err(status: int, type_: str = "x", stage: str | None = None) -> dict:
    return {"error": {"type": type_, "message": "m", **({"stage": stage} if stage else {})}}
