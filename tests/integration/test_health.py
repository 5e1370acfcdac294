"""`imagery health` against the real broker and MinIO: consumer lag from a group's committed offsets, and a part that
is down (a Flink that does not answer, a service that does not answer) turns the exit status to 1.
(tests/e2e/test_monitoring.py checks it all up, with a job on the standalone cluster and a service.)"""

from __future__ import annotations

import json

from imagery import kafka_io
from imagery.health import DOWN, OK, UNKNOWN, WARN, TeamParts, check_all, consumer_lag
from imagery.process import free_port
from tests.conftest import unique
from tests.helpers import imagery_command


def test_lag_is_end_offsets_minus_the_group_committed_offsets(bootstrap, new_topic):
    topic, group = new_topic("health-in", partitions=2), unique("g")
    kafka_io.produce(bootstrap, topic, [(f"k{i}".encode(), b"v") for i in range(40)])
    ends = kafka_io.end_offsets(bootstrap, topic)
    assert sum(ends.values()) == 40
    kafka_io.commit_offsets(bootstrap, topic, group, {0: ends[0] // 2, 1: ends[1]})  # half of partition 0 left
    lag = consumer_lag(bootstrap, topic, group)
    assert {p: v["lag"] for p, v in lag.items()} == {0: ends[0] - ends[0] // 2, 1: 0}
    assert lag[0]["committed"] == ends[0] // 2 and lag[1]["end"] == ends[1]


def test_every_part_reported_and_what_is_down_fails(stack_settings, bootstrap, new_topic):
    topic, group = new_topic("health-in"), unique("g")
    kafka_io.produce(bootstrap, topic, [b"a", b"b", b"c"])
    kafka_io.commit_offsets(bootstrap, topic, group, {0: 1})
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a Flink and a service that are down
    team = TeamParts("fruit", service_url=nowhere, input_topic=topic, group_id=group, job_name=unique("job"))
    report = check_all(
        stack_settings,
        [team, TeamParts("orchard", input_topic=unique("none"))],
        bootstrap=bootstrap,
        flink_url=nowhere,
        max_lag=1,
        local=[],
    )  # no local MiniCluster job either
    status = {(c.part, c.team): c.status for c in report.checks}
    assert status[("kafka", "")] == status[("minio", "")] == OK
    assert status[("flink", "")] == DOWN and status[("job", "fruit")] == UNKNOWN
    assert status[("healthz", "fruit")] == status[("readyz", "fruit")] == DOWN
    assert status[("lag", "fruit")] == WARN  # 2 behind, over --max-lag 1
    assert status[("healthz", "orchard")] == UNKNOWN and status[("lag", "orchard")] == UNKNOWN
    assert not report.ok
    lag = next(c for c in report.checks if c.part == "lag" and c.team == "fruit")
    assert lag.data["lag"] == 2

    done = imagery_command(
        "health",
        "--json",
        "--service",
        f"fruit={nowhere}",
        "--topic",
        f"fruit={topic}",
        "--group",
        f"fruit={group}",
        "--bootstrap",
        bootstrap,
        "--flink-url",
        nowhere,
        timeout_s=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is False and {c["part"] for c in out["checks"]} == {
        "kafka",
        "minio",
        "flink",
        "job",
        "healthz",
        "readyz",
        "lag",
    }
