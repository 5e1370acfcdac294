"""`imagery tail --team T` on the real broker: the team's results and its dead letters (not another team's, not an
aborted transaction's), as a short line each or one JSON object per line, and with --follow what lands after it
started, until Ctrl-C (status 0). The records are the dispatcher's own (streaming/dispatch/records.py builds them)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from imagery import kafka_io
from imagery.repo import REPO_ROOT
from schemas import DispatcherIdentity, ErrorEnvelope, ImageMessage
from streaming.dispatch.records import KafkaInput, Output, build_dead_letter, build_result
from tests.conftest import unique

pytestmark = pytest.mark.integration

TEAM = "fruit"
DEADLINE_S = 60.0
IDENTITY = DispatcherIdentity(job="j", group_id="g", host="h")


def result(key: str, offset: int) -> Output:
    record = KafkaInput(value=b"{}", key=key.encode(), topic=f"imagery.new.{TEAM}", partition=0, offset=offset)
    response = {
        "team": TEAM,
        "label": "clean",
        "score": 0.875,
        "model_name": "fruit_cls",
        "batch_size": 1,
        "timings": {"fetch_ms": 1, "decode_ms": 1, "queue_ms": 0, "infer_ms": 2, "total_ms": 4},
    }
    return build_result(
        ImageMessage(bucket="fruit-hot", key=key),
        record,
        0,
        TEAM,
        response,
        http_ms=5.0,
        attempts=1,
        now_ms=int(time.time() * 1000),
    )


def dead_letter(team: str, offset: int, message: str) -> Output:
    record = KafkaInput(value=b"not json", key=None, topic=f"imagery.new.{team}", partition=0, offset=offset)
    error = ErrorEnvelope(stage="parse", type="not_json", message=message, retryable=False, attempts=1)
    return build_dead_letter(record, team, error, IDENTITY, now_ms=int(time.time() * 1000))


def produce(bootstrap: str, topic: str, out: Output) -> None:
    kafka_io.produce(bootstrap, topic, [(out.key, out.value, list(out.headers.items()))])


def produce_aborted(bootstrap: str, topic: str, out: Output) -> None:
    """OUT written in a transaction that is then aborted: it never landed."""
    client = kafka_io.producer(bootstrap, config={"transactional.id": unique("aborted")})
    client.init_transactions(30)
    client.begin_transaction()
    client.produce(topic, value=out.value, key=out.key)
    client.flush(30)
    client.abort_transaction(30)


def tail_command(bootstrap: str, results: str, dlq: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "imagery.cli",
        "tail",
        "--team",
        TEAM,
        "--bootstrap",
        bootstrap,
        "--output-topic",
        results,
        "--dlq-topic",
        dlq,
        *extra,
    ]


def tail(bootstrap: str, results: str, dlq: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        tail_command(bootstrap, results, dlq, *extra), capture_output=True, text=True, timeout=DEADLINE_S, cwd=REPO_ROOT
    )


@pytest.fixture
def landed(bootstrap, new_topic) -> tuple[str, str]:
    """A result topic and a DLQ holding: a result of the team, its dead letter, another team's dead letter, a record
    that is no dead letter, and a result of an aborted transaction."""
    results, dlq = new_topic("results"), new_topic("dlq")
    produce(bootstrap, results, result("a.jpg", 0))
    produce_aborted(bootstrap, results, result("aborted.jpg", 1))
    produce(bootstrap, dlq, dead_letter(TEAM, 2, "mine"))
    produce(bootstrap, dlq, dead_letter("apples", 3, "not mine"))
    kafka_io.produce(bootstrap, dlq, [b"not a dead letter"])  # other tools may share the topic
    return results, dlq


def test_tail_prints_the_teams_results_and_dead_letters_and_exits(bootstrap, landed):
    results, dlq = landed
    done = tail(bootstrap, results, dlq)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    (result_line,) = [line for line in lines if line.startswith("result")]
    (letter_line,) = [line for line in lines if line.startswith("dead letter")]
    assert f"{results} 0:0" in result_line and "fruit-hot/a.jpg" in result_line and "label=clean" in result_line
    assert f"{dlq} 0:0" in letter_line and "parse not_json: mine" in letter_line
    assert "imagery.new.fruit 0:2" in letter_line


def test_tail_json_is_one_record_per_line_with_where_it_came_from(bootstrap, landed):
    results, dlq = landed
    done = tail(bootstrap, results, dlq, "--json")
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    by_kind = {o["kind"]: o for o in objects}
    assert len(objects) == 2 and set(by_kind) == {"result", "dead_letter"}
    res, letter = by_kind["result"], by_kind["dead_letter"]
    assert (res["topic"], res["partition"], res["offset"], res["key"]) == (results, 0, 0, "a.jpg")
    assert res["record"]["id"] and res["record"]["key"] == "a.jpg" and res["record"]["label"] == "clean"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (dlq, 0, 0)
    assert letter["record"]["team"] == TEAM and letter["record"]["error"]["message"] == "mine"


def test_a_topic_that_is_not_there_is_one_line(bootstrap, new_topic):
    missing = unique("no-such-results")
    done = tail(bootstrap, missing, new_topic("dlq"))
    assert done.returncode == 1 and done.stderr == f"error: there is no topic '{missing}' on {bootstrap}\n"


def read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def next_line(lines: queue.Queue, what: str, deadline: float) -> str:
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        pytest.fail(f"tail --follow printed no {what} within {DEADLINE_S:.0f}s")


def test_follow_prints_what_lands_after_it_started_until_ctrl_c(bootstrap, landed):
    results, dlq = landed
    follower = subprocess.Popen(
        tail_command(bootstrap, results, dlq, "--follow", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(follower.stdout, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        first = [json.loads(next_line(lines, "record that was there", deadline)) for _ in range(2)]
        assert {o["kind"] for o in first} == {"result", "dead_letter"}
        # what is there was printed, so the follow has its start offsets: now a new result, another team's dead
        # letter (not shown) and the team's own
        produce(bootstrap, results, result("b.jpg", 4))
        produce(bootstrap, dlq, dead_letter("apples", 5, "still not mine"))
        produce(bootstrap, dlq, dead_letter(TEAM, 6, "mine, later"))
        later = [json.loads(next_line(lines, "record that landed later", deadline)) for _ in range(2)]
        by_kind = {o["kind"]: o for o in later}
        # offset 1 is the aborted record, 2 its transaction's abort marker
        assert by_kind["result"]["record"]["key"] == "b.jpg" and by_kind["result"]["offset"] == 3
        assert by_kind["dead_letter"]["record"]["error"]["message"] == "mine, later"
        assert by_kind["dead_letter"]["offset"] == 4
        follower.send_signal(signal.SIGINT)
        assert follower.wait(DEADLINE_S) == 0, follower.stderr.read() if follower.stderr else ""
        reader.join(DEADLINE_S)  # its output read to the end: nothing else was printed
        assert not reader.is_alive() and lines.empty(), list(lines.queue)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
