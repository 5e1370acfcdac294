"""The fault suite (`make test-faults`): thousands of messages with unique ids through the whole pipeline on real
parts while, in turn, each part fails. Goals: nothing missing anywhere, nothing twice under exactly-once, no dead
letter caused by a fault. Every run adds a row to a table printed at the end and appended to bench/RESULTS.md.

CI runs one of these faults in tests/e2e (a job killed mid-run); the whole suite takes about 20 minutes here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.results import append_results, markdown_table
from imagery import kafka_io
from imagery.audit import audit, wait_until_caught_up
from imagery.local import stack
from imagery.local.inference_service import InferenceService
from imagery.local.settings import StackSettings
from imagery.pipeline_run import Collected, DispatcherProcess, collect
from tests.e2e.test_dispatcher import dispatcher_args
from tests.helpers import put
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.faults

MESSAGES = int(os.environ.get("IMAGERY_FAULT_MESSAGES", "3000"))
DRAIN_TIMEOUT_S = 900
ROWS: list[list[object]] = []


@dataclass
class Run:
    """One scenario's parts; a fault replaces `job` or `service` when it restarts them."""

    bootstrap: str
    out: str
    dlq: str
    stack: StackSettings
    service: InferenceService
    job: DispatcherProcess
    args: list[str]
    tmp_path: Path
    restarts: int = 0
    notes: list[str] = field(default_factory=list)

    def committed(self, at_least: int) -> Collected:
        """Wait until `at_least` distinct results are readable (read_committed: under exactly-once, after a
        checkpoint committed them)."""
        got = collect(
            self.bootstrap,
            self.out,
            self.dlq,
            lambda c: len(c.results) >= at_least,
            DRAIN_TIMEOUT_S,
            watch=self.job.check_alive,
        )
        assert len(got.results) >= at_least, f"only {len(got.results)} results before the fault"
        return got

    def restart_job(self) -> None:
        self.restarts += 1
        self.job = DispatcherProcess(self.args, self.tmp_path / f"dispatcher-{self.restarts}.log").start()


# ---------------------------------------------------------------------------- the faults


