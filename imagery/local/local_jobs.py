"""The dispatcher jobs that run on this machine's own MiniCluster: `imagery dispatch` without --jobmanager, the demo,
the tests' and benches' DispatcherProcess. Each is a `python .../http_dispatcher.py ARGS` process (pipeline_run's
`local_job_command`), so it is found in /proc by its program, and named by its arguments (--job-name, else the
team's default) as Flink names it; it runs as long as that process does. A standalone or Kubernetes cluster's jobs
are asked of the cluster's REST API instead (imagery/health.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagery.process import live_processes, process_age_s, process_environment
from imagery.teams import TeamNames
from streaming.dispatch.config import flag, from_environment
from streaming.flink.jobs import JOB_FILE


@dataclass(frozen=True)
class LocalJob:
    """A dispatcher job on a local MiniCluster: its process, its Flink job name and its team."""

    pid: int
    name: str
    team: str
    up_s: float


def is_local_job(argv: Sequence[str]) -> bool:
    """ARGV runs the job file with Python (`flink run --python ...`, a cluster's client, names it later)."""
    return len(argv) >= 2 and Path(argv[1]).name == JOB_FILE.name and "python" in Path(argv[0]).name


def _setting(argv: Sequence[str], env: Mapping[str, str], name: str) -> str:
    """The value the job reads for setting NAME: its flag's last value in ARGV, else its variable in ENV, else ""."""
    given = flag(name)
    value = None
    for i, arg in enumerate(argv):
        if arg == given and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(given + "="):
            value = arg[len(given) + 1 :]
    return value if value is not None else from_environment(env).get(name, "")


def job_of(pid: int, argv: Sequence[str], env: Mapping[str, str]) -> LocalJob | None:
    """The job process PID runs (ARGV and ENV: its own), or None when it is not one or has ended."""
    if not is_local_job(argv) or (up_s := process_age_s(pid)) is None:
        return None
    args = argv[2:]
    team = _setting(args, env, "team")
    name = _setting(args, env, "job_name") or TeamNames(team=team).job_name
    return LocalJob(pid, name, team, up_s)


def local_jobs() -> list[LocalJob]:
    """Every dispatcher job running on a local MiniCluster of this machine (this user's), oldest first."""
    found = [
        job
        for pid, argv in live_processes()
        if is_local_job(argv) and (job := job_of(pid, argv, process_environment(pid))) is not None
    ]
    return sorted(found, key=lambda job: -job.up_s)
