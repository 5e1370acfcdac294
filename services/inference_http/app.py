"""The FastAPI app: thin routes over the InferenceEngine, which the lifespan builds once per process.

The two infer routes are served by `InferRoutes`, a plain ASGI layer in front of FastAPI's routing: the bearer
token, the body's size and deadline, one pydantic-core parse of the body, the engine, one orjson dump of its
dict. FastAPI's request handling (dependency solving, validating the response it was handed, the middleware
layers below) cost about a fifth of the GIL's time per image under load (bench/RESULTS.md, issue 10). FastAPI
still declares the routes, so /docs and the OpenAPI schema describe them, and serves everything else.

    TEAM=fruit PORT=8000 python -m services.inference_http      (server.py: uvicorn with connection limits)

Startup refuses (the process exits) when TEAM names no adapter or the weights cannot be loaded; warm-up then
runs in the background, so /healthz answers at once while /readyz says 503 until the model is warm and
MinIO answers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.base import Runner
from schemas import BatchRequest, BatchResponse, ErrorBody, ErrorDetail, InferRequest, InferResponse, Stage
from schemas import service_contract as contract
from services.inference_http import model_registry
from services.inference_http.engine import InferenceEngine
from services.inference_http.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotReady,
    RequestTimeout,
    RequestTooLarge,
    RouteNotFound,
    ServiceError,
    TooManyItems,
    Unauthorized,
)
from services.inference_http.metrics import CONTENT_TYPE_LATEST, Metrics, mark_this_worker_dead
from services.inference_http.paths import local_path
from services.inference_http.scheduler import SchedulerClient, json_default
from services.inference_http.settings import ServiceSettings
from services.inference_http.storage import ObjectStore
from services.inference_http.upload import FILE_FIELD, MULTIPART_OVERHEAD_BYTES, TEXT_FIELDS, parse_upload

log = logging.getLogger("services.inference_http")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "missing or wrong bearer token (when AUTH_TOKEN_FILE or AUTH_TOKEN is set); checked before the body "
        "is read",
        403: "the bucket is not one of this team's (ALLOWED_BUCKETS), or MinIO denies this service's user the object",
        404: "no such bucket or object",
        408: "the request body did not arrive within BODY_TIMEOUT_S",
        413: "the object is over MAX_OBJECT_BYTES, or the request body over MAX_REQUEST_BYTES",
        415: "not a decodable image, a decompression bomb, or too costly to decode",
        422: "malformed request, or a name storage refuses",
        429: "queue full; see Retry-After",
        500: "the runner failed on this image",
        502: "storage failed on this object while it is up",
        503: "not ready, or MinIO unavailable",
        504: "no answer within REQUEST_TIMEOUT_MS",
    }.items()
}


# ---------------------------------------------------------------------------- dependencies


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


# ---------------------------------------------------------------------------- routes


async def healthz(settings: Annotated[ServiceSettings, Depends(get_settings)]) -> dict[str, Any]:
    """Liveness: the process is up and serving HTTP."""
    return {"ok": True, "team": settings.team}


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and warmed up, and MinIO answers."""
    engine: InferenceEngine | None = request.app.state.engine
    reasons = await engine.readiness() if engine else ["the model is loading"]
    body: dict[str, Any] = {"ready": not reasons, "team": request.app.state.settings.team}
    if engine:
        body.update(
            model_name=engine.model_name,
            model_tag=engine.model_tag,
            device=str(engine.device),
            max_batch_size=engine.max_batch_size,
            workers=engine.settings.worker_count,
            forward=engine.forward,
        )
    body["reasons"] = reasons
    return JSONResponse(body, status_code=200 if not reasons else 503)


async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def infer_json(body: InferRequest) -> InferResponse:
    """Fetch `s3://bucket/key`, decode it and run the team's model on it."""
    raise InternalError("POST /infer_json is served by InferRoutes; this route only documents it")


async def infer_batch(body: BatchRequest) -> BatchResponse:
    """Many objects in one request; each item answers `ok` or its own error, in request order."""
    raise InternalError("POST /infer_batch is served by InferRoutes; this route only documents it")


async def infer_upload() -> InferResponse:
    """Run the team's model on an uploaded image (multipart/form-data, `curl -F file=@image.jpg`): no storage,
    the same limits (MAX_OBJECT_BYTES), decode, batching, runner and errors as /infer_json."""
    raise InternalError("POST /infer_upload is served by InferRoutes; this route only documents it")


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


# the form /infer_upload takes, for OpenAPI (described by hand: FastAPI's Form() parameters need python-multipart,
# which the route does without, see upload.py)
UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {"type": "string", "format": "binary", "description": "the image"},
                        "model_tag": {"type": "string"},
                        "extra": {"type": "string", "description": "a JSON object, passed to the runner as `extra`"},
                    },
                }
            }
        },
    }
}
assert set(UPLOAD_OPENAPI["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]) == {
    FILE_FIELD,
    *TEXT_FIELDS,
}

INFER_HANDLERS = {
    contract.INFER_JSON_ROUTE: serve_infer_json,
    contract.INFER_BATCH_ROUTE: serve_infer_batch,
    contract.INFER_UPLOAD_ROUTE: serve_infer_upload,
}
assert tuple(INFER_HANDLERS) == contract.INFER_ROUTES


# ---------------------------------------------------------------------------- errors and metrics


def _error(
    status: int,
    type_: str,
    message: str,
    stage: Stage | None,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, stage=stage, limit=limit))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _error_of(exc: ServiceError) -> JSONResponse:
    return _error(exc.status, exc.type, exc.message, exc.stage, exc.headers, exc.limit)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _error_of(exc)


