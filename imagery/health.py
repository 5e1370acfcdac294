"""`imagery health`: every part of the pipeline in one table, and whether any of it is down.

Parts: Kafka (the broker answers metadata), MinIO (its liveness route), Flink (the REST API, TaskManagers and
slots; or, where no cluster answers, the jobs on local MiniClusters), and per team: its dispatcher job's state (on
the cluster, or its local MiniCluster's process: imagery/local/local_jobs.py), its service's `/healthz` and
`/readyz`, and its consumer lag (the group's committed offsets on the input topic against the topic's end offsets).

Statuses: `ok`; `warn` (works, but look: lag over the limit, a job still starting, offsets not committed yet);
`down` (broken: the exit status is 1); `unknown` (not checked: no service URL given, or Flink itself is down).
A team's names (input topic, consumer group, job name) are its defaults (imagery.teams.TeamNames, as the
dispatcher's own), each overridable per team.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import httpx

from imagery.local.local_jobs import LocalJob, local_jobs
from imagery.local.settings import StackSettings
from imagery.teams import TeamNames
from schemas import HEALTHZ_ROUTE, READYZ_ROUTE, topics

if TYPE_CHECKING:
    from imagery import kafka_io

OK, WARN, DOWN, UNKNOWN = "ok", "warn", "down", "unknown"
TIMEOUT_S = 5.0
DEFAULT_MAX_LAG = 10_000


@dataclass
class Check:
    part: str  # kafka, minio, flink, job, healthz, readyz, lag
    team: str  # "" for the shared parts
    status: str
    detail: str
    data: dict = field(default_factory=dict)


@dataclass
class TeamParts:
    """Where `imagery health` finds one team's parts: its dispatcher job (by name), its service (by URL: none, not
    checked) and its input topic and consumer group (for the lag); a name not given is the team's default."""

    name: str
    service_url: str | None = None
    input_topic: str = ""
    group_id: str = ""
    job_name: str = ""

    def __post_init__(self) -> None:
        defaults = TeamNames(team=self.name)
        self.input_topic = self.input_topic or defaults.input_topic
        self.group_id = self.group_id or defaults.group_id
        self.job_name = self.job_name or defaults.job_name
        self.service_url = self.service_url.rstrip("/") if self.service_url else None


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != DOWN for c in self.checks)

    def as_json(self) -> dict:
        return {"ok": self.ok, "checked_at_ms": int(time.time() * 1000), "checks": [asdict(c) for c in self.checks]}


