"""What an HTTP exchange with the inference service means for the message that caused it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx


class Verdict(str, Enum):
    SUCCESS = "success"
    PERMANENT = "permanent"  # this message can never succeed: DLQ at once
    RETRYABLE = "retryable"  # this message may succeed later: retry within its budget, then DLQ
    OUTAGE = "outage"  # the service as a whole is unavailable: wait (circuit breaker), never DLQ


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    stage: str  # DLQ stage: validate, fetch, decode, infer, http, timeout
    type: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None
    body: dict[str, Any] | None = None


# where a status says the failure happened, when the body does not say so itself
_STAGE_BY_STATUS = {400: "validate", 404: "fetch", 408: "timeout", 413: "fetch", 415: "decode",
                    422: "validate", 429: "http", 500: "infer", 504: "timeout"}
_KNOWN_STAGES = {"parse", "validate", "fetch", "decode", "infer", "http", "timeout"}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the backoff policy decides instead


def classify_response(response: httpx.Response) -> Outcome:
    try:
        body = response.json()
    except ValueError:
        body = None
    return classify_status(response.status_code, body, response.text[:500] or response.reason_phrase,
                           _retry_after(response))


def classify_status(status: int, body: object, text: str = "", retry_after_s: float | None = None) -> Outcome:
    """Map a service answer to a verdict. The service's status codes are honest (DESIGN.md), so:
    2xx success; 503 outage (not ready / storage down: the whole service); 408, 429, other 5xx retryable;
    every other 4xx permanent."""
    if 200 <= status < 300:
        if not isinstance(body, dict):
            return Outcome(Verdict.RETRYABLE, "http", "bad_response", "2xx answer without a JSON object", status)
        return Outcome(Verdict.SUCCESS, "", "", "", status, body=body)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    err_type = str(error.get("type") or f"http_{status}")
    message = str(error.get("message") or text or f"HTTP {status}")
    stage = error.get("stage") if error.get("stage") in _KNOWN_STAGES else _STAGE_BY_STATUS.get(status, "http")
    if status == 503:
        verdict = Verdict.OUTAGE
    elif status in (408, 429) or status >= 500:
        verdict = Verdict.RETRYABLE
    elif 400 <= status < 500:
        verdict = Verdict.PERMANENT
    else:  # 1xx/3xx: a misconfigured URL or proxy, worth retrying rather than losing the message
        verdict = Verdict.RETRYABLE
    return Outcome(verdict, stage, err_type, message, status, retry_after_s, body if isinstance(body, dict) else None)


def classify_exception(exc: BaseException) -> Outcome:
    """Transport failures. A broken connection (refused, reset, closed mid-answer: a service stopping or
    restarting) is an outage, waited out; a request that timed out on a live connection is retryable."""
    if isinstance(exc, (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.PoolTimeout)):
        return Outcome(Verdict.OUTAGE, "http", type(exc).__name__, str(exc) or repr(exc))
    if isinstance(exc, httpx.TimeoutException):
        return Outcome(Verdict.RETRYABLE, "timeout", type(exc).__name__, str(exc) or "request timed out")
    return Outcome(Verdict.RETRYABLE, "http", type(exc).__name__, str(exc) or repr(exc))
