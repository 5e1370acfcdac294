"""Thread mode's hand-off from its event loop to Flink's task thread (streaming/dispatch/in_flight.py)."""

from __future__ import annotations

import threading

import pytest

from streaming.dispatch.in_flight import InFlight


def test_a_finished_call_is_taken_once_and_stops_counting_as_running():
    calls: InFlight[str] = InFlight()
    calls.start(0, 10)
    calls.start(0, 11)
    calls.start(1, 10)
    assert calls.running(0) == 2
    calls.finish(0, 11, "eleven")
    assert calls.running(0) == 2, "finished but not yet emitted: still held"
    assert calls.take(0) == [(11, "eleven")]
    assert calls.take(0) == []
    assert calls.running(0) == 1, "only the taken one stopped counting"
    calls.finish(0, 10, "ten")
    assert calls.take(0) == [(10, "ten")] and calls.running(0) == 0
    assert calls.running(1) == 1, "keys are apart"


def test_finished_calls_come_out_in_the_order_they_finished():
    calls: InFlight[int] = InFlight()
    for offset in (1, 2, 3):
        calls.start("p", offset)
    for offset in (3, 1, 2):
        calls.finish("p", offset, offset * 10)
    assert calls.take("p") == [(3, 30), (1, 10), (2, 20)]


def test_a_failed_call_fails_the_next_take():
    calls: InFlight[int] = InFlight()
    calls.start(0, 1)
    calls.fail(TimeoutError("wedged"))
    with pytest.raises(TimeoutError, match="wedged"):
        calls.take(0)


def test_waiting_for_a_finished_call_wakes_when_another_thread_finishes_one():
    calls: InFlight[str] = InFlight()
    calls.start(0, 1)
    assert not calls.wait_for_finished(0, timeout_s=0.01)
    finisher = threading.Timer(0.05, calls.finish, args=(0, 1, "done"))
    finisher.start()
    try:
        assert calls.wait_for_finished(0, timeout_s=10)
    finally:
        finisher.join()
    assert calls.take(0) == [(1, "done")]


def test_waiting_wakes_on_a_failure_too():
    calls: InFlight[str] = InFlight()
    failer = threading.Timer(0.05, calls.fail, args=(RuntimeError("boom"),))
    failer.start()
    try:
        assert calls.wait_for_finished(0, timeout_s=10)
    finally:
        failer.join()
