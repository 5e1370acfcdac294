"""A local job's scratch folder: handed to the job's JVM and Python, swept once the job's process group is gone."""

from __future__ import annotations

import os
import sys
import time

from imagery.local import job_scratch
from imagery.local.job_scratch import JobScratch
from imagery.process import spawn


def test_the_job_gets_the_folder_as_its_jvm_and_python_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g")
    scratch = JobScratch.create(tmp_path)
    env = scratch.environment()
    assert scratch.folder.is_dir() and scratch.folder.parent == tmp_path
    assert env["JVM_ARGS"] == f"-Xmx1g -Djava.io.tmpdir={scratch.folder}", "the user's own JVM_ARGS are kept"
    assert env["TMPDIR"] == str(scratch.folder)


def test_a_dead_jobs_folder_is_swept_and_a_live_or_starting_jobs_is_kept(tmp_path):
    ended = spawn([sys.executable, "-c", "pass"], tmp_path / "ended.log")
    ended.wait(30)
    ended.stop()  # reaped: its group is gone
    dead, live, starting, stale = (JobScratch.create(tmp_path) for _ in range(4))
    dead.claim(ended.pid)
    live.claim(os.getpgid(0))  # this test's own group
    old = time.time() - job_scratch.UNCLAIMED_GRACE_S - 60
    os.utime(stale.folder, (old, old))
    (dead.folder / "minicluster_x").mkdir()  # what a killed MiniCluster leaves

    assert job_scratch.sweep(tmp_path) == sorted([dead.folder, stale.folder])
    assert not dead.folder.exists() and not stale.folder.exists()
    assert live.folder.is_dir() and starting.folder.is_dir()


def test_creating_a_folder_sweeps_the_dead_ones_first(tmp_path):
    ended = spawn([sys.executable, "-c", "pass"], tmp_path / "ended.log")
    ended.wait(30)
    ended.stop()
    dead = JobScratch.create(tmp_path)
    dead.claim(ended.pid)
    fresh = JobScratch.create(tmp_path)
    assert not dead.folder.exists() and fresh.folder.is_dir()
