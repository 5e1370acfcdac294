"""The FastAPI app: thin routes over the InferenceEngine, which the lifespan builds once per process.

`create_app(settings)` builds it; nothing is built at import. server.py serves it with uvicorn's `factory=True`
(APP_FACTORY), so each worker process calls `create_app()`, which reads its settings from the environment:

    TEAM=fruit PORT=8000 python -m services.inference_http      (server.py: uvicorn with connection limits)

The three infer routes are served by `InferRoutes` (asgi.py), a plain ASGI layer in front of FastAPI's routing;
FastAPI declares them here (the stub routes below), so /docs and the OpenAPI schema describe them, and serves
everything else.

Startup refuses (the process exits) when TEAM names no adapter or the weights cannot be loaded; warm-up then
runs in the background, so /healthz answers at once while /readyz says 503 until the model is warm and
MinIO answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.base import Runner
from schemas import ERROR_KINDS, BatchRequest, BatchResponse, ErrorBody, InferRequest, InferResponse
from schemas import service_contract as contract
from services.inference_http import model_registry
from services.inference_http.asgi import (
    InferRoutes,
    MetricsMiddleware,
    error_response,
    service_error_response,
    unexpected_error_response,
    validation_problems,
)
from services.inference_http.engine import InferenceEngine
from services.inference_http.errors import (
    InternalError,
    MethodNotAllowed,
    RequestTimeout,
    RequestTooLarge,
    RouteNotFound,
    ServiceError,
)
from services.inference_http.forward import in_process_path
from services.inference_http.metrics import CONTENT_TYPE_LATEST, Metrics, mark_this_worker_dead
from services.inference_http.scheduler import SchedulerClient
from services.inference_http.settings import ServiceSettings
from services.inference_http.storage import ObjectStore
from services.inference_http.upload import FILE_FIELD, TEXT_FIELDS

log = logging.getLogger("services.inference_http")

# what uvicorn imports and calls, with factory=True, in each process that serves (server.py)
APP_FACTORY = f"{__name__}:create_app"


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The infer routes' error answers for OpenAPI, from the contract's ERROR_KINDS: each status with the error
    types that answer with it and what each means for the caller (its verdict)."""
    by_status: dict[int, list[str]] = {}
    for type_, kind in ERROR_KINDS.items():
        by_status.setdefault(kind.status, []).append(f"`{type_}` ({kind.verdict.value})")
    return {
        status: {"model": ErrorBody, "description": "error.type: " + ", ".join(types)}
        for status, types in sorted(by_status.items())
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


# ---------------------------------------------------------------------------- FastAPI's exception handlers


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return service_error_response(validation_problems(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    known = {404: RouteNotFound, 405: MethodNotAllowed, 408: RequestTimeout, 413: RequestTooLarge}
    if exc.status_code in known:
        return service_error_response(known[exc.status_code](str(exc.detail), headers=dict(exc.headers or {})))
    # a status Starlette chose that the service never answers itself (not in the contract's ERROR_KINDS); the
    # dispatcher reads it by its status
    return error_response(exc.status_code, "http_error", str(exc.detail), "validate", dict(exc.headers or {}))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(request.url.path, exc)


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
                lambda upstream: in_process_path(settings, local, metrics, lambda: upstream() > 0),
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
    """The app; settings come from the environment unless given (uvicorn's factory call, in each worker, gives
    none). `runner` replaces the registry's (tests)."""
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
    responses = error_responses()
    for route, handler, answer, extra in (
        (contract.INFER_JSON_ROUTE, infer_json, InferResponse, None),
        (contract.INFER_BATCH_ROUTE, infer_batch, BatchResponse, None),
        (contract.INFER_UPLOAD_ROUTE, infer_upload, InferResponse, UPLOAD_OPENAPI),
    ):
        app.add_api_route(
            route,
            handler,
            methods=["POST"],
            response_model=answer,
            responses=responses,
            dependencies=secured,
            openapi_extra=extra,
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
