"""The dispatcher's HTTP client for the inference service: retries, backoff, circuit breaker, batching.

`InferenceClient.infer` resolves to `Success` or `Failure` and never raises for what the service or the
network does: a `Failure` is final (DLQ), and an outage is waited out inside `infer`, however long it lasts.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from schemas import BatchRequest, InferRequest
from streaming.dispatch.outcome import Outcome, Verdict, classify_exception, classify_response, classify_status
from streaming.dispatch.retry import CircuitBreaker, RetryPolicy


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
    """The seed passes the full `/infer_json` URL; the batch and readiness routes sit beside it."""
    url = http_url.rstrip("/")
    for route in ("/infer_json", "/infer_batch"):
        if url.endswith(route):
            return url[: -len(route)]
    return url


def _now_ms() -> int:
    return int(time.time() * 1000)


class InferenceClient:
    def __init__(
        self,
        http_url: str,
        policy: RetryPolicy = RetryPolicy(),
        timeout_s: float = 30.0,
        items_per_request: int = 1,
        max_batch_wait_ms: float = 5.0,
        max_connections: int = 64,
        auth_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = service_base_url(http_url)
        self.policy = policy
        self.items_per_request = items_per_request
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        headers = {"authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)), headers=headers,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )
        self.breaker = CircuitBreaker(self._ready)
        self._pending: list[tuple[InferRequest, asyncio.Future[Outcome]]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._rng = random.Random()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _ready(self) -> bool:
        response = await self._http.get(f"{self.base_url}/readyz", timeout=2.0)
        return response.status_code == 200

    async def infer(self, request: InferRequest) -> Success | Failure:
        attempts, first_ms = 0, _now_ms()
        while True:
            await self.breaker.wait_closed()
            attempts += 1
            started = time.perf_counter()
            outcome = await self._send(request)
            if outcome.verdict is Verdict.SUCCESS:
                assert outcome.body is not None
                return Success(outcome.body, attempts, (time.perf_counter() - started) * 1000)
            if outcome.verdict is Verdict.OUTAGE:
                attempts -= 1  # the service being down is not this message's fault: no budget spent
                self.breaker.trip()
                continue
            if outcome.verdict is Verdict.PERMANENT or not self.policy.can_retry(attempts):
                return Failure(outcome, attempts, first_ms, _now_ms())
            await asyncio.sleep(self.policy.delay_s(attempts, outcome.retry_after_s, self._rng))

    async def _send(self, request: InferRequest) -> Outcome:
        if self.items_per_request <= 1:
            try:
                response = await self._http.post(f"{self.base_url}/infer_json",
                                                 content=request.model_dump_json(exclude_none=True),
                                                 headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                return classify_exception(exc)
            return classify_response(response)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if len(self._pending) >= self.items_per_request:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.max_batch_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending = self._pending[: self.items_per_request], self._pending[self.items_per_request:]
        if self._pending:
            self._flush_timer = asyncio.get_running_loop().call_soon(self._flush)  # type: ignore[assignment]
        if batch:
            asyncio.get_running_loop().create_task(self._post_batch(batch))

    async def _post_batch(self, batch: list[tuple[InferRequest, asyncio.Future[Outcome]]]) -> None:
        body = BatchRequest(items=[request for request, _ in batch]).model_dump_json(exclude_none=True)
        try:
            response = await self._http.post(f"{self.base_url}/infer_batch", content=body,
                                             headers={"content-type": "application/json"})
            outcomes = self._split_batch(response, len(batch))
        except httpx.HTTPError as exc:
            outcomes = [classify_exception(exc)] * len(batch)
        for (_, future), outcome in zip(batch, outcomes):
            if not future.done():
                future.set_result(outcome)

    @staticmethod
    def _split_batch(response: httpx.Response, n: int) -> list[Outcome]:
        whole = classify_response(response)
        items = (whole.body or {}).get("items") if whole.verdict is Verdict.SUCCESS else None
        if not isinstance(items, list) or len(items) != n:
            if whole.verdict is Verdict.SUCCESS:
                whole = Outcome(Verdict.RETRYABLE, "http", "bad_response", f"batch answer without {n} items", 200)
            return [whole] * n
        outcomes = []
        for item in items:
            if isinstance(item, dict) and item.get("ok") is True and isinstance(item.get("result"), dict):
                outcomes.append(Outcome(Verdict.SUCCESS, "", "", "", 200, body=item["result"]))
            else:
                item = item if isinstance(item, dict) else {}
                outcomes.append(classify_status(int(item.get("status") or 500), item))
        return outcomes
