"""compose.yaml on a real Docker engine (`make test-compose`; not in `make test`, which needs no Docker).

What the README's deploy section says, done step by step in a copy of the checkout: build the images, bring the
stack up, publish from the host (uploads alone, and {bucket, key} messages), check that every message ends in its
team's results or the DLQ exactly once; add a second team with `imagery new-team` + `docker compose up -d --build`
and check that no job runs twice and both teams flow; restart the JobManager and the inference service and check
that nothing is lost or doubled; then `down -v`.

IMAGERY_COMPOSE_ENV_FILE picks the image sources: deploy/local-images/images.env (the default, for an engine
that reaches no registry; `make test-compose` builds those images first), or an empty file for the official ones.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from minio import Minio

from adapters.fruit_defect.samples import make_image
from imagery import kafka_io
from imagery.compose import ComposeFiles, load_teams
from imagery.pipeline_run import produce_messages
from imagery.repo import REPO_ROOT as REPO
from schemas import topics

pytestmark = pytest.mark.compose

PROJECT = "imagery-compose-test"
# host ports of their own, so that a local stack (`imagery up`) or a user's compose stack may run beside the test
PORTS = {"KAFKA_HOST_PORT": "39092", "MINIO_HOST_PORT": "39000", "MINIO_CONSOLE_HOST_PORT": "39001",
         "FLINK_HOST_PORT": "38081", "PROMETHEUS_HOST_PORT": "39090"}
BOOTSTRAP = f"localhost:{PORTS['KAFKA_HOST_PORT']}"
FLINK = f"http://localhost:{PORTS['FLINK_HOST_PORT']}"
PROMETHEUS = f"http://localhost:{PORTS['PROMETHEUS_HOST_PORT']}"
ENV_FILE = Path(os.environ.get("IMAGERY_COMPOSE_ENV_FILE", REPO / "deploy" / "local-images" / "images.env"))


def step(text: str) -> None:
    print(f"\n== {time.strftime('%H:%M:%S')} {text}", flush=True)


class Compose:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # the classic builder: Compose's default (bake) needs buildx, which Debian's docker.io does not have
        self.env = {**os.environ, **PORTS, "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}

    def __call__(self, *args: str, timeout_s: float = 1800) -> float:
        command = ["docker", "compose", "-p", PROJECT, "--env-file", str(ENV_FILE.resolve()), *args]
        started = time.monotonic()
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=self.workdir, env=self.env, check=True, timeout=timeout_s)
        took = time.monotonic() - started
        print(f"   ({took:.0f} s)", flush=True)
        return took

    def logs(self, service: str, lines: int = 60) -> str:
        return subprocess.run(["docker", "compose", "-p", PROJECT, "logs", "--no-color", "--tail", str(lines),
                               service], cwd=self.workdir, env=self.env, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (tracked and untracked files, not ignored ones) with the fruit team's weights: the
    test adds a team to it, as a user would to theirs."""
    workdir = tmp_path_factory.mktemp("compose") / "imagery"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, workdir / name)
    weights = ComposeFiles.in_repo().teams
    for team in load_teams(weights):
        assert (REPO / "weights" / team.weights).is_file(), f"run `make weights` first: weights/{team.weights}"
        shutil.copy2(REPO / "weights" / team.weights, workdir / "weights" / team.weights)
    return workdir


@pytest.fixture(scope="module")
def compose(checkout):
    c = Compose(checkout)
    yield c
    for service in ("init", "flink-dispatcher-fruit", "flink-jobmanager"):
        print(f"--- last logs of {service}:\n{c.logs(service, 30)}")
    c("down", "-v", "--remove-orphans", timeout_s=300)


def live_jobs() -> dict[str, list[str]]:
    """Flink job name -> ids of its live jobs."""
    jobs: dict[str, list[str]] = {}
    for job in httpx.get(f"{FLINK}/jobs/overview", timeout=5).raise_for_status().json()["jobs"]:
        if job["state"] not in ("FINISHED", "CANCELED", "FAILED"):
            jobs.setdefault(job["name"], []).append(job["jid"])
    return jobs


