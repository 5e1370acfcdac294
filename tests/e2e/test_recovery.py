"""Exactly-once across a crash: a dispatcher killed mid-run resumes from its last checkpoint, not its group offsets."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest

from imagery import kafka_io
from imagery.audit import audit, wait_until_caught_up
from imagery.pipeline_run import DispatcherProcess, collect
from tests.e2e.test_dispatcher import JOB_TIMEOUT_S, dispatcher_args
from tests.helpers import put

pytestmark = pytest.mark.e2e


def flink_leftovers() -> set[Path]:
    """What a local Flink job not closed in order used to leave in the system's temporary folder: its MiniCluster's
    working directory and the RPC system's jar it unpacked (the job's scratch folder holds them now)."""
    tmp = Path(tempfile.gettempdir())
    return {*tmp.glob("minicluster_*"), *tmp.glob("flink-rpc-*.jar")}


def test_a_job_killed_mid_run_resumes_from_its_checkpoint_with_nothing_lost_or_twice(
    bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    ids = [f"{run}-{i}" for i in range(600)]
    kafka_io.produce(
        bootstrap,
        inp,
        [(i.encode(), json.dumps({"id": i, "bucket": bucket, "key": "clean.jpg"}).encode()) for i in ids],
    )
    args = dispatcher_args(
        bootstrap,
        "fruit",
        fruit_service,
        inp,
        out,
        dlq,
        "--delivery-guarantee",
        "exactly-once",
        "--items-per-request",
        "4",
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
    )
    leftovers_before = flink_leftovers()
    first = DispatcherProcess(args, tmp_path / "first.log").start()
    try:
        # committed results mean a checkpoint completed; kill while later ones are in flight
        got = collect(bootstrap, out, dlq, lambda c: len(c.results) >= 150, JOB_TIMEOUT_S, watch=first.check_alive)
        assert len(got.results) >= 150
    finally:
        first.kill()
    assert list((tmp_path / "checkpoints").glob("*/*/chk-*/_metadata")), "a retained checkpoint to resume from"
    assert first.scratch is not None and not first.scratch.folder.exists(), "the killed job's scratch folder is gone"
    assert flink_leftovers() <= leftovers_before, f"the killed job left {sorted(flink_leftovers() - leftovers_before)}"

    with DispatcherProcess(args, tmp_path / "second.log") as second:
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: len(c.results) >= len(ids) or bool(c.dead),
            JOB_TIMEOUT_S,
            watch=second.check_alive,
        )
        # no fixed window for late duplicates: once the job committed every input offset, the audit counts each
        # offset's results, so one written twice, however late, is found there
        assert_audit_clean(bootstrap, inp, out, dlq, args, second)
    assert "resuming from" in (tmp_path / "second.log").read_text()
    assert sorted(got.results) == sorted(ids) and not got.dead, "nothing lost"
    assert got.result_count == len(ids), f"nothing twice: {got.result_count - len(ids)} duplicates"


def test_a_job_stopped_with_a_savepoint_resumes_from_it(
    bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    ids = [f"{run}-{i}" for i in range(300)]
    kafka_io.produce(
        bootstrap, inp, [json.dumps({"id": i, "bucket": bucket, "key": "clean.jpg"}).encode() for i in ids]
    )
    args = dispatcher_args(
        bootstrap,
        "fruit",
        fruit_service,
        inp,
        out,
        dlq,
        "--delivery-guarantee",
        "exactly-once",
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
    )
    # The first run takes no checkpoint (only the savepoint commits). The resumed one checkpoints as usual: Flink
    # starts a job's first checkpoint at a random moment within one interval, so with the first run's 300 s the
    # resumed run's results stayed uncommitted past this test's deadline in about one run in four (the flake).
    first = DispatcherProcess([*args, "--checkpoint-interval-ms", "300000"], tmp_path / "first.log").start()
    try:
        # with no checkpoint, nothing is committed until the savepoint: stop once results are written, uncommitted
        written = kafka_io.read_topic(bootstrap, out, until=100, timeout_s=JOB_TIMEOUT_S, read_committed=False)
        assert len(written) == 100
    finally:
        first.stop_with_savepoint()
    assert "stopped with a savepoint at" in (tmp_path / "first.log").read_text()
    stopped = collect(bootstrap, out, dlq, lambda c: bool(c.results), 5)
    assert stopped.results, "the savepoint committed what the job had done"

    with DispatcherProcess(args, tmp_path / "second.log") as second:
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: len(c.results) >= len(ids) or bool(c.dead),
            JOB_TIMEOUT_S,
            watch=second.check_alive,
        )
        assert_audit_clean(bootstrap, inp, out, dlq, args, second)  # finds a duplicate however late (see above)
    assert "resuming from" in (tmp_path / "second.log").read_text()
    assert "savepoint-" in (tmp_path / "second.log").read_text().split("resuming from", 1)[1].splitlines()[0]
    assert sorted(got.results) == sorted(ids) and not got.dead
    assert got.result_count == len(ids), f"{got.result_count - len(ids)} duplicates"


def assert_audit_clean(bootstrap: str, inp: str, out: str, dlq: str, args: list[str], job: DispatcherProcess) -> None:
    """Once the running job has committed every input offset, the audit agrees: each record landed once."""
    group = args[args.index("--group-id") + 1]
    wait_until_caught_up(bootstrap, inp, group, JOB_TIMEOUT_S, watch=job.check_alive)
    report = audit(bootstrap, "fruit", input_topic=inp, output_topic=out, dlq_topic=dlq, group_id=group)
    assert report.clean and not report.pending, report.as_dict()
    assert report.records == sum(m.high for m in kafka_io.watermarks(bootstrap, inp).values()) > 0