def service_killed(down_s: float) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        run.committed(MESSAGES // 4)
        run.service.kill()
        time.sleep(down_s)  # the outage itself
        run.service.start()

    return inject


def broker_restarted(run: Run) -> None:
    run.committed(MESSAGES // 4)
    stack.stop(run.stack, "kafka")
    time.sleep(10)  # the outage itself
    stack.start(run.stack, stack.kafka_component(run.stack))


def minio_stopped(run: Run) -> None:
    run.committed(MESSAGES // 4)
    stack.stop(run.stack, "minio")
    time.sleep(15)  # the outage itself
    stack.start(run.stack, stack.minio_component(run.stack))


def job_killed(after_commit_s: float) -> Callable[[Run], None]:
    """SIGKILL the whole job `after_commit_s` after results were first seen committed: across the runs, the kill
    lands at several points of the 2 s checkpoint interval (before, during and after the next checkpoint)."""

    def inject(run: Run) -> None:
        run.committed(MESSAGES // 5)
        time.sleep(after_commit_s)  # the moment of the kill under test, not a wait
        run.job.kill()
        run.restart_job()

    return inject


def stopped_with_savepoint(run: Run) -> None:
    run.committed(MESSAGES // 4)
    run.job.stop_with_savepoint()
    assert "stopped with a savepoint at" in run.job.log_path.read_text()
    run.restart_job()


SCENARIOS = {
    "service killed, down 20 s": ("exactly-once", service_killed(20)),
    "service killed, down 90 s": ("exactly-once", service_killed(90)),
    "broker stopped 10 s and started": ("exactly-once", broker_restarted),
    "MinIO stopped 15 s and started": ("exactly-once", minio_stopped),
    **{f"job killed {k * 0.5:.1f} s after a commit": ("exactly-once", job_killed(k * 0.5)) for k in range(5)},
    "job stopped with a savepoint and resumed": ("exactly-once", stopped_with_savepoint),
    "job killed 1.0 s after a commit (at-least-once)": ("at-least-once", job_killed(1.0)),
    "service killed, down 20 s (at-least-once)": ("at-least-once", service_killed(20)),
}


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    yield
    if not ROWS:
        return
    headers = ["fault", "guarantee", "messages", "results", "DLQ", "missing", "duplicated", "audit", "drain s"]
    md = markdown_table(headers, ROWS)
    print("\n" + md)
    append_results(
        "Fault suite",
        md,
        f"Command: `make test-faults` ({MESSAGES} messages per run, unique ids, "
        "counted afterwards from the result topic read_committed and the DLQ; the fruit service; "
        "8 items per request; checkpoints every 2 s; `imagery audit` once the job caught up).",
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_fault_loses_nothing_duplicates_nothing_under_exactly_once_and_fills_no_dlq(
    name, stack_settings, bootstrap, new_topic, minio, bucket, fruit_weights, fruit_images, tmp_path
):
    guarantee, inject = SCENARIOS[name]
    inp, out, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    run_id = uuid.uuid4().hex[:8]
    for i in range(8):
        put(minio, bucket, f"img-{i}.jpg", fruit_images.make(("clean", "defect")[i % 2], i))
    ids = [f"{run_id}-{n}" for n in range(MESSAGES)]
    kafka_io.produce(
        bootstrap,
        inp,
        [
            (i.encode(), json.dumps({"id": i, "bucket": bucket, "key": f"img-{n % 8}.jpg"}).encode())
            for n, i in enumerate(ids)
        ],
    )
    service = InferenceService(
        stack_settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env=FRUIT_SERVICE_ENV,
        log_path=tmp_path / "service.log",
    ).start()
    args = dispatcher_args(
        bootstrap,
        "fruit",
        service,
        inp,
        out,
        dlq,
        "--delivery-guarantee",
        guarantee,
        "--items-per-request",
        "8",
        "--capacity",
        "32",
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
    )
    started = time.monotonic()
    run = Run(
        bootstrap,
        out,
        dlq,
        stack_settings,
        service,
        DispatcherProcess(args, tmp_path / "dispatcher-0.log").start(),
        args,
        tmp_path,
    )
    try:
        inject(run)
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: len(c.results) + len(c.dead) >= len(ids),
            DRAIN_TIMEOUT_S,
            watch=run.job.check_alive,
        )
        drain_s = time.monotonic() - started
        group = args[args.index("--group-id") + 1]
        wait_until_caught_up(bootstrap, inp, group, DRAIN_TIMEOUT_S, watch=run.job.check_alive)
        report = audit(bootstrap, "fruit", input_topic=inp, output_topic=out, dlq_topic=dlq, group_id=group)
        # no fixed window for late duplicates: the audit ran once the job committed every input offset and counted
        # each offset's results and dead letters; the table's counts read back all that it counted
        final = collect(
            bootstrap, out, dlq, lambda c: c.result_count + len(c.dead) >= report.results + report.dead_letters, 60
        )
    finally:
        run.job.stop()
        run.service.stop()
    dead_ids = {json.loads(d.original_value()).get("id") for d in final.dead}
    missing = len(set(ids) - set(final.results) - dead_ids)
    duplicated = final.result_count - len(final.results)
    verdict = (
        "clean"
        if report.clean and not report.pending
        else (f"{len(report.missing)} missing, {len(report.duplicated)} duplicated, {len(report.pending)} pending")
    )
    ROWS.append(
        [name, guarantee, len(ids), final.result_count, len(final.dead), missing, duplicated, verdict, f"{drain_s:.0f}"]
    )
    assert report.records == len(ids) and not report.missing, report.as_dict()  # the audit, the suite's oracle
    assert len(got.results) + len(got.dead) >= len(ids)
    assert missing == 0, f"{missing} messages never landed"
    assert not final.dead, [d.error for d in final.dead[:3]]
    if guarantee == "exactly-once":
        assert duplicated == 0, f"{duplicated} duplicates under exactly-once"
        assert report.clean and not report.pending, report.as_dict()