def _validation_problems(errors: Sequence[Any]) -> BadRequest:
    problems = []
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            problems.append(f"malformed JSON: {detail}".rstrip(": "))
            continue
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return BadRequest("; ".join(problems) or "invalid request")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error_of(_validation_problems(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    known = {404: RouteNotFound, 405: MethodNotAllowed, 408: RequestTimeout, 413: RequestTooLarge}
    if exc.status_code in known:
        return _error_of(known[exc.status_code](str(exc.detail), headers=dict(exc.headers or {})))
    # a status Starlette chose that the service never answers itself (not in the contract's ERROR_KINDS); the
    # dispatcher reads it by its status
    return _error(exc.status_code, "http_error", str(exc.detail), "validate", dict(exc.headers or {}))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return _error_of(InternalError(f"{type(exc).__name__} (see the service log)"))


_JSON_HEADERS = [(b"content-type", b"application/json")]


class InferRoutes:
    """Serves POST /infer_json and /infer_batch (see the module's docstring); other requests go to FastAPI.

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
            await _error_of(exc)(scope, receive, send)
            return
        except ValidationError as exc:
            await _error_of(_validation_problems(exc.errors()))(scope, receive, send)
            return
        except Exception as exc:  # noqa: BLE001  (a bug of ours: a 500 in the service's shape, the traceback logged)
            await (await _unexpected_error(Request(scope), exc))(scope, receive, send)
            return
        content = orjson.dumps(payload, default=json_default)
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


# ---------------------------------------------------------------------------- the app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ServiceSettings = app.state.settings
    runner: Runner | None = app.state.runner
    if not logging.getLogger().handlers:  # uvicorn configures only its own loggers
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics: Metrics = app.state.metrics
    try:
        if settings.scheduler_socket and runner is None:
            # a front of a multi-process service: the model lives in the scheduler (server.py), not here
            engine = InferenceEngine(
                settings, lambda upstream: SchedulerClient(settings, upstream), ObjectStore(settings), metrics
            )
        else:
            if runner is None:
                runner = await asyncio.to_thread(
                    model_registry.get_model_runner,
                    settings.team,
                    settings.weights_path,
                    settings.model_tag,
                    module=settings.runner_module,
                )
            local = runner
            engine = InferenceEngine(
                settings,
                lambda upstream: local_path(settings, local, metrics, lambda: upstream() > 0),
                ObjectStore(settings),
                metrics,
            )
    except model_registry.RegistryError as exc:
        log.error("refusing to start: %s", exc)
        raise
    log.info(
        "team %s: %s (%s) loaded, device %s, max batch %d, max delay %gms",
        engine.team,
        engine.model_name,
        engine.model_tag,
        engine.device,
        engine.max_batch_size,
        settings.max_batch_delay_ms,
    )
    if settings.worker_count > 1:
        # one of several workers on one port: it takes no connection before it is warm (uvicorn starts accepting
        # when this startup returns), so no request meets a cold model while a warm worker could take it
        await engine.warm_up()
        if not engine.warmed:
            await engine.close()
            raise RuntimeError(f"warm-up failed: {engine.warmup_error}")
    app.state.engine = engine
    warm_up = asyncio.create_task(engine.warm_up(), name="warm-up") if not engine.warmed else None
    try:
        yield
    finally:
        if warm_up is not None:
            warm_up.cancel()
        app.state.engine = None
        await engine.close()
        mark_this_worker_dead()


def create_app(settings: ServiceSettings | None = None, runner: Runner | None = None) -> FastAPI:
    """The app; settings come from the environment unless given. `runner` replaces the registry's (tests)."""
    settings = settings or ServiceSettings()
    app = FastAPI(
        title=f"Inference service ({settings.team or 'no team'})",
        version="1.0",
        summary="MinIO object -> decode -> dynamic batch -> the team's torch model",
        lifespan=lifespan,
    )
    app.state.settings, app.state.runner, app.state.engine = settings, runner, None
    app.state.metrics = Metrics()

    # documents the bearer scheme in OpenAPI; InferRoutes enforces it before the body is read
    secured = [Depends(HTTPBearer(auto_error=False))]
    app.add_api_route(
        contract.INFER_JSON_ROUTE,
        infer_json,
        methods=["POST"],
        response_model=InferResponse,
        responses=_ERROR_RESPONSES,
        dependencies=secured,
    )
    app.add_api_route(
        contract.INFER_BATCH_ROUTE,
        infer_batch,
        methods=["POST"],
        response_model=BatchResponse,
        responses=_ERROR_RESPONSES,
        dependencies=secured,
    )
    app.add_api_route(
        contract.INFER_UPLOAD_ROUTE,
        infer_upload,
        methods=["POST"],
        response_model=InferResponse,
        responses=_ERROR_RESPONSES,
        dependencies=secured,
        openapi_extra=UPLOAD_OPENAPI,
    )
    app.add_api_route(contract.HEALTHZ_ROUTE, healthz, methods=["GET"])
    app.add_api_route(contract.READYZ_ROUTE, readyz, methods=["GET"], responses={503: {"description": "not ready"}})
    app.add_api_route(contract.METRICS_ROUTE, metrics, methods=["GET"], response_class=Response)

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    routes = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(InferRoutes, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, routes=routes)  # outermost: sees every answer
    return app


app = create_app()
