"""The dispatcher's HTTP client for the inference service: retries, backoff, circuit breaker, batching.

`InferenceClient.infer` resolves to `Success` or `Failure` and never raises for what the service or the
network does: a `Failure` is final (DLQ), and an outage or a misconfiguration is waited out inside `infer`,
however long it lasts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

import orjson

from schemas import INFER_BATCH_ROUTE, INFER_JSON_ROUTE, READYZ_ROUTE, InferRequest
from schemas.inference_api import service_response_keys
from streaming.dispatch import defaults
from streaming.dispatch.http import Answer, HttpError, KeepAlivePool
from streaming.dispatch.outcome import (
    WHOLE_REQUEST_TYPES,
    Outcome,
    Verdict,
    classify_exception,
    classify_response,
    classify_status,
)
from streaming.dispatch.retry import CircuitBreaker, RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Success:
    response: dict
    attempts: int
    http_ms: float


@dataclass(frozen=True)
class Failure:
    outcome: Outcome
    attempts: int
    first_attempt_ms: int
    last_attempt_ms: int


def service_base_url(http_url: str) -> str:
    """--http-url is the full `/infer_json` URL (compose and users pass it so); the batch and readiness routes sit
    beside it."""
    url = http_url.rstrip("/")
    for route in (INFER_JSON_ROUTE, INFER_BATCH_ROUTE):
        if url.endswith(route):
            return url[: -len(route)]
    return url


def _now_ms() -> int:
    return int(time.time() * 1000)


class Transport(Protocol):
    """What the client needs from HTTP: `KeepAlivePool` in the job; the unit tests bring their own."""

    async def request(
        self, method: str, path: str, body: bytes = b"", answer_timeout_s: float = defaults.ATTEMPT_TIMEOUT_S
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class InferenceClient:
    def __init__(
        self,
        http_url: str,
        policy: RetryPolicy = RetryPolicy(),
        attempt_timeout_s: float = defaults.ATTEMPT_TIMEOUT_S,
        items_per_request: int = defaults.ITEMS_PER_REQUEST,
        max_batch_wait_ms: float = defaults.MAX_BATCH_WAIT_MS,
        max_connections: int = defaults.MAX_CONNECTIONS,
        auth_token: str | None = None,
        ca_file: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.base_url = service_base_url(http_url)
        self.policy = policy
        self.items_per_request = items_per_request
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.attempt_timeout_s = attempt_timeout_s
        headers = {"authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._http: Transport = transport or KeepAlivePool(
            self.base_url,
            max_connections=max_connections,
            connect_timeout_s=min(defaults.CONNECT_TIMEOUT_S, attempt_timeout_s),
            headers=headers,
            ca_file=ca_file,
        )
        self.breaker = CircuitBreaker(self._ready, log=log)
        self._pending: list[tuple[InferRequest, asyncio.Future[Outcome]]] = []
        self._flush_timer: asyncio.Handle | None = None
        self._rng = random.Random()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _ready(self) -> bool:
        try:
            answer = await self._http.request("GET", READYZ_ROUTE, answer_timeout_s=defaults.READINESS_PROBE_TIMEOUT_S)
            return answer.status == 200
        except HttpError:
            return False

    @property
    def route(self) -> str:
        return INFER_JSON_ROUTE if self.items_per_request <= 1 else INFER_BATCH_ROUTE

    async def _accepts_us(self) -> bool:
        """Whether the service takes our token on our route: an empty body must get the service's own 422 (auth
        and routing come before the body is read), not 401, 404 or an answer from something else."""
        try:
            response = await self._http.request(
                "POST", self.route, b"{}", answer_timeout_s=defaults.ROUTE_PROBE_TIMEOUT_S
            )
        except HttpError:
            return False
        return classify_response(response).verdict is Verdict.PERMANENT and response.status == 422

    async def infer(self, request: InferRequest) -> Success | Failure:
        attempts, suspect_503s, first_ms = 0, 0, _now_ms()
        while True:
            await self.breaker.wait_closed()
            attempts += 1
            started = time.perf_counter()
            outcome = await self._send(request)
            if outcome.verdict is Verdict.SUCCESS:
                assert outcome.body is not None
                return Success(outcome.body, attempts, (time.perf_counter() - started) * 1000)
            if outcome.verdict is Verdict.MISCONFIGURED:
                attempts -= 1  # the deployment is wrong, not the message: pause everything, condemn nothing
                self.breaker.trip(
                    f"{self.base_url}{self.route} answers {outcome.http_status or ''} "
                    f"{outcome.type}: {outcome.message[:300]}",
                    self._accepts_us,
                    misconfigured=True,
                )
                continue
            if outcome.verdict is Verdict.OUTAGE:
                attempts -= 1  # the service being down is not this message's fault: no budget spent
                self.breaker.trip(f"the service is unavailable ({outcome.type}: {outcome.message[:200]})")
                await self.breaker.wait_closed()
                # A 503 for this message while /readyz says ready at the first probe is about the message, not
                # the service: after a retry budget of those, it is the message's failure after all.
                if outcome.http_status is not None and self.breaker.last_probes <= 1:
                    suspect_503s += 1
                    if not self.policy.can_retry(suspect_503s):
                        retryable = Outcome(
                            Verdict.RETRYABLE,
                            outcome.stage,
                            outcome.type,
                            f"{outcome.message} (answered {suspect_503s} times while the service was ready)",
                            outcome.http_status,
                        )
                        return Failure(retryable, suspect_503s, first_ms, _now_ms())
                continue
            if outcome.verdict is Verdict.PERMANENT or not self.policy.can_retry(attempts):
                return Failure(outcome, attempts, first_ms, _now_ms())
            await asyncio.sleep(self.policy.delay_s(attempts, outcome.retry_after_s, self._rng))

    async def _send(self, request: InferRequest) -> Outcome:
        if self.items_per_request <= 1:
            return await self._post_one(request)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if len(self._pending) >= self.items_per_request:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.max_batch_wait_s, self._flush)
        return await future

    async def _post_one(self, request: InferRequest) -> Outcome:
        try:
            body = request.model_dump_json(exclude_none=True).encode()
            response = await self._http.request("POST", INFER_JSON_ROUTE, body, answer_timeout_s=self.attempt_timeout_s)
        except HttpError as exc:
            return classify_exception(exc)
        return _result_or_misconfigured(classify_response(response))

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending = self._pending[: self.items_per_request], self._pending[self.items_per_request :]
        if self._pending:
            self._flush_timer = asyncio.get_running_loop().call_soon(self._flush)
        if batch:
            asyncio.get_running_loop().create_task(self._post_batch(batch))

    async def _post_batch(self, batch: list[tuple[InferRequest, asyncio.Future[Outcome]]]) -> None:
        try:
            answer = await self._answer_batch([request for request, _ in batch])
        except Exception as exc:  # never leave a caller waiting on a future nobody will set
            log.exception("sending a batch of %d failed", len(batch))
            answer = [Outcome(Verdict.RETRYABLE, "http", type(exc).__name__, str(exc) or repr(exc))] * len(batch)
        for (_, future), outcome in zip(batch, answer, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _answer_batch(self, requests: list[InferRequest]) -> list[Outcome]:
        body = orjson.dumps({"items": [request.model_dump(exclude_none=True) for request in requests]})
        try:
            response = await self._http.request(
                "POST", INFER_BATCH_ROUTE, body, answer_timeout_s=self.attempt_timeout_s
            )
            answer = self._split_batch(response, len(requests))
        except HttpError as exc:
            answer = classify_exception(exc)
        if not isinstance(answer, Outcome):
            return answer
        # about the request as a whole
        if answer.verdict is Verdict.PERMANENT and answer.type in WHOLE_REQUEST_TYPES:
            # refused for its shape (too many items, too large, an item the service reads otherwise), not for
            # any one image: each item gets its own answer, and later requests carry fewer items
            if answer.type != "bad_request" and self.items_per_request > 1:
                limit = ((answer.body or {}).get("error") or {}).get("limit")
                fits = limit if answer.type == "too_many_items" and isinstance(limit, int) else len(requests) // 2
                self.items_per_request = max(1, min(self.items_per_request, fits))
                log.warning(
                    "the service refused %d items per request (%s); sending at most %d from now on",
                    len(requests),
                    answer.message[:200],
                    self.items_per_request,
                )
            return list(await asyncio.gather(*(self._post_one(request) for request in requests)))
        return [answer] * len(requests)

    @staticmethod
    def _split_batch(response: Answer, n: int) -> Outcome | list[Outcome]:
        """One outcome per item, or one Outcome when the answer is about the request as a whole."""
        whole = classify_response(response)
        items = (whole.body or {}).get("items") if whole.verdict is Verdict.SUCCESS else None
        if whole.verdict is Verdict.SUCCESS and (not isinstance(items, list) or len(items) != n):
            return Outcome(
                Verdict.MISCONFIGURED,
                "http",
                "not_the_service",
                f"a batch answer without {n} items: is --http-url the inference service?",
                200,
            )
        if whole.verdict is not Verdict.SUCCESS:
            return whole
        assert isinstance(items, list)  # checked above for a success
        outcomes = []
        for item in items:
            if isinstance(item, dict) and item.get("ok") is True and isinstance(item.get("result"), dict):
                outcomes.append(
                    _result_or_misconfigured(Outcome(Verdict.SUCCESS, "", "", "", 200, body=item["result"]))
                )
            else:
                item = item if isinstance(item, dict) else {}
                status = item.get("status")
                outcomes.append(classify_status(status if isinstance(status, int) else 500, item))
        return outcomes


# what every answer of the service carries whatever its runner returns (a detector's result has no `label`)
_SERVICE_KEYS = service_response_keys()


def _result_or_misconfigured(outcome: Outcome) -> Outcome:
    """A success must carry a result; a 2xx without one comes from something that is not the service."""
    if outcome.verdict is Verdict.SUCCESS and not (outcome.body is not None and _SERVICE_KEYS <= outcome.body.keys()):
        return Outcome(
            Verdict.MISCONFIGURED,
            "http",
            "not_the_service",
            "a 2xx answer without a result: is --http-url the inference service?",
            outcome.http_status,
        )
    return outcome
