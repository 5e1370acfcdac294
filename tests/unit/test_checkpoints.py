"""Which retained checkpoint or savepoint a restarted dispatcher resumes from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def test_a_job_refuses_a_checkpoint_of_another_layout_and_records_its_own(tmp_path):
    uri = tmp_path.as_uri()
    earlier, current = "process-2", checkpoints.LAYOUT  # the removed process mode's checkpoints, and this version's
    checkpoints.claim_layout(uri, "g", earlier, restore_from=None)  # a first start records its layout
    assert (tmp_path / "g" / checkpoints.LAYOUT_FILE).read_text().strip() == earlier
    checkpoints.claim_layout(uri, "g", earlier, restore_from="chk-1")  # the same layout resumes
    with pytest.raises(checkpoints.LayoutMismatch, match=earlier):
        checkpoints.claim_layout(uri, "g", current, restore_from="chk-1")
    assert (tmp_path / "g" / checkpoints.LAYOUT_FILE).read_text().strip() == earlier  # a refusal changes nothing
    checkpoints.claim_layout(uri, "g", current, restore_from=None)  # --resume none: the move, recorded
    assert (tmp_path / "g" / checkpoints.LAYOUT_FILE).read_text().strip() == current


def test_a_checkpoint_from_before_layouts_were_recorded_is_refused(tmp_path):
    (tmp_path / "g" / "job" / "chk-3").mkdir(parents=True)
    with pytest.raises(checkpoints.LayoutMismatch, match="earlier version"):
        checkpoints.claim_layout(tmp_path.as_uri(), "g", checkpoints.LAYOUT, restore_from="chk-3")


def test_a_remote_folder_is_left_to_flink():
    checkpoints.claim_layout("s3://bucket/checkpoints", "g", checkpoints.LAYOUT, restore_from="s3://x")
