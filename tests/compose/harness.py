"""What the compose tests share: a copy of the checkout, `docker compose` under a project and host ports of the
test's own, waiting for the stack's jobs, counting every input record's ending, and asking its Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from imagery import kafka_io
from imagery.compose import ComposeFiles, load_teams
from imagery.repo import REPO_ROOT as REPO
from schemas import topics

# IMAGERY_COMPOSE_ENV_FILE picks the image sources: deploy/local-images/images.env (the default, for an engine that
# reaches no registry; `make test-compose` builds those images first), or an empty file for the official ones
ENV_FILE = Path(os.environ.get("IMAGERY_COMPOSE_ENV_FILE", REPO / "deploy" / "local-images" / "images.env"))


def step(text: str) -> None:
    print(f"\n== {time.strftime('%H:%M:%S')} {text}", flush=True)


class Compose:
    """`docker compose -p PROJECT --env-file ENV_FILE [-f FILE ...]` in WORKDIR, with PORTS as the host ports."""

    def __init__(self, workdir: Path, project: str, ports: dict[str, str], files: Sequence[str] = ()) -> None:
        self.workdir, self.project = workdir, project
        self.files = [arg for name in files for arg in ("-f", name)]
        # the classic builder: Compose's default (bake) needs buildx, which Debian's docker.io does not have
        self.env = {**os.environ, **ports, "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}

    def command(self, *args: str) -> list[str]:
        return ["docker", "compose", "-p", self.project, "--env-file", str(ENV_FILE.resolve()), *self.files, *args]

    def __call__(self, *args: str, timeout_s: float = 1800) -> float:
        started = time.monotonic()
        print("$", " ".join(self.command(*args)), flush=True)
        subprocess.run(self.command(*args), cwd=self.workdir, env=self.env, check=True, timeout=timeout_s)
        took = time.monotonic() - started
        print(f"   ({took:.0f} s)", flush=True)
        return took

    def output(self, *args: str) -> str:
        return subprocess.run(
            self.command(*args), cwd=self.workdir, env=self.env, capture_output=True, text=True, check=True, timeout=300
        ).stdout

    def logs(self, service: str, lines: int = 60) -> str:
        return subprocess.run(
            self.command("logs", "--no-color", "--tail", str(lines), service),
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
        ).stdout


def copy_checkout(workdir: Path) -> Path:
    """A copy of the checkout in WORKDIR (tracked and untracked files, not ignored ones: no ./secrets) with the teams'
    weights: a test changes it as a user would theirs."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, workdir / name)
    for team in load_teams(ComposeFiles.in_repo().teams):
        assert (REPO / "weights" / team.weights).is_file(), f"run `make weights` first: weights/{team.weights}"
        shutil.copy2(REPO / "weights" / team.weights, workdir / "weights" / team.weights)
    return workdir


def live_jobs(flink: str) -> dict[str, list[str]]:
    """Flink job name -> ids of its live jobs, on the cluster whose REST API is at FLINK."""
    jobs: dict[str, list[str]] = {}
    for job in httpx.get(f"{flink}/jobs/overview", timeout=5).raise_for_status().json()["jobs"]:
        if job["state"] not in ("FINISHED", "CANCELED", "FAILED"):
            jobs.setdefault(job["name"], []).append(job["jid"])
    return jobs


def wait_for_jobs(flink: str, names: set[str], timeout_s: float = 600) -> dict[str, list[str]]:
    """Until each named job runs (all its tasks RUNNING), once; fails if a name ever has two live jobs."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            jobs = live_jobs(flink)
            doubled = {name: ids for name, ids in jobs.items() if len(ids) > 1}
            assert not doubled, f"a job runs twice: {doubled}"
            running = set()
            for name in names & set(jobs):
                detail = httpx.get(f"{flink}/jobs/{jobs[name][0]}", timeout=5).json()
                if detail["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in detail["vertices"]):
                    running.add(name)
            if running == names:
                return jobs
            last = jobs
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"jobs {names} not all running after {timeout_s} s; last seen: {last}")


def outcomes(kafka: kafka_io.Target, team: str, expected: int, timeout_s: float = 300) -> tuple[list, list]:
    """(results, dead letters) of the team's input records, read committed, until `expected` are in (a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        # up to the end offsets, without a consumer group: the broker's group rebalance delay (3 s by default,
        # as here) cannot make a read come back empty
        results = kafka_io.read_to_end(kafka, topics.result_topic(team)).records
        letters = [
            r
            for r in kafka_io.read_to_end(kafka, topics.DLQ_TOPIC).records
            if r.headers.get(topics.HEADER_TOPIC, b"").decode() == topics.input_topic(team)
        ]
        if len(results) + len(letters) >= expected or time.monotonic() > deadline:
            return results, letters
        time.sleep(3)


def assert_exactly_once(kafka: kafka_io.Target, team: str, timeout_s: float = 300) -> tuple[int, int]:
    """Every input record of the team ends in its results or the DLQ, once."""
    ends = kafka_io.end_offsets(kafka, topics.input_topic(team))
    wanted = {(p, o) for p, end in ends.items() for o in range(end)}
    results, letters = outcomes(kafka, team, len(wanted), timeout_s)
    sources = [json.loads(r.value)["source"] for r in results]
    got = [(source["partition"], source["offset"]) for source in sources]
    got += [(int(r.headers[topics.HEADER_PARTITION]), int(r.headers[topics.HEADER_OFFSET])) for r in letters]
    doubled = sorted({x for x in got if got.count(x) > 1})
    assert not doubled, f"{team}: {len(doubled)} input records ended twice, e.g. {doubled[:5]}"
    missing = sorted(wanted - set(got))
    assert not missing, f"{team}: {len(missing)} of {len(wanted)} input records never ended, e.g. {missing[:5]}"
    print(
        f"   {team}: {len(wanted)} input records -> {len(results)} results + {len(letters)} dead letters, each once",
        flush=True,
    )
    return len(results), len(letters)


def prometheus_value(prometheus: str, expr: str, at_least: float, timeout_s: float = 120) -> float:
    """Until the Prometheus at PROMETHEUS answers `expr` with a value of at least `at_least` (a deadline)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
            values = [float(s["value"][1]) for s in last["data"]["result"]]
            if values and sum(values) >= at_least:
                return sum(values)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(3)
    raise AssertionError(f"{expr}: not {at_least} after {timeout_s} s; last answer: {last}")
