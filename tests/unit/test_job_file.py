"""The job file itself, run as the launchers run it: what it refuses before any Flink starts."""

from __future__ import annotations

import subprocess
import sys

from streaming.flink.jobs import JOB_FILE


def test_the_job_refuses_to_start_without_a_checkpoint_dir():
    """Where a group's checkpoints live is the launcher's to say (the local stack's folder, a volume, s3://): the job
    has no default of its own to silently resume from, or to write beside another machine's state."""
    env = {"PATH": "/usr/bin:/bin"}  # no CHECKPOINT_DIR from the caller's environment
    done = subprocess.run(
        [sys.executable, str(JOB_FILE), "--team", "fruit"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode != 0
    assert "--checkpoint-dir (CHECKPOINT_DIR) is required" in done.stderr, done.stderr[-2000:]
