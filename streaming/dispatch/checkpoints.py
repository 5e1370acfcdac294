"""Where a dispatcher job keeps its checkpoints and savepoints, and which one a restart resumes from.

Exactly-once holds across a crash only if the restarted job resumes from the state its output transactions were
committed with: the last completed checkpoint (or a savepoint), never the Kafka group offsets, which are committed
apart from those transactions. A job is known by its consumer group (as Kafka knows it: the same group reads on
from the same place), and each group has its own folder:

    <checkpoint dir>/<group id>/<Flink job id>/chk-<n>/_metadata     retained checkpoints (kept on cancel and crash)
    <checkpoint dir>/<group id>/savepoints/savepoint-<id>/_metadata  savepoints (stop with a savepoint)

`latest` picks the newest complete one of them; a first start finds none and starts from the group offsets.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

METADATA = "_metadata"
SAVEPOINTS = "savepoints"


def as_uri(location: str) -> str:
    """Flink wants a scheme: a plain path becomes a file:// URI."""
    return Path(location).expanduser().resolve().as_uri() if location and "://" not in location else location


def local_path(uri: str) -> Path | None:
    """The local folder of a file:// URI or a plain path; None for a remote file system (s3://, hdfs://...)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    return None


def job_dir(checkpoint_dir: str, group_id: str) -> str:
    return checkpoint_dir.rstrip("/") + "/" + group_id


def savepoint_dir(job_folder: str) -> str:
    return job_folder + "/" + SAVEPOINTS


def restorable(folder: Path) -> bool:
    """A checkpoint or savepoint folder that completed: Flink writes its metadata file last."""
    return (folder / METADATA).is_file()


def candidates(job_folder: Path) -> list[Path]:
    """Every complete checkpoint and savepoint of the job, oldest first."""
    found = [*job_folder.glob("*/chk-*"), *job_folder.glob(f"{SAVEPOINTS}/savepoint-*")]
    return sorted((f for f in found if restorable(f)), key=lambda f: (f / METADATA).stat().st_mtime)


def latest(job_folder: Path) -> Path | None:
    found = candidates(job_folder)
    return found[-1] if found else None


def prune(job_folder: Path, keep: Path) -> list[Path]:
    """Remove the checkpoints of earlier runs of the job (their whole job-id folders) and savepoints older than
    `keep`, which the new run resumes from; what the new run writes goes to a new job-id folder."""
    removed = []
    keep_run = keep.parent if keep.name.startswith("chk-") else None
    keep_mtime = (keep / METADATA).stat().st_mtime
    for run in job_folder.iterdir():
        if run.name == SAVEPOINTS or not run.is_dir() or run == keep_run:
            continue
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    for savepoint in job_folder.glob(f"{SAVEPOINTS}/savepoint-*"):
        if savepoint != keep and (not restorable(savepoint) or (savepoint / METADATA).stat().st_mtime < keep_mtime):
            shutil.rmtree(savepoint, ignore_errors=True)
            removed.append(savepoint)
    return removed


def resume_path(resume: str, checkpoint_dir: str, group_id: str) -> str | None:
    """What `--resume` names: `latest` (the newest complete checkpoint or savepoint of the job, None if there is
    none or the folder is not local), `none`, or an explicit checkpoint/savepoint path."""
    if resume == "none":
        return None
    if resume != "latest":
        return resume
    folder = local_path(job_dir(checkpoint_dir, group_id))
    if folder is None or not folder.is_dir():
        return None
    found = latest(folder)
    if found is None:
        return None
    prune(folder, keep=found)
    return str(found)


# The operators of the job and the state they keep: a checkpoint restores only into the layout that took it. A new
# layout (a change of the job's operators or their state) takes a new number here. Earlier layouts: "process-2",
# the Python worker mode that was removed (bench/RESULTS.md, issue 28); unmarked, the versions before layouts.
LAYOUT_FILE = "layout"
LAYOUT_VERSION = 2
LAYOUT = f"thread-{LAYOUT_VERSION}"


class LayoutMismatch(Exception):
    """The group's newest checkpoint was taken by a job whose operators keep other state."""


def claim_layout(checkpoint_dir: str, group_id: str, job_layout: str, restore_from: str | None) -> None:
    """Before a job of JOB_LAYOUT starts in the group's folder: raise LayoutMismatch if it would restore (RESTORE_FROM,
    found by `--resume latest`) a checkpoint that another layout took, or one from before layouts were recorded;
    otherwise record JOB_LAYOUT as the layout of the checkpoints the job takes there. A local folder only (a remote
    file system is left to Flink, which refuses a restore into other operators at start)."""
    folder = local_path(job_dir(checkpoint_dir, group_id))
    if folder is None:
        return
    marker = folder / LAYOUT_FILE
    found = marker.read_text().strip() if marker.is_file() else None
    if restore_from is not None and found != job_layout:
        raise LayoutMismatch(found or "an earlier version's")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(job_layout + "\n")