def _guard(part: str, team: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # every failure of a probe is that part being down, said in one line
        return Check(part, team, DOWN, f"{type(exc).__name__}: {str(exc)[:200] or repr(exc)}")


# ---------------------------------------------------------------------------- shared parts


def check_kafka(bootstrap: kafka_io.Target) -> tuple[Check, set[str]]:
    from imagery import kafka_io

    try:
        meta = kafka_io.admin(bootstrap, config={"log_level": 0}).list_topics(timeout=TIMEOUT_S)
    except Exception as exc:
        return Check("kafka", "", DOWN, f"{bootstrap}: {exc}"), set()
    names = set(meta.topics)
    return Check(
        "kafka",
        "",
        OK,
        f"{bootstrap}: {len(meta.brokers)} broker(s), {len(names)} topics",
        {"brokers": len(meta.brokers), "topics": len(names)},
    ), names


def check_minio(endpoint: str, secure: bool = False) -> Check:
    def probe() -> Check:
        url = f"{'https' if secure else 'http'}://{endpoint}/minio/health/live"
        status = httpx.get(url, timeout=TIMEOUT_S).status_code
        return Check("minio", "", OK if status == 200 else DOWN, f"{endpoint}: /minio/health/live {status}")

    return _guard("minio", "", probe)


def flink_jobs(rest_url: str, local: list[LocalJob] | None = None) -> tuple[Check, list[dict] | None]:
    """The cluster at REST_URL and its jobs (None when it does not answer). With no cluster, jobs on LOCAL
    MiniClusters are Flink up (`imagery dispatch` runs one per job, a cluster is not needed)."""
    try:
        overview = httpx.get(f"{rest_url}/overview", timeout=TIMEOUT_S).raise_for_status().json()
        jobs = httpx.get(f"{rest_url}/jobs/overview", timeout=TIMEOUT_S).raise_for_status().json()["jobs"]
    except Exception as exc:
        reason = f"{rest_url}: {type(exc).__name__}: {str(exc)[:200]}"
        if local:
            names = ", ".join(f"{job.name} (pid {job.pid})" for job in local)
            return Check(
                "flink",
                "",
                OK,
                f"{len(local)} job(s) on local MiniClusters: {names}; no cluster ({reason})",
                {"local_jobs": len(local)},
            ), None
        return Check("flink", "", DOWN, reason), None
    tms, slots = overview.get("taskmanagers", 0), overview.get("slots-total", 0)
    detail = (
        f"{rest_url}: Flink {overview.get('flink-version', '?')}, {tms} TaskManager(s), "
        f"{overview.get('slots-available', 0)}/{slots} slots free, {overview.get('jobs-running', 0)} running"
    )
    return Check(
        "flink",
        "",
        OK if tms and slots else DOWN,
        detail + ("" if tms else ": no TaskManager"),
        {k: overview.get(k) for k in ("taskmanagers", "slots-total", "slots-available", "jobs-running")},
    ), jobs


# ---------------------------------------------------------------------------- per team


def check_job(team: TeamParts, jobs: list[dict] | None, local: list[LocalJob] | None = None) -> Check:
    """The team's job on the cluster (JOBS: its overview, None when it does not answer) or on a LOCAL MiniCluster."""
    on_local = [job for job in local or [] if job.name == team.job_name]
    if jobs is None and not on_local:
        if local:  # Flink is up as local MiniClusters, and this job is not one of them
            return Check(
                "job",
                team.name,
                DOWN,
                f"{team.job_name}: no local MiniCluster runs it (no process of "
                "the job file with that --job-name), and no cluster answers",
                {"job_name": team.job_name},
            )
        return Check("job", team.name, UNKNOWN, f"{team.job_name}: Flink does not answer")
    mine = sorted((j for j in jobs or [] if j.get("name") == team.job_name), key=lambda j: j.get("start-time", 0))
    running = [j for j in mine if j.get("state") == "RUNNING"]
    data = {
        "job_name": team.job_name,
        "jobs": [{"id": j["jid"], "state": j["state"]} for j in mine],
        "local": [{"pid": job.pid, "up_s": round(job.up_s)} for job in on_local],
    }
    if len(running) + len(on_local) > 1:
        return Check(
            "job",
            team.name,
            DOWN,
            f"{team.job_name}: {len(running) + len(on_local)} jobs RUNNING at once "
            f"({len(on_local)} on local MiniClusters; doubled: results are written twice; stop all but one)",
            data,
        )
    if on_local:
        return Check(
            "job",
            team.name,
            OK,
            f"{team.job_name}: running on a local MiniCluster for "
            f"{_duration(on_local[0].up_s)} (pid {on_local[0].pid})",
            data,
        )
    if running:
        up_s = (time.time() * 1000 - running[0].get("start-time", 0)) / 1000
        return Check(
            "job", team.name, OK, f"{team.job_name}: RUNNING for {_duration(up_s)} ({running[0]['jid']})", data
        )
    if not mine:
        return Check("job", team.name, DOWN, f"{team.job_name}: no such job on this Flink", data)
    last = mine[-1]
    starting = last.get("state") in ("INITIALIZING", "CREATED", "RECONCILING")
    return Check(
        "job", team.name, WARN if starting else DOWN, f"{team.job_name}: {last['state']} ({last['jid']})", data
    )


def check_healthz(team: TeamParts) -> Check:
    if not team.service_url:
        return Check("healthz", team.name, UNKNOWN, "no service URL (--service TEAM=URL)")

    def probe() -> Check:
        answer = httpx.get(f"{team.service_url}{HEALTHZ_ROUTE}", timeout=TIMEOUT_S)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        if answer.status_code == 200 and body.get("ok") is True and body.get("team") == team.name:
            return Check("healthz", team.name, OK, f"{team.service_url}: {answer.text.strip()}")
        return Check("healthz", team.name, DOWN, f"{team.service_url}: {answer.status_code} {answer.text[:200]}")

    return _guard("healthz", team.name, probe)


def check_readyz(team: TeamParts) -> Check:
    if not team.service_url:
        return Check("readyz", team.name, UNKNOWN, "no service URL (--service TEAM=URL)")

    def probe() -> Check:
        answer = httpx.get(f"{team.service_url}{READYZ_ROUTE}", timeout=TIMEOUT_S)
        status = OK if answer.status_code == 200 else DOWN
        return Check("readyz", team.name, status, f"{team.service_url}: {answer.status_code} {answer.text[:200]}")

    return _guard("readyz", team.name, probe)


def consumer_lag(bootstrap: kafka_io.Target, topic: str, group_id: str) -> dict[int, dict[str, int]]:
    """Per partition: the group's committed offset (-1: none), the low and the end offsets, and the lag."""
    from confluent_kafka import TopicPartition

    from imagery import kafka_io

    # committed() reads the group's offsets without joining it
    with kafka_io.consumer(bootstrap, group_id=group_id, config={"log_level": 0}) as reader:
        meta = reader.list_topics(topic, timeout=TIMEOUT_S)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT_S)
        out = {}
        for tp in committed:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=TIMEOUT_S)
            position = tp.offset if tp.offset >= 0 else low
            out[tp.partition] = {"committed": tp.offset, "low": low, "end": high, "lag": max(0, high - position)}
        return out


