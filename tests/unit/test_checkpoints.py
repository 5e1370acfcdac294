"""Which retained checkpoint or savepoint a restarted dispatcher resumes from."""

from __future__ import annotations

import os
from pathlib import Path

from streaming.dispatch import checkpoints


def make(folder: Path, mtime: float, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    if complete:
        (folder / "_metadata").write_bytes(b"m")
        os.utime(folder / "_metadata", (mtime, mtime))
    return folder


def test_a_first_start_has_nothing_to_resume_from(tmp_path):
    assert checkpoints.resume_path("latest", tmp_path.as_uri(), "g") is None
    (tmp_path / "g" / "job1" / "chk-1").mkdir(parents=True)  # started, never completed
    assert checkpoints.resume_path("latest", tmp_path.as_uri(), "g") is None


def test_the_newest_complete_checkpoint_or_savepoint_wins_and_older_runs_are_pruned(tmp_path):
    group = tmp_path / "g"
    make(group / "run1" / "chk-7", 100)
    make(group / "savepoints" / "savepoint-a", 200)
    newest = make(group / "run2" / "chk-3", 300)
    make(group / "run3" / "chk-1", 400, complete=False)  # a crash before its first checkpoint completed
    assert checkpoints.resume_path("latest", tmp_path.as_uri(), "g") == str(newest)
    assert sorted(p.name for p in group.iterdir()) == ["run2", "savepoints"]
    assert not list((group / "savepoints").iterdir())
    saved = make(group / "savepoints" / "savepoint-b", 500)
    assert checkpoints.resume_path("latest", tmp_path.as_uri(), "g") == str(saved)


def test_groups_do_not_share_checkpoints(tmp_path):
    make(tmp_path / "other" / "run1" / "chk-1", 100)
    assert checkpoints.resume_path("latest", tmp_path.as_uri(), "g") is None


def test_none_and_an_explicit_path_are_taken_as_given(tmp_path):
    make(tmp_path / "g" / "run1" / "chk-1", 100)
    assert checkpoints.resume_path("none", tmp_path.as_uri(), "g") is None
    assert checkpoints.resume_path("/some/savepoint-x", tmp_path.as_uri(), "g") == "/some/savepoint-x"
    assert checkpoints.resume_path("latest", "s3://bucket/checkpoints", "g") is None  # not searched remotely


def test_plain_paths_become_file_uris():
    assert checkpoints.as_uri("/var/ckpt") == "file:///var/ckpt"
    assert checkpoints.as_uri("s3://b/ckpt") == "s3://b/ckpt"
