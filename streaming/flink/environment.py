"""The Flink side of a dispatcher job: its configuration (checkpoints, restarts, Python, buffers, the reporter), and
waiting for a job started here until a signal stops it with a savepoint."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pyflink.common import Configuration, JobClient
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from streaming.dispatch import checkpoints
from streaming.dispatch.config import DispatcherConfig
from streaming.dispatch.metrics import reporter_options


def make_environment(cfg: DispatcherConfig, restore_from: str | None = None) -> StreamExecutionEnvironment:
    conf = Configuration()
    conf.set_string("python.executable", os.environ.get("PYFLINK_PYTHON", sys.executable))
    # The Python operator runs inside the JVM (PyFlink's thread mode): it beat a Python worker process on pace, CPU
    # and latency in one run (bench/RESULTS.md, issue 28, runs B and C).
    conf.set_string("python.execution-mode", "thread")
    # Checkpoints outlive the job (a crash, a cancel), so that a restart resumes from the state its committed output
    # belongs to: streaming/dispatch/checkpoints.py finds the newest and passes it as `restore_from`.
    job_dir = checkpoints.job_dir(cfg.checkpoint_dir, cfg.group_id)
    conf.set_string("execution.checkpointing.dir", job_dir)
    conf.set_string("execution.checkpointing.savepoint-dir", checkpoints.savepoint_dir(job_dir))
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if restore_from:
        conf.set_string("execution.state-recovery.path", restore_from)
    # an outage holds in-flight calls (and so checkpoints) for as long as it lasts: that must not fail the job
    conf.set_string("execution.checkpointing.tolerable-failed-checkpoints", "1000000")
    conf.set_string("execution.checkpointing.timeout", "30 min")
    conf.set_string("restart-strategy.type", cfg.restart_strategy)
    # A record crosses network shuffles between the job's tasks (at least the one into the SQL window), each flushed
    # every buffer timeout: Flink's 100 ms put about 35 ms on the p50 at 300 msg/s (bench/results/2026-12-04.md,
    # issue 20).
    conf.set_string("execution.buffer-timeout.interval", f"{cfg.buffer_timeout_ms} ms")
    # Flink's Prometheus reporter for a local MiniCluster (a cluster takes its reporters from its own config, as
    # imagery/local/stack.py writes it for the local standalone cluster); the jar ships in the wheel's plugins/.
    for key, value in reporter_options(cfg.prometheus_port).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    env.enable_checkpointing(
        cfg.checkpoint_interval_ms,
        CheckpointingMode.EXACTLY_ONCE if cfg.delivery_guarantee == "exactly-once" else CheckpointingMode.AT_LEAST_ONCE,
    )
    if cfg.connector_jars:
        env.add_jars(*(j if "://" in j else Path(j).resolve().as_uri() for j in cfg.connector_jars))
    return env


def put_reporter_on_local_classpath() -> None:
    """A local MiniCluster finds no plugins (it reports "Available factories: []"), so the Prometheus reporter jar
    of the wheel's plugins/ goes on the local JVM's classpath, through the one variable PyFlink's launcher adds to it
    (HADOOP_CLASSPATH). Under `flink run` the JVM is already running and this changes nothing."""
    import pyflink

    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    jars = sorted(plugin.glob("flink-metrics-prometheus-*.jar"))
    if jars:
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(
            p for p in (str(jars[-1]), os.environ.get("HADOOP_CLASSPATH", "")) if p
        )


def run_until_stopped(job: JobClient, savepoint_dir: str) -> None:
    """Wait for the job; on SIGTERM or Ctrl-C stop it with a savepoint, which the next start resumes from.
    (On a cluster: `flink stop --savepointPath <checkpoint dir>/<group id>/savepoints <job id>`; the cluster
    ignores the job's own savepoint folder there.)"""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if job.get_job_status().result().is_globally_terminal_state():
            return
    print("stopping with a savepoint ...", flush=True)
    # When the JVM went with us (a signal to the whole process group: Ctrl-C in a terminal, `timeout`), py4j logs every
    # call to it, and its own shutdown, as a traceback: some 60 lines that say only that, which the line below says
    logging.disable(logging.CRITICAL)
    try:
        # PyFlink 2.2's JobClient.stop_with_savepoint calls a Java signature Flink 2 no longer has
        format_type = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        path = job._j_job_client.stopWithSavepoint(False, savepoint_dir, format_type).get()
    except Exception as exc:  # the JVM was stopped with us (a signal to the whole process group), or the job was
        # not running yet (a stop right after a start): no savepoint, and nothing lost either way
        java = getattr(exc, "java_exception", None)
        why = str(java.toString()) if java is not None else type(exc).__name__
        print(f"no savepoint ({why[:500]}); the next start resumes from the last checkpoint", flush=True)
        raise SystemExit(1) from None
    logging.disable(logging.NOTSET)
    print(f"stopped with a savepoint at {path}; the next start resumes from it", flush=True)
