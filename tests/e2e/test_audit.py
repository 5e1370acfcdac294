"""`imagery audit` on a real job's output: clean after a run; a loss and a duplicate injected into the topics the job
wrote are found; `--repair` re-publishes the lost records, the running job handles them, and the audit is clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import TopicPartition

from imagery import kafka_io
from imagery.audit import Unit, audit, wait_until_caught_up
from imagery.pipeline_run import DispatcherProcess, collect
from imagery.repo import REPO_ROOT
from tests.e2e.test_dispatcher import JOB_TIMEOUT_S, dispatcher_args
from tests.helpers import put, record_json

pytestmark = pytest.mark.e2e


def test_the_audit_finds_an_injected_loss_and_duplicate_and_repair_makes_it_clean(
    bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    put(minio, bucket, "a.jpg", fruit_images.clean)
    messages = [
        (f"{run}-{i}".encode(), json.dumps({"id": f"{run}-{i}", "bucket": bucket, "key": "a.jpg"}).encode())
        for i in range(40)
    ]
    kafka_io.produce(bootstrap, inp, [*messages, (b"bad", b"not json")])
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
    group = args[args.index("--group-id") + 1]
    cli = [
        sys.executable,
        "-m",
        "imagery.cli",
        "audit",
        "--team",
        "fruit",
        "--bootstrap",
        bootstrap,
        "--input-topic",
        inp,
        "--output-topic",
        out,
        "--dlq-topic",
        dlq,
        "--group-id",
        group,
    ]

    def audit_cli(*extra: str) -> tuple[int, dict]:
        done = subprocess.run([*cli, "--json", *extra], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        print(done.stdout)
        return done.returncode, json.loads(done.stdout)

    with DispatcherProcess(args, tmp_path / "dispatcher.log") as job:
        wait_until_caught_up(bootstrap, inp, group, JOB_TIMEOUT_S, watch=job.check_alive)
        code, clean = audit_cli()
        assert code == 0 and clean["clean"] and clean["records"] == 41, clean
        assert clean["results"] == 40 and clean["dead_letters"] == 1 and not clean["pending"]

        # a loss: the first 3 results gone from the result topic (as a dropped transaction would leave it)
        firsts = [record_json(r)["source"]["offset"] for r in kafka_io.read_to_end(bootstrap, out).records[:3]]
        client = kafka_io.admin(bootstrap)  # kept referenced: a collected client cancels its futures
        for deleted in client.delete_records([TopicPartition(out, 0, 3)]).values():
            deleted.result(30)
        # a duplicate: one result written a second time (as a second writer of the same job would)
        doubled = kafka_io.read_to_end(bootstrap, out).records[0]
        assert doubled.value is not None, doubled
        kafka_io.produce(bootstrap, out, [(doubled.key, doubled.value)])
        code, found = audit_cli()
        table = subprocess.run(
            cli, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "120"}
        )
        print(table.stdout)  # as the README shows it
        assert code == 1 and not found["clean"] and table.returncode == 1 and "not clean" in table.stdout
        assert found["missing"] == [str(Unit(inp, 0, o)) for o in sorted(firsts)]
        assert [d["unit"] for d in found["duplicated"]] == [str(Unit(inp, 0, record_json(doubled)["source"]["offset"]))]

        code, repaired = audit_cli("--repair")
        assert repaired["repaired"] == found["missing"]
        wait_until_caught_up(bootstrap, inp, group, JOB_TIMEOUT_S, watch=job.check_alive)
        collect(bootstrap, out, dlq, lambda c: len(c.results) >= 40, JOB_TIMEOUT_S, watch=job.check_alive)
        after = audit(bootstrap, "fruit", input_topic=inp, output_topic=out, dlq_topic=dlq, group_id=group)
    assert not after.missing and not after.pending and after.replayed == 3, after.as_dict()
    assert [str(u) for u, _ in after.duplicated] == [d["unit"] for d in found["duplicated"]], (
        "the injected duplicate cannot be taken back; the audit keeps naming it"
    )
    # the repaired records kept their message ids (the replay header names the originals)
    results = {record_json(r)["id"] for r in kafka_io.read_to_end(bootstrap, out).records}
    assert {f"{run}-{o}" for o in firsts} <= results
