"""Background processes of our own (the service, the dispatcher): stopping a process group, reading its log."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def terminate(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM to the process's group (it was started with start_new_session), SIGKILL if it lingers; waits."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
