"""Append a benchmark's table to bench/RESULTS.md, stamped with the date, the machine and the git commit.

Numbers without the machine and the code they came from mean little; every section carries both.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from imagery.repo import REPO_ROOT

RESULTS_FILE = REPO_ROOT / "bench" / "RESULTS.md"
_HEADER = (
    "# Benchmark results\n\nAppended by the scripts in bench/ (newest last). Compare numbers only within one section.\n"
)


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> str:
    if not shutil.which("nvidia-smi"):
        return "none"
    names = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]).splitlines()
    return ", ".join(names) or "none"


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cores} cores, GPU: {gpus()}, {platform.system()} {platform.release()}"


def commit() -> str:
    head = _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    # untracked source counts (the numbers came from code the commit lacks); this results file does not
    dirty = _run(["git", "status", "--porcelain", "--", ".", f":!{RESULTS_FILE.relative_to(REPO_ROOT)}"])
    return head + ("+dirty" if dirty else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub table; `align` has one letter per column, l or r (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *[[str(cell) for cell in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def append_results(
    title: str, table_md: str, notes: str = "", path: Path = RESULTS_FILE, measured_on: str | None = None
) -> Path:
    """`measured_on` names the machine when the numbers came from another one than this (a lent GPU machine)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n- date: {stamp}\n- machine: {measured_on or machine()}\n- commit: {commit()}\n\n"
        f"{table_md.strip()}\n"
    )
    if notes.strip():
        section += f"\n{notes.strip()}\n"
    existing = path.read_text() if path.exists() else _HEADER
    path.write_text(existing.rstrip("\n") + "\n" + section)
    return path
