"""CPU time of a process and its descendants, from /proc (standard library only: it also runs on a bare GPU
machine beside bench/gpu_service.py)."""

from __future__ import annotations

import os
from pathlib import Path


def process_tree_cpu(pid: int) -> list[tuple[str, float]]:
    """(command name, user + system CPU seconds) of `pid` and each of its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            raw = Path(f"/proc/{current}/stat").read_text()
            fields = raw.rsplit(")", 1)[1].split()
            out.append((raw[raw.index("(") + 1: raw.rindex(")")], (int(fields[11]) + int(fields[12])) / tick))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # a process that ended meanwhile
    return out


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live descendants (a server's workers, a job's JVM and Python)."""
    return sum(cpu for _, cpu in process_tree_cpu(pid))
