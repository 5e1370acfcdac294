"""Run the whole pipeline locally: the service and the dispatcher as processes, and collect what comes out.

Used by `imagery demo`, by the end-to-end tests and by bench/pipeline.py, so all three exercise the same path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imagery import kafka_io
from imagery.errors import ToolError
from imagery.local.job_scratch import JobScratch
from imagery.process import Process, Stopped, group_members, spawn
from imagery.repo import REPO_ROOT
from schemas import DeadLetter
from streaming.flink.jobs import JOB_FILE


def _with_local_defaults(args: list[str]) -> list[str]:
    """ARGS with what this machine supplies unless ARGS name their own: the connector jars it cached (`--connector-jars
    ""` for a cluster whose lib/ has them: the job itself never looks for them) and the local stack's checkpoint
    folder (the job has no default of its own)."""
    from imagery.local import install
    from imagery.local.settings import StackSettings

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(f"{flag}=") for a in args)

    settings = StackSettings()
    jars = (
        []
        if given("--connector-jars")
        else ["--connector-jars", ",".join(str(p) for p in install.connector_jars(settings))]
    )
    checkpoint_dir = (
        []
        if given("--checkpoint-dir") or os.environ.get("CHECKPOINT_DIR")
        else ["--checkpoint-dir", str(settings.checkpoints_dir)]
    )
    return [*jars, *checkpoint_dir, *args]


def local_job_command(args: list[str]) -> list[str]:
    """`python http_dispatcher.py ARGS` on a local MiniCluster."""
    return [sys.executable, str(JOB_FILE), *_with_local_defaults(args)]


def cluster_job_command(args: list[str], jobmanager: str) -> tuple[list[str], dict[str, str]]:
    """`flink run --detached` of the job on the cluster at JOBMANAGER (host:port of its REST API), from this venv's
    PyFlink, and the environment it needs: the job's jars ship with it, so the cluster needs none in lib/."""
    from imagery.local import stack
    from imagery.local.settings import StackSettings

    flink = stack.flink_home() / "bin" / "flink"
    argv = [
        "bash",
        str(flink),
        "run",
        "--detached",
        "-m",
        jobmanager,
        "--python",
        str(JOB_FILE),
        *_with_local_defaults(args),
    ]
    return argv, {**stack.flink_env(StackSettings()), "IMAGERY_DETACHED": "1"}


class SubmissionFailed(ToolError):
    """`flink run` did not submit the job (its output says why)."""


def submit_to_cluster(args: list[str], jobmanager: str, timeout_s: float = 300) -> tuple[str, str]:
    """`imagery dispatch --jobmanager JOBMANAGER ARGS` (`flink run --detached`, as docs/deploying.md has it): the
    submitted job's id, and what the submission printed. Raises SubmissionFailed with that output when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "imagery.cli", "dispatch", "--jobmanager", jobmanager, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
    )
    printed = done.stdout + done.stderr
    job = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
    if done.returncode != 0 or job is None:
        raise SubmissionFailed(f"the submission failed (exit {done.returncode}):\n{printed[-6000:]}")
    return job.group(1), printed


class DispatcherProcess:
    """`python http_dispatcher.py ...` (a local MiniCluster) as a background process in its own process group, its
    temporary files in a scratch folder of its own that goes when it stops or is killed (job_scratch.py)."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = env or {}
        self.proc: Process | None = None
        self.scratch: JobScratch | None = None

    def start(self) -> DispatcherProcess:
        self.scratch = JobScratch.create()
        self.proc = spawn(
            local_job_command(self.args),
            self.log_path,
            name="dispatcher",
            env={**self.scratch.environment(), **self.env},
            cwd=REPO_ROOT,
        )
        self.scratch.claim(self.proc.pid)
        return self

    def check_alive(self) -> None:
        """Raise (with the log's tail) if the job's process has exited."""
        if self.proc is not None:
            self.proc.check_alive()

    def stop(self) -> Stopped | None:
        stopped = None if self.proc is None else self.proc.stop()
        self._remove_scratch()
        return stopped

    def stop_with_savepoint(self, timeout_s: float = 120.0) -> None:
        """SIGTERM to the job's main process only: it stops the job with a savepoint, which the next start
        resumes from, and exits; the rest of its process group goes after."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.stop()

    def kill(self) -> None:
        """SIGKILL to the whole process group (the job's JVM too): a crash, nothing flushed."""
        if self.proc is not None:
            self.proc.kill()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        """Once the whole group is gone (stop and kill wait for it), nothing writes to the scratch folder."""
        if self.scratch is not None and (self.proc is None or not group_members(self.proc.pid)):
            self.scratch.remove()

    def __enter__(self) -> DispatcherProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Collected:
    results: dict[str, dict] = field(default_factory=dict)  # id -> result record
    dead: list[DeadLetter] = field(default_factory=list)
    result_count: int = 0  # every result record read, duplicates included
    result_times_ms: dict[str, int] = field(default_factory=dict)  # id -> broker timestamp of the result
    # id -> when this reader received the result (it reads committed records only: under exactly-once, when the
    # result's transaction was committed, at the checkpoint after it was written)
    seen_ms: dict[str, int] = field(default_factory=dict)


def collect(
    bootstrap: kafka_io.Target,
    result_topic: str,
    dlq_topic: str,
    done: Callable[[Collected], bool],
    timeout_s: float,
    keep_result: Callable[[dict], bool] = lambda r: True,
    keep_dead: Callable[[DeadLetter], bool] = lambda d: True,
    watch: Callable[[], None] = lambda: None,
) -> Collected:
    """Read the result and DLQ topics from the start until `done(collected)` or the deadline."""
    out = Collected()
    with kafka_io.consumer(
        bootstrap, from_earliest=True, config={"topic.metadata.refresh.interval.ms": 1000}
    ) as reader:
        reader.subscribe([result_topic, dlq_topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(out):
            watch()
            msg = reader.poll(0.2)
            if msg is None or msg.error() or msg.value() is None:
                continue
            value = msg.value()
            assert value is not None
            if msg.topic() == result_topic:
                record = json.loads(value)
                if keep_result(record):
                    out.result_count += 1
                    out.results[record["id"]] = record
                    out.result_times_ms[record["id"]] = msg.timestamp()[1]
                    out.seen_ms.setdefault(record["id"], int(time.time() * 1000))
            else:
                try:
                    letter = DeadLetter.model_validate_json(value)
                except ValueError:
                    continue
                if keep_dead(letter):
                    out.dead.append(letter)
    return out


def produce_messages(bootstrap: kafka_io.Target, topic: str, messages: Iterable[dict | bytes]) -> int:
    """JSON-encode dicts (stamping publish_ts_ms), send bytes as they are; key = the message id if any."""
    values = []
    for m in messages:
        if isinstance(m, dict):
            m = {**m, "publish_ts_ms": m.get("publish_ts_ms") or int(time.time() * 1000)}
            values.append((str(m.get("id", "")).encode() or None, json.dumps(m).encode()))
        else:
            values.append((None, m))
    return kafka_io.produce(bootstrap, topic, values)
