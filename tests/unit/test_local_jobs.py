"""`imagery health` and local MiniCluster jobs (imagery/local/local_jobs.py): a real process plays the job, a Python
program run as `python .../http_dispatcher.py ARGS` (the job file's name, so what `imagery dispatch` and
DispatcherProcess run), that only sleeps. While it runs, health finds it by its job name and reports it running
with no cluster to ask; once it is stopped, it is gone. (tests/e2e starts the real job.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from imagery.health import DOWN, OK, UNKNOWN, TeamParts, check_job, flink_jobs
from imagery.local.local_jobs import is_local_job, local_jobs
from imagery.process import NoAnswerYet, Process, free_port, spawn
from streaming.dispatch.config import variable
from streaming.flink.jobs import JOB_FILE
from tests.conftest import unique

NOWHERE = "http://127.0.0.1:{port}"  # no cluster answers there


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    """A stand-in of the job file: prints that it runs, then sleeps."""
    path = tmp_path / JOB_FILE.name
    path.write_text("import time\nprint('running', flush=True)\ntime.sleep(120)\n")
    return path


def start_job(job_file: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Process:
    job = spawn([sys.executable, str(job_file), *args], tmp_path / f"{unique('job')}.log", name="a local job", env=env)

    def says_running() -> None:
        if "running" not in job.log_tail():
            raise NoAnswerYet("not running yet")

    job.wait_ready(says_running, timeout_s=30)
    return job


def test_a_local_job_runs_while_its_process_does_and_is_gone_after(job_file, tmp_path):
    name = unique("local-job")
    job = start_job(job_file, tmp_path, "--bootstrap", "127.0.0.1:1", "--team", "fruit", "--job-name", name)
    try:
        found = [j for j in local_jobs() if j.pid == job.pid]
        assert len(found) == 1 and found[0].name == name and found[0].team == "fruit" and found[0].up_s >= 0
        flink, jobs = flink_jobs(NOWHERE.format(port=free_port()), found)
        assert flink.status == OK and jobs is None and f"{name} (pid {job.pid})" in flink.detail
        check = check_job(TeamParts("fruit", job_name=name), jobs, local_jobs())
        assert check.status == OK and f"pid {job.pid}" in check.detail and "local MiniCluster" in check.detail
        assert check.data["local"][0]["pid"] == job.pid
    finally:
        job.stop()
    assert not [j for j in local_jobs() if j.pid == job.pid]
    gone = check_job(TeamParts("fruit", job_name=name), None, local_jobs())
    assert gone.status in (DOWN, UNKNOWN) and gone.status != OK  # DOWN while other local jobs run, else as before
    assert check_job(TeamParts("fruit", job_name=name), None, []).status == UNKNOWN  # no Flink at all: as before


def test_the_job_name_is_the_teams_default_or_its_variable(job_file, tmp_path):
    team = unique("team").replace("-", "_")
    by_default = start_job(job_file, tmp_path, "--team", team)
    by_variable = start_job(job_file, tmp_path, f"--team={team}", env={variable("job_name"): "named-by-env"})
    try:
        names = {j.pid: j.name for j in local_jobs()}
        assert names[by_default.pid] == f"http-dispatcher-{team}" == TeamParts(team).job_name
        assert names[by_variable.pid] == "named-by-env"
        running = check_job(TeamParts(team), None, local_jobs())
        assert running.status == OK and str(by_default.pid) in running.detail
    finally:
        by_default.stop()
        by_variable.stop()


def test_two_of_the_same_job_are_doubled(job_file, tmp_path):
    name = unique("twice")
    first = start_job(job_file, tmp_path, "--team", "fruit", "--job-name", name)
    second = start_job(job_file, tmp_path, "--team", "fruit", "--job-name", name)
    try:
        check = check_job(TeamParts("fruit", job_name=name), None, local_jobs())
        assert check.status == DOWN and "2 jobs RUNNING at once" in check.detail
    finally:
        first.stop()
        second.stop()


def test_only_the_job_file_run_by_python_is_a_job():
    assert is_local_job(["/x/.venv/bin/python", str(JOB_FILE), "--team", "fruit"])
    assert not is_local_job(["bash", "/opt/flink/bin/flink", "run", "--python", str(JOB_FILE)])
    assert not is_local_job(["/x/.venv/bin/python", "-m", "imagery.cli", "dispatch", "--team", "fruit"])
