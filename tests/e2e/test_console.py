"""A local job's console says what the job says. An idle job, through a run of checkpoints, prints its own lines
only: the known-harmless warnings Flink and the Kafka connector print at every start and every
checkpoint are filtered (streaming/flink/log4j-local.properties), so a real warning stands out."""

from __future__ import annotations

import re

import pytest

from imagery.pipeline_run import DispatcherProcess
from tests.e2e.test_dispatcher import dispatcher_args
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

# what the job itself prints (streaming/flink/jobs/http_dispatcher.py, streaming/flink/environment.py), after the
# header its launcher writes (imagery/process.py)
OWN_LINES = [
    re.compile(line)
    for line in (
        r"=== \S+ \S+ starting dispatcher: .+",
        r".+: no checkpoint to resume from; starting from the \w+ offsets",
        r"stopping with a savepoint \.\.\.",
        r"stopped with a savepoint at \S+; the next start resumes from it",
    )
]
CHECKPOINTS = 12  # the committers' warnings came at every checkpoint


def newest_checkpoint(checkpoint_dir) -> int:
    return max((int(m.parent.name.removeprefix("chk-")) for m in checkpoint_dir.glob("*/*/chk-*/_metadata")), default=0)


def test_an_idle_jobs_console_holds_only_its_own_lines(bootstrap, new_topic, tmp_path):
    inp, out, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    checkpoint_dir = tmp_path / "checkpoints"
    nowhere = "http://127.0.0.1:9"  # never called: no message arrives
    args = dispatcher_args(
        bootstrap,
        "fruit",
        nowhere,
        inp,
        out,
        dlq,
        "--resume",
        "none",
        "--delivery-guarantee",
        "exactly-once",
        "--checkpoint-interval-ms",
        "500",
        "--checkpoint-dir",
        str(checkpoint_dir),
    )
    console = tmp_path / "console.log"
    job = DispatcherProcess(args, console).start()
    try:
        wait_for(
            lambda: newest_checkpoint(checkpoint_dir) >= CHECKPOINTS,
            f"{CHECKPOINTS} checkpoints of the idle job",
            timeout_s=240,
            watch=job.check_alive,
        )
        job.stop_with_savepoint()
    finally:
        job.stop()

    lines = [line for line in console.read_text().splitlines() if line.strip()]
    stopping = lines.index("stopping with a savepoint ...")
    # The idle job, up to its stop, prints its own lines only. The stop itself is a shutdown of the whole MiniCluster,
    # which now and then logs a race of its own (a checkpoint in flight when the coordinator suspends, a Kafka admin
    # thread logging through a closed class loader): those stay visible, and are not held here.
    foreign = [line for line in lines[:stopping] if not any(own.fullmatch(line) for own in OWN_LINES)]
    assert not foreign, "lines the job did not print itself:\n" + "\n".join(foreign[:40])
    assert any(line.startswith("stopped with a savepoint at") for line in lines[stopping:]), lines[stopping:]
