"""The service's own ASGI layers, in front of FastAPI's routing (app.py stacks them):

    MetricsMiddleware  counts and times every request by route and status (outermost: it sees every answer)
    InferRoutes        serves the three infer routes itself, as plain ASGI: the bearer token, the body's size and
                       deadline, one pydantic-core parse of the body, the engine, one orjson dump of its dict

FastAPI's request handling (dependency solving, validating the response it was handed, the middleware layers
below) cost about a fifth of the GIL's time per image under load (bench/RESULTS.md, "Issue 10, step by step"), so
the infer routes skip it; FastAPI still declares them, so /docs and the OpenAPI schema describe them, and it serves
every other route. The error answers here are the ones app.py's exception handlers give too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import BatchRequest, ErrorBody, ErrorDetail, InferRequest, Stage
from schemas import service_contract as contract
from services.inference_http.engine import InferenceEngine
from services.inference_http.errors import (
    BadRequest,
    InternalError,
    NotReady,
    RequestTimeout,
    RequestTooLarge,
    ServiceError,
    TooManyItems,
    Unauthorized,
)
from services.inference_http.json_encoding import dumps
from services.inference_http.metrics import Metrics
from services.inference_http.settings import ServiceSettings
from services.inference_http.upload import MULTIPART_OVERHEAD_BYTES, parse_upload

log = logging.getLogger("services.inference_http")


# ---------------------------------------------------------------------------- error answers


def error_response(
    status: int,
    type_: str,
    message: str,
    stage: Stage | None,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
) -> JSONResponse:
    """An answer in the service's error shape (schemas.ErrorBody)."""
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, stage=stage, limit=limit))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.type, exc.message, exc.stage, exc.headers, exc.limit)


def validation_problems(errors: Sequence[Any]) -> BadRequest:
    """Pydantic's validation errors of a request body as one BadRequest naming each problem."""
    problems = []
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            problems.append(f"malformed JSON: {detail}".rstrip(": "))
            continue
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return BadRequest("; ".join(problems) or "invalid request")


def unexpected_error_response(path: str, exc: Exception) -> JSONResponse:
    """A bug of ours: a 500 in the service's shape, the traceback logged."""
    log.exception("unhandled error on %s", path, exc_info=exc)
    return service_error_response(InternalError(f"{type(exc).__name__} (see the service log)"))


# ---------------------------------------------------------------------------- the infer routes


async def serve_infer_json(engine: InferenceEngine, body: bytes, received: float, scope: Scope) -> dict[str, Any]:
    return await engine.infer(InferRequest.model_validate_json(body), received)


async def serve_infer_upload(engine: InferenceEngine, body: bytes, received: float, scope: Scope) -> dict[str, Any]:
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"").decode("latin-1")
    return await engine.infer_upload(parse_upload(content_type, body), received)


async def serve_infer_batch(engine: InferenceEngine, body: bytes, received: float, scope: Scope) -> dict[str, Any]:
    items = BatchRequest.model_validate_json(body).items
    limit = engine.settings.max_batch_items
    if len(items) > limit:
        raise TooManyItems(
            f"{len(items)} items is over the limit of {limit} per request (MAX_BATCH_ITEMS)", limit=limit
        )
    return {"items": await asyncio.gather(*(engine.infer_item(item, received) for item in items))}


InferHandler = Callable[[InferenceEngine, bytes, float, Scope], Awaitable[dict[str, Any]]]
INFER_HANDLERS: dict[str, InferHandler] = {
    contract.INFER_JSON_ROUTE: serve_infer_json,
    contract.INFER_BATCH_ROUTE: serve_infer_batch,
    contract.INFER_UPLOAD_ROUTE: serve_infer_upload,
}
assert tuple(INFER_HANDLERS) == contract.INFER_ROUTES

_JSON_HEADERS = [(b"content-type", b"application/json")]


class InferRoutes:
    """Serves POST on the infer routes (see the module's docstring); other requests go to FastAPI.

    What every infer request must pass before its body is read: the bearer token (401 at once, so a caller
    without it learns nothing from the body's validation), a size limit (413: from Content-Length before reading,
    else while reading), and a deadline for the body to arrive (408, so a client that sends it slowly does not
    hold a request open). All answer in the service's error shape, which tells the dispatcher the request was
    refused, not the image."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.token = settings.auth_token.get_secret_value().encode() if settings.auth_token else b""
        self.body_timeout_s = settings.body_timeout_s
        # an upload carries the image itself: its body may be as large as an object the service would fetch
        self.max_bytes = {route: settings.max_request_bytes for route in contract.INFER_ROUTES}
        self.max_bytes[contract.INFER_UPLOAD_ROUTE] = max(
            settings.max_request_bytes, settings.max_object_bytes + MULTIPART_OVERHEAD_BYTES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = INFER_HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            self._check_token(scope)
            if scope["method"] != "POST":
                await self.app(scope, receive, send)  # FastAPI's 405
                return
            state = scope.setdefault("state", {})
            received = state.get("received_at") or time.monotonic()
            engine: InferenceEngine | None = scope["app"].state.engine
            body = await self._body(scope, receive, received, self.max_bytes[scope["path"]])
            if engine is None:
                raise NotReady("the service is starting")
            payload = await handler(engine, body, received, scope)
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        except ValidationError as exc:
            await service_error_response(validation_problems(exc.errors()))(scope, receive, send)
            return
        except Exception as exc:  # noqa: BLE001  (a bug of ours: a 500 in the service's shape, the traceback logged)
            await unexpected_error_response(scope["path"], exc)(scope, receive, send)
            return
        content = dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    def _check_token(self, scope: Scope) -> None:
        if not self.token:
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not secrets.compare_digest(credentials.strip(), self.token):
            raise Unauthorized("a valid bearer token is required (Authorization: Bearer <the service's token>)")

    async def _body(self, scope: Scope, receive: Receive, received: float, max_bytes: int) -> bytes:
        setting = "MAX_OBJECT_BYTES" if max_bytes > self.max_bytes[contract.INFER_JSON_ROUTE] else "MAX_REQUEST_BYTES"
        too_large = RequestTooLarge(f"the request body is over {max_bytes} bytes ({setting})", limit=max_bytes)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if length.isdigit() and int(length) > max_bytes:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time() + received + self.body_timeout_s - time.monotonic()
            ):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        raise BadRequest("the client disconnected before its request body arrived")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g}s (BODY_TIMEOUT_S)"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---------------------------------------------------------------------------- metrics


class MetricsMiddleware:
    """Counts and times every request by route and status; stamps its arrival time for the timings."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        scope.setdefault("state", {})["received_at"] = started
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"  # bounded label values
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.monotonic() - started)
