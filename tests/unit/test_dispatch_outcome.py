"""How the dispatcher judges an answer or a transport error: success, retryable, an outage, permanent, or a
misconfigured deployment (streaming/dispatch/outcome.py)."""

from __future__ import annotations

import pytest

from streaming.dispatch.http import ConnectFailed, ConnectionBroken, RequestTimedOut
from streaming.dispatch.outcome import Verdict, classify_exception, classify_status
from tests.unit.standin_service import RESPONSE, err


@pytest.mark.parametrize(
    "status, verdict, stage",
    [
        (200, Verdict.SUCCESS, ""),
        (404, Verdict.PERMANENT, "fetch"),
        (413, Verdict.PERMANENT, "fetch"),
        (415, Verdict.PERMANENT, "decode"),
        (422, Verdict.PERMANENT, "validate"),
        (401, Verdict.MISCONFIGURED, "http"),
        (408, Verdict.RETRYABLE, "timeout"),
        (429, Verdict.RETRYABLE, "http"),
        (500, Verdict.RETRYABLE, "infer"),
        (502, Verdict.RETRYABLE, "http"),
        (504, Verdict.RETRYABLE, "timeout"),
        (503, Verdict.OUTAGE, "http"),
    ],
)
def test_status_classification(status, verdict, stage):
    body = RESPONSE if status == 200 else err(status)
    outcome = classify_status(status, body)
    assert (outcome.verdict, outcome.stage) == (verdict, stage)


def test_service_stage_wins_over_status_guess():
    assert classify_status(404, err(404, "no_such_bucket", "fetch")).type == "no_such_bucket"
    assert classify_status(500, err(500, "runner_error", "decode")).stage == "decode"
    assert classify_status(200, ["not", "a", "dict"]).verdict is Verdict.MISCONFIGURED


def test_transport_errors():
    assert classify_exception(ConnectFailed("refused")).verdict is Verdict.OUTAGE
    assert classify_exception(ConnectionBroken("reset by peer")).verdict is Verdict.OUTAGE
    timeout = classify_exception(RequestTimedOut("slow"))
    assert (timeout.verdict, timeout.stage) == (Verdict.RETRYABLE, "timeout")


@pytest.mark.parametrize(
    "status, body, verdict",
    [
        (401, err(401, "unauthorized", "validate"), Verdict.MISCONFIGURED),  # a wrong AUTH_TOKEN
        (404, err(404, "route_not_found", "validate"), Verdict.MISCONFIGURED),  # a wrong path in HTTP_URL
        (405, err(405, "method_not_allowed"), Verdict.MISCONFIGURED),
        (404, "<html>not found</html>", Verdict.MISCONFIGURED),  # not the service at all
        (403, None, Verdict.MISCONFIGURED),  # a proxy refuses
        (301, None, Verdict.MISCONFIGURED),
        (200, {"status": "ok"}, Verdict.SUCCESS),  # classify_status; the client then checks it is a result
        (404, err(404, "object_not_found", "fetch"), Verdict.PERMANENT),
        (403, err(403, "bucket_not_allowed", "fetch"), Verdict.PERMANENT),
        (422, err(422, "storage_refused", "fetch"), Verdict.PERMANENT),
        (502, err(502, "storage_error", "fetch"), Verdict.RETRYABLE),
        (502, None, Verdict.OUTAGE),  # a gateway in front of a service that is down
        (504, None, Verdict.OUTAGE),
    ],
)
def test_answers_that_say_the_deployment_is_wrong_are_not_the_message_s_fault(status, body, verdict):
    assert classify_status(status, body).verdict is verdict