def wait_for_jobs(names: set[str], timeout_s: float = 600) -> dict[str, list[str]]:
    """Until each named job runs (all its tasks RUNNING), once; fails if a name ever has two live jobs."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            jobs = live_jobs()
            doubled = {name: ids for name, ids in jobs.items() if len(ids) > 1}
            assert not doubled, f"a job runs twice: {doubled}"
            running = set()
            for name in names & set(jobs):
                detail = httpx.get(f"{FLINK}/jobs/{jobs[name][0]}", timeout=5).json()
                if detail["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in detail["vertices"]):
                    running.add(name)
            if running == names:
                return jobs
            last = jobs
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"jobs {names} not all running after {timeout_s} s; last seen: {last}")


def minio_client() -> Minio:
    return Minio(f"localhost:{PORTS['MINIO_HOST_PORT']}", access_key="minioadmin", secret_key="minioadmin",
                 secure=False)


def upload(bucket: str, prefix: str, count: int, first_seed: int = 0) -> list[str]:
    client, keys = minio_client(), []
    for i in range(count):
        data = make_image("clean" if i % 2 else "defect", first_seed + i)
        key = f"{prefix}/{i:04d}.jpg"
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
        keys.append(key)
    return keys


def input_offsets(team: str) -> set[tuple[int, int]]:
    ends = kafka_io.end_offsets(BOOTSTRAP, topics.input_topic(team))
    return {(p, o) for p, end in ends.items() for o in range(end)}


def outcomes(team: str, expected: int, timeout_s: float = 300) -> tuple[list, list]:
    """(results, dead letters) of the team's input records, read committed, until `expected` are in (a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        # up to the end offsets, without a consumer group: the broker's group rebalance delay (3 s by default,
        # as here) cannot make a read come back empty
        results = kafka_io.read_to_end(BOOTSTRAP, topics.result_topic(team)).records
        letters = [r for r in kafka_io.read_to_end(BOOTSTRAP, topics.DLQ_TOPIC).records
                   if r.headers.get(topics.HEADER_TOPIC, b"").decode() == topics.input_topic(team)]
        if len(results) + len(letters) >= expected or time.monotonic() > deadline:
            return results, letters
        time.sleep(3)


def assert_exactly_once(team: str, timeout_s: float = 300) -> tuple[int, int]:
    """Every input record of the team ends in its results or the DLQ, once."""
    wanted = input_offsets(team)
    results, letters = outcomes(team, len(wanted), timeout_s)
    sources = [json.loads(r.value)["source"] for r in results]
    got = [(source["partition"], source["offset"]) for source in sources]
    got += [(int(r.headers[topics.HEADER_PARTITION]), int(r.headers[topics.HEADER_OFFSET])) for r in letters]
    doubled = sorted({x for x in got if got.count(x) > 1})
    assert not doubled, f"{team}: {len(doubled)} input records ended twice, e.g. {doubled[:5]}"
    missing = sorted(wanted - set(got))
    assert not missing, f"{team}: {len(missing)} of {len(wanted)} input records never ended, e.g. {missing[:5]}"
    print(f"   {team}: {len(wanted)} input records -> {len(results)} results + {len(letters)} dead letters, "
          f"each once", flush=True)
    return len(results), len(letters)


def prometheus_value(expr: str, at_least: float, timeout_s: float = 120) -> float:
    """Until the stack's Prometheus answers `expr` with a value of at least `at_least` (a deadline)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=5).json()
            values = [float(s["value"][1]) for s in last["data"]["result"]]
            if values and sum(values) >= at_least:
                return sum(values)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(3)
    raise AssertionError(f"{expr}: not {at_least} after {timeout_s} s; last answer: {last}")


def test_the_compose_stack_runs_a_second_team_and_survives_restarts(compose, checkout):
    step("build the images")
    compose("build")
    step("up: Kafka, MinIO, init, Flink, the fruit team's service and job")
    compose("up", "-d")
    wait_for_jobs({"http-dispatcher-fruit"})

    step("publish from the host: uploads alone (bucket events), {bucket, key} messages, two bad ones")
    keys = upload("fruit", "first", 12)
    produce_messages(BOOTSTRAP, topics.input_topic("fruit"),
                     [{"bucket": "fruit", "key": k} for k in keys[:6]]
                     + [{"bucket": "fruit", "key": "first/no-such-image.jpg"}, b"{not json"])
    results, letters = assert_exactly_once("fruit")
    assert (results, letters) == (18, 2)

    step("the stack's Prometheus: the service, Flink and the dispatcher's own numbers, and the alert rules")
    prometheus_value('up{job="imagery-inference", team="fruit"}', 1)
    # (Flink's reporter turns the '-' of label values into '_')
    prometheus_value('sum(flink_taskmanager_job_task_operator_imagery_records{job_name="http_dispatcher_fruit"})', 20)
    rules = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert sum(len(group["rules"]) for group in rules) >= 10

    step("a second team joins: imagery new-team apples, its weights, docker compose up -d --build")
    subprocess.run([sys.executable, "-m", "imagery.cli", "new-team", "apples"], cwd=checkout, check=True,
                   env={**os.environ, "PYTHONPATH": str(checkout)})
    (checkout / "weights" / "apples_best.pt").write_bytes(b"the template runner loads no weights")
    compose("up", "-d", "--build")
    jobs = wait_for_jobs({"http-dispatcher-fruit", "http-dispatcher-apples"})
    upload("apples", "first", 6)
    upload("fruit", "second", 6, first_seed=100)
    assert_exactly_once("apples")
    assert_exactly_once("fruit")
    time.sleep(25)  # two rounds of each keeper's look at the cluster: still one job per team
    assert live_jobs() == jobs

    step("imagery health, as the README has it for compose: every part up")
    health = subprocess.run(
        [sys.executable, "-m", "imagery.cli", "health", "--bootstrap", BOOTSTRAP, "--flink-url", FLINK,
         "--service", "fruit=http://localhost:28001", "--service", "apples=http://localhost:28002"],
        env={**os.environ, "IMAGERY_MINIO_PORT": PORTS["MINIO_HOST_PORT"], "COLUMNS": "160"},
        capture_output=True, text=True, timeout=120)
    print(health.stdout, flush=True)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "http-dispatcher-apples" in health.stdout and "http-dispatcher-fruit" in health.stdout

    step("restart the JobManager (the jobs are lost without HA: the keepers resubmit from the checkpoints)")
    compose("restart", "flink-jobmanager")
    upload("fruit", "third", 6, first_seed=200)
    wait_for_jobs({"http-dispatcher-fruit", "http-dispatcher-apples"})
    upload("apples", "second", 6, first_seed=300)

    step("restart the fruit team's inference service while messages wait")
    compose("restart", "fruit-inference-http")
    upload("fruit", "fourth", 6, first_seed=400)
    assert_exactly_once("fruit", timeout_s=600)
    assert_exactly_once("apples", timeout_s=600)
    assert all(len(ids) == 1 for ids in live_jobs().values())
