"""compose.yaml on a real Docker engine (`make test-compose`; not in `make test`, which needs no Docker).

What docs/deploying.md says, done step by step in a copy of the checkout: build the images, bring the
stack up, publish from the host (uploads alone, and {bucket, key} messages), check that every message ends in its
team's results or the DLQ exactly once; add a second team with `imagery new-team` + `docker compose up -d --build`
and check that no job runs twice and both teams flow; restart the JobManager and the inference service and check
that nothing is lost or doubled; then `down -v`.

IMAGERY_COMPOSE_ENV_FILE picks the image sources: deploy/local-images/images.env (the default, for an engine
that reaches no registry; `make test-compose` builds those images first), or an empty file for the official ones.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from minio import Minio

from adapters.fruit_defect.samples import make_image
from imagery.pipeline_run import produce_messages
from schemas import topics
from tests.compose.harness import (
    Compose,
    assert_exactly_once,
    copy_checkout,
    live_jobs,
    prometheus_value,
    step,
    wait_for_jobs,
)

pytestmark = pytest.mark.compose

PROJECT = "imagery-compose-test"
# host ports of their own, so that a local stack (`imagery up`) or a user's compose stack may run beside the test
PORTS = {
    "KAFKA_HOST_PORT": "39092",
    "MINIO_HOST_PORT": "39000",
    "MINIO_CONSOLE_HOST_PORT": "39001",
    "FLINK_HOST_PORT": "38081",
    "PROMETHEUS_HOST_PORT": "39090",
}
BOOTSTRAP = f"localhost:{PORTS['KAFKA_HOST_PORT']}"
FLINK = f"http://localhost:{PORTS['FLINK_HOST_PORT']}"
PROMETHEUS = f"http://localhost:{PORTS['PROMETHEUS_HOST_PORT']}"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout with the fruit team's weights: the test adds a team to it, as a user would to theirs."""
    return copy_checkout(tmp_path_factory.mktemp("compose") / "imagery")


@pytest.fixture(scope="module")
def compose(checkout):
    c = Compose(checkout, PROJECT, PORTS)
    yield c
    for service in ("init", "flink-dispatcher-fruit", "flink-jobmanager"):
        print(f"--- last logs of {service}:\n{c.logs(service, 30)}")
    c("down", "-v", "--remove-orphans", timeout_s=300)


def minio_client() -> Minio:
    return Minio(
        f"localhost:{PORTS['MINIO_HOST_PORT']}", access_key="minioadmin", secret_key="minioadmin", secure=False
    )


def upload(bucket: str, prefix: str, count: int, first_seed: int = 0) -> list[str]:
    client, keys = minio_client(), []
    for i in range(count):
        data = make_image("clean" if i % 2 else "defect", first_seed + i)
        key = f"{prefix}/{i:04d}.jpg"
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
        keys.append(key)
    return keys


def test_the_compose_stack_runs_a_second_team_and_survives_restarts(compose, checkout):
    step("build the images")
    compose("build")
    step("up: Kafka, MinIO, init, Flink, the fruit team's service and job")
    compose("up", "-d")
    wait_for_jobs(FLINK, {"http-dispatcher-fruit"})

    step("publish from the host: uploads alone (bucket events), {bucket, key} messages, two bad ones")
    keys = upload("fruit", "first", 12)
    produce_messages(
        BOOTSTRAP,
        topics.input_topic("fruit"),
        [{"bucket": "fruit", "key": k} for k in keys[:6]]
        + [{"bucket": "fruit", "key": "first/no-such-image.jpg"}, b"{not json"],
    )
    results, letters = assert_exactly_once(BOOTSTRAP, "fruit")
    assert (results, letters) == (18, 2)

    step("the stack's Prometheus: the service, Flink and the dispatcher's own numbers, and the alert rules")
    prometheus_value(PROMETHEUS, 'up{job="imagery-inference", team="fruit"}', 1)
    # (Flink's reporter turns the '-' of label values into '_')
    prometheus_value(
        PROMETHEUS, 'sum(flink_taskmanager_job_task_operator_imagery_records{job_name="http_dispatcher_fruit"})', 20
    )
    rules = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert sum(len(group["rules"]) for group in rules) >= 10

    step("a second team joins: imagery new-team apples, its weights, docker compose up -d --build")
    subprocess.run(
        [sys.executable, "-m", "imagery.cli", "new-team", "apples"],
        cwd=checkout,
        check=True,
        env={**os.environ, "PYTHONPATH": str(checkout)},
    )
    (checkout / "weights" / "apples_best.pt").write_bytes(b"the template runner loads no weights")
    compose("up", "-d", "--build")
    jobs = wait_for_jobs(FLINK, {"http-dispatcher-fruit", "http-dispatcher-apples"})
    upload("apples", "first", 6)
    upload("fruit", "second", 6, first_seed=100)
    assert_exactly_once(BOOTSTRAP, "apples")
    assert_exactly_once(BOOTSTRAP, "fruit")
    time.sleep(25)  # two rounds of each keeper's look at the cluster: still one job per team
    assert live_jobs(FLINK) == jobs

    step("imagery health, as docs/deploying.md has it for compose: every part up")
    health = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagery.cli",
            "health",
            "--bootstrap",
            BOOTSTRAP,
            "--flink-url",
            FLINK,
            "--service",
            "fruit=http://localhost:28001",
            "--service",
            "apples=http://localhost:28002",
        ],
        env={**os.environ, "IMAGERY_MINIO_PORT": PORTS["MINIO_HOST_PORT"], "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(health.stdout, flush=True)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "http-dispatcher-apples" in health.stdout and "http-dispatcher-fruit" in health.stdout

    step("restart the JobManager (the jobs are lost without HA: the keepers resubmit from the checkpoints)")
    compose("restart", "flink-jobmanager")
    upload("fruit", "third", 6, first_seed=200)
    wait_for_jobs(FLINK, {"http-dispatcher-fruit", "http-dispatcher-apples"})
    upload("apples", "second", 6, first_seed=300)

    step("restart the fruit team's inference service while messages wait")
    compose("restart", "fruit-inference-http")
    upload("fruit", "fourth", 6, first_seed=400)
    assert_exactly_once(BOOTSTRAP, "fruit", timeout_s=600)
    assert_exactly_once(BOOTSTRAP, "apples", timeout_s=600)
    assert all(len(ids) == 1 for ids in live_jobs(FLINK).values())
