"""A local Flink job's scratch folder: its JVM's java.io.tmpdir and its Python's TMPDIR, gone with the job.

A local job's MiniCluster unpacks under java.io.tmpdir its working directory (a blob store holding the job's jars,
11 MB), its RPC system's jar (21 MB) and its I/O and shuffle folders, and PyFlink adds its own under TMPDIR. They go
only when the JVM exits in order, so every job killed (a crash, `kill -9`, the fault suite's faults, a test's
teardown) left them in /tmp: one `make test` left 16 `minicluster_*` folders and 16 RPC jars, 580 MB. Each local
job now gets a folder of its own, removed once its process group is gone: by whoever stopped it, else at the next
local job's start, which sweeps the folders of jobs that died.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imagery.process import group_members

PREFIX = "imagery-job-"
OWNER_FILE = "owner.pgid"  # the process group of the job using the folder
UNCLAIMED_GRACE_S = 600.0  # a folder with no owner yet (its job starting) is kept this long


@dataclass(frozen=True)
class JobScratch:
    folder: Path

    @classmethod
    def create(cls, base: Path | None = None) -> JobScratch:
        """A new folder under BASE (default: the system's temporary folder), after sweeping the dead jobs' there."""
        sweep(base)
        return cls(Path(tempfile.mkdtemp(prefix=PREFIX, dir=base)))

    def environment(self) -> dict[str, str]:
        """The job process's environment for it: PyFlink starts the MiniCluster's JVM with JVM_ARGS
        (pyflink_gateway_server.py), and java.io.tmpdir is where Flink's temporary folders default to."""
        jvm_args = " ".join(filter(None, [os.environ.get("JVM_ARGS", ""), f"-Djava.io.tmpdir={self.folder}"]))
        return {"JVM_ARGS": jvm_args, "TMPDIR": str(self.folder)}

    def claim(self, pgid: int) -> None:
        """The job runs in process group PGID: the folder lives as long as a process of that group does."""
        (self.folder / OWNER_FILE).write_text(str(pgid))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def sweep(base: Path | None = None) -> list[Path]:
    """Remove the scratch folders under BASE whose job's process group is gone; the folders removed."""
    removed = []
    for folder in sorted(Path(base or tempfile.gettempdir()).glob(PREFIX + "*")):
        if folder.is_dir() and not _in_use(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _in_use(folder: Path) -> bool:
    try:
        pgid = int((folder / OWNER_FILE).read_text())
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime < UNCLAIMED_GRACE_S
        except FileNotFoundError:  # another sweep took it
            return False
    except ValueError:
        return False
    return bool(group_members(pgid))
