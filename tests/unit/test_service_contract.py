"""The service and the dispatcher read one contract (schemas.service_contract): every error kind the service
answers with, answered by the real app and read by the dispatcher, means what ERROR_KINDS says it means.

The error classes are found by walking ServiceError's subclasses, so a new class, or a new kind in the table,
is covered without editing this file."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from schemas import ERROR_KINDS, INFER_JSON_ROUTE, STAGES, ErrorBody, Verdict
from services.inference_http import errors
from services.inference_http.app import create_app
from services.inference_http.settings import ServiceSettings
from streaming.dispatch import outcome
from streaming.dispatch.http import Answer
from streaming.dispatch.outcome import WHOLE_REQUEST_TYPES, Outcome, classify_response, classify_status
from tests.helpers import example_error


def _service_error_classes(cls: type[errors.ServiceError] = errors.ServiceError) -> list[type[errors.ServiceError]]:
    found = [cls] if cls.__module__ == errors.__name__ else []  # not a test's own subclass
    return found + [sub for direct in cls.__subclasses__() for sub in _service_error_classes(direct)]


ERROR_CLASSES = _service_error_classes()


def _answer(app: FastAPI, method: str, path: str, **kwargs: Any) -> Answer:
    """The raw HTTP answer of `app` (no lifespan: no model, no MinIO), as the dispatcher's transport hands it over."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.request(method, path, **kwargs)

    response = asyncio.run(go())
    return Answer(response.status_code, response.content, {k.lower(): v for k, v in response.headers.items()})


def _service(**settings: Any) -> FastAPI:
    return create_app(ServiceSettings(team="fruit", **settings))


def _assert_as_the_contract_says(answer: Answer, read: Outcome, type_: str) -> None:
    kind = ERROR_KINDS[type_]
    assert ErrorBody.model_validate_json(answer.body).error.type == type_
    assert answer.status == kind.status
    assert (read.type, read.stage, read.verdict, read.http_status) == (type_, kind.stage, kind.verdict, kind.status)
    assert (type_ in WHOLE_REQUEST_TYPES) is kind.whole_request


def test_every_service_error_class_has_a_kind_and_every_kind_a_class():
    assert {cls.type for cls in ERROR_CLASSES} == set(ERROR_KINDS)
    for cls in ERROR_CLASSES:
        assert (cls.status, cls.stage) == (ERROR_KINDS[cls.type].status, ERROR_KINDS[cls.type].stage), cls


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_the_dispatcher_reads_every_error_the_real_service_answers_as_the_contract_says(cls):
    app = _service()
    exc = example_error(cls)

    async def raises() -> None:
        raise exc

    app.add_api_route("/raises", raises)  # through the app's own exception handlers and middleware
    answer = _answer(app, "GET", "/raises")
    read = classify_response(answer)
    _assert_as_the_contract_says(answer, read, cls.type)
    if "Retry-After" in exc.headers:
        assert read.retry_after_s == float(exc.headers["Retry-After"])
    # the same error as one item of an /infer_batch answer (engine.infer_item's form)
    item = classify_status(exc.status, {"ok": False, "status": exc.status, "error": exc.detail_dict()})
    assert (item.type, item.stage, item.verdict) == (read.type, read.stage, read.verdict)


@pytest.mark.parametrize(
    "method, path, settings, type_",
    [
        ("GET", "/no-such-route", {}, "route_not_found"),  # Starlette's routing
        ("GET", INFER_JSON_ROUTE, {}, "method_not_allowed"),  # InferRoutes hands a GET to FastAPI
        ("POST", INFER_JSON_ROUTE, {"auth_token": "right"}, "unauthorized"),  # InferRoutes, before the body is read
        ("POST", INFER_JSON_ROUTE, {"max_request_bytes": 1024}, "request_too_large"),  # InferRoutes, by Content-Length
    ],
)
def test_the_errors_the_app_answers_on_its_own_are_read_as_the_contract_says(method, path, settings, type_):
    body = b'{"bucket": "fruit", "key": "a.jpg", "extra": {"pad": "' + b"x" * 2000 + b'"}}'
    answer = _answer(_service(**settings), method, path, content=body)
    _assert_as_the_contract_says(answer, classify_response(answer), type_)


def test_an_unexpected_exception_is_an_internal_error_as_the_contract_says():
    app = _service()

    async def breaks() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/breaks", breaks)
    answer = _answer(app, "GET", "/breaks")
    _assert_as_the_contract_says(answer, classify_response(answer), "internal_error")


def test_the_services_own_type_at_another_status_is_read_by_its_status():
    # a 503 naming queue_full is not the service's queue_full (a 429): someone else's answer, an outage by status
    assert classify_status(503, {"error": {"type": "queue_full", "message": "m"}}).verdict is Verdict.OUTAGE


def test_every_stage_the_dispatcher_may_write_is_a_stage_of_the_contract():
    assert set(outcome._STAGE_BY_STATUS.values()) <= set(STAGES)
    assert {kind.stage for kind in ERROR_KINDS.values()} <= set(STAGES)
    assert {"queue", "dispatch"} <= set(STAGES)
