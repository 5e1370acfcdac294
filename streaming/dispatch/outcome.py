"""What an HTTP exchange with the inference service means for the message that caused it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from schemas.service_contract import ERROR_KINDS, STAGES, ErrorKind, Stage, Verdict
from streaming.dispatch.http import Answer, ConnectFailed, ConnectionBroken, RequestTimedOut


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    stage: Stage | Literal[""]  # the DLQ stage ("" for a success)
    type: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None
    body: dict[str, Any] | None = None


# where a status says the failure happened, for an answer that is not the service's own (a proxy's, another
# server's) and whose body does not say so itself
_STAGE_BY_STATUS: dict[int, Stage] = {
    400: "validate",
    404: "fetch",
    408: "timeout",
    413: "fetch",
    415: "decode",
    422: "validate",
    429: "http",
    500: "infer",
    504: "timeout",
}
# Error types by which the service says the request as a whole was refused, not the image it names: the
# dispatcher's deployment (token, URL) is wrong, and every message would get the same answer.
MISCONFIGURATION_TYPES = frozenset(t for t, kind in ERROR_KINDS.items() if kind.verdict is Verdict.MISCONFIGURED)
# Error types that refuse a whole /infer_batch request for its shape (too many items, too large): each item
# still deserves its own answer, so the client sends them again one by one.
WHOLE_REQUEST_TYPES = frozenset(t for t, kind in ERROR_KINDS.items() if kind.whole_request)


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the backoff policy decides instead


def classify_response(response: Answer) -> Outcome:
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    return classify_status(
        response.status, body, response.body[:500].decode("utf-8", "replace"), _retry_after(response)
    )


def _service_kind(status: int, error: dict[str, Any]) -> ErrorKind | None:
    """The contract's entry for this answer when it is the service's own: its error type, at that type's status
    (our type at another status is someone else's answer, read by its status)."""
    kind = ERROR_KINDS.get(error["type"])
    return kind if kind is not None and kind.status == status else None


def classify_status(status: int, body: object, text: str = "", retry_after_s: float | None = None) -> Outcome:
    """Map a service answer to a verdict. An error the service answers with names its kind, whose verdict the
    contract gives (schemas.service_contract.ERROR_KINDS). Any other answer is read by its status: the service's
    status codes are honest (DESIGN.md), and its error bodies say whether the image or the request was refused, so:
    - 2xx with a result: success;
    - 503, or a gateway's 502/504: outage (not ready / storage down / unreachable: the whole service);
    - 408, 429, other 5xx: retryable;
    - a 4xx in the service's own error shape about this image: permanent (DLQ at once);
    - everything else (401, an unknown route, a 3xx, a 4xx or 2xx that is not the service's contract: a wrong
      token or URL, a proxy, another server): misconfigured, so the job pauses instead of condemning messages."""
    error = body.get("error") if isinstance(body, dict) else None
    ours = isinstance(error, dict) and isinstance(error.get("type"), str)  # the service's ErrorBody
    error = error if isinstance(error, dict) else {}
    err_type = str(error.get("type") or f"http_{status}")
    message = str(error.get("message") or text or f"HTTP {status}")
    kind = _service_kind(status, error) if ours else None
    stage: Stage = (
        error["stage"]
        if error.get("stage") in STAGES
        else kind.stage
        if kind is not None
        else _STAGE_BY_STATUS.get(status, "http")
    )
    keep = body if isinstance(body, dict) else None
    if 200 <= status < 300:
        if not isinstance(body, dict):
            return Outcome(
                Verdict.MISCONFIGURED,
                "http",
                "not_the_service",
                f"a {status} answer without a JSON object: is --http-url the inference service?",
                status,
            )
        return Outcome(Verdict.SUCCESS, "", "", "", status, body=body)
    if kind is not None:
        verdict = kind.verdict
    elif status == 503 or (status in (502, 504) and not ours):  # a gateway's 502/504: the service is unreachable
        verdict = Verdict.OUTAGE
    elif status in (408, 429) or status >= 500:
        verdict = Verdict.RETRYABLE
    elif 400 <= status < 500 and ours and err_type not in MISCONFIGURATION_TYPES and status not in (401, 405, 407):
        verdict = Verdict.PERMANENT
    else:
        verdict = Verdict.MISCONFIGURED
        if not ours:
            err_type, message = f"http_{status}", f"HTTP {status} without the service's error body: {message[:200]}"
    return Outcome(verdict, stage, err_type, message, status, retry_after_s, keep)


def classify_exception(exc: BaseException) -> Outcome:
    """Transport failures. A broken connection (refused, reset, closed mid-answer: a service stopping or
    restarting) is an outage, waited out; a request that timed out on a live connection is retryable."""
    if isinstance(exc, (ConnectFailed, ConnectionBroken)):
        return Outcome(Verdict.OUTAGE, "http", type(exc).__name__, str(exc) or repr(exc))
    if isinstance(exc, RequestTimedOut):
        return Outcome(Verdict.RETRYABLE, "timeout", type(exc).__name__, str(exc) or "request timed out")
    return Outcome(Verdict.RETRYABLE, "http", type(exc).__name__, str(exc) or repr(exc))