def check_lag(bootstrap: kafka_io.Target, team: TeamParts, topic_names: set[str], max_lag: int) -> Check:
    if team.input_topic not in topic_names:
        return Check("lag", team.name, UNKNOWN, f"{team.input_topic}: no such topic")

    def probe() -> Check:
        parts = consumer_lag(bootstrap, team.input_topic, team.group_id)
        lag = sum(p["lag"] for p in parts.values())
        data = {
            "topic": team.input_topic,
            "group_id": team.group_id,
            "lag": lag,
            "partitions": {str(k): v for k, v in parts.items()},
        }
        detail = f"{lag} records behind on {team.input_topic} (group {team.group_id}, {len(parts)} partitions)"
        if any(p["committed"] < 0 for p in parts.values()) and lag:
            return Check("lag", team.name, WARN, detail + "; no committed offsets yet", data)
        return Check(
            "lag",
            team.name,
            WARN if lag > max_lag else OK,
            detail + (f", over {max_lag}" if lag > max_lag else ""),
            data,
        )

    return _guard("lag", team.name, probe)


# ---------------------------------------------------------------------------- all of it


def discover_teams(topic_names: Iterable[str]) -> list[str]:
    return sorted(
        t[len(topics.INPUT_TOPIC_PREFIX) :]
        for t in topic_names
        if t.startswith(topics.INPUT_TOPIC_PREFIX) and len(t) > len(topics.INPUT_TOPIC_PREFIX)
    )


def check_all(
    settings: StackSettings,
    teams: list[TeamParts] | None = None,
    bootstrap: kafka_io.Target | None = None,
    flink_url: str | None = None,
    max_lag: int = DEFAULT_MAX_LAG,
    local: list[LocalJob] | None = None,
) -> Report:
    """`teams` None: every team with an input topic (imagery.new.<team>) on the broker; `local` None: the jobs that
    run on local MiniClusters now (local_jobs())."""
    bootstrap = bootstrap or settings.bootstrap
    kafka, topic_names = check_kafka(bootstrap)
    local = local_jobs() if local is None else local
    flink, jobs = flink_jobs(flink_url or settings.flink_rest_url, local)
    checks = [kafka, check_minio(settings.minio_endpoint), flink]
    for team in teams if teams is not None else [TeamParts(name) for name in discover_teams(topic_names)]:
        checks += [
            check_job(team, jobs, local),
            check_healthz(team),
            check_readyz(team),
            check_lag(bootstrap, team, topic_names, max_lag)
            if kafka.status == OK
            else Check("lag", team.name, UNKNOWN, "Kafka does not answer"),
        ]
    return Report(checks)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
