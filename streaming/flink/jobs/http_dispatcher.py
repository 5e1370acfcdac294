"""http_dispatcher: one PyFlink job per team.

    Kafka imagery.new.<team>  ->  group records (SQL window)  ->  parse + validate  ->  async HTTP to the inference
    service  ->  route
        ok     -> Kafka inference.results.<team>   (key = the input's key)
        failed -> Kafka dlq.inference.http         (original bytes + error envelope + headers)

Runs the same two ways:
    python streaming/flink/jobs/http_dispatcher.py --team fruit ...           (local MiniCluster)
    flink run --python streaming/flink/jobs/http_dispatcher.py -- --team ...  (standalone/Kubernetes cluster)

Kafka is read and written through Flink's SQL Kafka connector because only it exposes what a dead letter
needs (key, partition, offset, timestamp, headers) and writes headers; the logic in the middle is plain
Python from streaming/dispatch/, called from PyFlink's async I/O operator.

Records reach Python in groups (at most --group-size records of one partition, gathered for at most
--group-wait-ms by a processing-time window in SQL), because PyFlink's operator costs about a millisecond per
element whatever the element holds: one element per group lets one job keep up with Kafka. Each record in a
group is still handled on its own (its own calls, result or dead letter); the window's contents are Flink state,
so a checkpoint covers them like any other record in flight.

That is `--execution-mode process` (the default, the higher pace). Its floor on latency is PyFlink's bundle: the JVM
sends a bundle's records to the Python worker, and takes its results back, only when the bundle ends, and a bundle
ends only once every call in it is answered. `--execution-mode thread` (the lower latency) runs the Python inside the
JVM with no bundle: `InferAndRouteInThread` takes records one by one, keyed by partition, and emits each one's
outputs as soon as its call completes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python ... / flink run --python): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pyflink.common import Configuration, JobClient, Row, Time, Types
from pyflink.datastream import (
    AsyncDataStream,
    AsyncFunction,
    CheckpointingMode,
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import MapStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment

from schemas import DispatcherIdentity, limits
from streaming.dispatch import checkpoints
from streaming.dispatch.client import InferenceClient
from streaming.dispatch.config import DispatcherConfig, parse_args
from streaming.dispatch.handler import Dispatcher
from streaming.dispatch.in_flight import InFlight
from streaming.dispatch.kafka_properties import flink_kafka_options, read_properties
from streaming.dispatch.metrics import DispatcherMetrics, reporter_options
from streaming.dispatch.records import KafkaInput, Output
from streaming.dispatch.retry import RetryPolicy
from streaming.flink import embedded_python

ROUTED_TYPE = Types.ROW_NAMED(
    ["dlq", "k", "v", "headers"],
    [Types.BOOLEAN(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE()),
     Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()))],
)
# An outage is waited out inside the async function; this bound only catches a wedged call. It is kept inside the
# coroutine (an asyncio deadline: one timer handle on the loop): PyFlink's own operator timeout starts a
# threading.Timer, a new thread, for every element (pyflink/fn_execution/datastream/process/async_function/
# operation.py, ResultHandler.register_timeout), so the operator is given none (0: "no timeout").
WEDGED_CALL_S = 24 * 3600
# Thread mode: how often a partition with calls running looks for finished ones to emit when no record comes
EMIT_TICK_MS = 5
NO_OPERATOR_TIMEOUT = Time.milliseconds(0)


def _epoch_ms(ts: Any) -> int | None:
    if ts is None:
        return None
    if hasattr(ts, "to_epoch_milli"):
        return int(ts.to_epoch_milli())
    if hasattr(ts, "toEpochMilli"):  # thread mode hands a TIMESTAMP_LTZ over as the JVM's Instant
        return int(ts.toEpochMilli())
    if hasattr(ts, "timestamp"):
        return int(ts.timestamp() * 1000)
    return int(ts)


def _kafka_input(partition: int, row: Any) -> KafkaInput:
    """One record of a group (the ROW of `GROUPED_RECORDS`)."""
    k, v, topic, offset, ts, headers = row
    return KafkaInput(
        value=None if v is None else bytes(v), key=None if k is None else bytes(k), topic=topic, partition=partition,
        offset=offset, timestamp_ms=_epoch_ms(ts),
        headers={name: bytes(b or b"") for name, b in (headers or {}).items()},
    )


def _dispatcher_factory(cfg: DispatcherConfig, runtime_context: RuntimeContext
                        ) -> tuple[Callable[[], Dispatcher], DispatcherMetrics]:
    """What makes a subtask's `Dispatcher` (call it inside the event loop its HTTP client binds to), and its metrics,
    registered with Flink (the Flink UI, and Prometheus through the reporter)."""
    client = functools.partial(
        InferenceClient,
        http_url=cfg.http_url,
        policy=RetryPolicy(attempts=cfg.attempts, base_ms=cfg.backoff_ms, max_ms=cfg.backoff_max_ms),
        attempt_timeout_s=cfg.attempt_timeout_s, items_per_request=cfg.items_per_request,
        max_batch_wait_ms=cfg.max_batch_wait_ms, max_connections=cfg.capacity + 2,  # + readiness probes
        auth_token=cfg.service_token(), ca_file=cfg.http_ca_file or None,
    )
    identity = DispatcherIdentity(job=f"{cfg.name}/{_subtask_index(runtime_context)}", group_id=cfg.group_id,
                                  host=cfg.host)
    metrics = DispatcherMetrics()
    metrics.register(runtime_context.get_metrics_group())

    def new_dispatcher() -> Dispatcher:
        return Dispatcher(client(), cfg.team, identity, cfg.max_message_bytes, cfg.max_record_bytes,
                          in_flight=cfg.capacity, metrics=metrics)

    return new_dispatcher, metrics


def _subtask_index(runtime_context: RuntimeContext) -> int:
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:  # thread mode's context asks the JVM for a method Flink 2 moved to its TaskInfo
        return int(runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask())  # type: ignore[attr-defined]


async def _unless_wedged(handling: Awaitable[list[Output]]) -> list[Output]:
    """The outputs, or a TimeoutError after WEDGED_CALL_S, which fails the job: restarting from the last checkpoint
    loses nothing, where a DLQ entry would lie (outages are waited out inside the handling, however long)."""
    try:
        async with asyncio.timeout(WEDGED_CALL_S):
            return await handling
    except TimeoutError:
        raise TimeoutError(f"an inference call did not finish within {WEDGED_CALL_S} s") from None


def _routed(outputs: list[Output]) -> list[Row]:
    # a result has no headers: None instead of an empty map spares the JVM a map conversion per result
    return [Row(dlq=o.dlq, k=o.key, v=o.value, headers=o.headers or None) for o in outputs]


class InferAndRoute(AsyncFunction):
    """Wraps `Dispatcher.handle_group` for Flink: a group of records in, their routed Rows out."""

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.dispatcher: Dispatcher | None = None
        self.metrics: DispatcherMetrics | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        # (No live gauge for a pause or an outage here: PyFlink hands Python metrics to Flink when a bundle finishes,
        # and a paused bundle does not; the pause is logged at ERROR, and every minute while it lasts.)
        self._new_dispatcher, self.metrics = _dispatcher_factory(self.config, runtime_context)

    def _dispatcher(self) -> Dispatcher:
        # made on first use, inside the operator's event loop, which httpx and asyncio objects bind to
        if self.dispatcher is None:
            self.dispatcher = self._new_dispatcher()
        return self.dispatcher

    def close(self) -> None:
        # The client's connections belong to the operator's event loop, which is already stopped here; they
        # close with the worker process. Dropping the reference is all that is left to do.
        self.dispatcher = None

    async def async_invoke(self, group: Row) -> list[Row]:
        records = [_kafka_input(group.partition, r) for r in group.records]
        return _routed(await _unless_wedged(self._dispatcher().handle_group(records)))


class InferAndRouteInThread(KeyedProcessFunction):
    """Thread mode (`--execution-mode thread`): records one by one, keyed by their partition, each record's outputs
    emitted as soon as its calls complete, with no bundle to wait for.

    The calls run on an event loop in a thread of this function's own. A record is put in keyed MapState before its
    call starts and removed from it in the same step that emits its outputs (`_emit`, on Flink's task thread, from
    the next record or timer of its partition; a timer every `EMIT_TICK_MS` while calls run). So a checkpoint holds
    every record it has read either in that state or in its outputs: after a restore, the records the state holds are
    sent again (`_resume`) and the outputs they had produced since were never committed."""

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        new_dispatcher, self.metrics = _dispatcher_factory(self.config, runtime_context)
        self.records = runtime_context.get_map_state(
            MapStateDescriptor("records_in_flight", Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        self.in_flight: InFlight[list[Output]] = InFlight()
        self.resumed: set[int] = set()  # partitions whose records in state were sent again since this start
        self.timer_at: dict[int, int] = {}
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="imagery-dispatch", daemon=True)
        self.loop_thread.start()

        async def make() -> Dispatcher:  # inside the loop its HTTP client and semaphore bind to
            return new_dispatcher()

        self.dispatcher = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        # records held per partition: enough to keep `capacity` calls busy while finished ones wait to be emitted
        self.max_held = 2 * self.config.capacity

    def close(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            self.loop_thread.join(timeout=5)

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        partition = ctx.get_current_key()
        self._resume(partition)
        k, v, topic, _, offset, ts, headers = row
        record = _kafka_input(partition, (k, v, topic, offset, ts, headers))
        while self.in_flight.running(partition) >= self.max_held:  # back-pressure: Kafka waits, not memory
            self.in_flight.wait_for_finished(partition, timeout_s=1.0)
            yield from self._emit(partition)
        self.records.put(record.offset, record)
        self._send(partition, record)
        yield from self._emit(partition)
        self._arm(ctx, partition)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        partition = ctx.get_current_key()
        self._resume(partition)
        yield from self._emit(partition)
        if self.in_flight.running(partition):
            self._arm(ctx, partition)

    def _send(self, partition: int, record: KafkaInput) -> None:
        self.in_flight.start(partition, record.offset)
        call = asyncio.run_coroutine_threadsafe(_unless_wedged(self.dispatcher.handle(record)), self.loop)

        def finished(done: Any) -> None:
            if done.exception() is not None:
                self.in_flight.fail(done.exception())
            else:
                self.in_flight.finish(partition, record.offset, done.result())

        call.add_done_callback(finished)

    def _emit(self, partition: int) -> Iterator[Row]:
        for offset, outputs in self.in_flight.take(partition):
            self.records.remove(offset)
            yield from _routed(outputs)

    def _resume(self, partition: int) -> None:
        """After a start or restore, send again the records the restored state holds (their outputs, if any had
        been emitted, belonged to a checkpoint that did not complete)."""
        if partition in self.resumed:
            return
        self.resumed.add(partition)  # before this, nothing of the partition was sent by this process
        for _, record in list(self.records.items()):
            self._send(partition, record)

    def _arm(self, ctx: Any, partition: int) -> None:
        now = ctx.timer_service().current_processing_time()
        if self.timer_at.get(partition, 0) <= now:
            self.timer_at[partition] = at = (now // EMIT_TICK_MS + 1) * EMIT_TICK_MS
            ctx.timer_service().register_processing_time_timer(at)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _kafka_options(cfg: DispatcherConfig, topic: str, client: dict[str, str]) -> str:
    """A Kafka table's options; CLIENT: the `properties.*` of --kafka-config (security), for every table alike."""
    return (f"'connector' = 'kafka', 'topic' = '{topic}', 'properties.bootstrap.servers' = '{cfg.bootstrap}', "
            "'key.format' = 'raw', 'key.fields' = 'k', 'value.format' = 'raw', "
            "'value.fields-include' = 'EXCEPT_KEY'"
            + "".join(f", {_sql_text(name)} = {_sql_text(value)}" for name, value in client.items()))


def _sink_options(cfg: DispatcherConfig, topic: str, role: str, client: dict[str, str]) -> str:
    # every record the job writes is built to fit max_record_bytes (streaming/dispatch/records.py)
    opts = (_kafka_options(cfg, topic, client) + f", 'sink.delivery-guarantee' = '{cfg.delivery_guarantee}'"
            f", 'properties.max.request.size' = '{cfg.max_record_bytes}'")
    if cfg.delivery_guarantee == "exactly-once":
        # One prefix per job identity and sink (DispatcherConfig.transactional_id_prefix says why). A transaction
        # stays open from one checkpoint to the next, and an outage holds checkpoints back for as long as it lasts,
        # with results already written in the open transaction: so the broker's longest timeout
        # (transaction.max.timeout.ms; a higher value is refused at start). An outage longer than that fails the job,
        # which restarts from its last checkpoint and loses nothing.
        opts += (f", 'sink.transactional-id-prefix' = '{cfg.transactional_id_prefix(role)}'"
                 f", 'properties.transaction.timeout.ms' = '{limits.KAFKA_MAX_TRANSACTION_MS}'")
    return opts


def build_pipeline(env: StreamExecutionEnvironment, cfg: DispatcherConfig) -> Any:
    t_env = StreamTableEnvironment.create(stream_execution_environment=env)
    t_env.get_config().set("pipeline.name", cfg.name)
    startup = {"group": "group-offsets", "earliest": "earliest-offset", "latest": "latest-offset"}[
        cfg.starting_offsets]
    # --kafka-config's entries, read once, here where the job is built: they become table options of the job graph,
    # never a field of the config that is pickled into the Python operators
    client = flink_kafka_options(read_properties(cfg.kafka_config)) if cfg.kafka_config else {}
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE kafka_input (
          `k` BYTES, `v` BYTES,
          `topic` STRING METADATA VIRTUAL,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
          `headers` MAP<STRING, BYTES> METADATA VIRTUAL,
          `pt` AS PROCTIME()
        ) WITH ({_kafka_options(cfg, cfg.input_topic, client)},
          'properties.group.id' = '{cfg.group_id}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.isolation.level' = 'read_committed',
          'scan.startup.mode' = '{startup}')""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE kafka_results (`k` BYTES, `v` BYTES)
        WITH ({_sink_options(cfg, cfg.output_topic, 'results', client)})""")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE kafka_dlq (`k` BYTES, `v` BYTES, `headers` MAP<STRING, BYTES> METADATA)
        WITH ({_sink_options(cfg, cfg.dlq_topic, 'dlq', client)})""")

    routed = (_routed_in_thread if cfg.execution_mode == "thread" else _routed_in_groups)(t_env, cfg)
    t_env.create_temporary_view("routed", t_env.from_data_stream(routed, Schema.new_builder()
        .column("dlq", DataTypes.BOOLEAN()).column("k", DataTypes.BYTES()).column("v", DataTypes.BYTES())
        .column("headers", DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES())).build()))

    statements = t_env.create_statement_set()
    statements.add_insert_sql("INSERT INTO kafka_results SELECT k, v FROM routed WHERE NOT dlq")
    statements.add_insert_sql("INSERT INTO kafka_dlq SELECT k, v, headers FROM routed WHERE dlq")
    return statements


def _routed_in_groups(t_env: StreamTableEnvironment, cfg: DispatcherConfig) -> Any:
    """Process mode: records in groups (a SQL window) through PyFlink's async operator in a Python worker."""
    # `offset / group_size` caps a group's size when a backlog puts thousands of records in one window. A group
    # window (GROUP BY TUMBLE), not the TUMBLE table function: with the latter, records that were in open windows
    # when a savepoint was taken never came out after the job resumed from it (tests/e2e/test_recovery.py).
    groups = t_env.to_data_stream(t_env.sql_query(f"""
        SELECT `partition`, ARRAY_AGG(ROW(k, v, `topic`, `offset`, ts, headers)) AS records
        FROM kafka_input
        GROUP BY TUMBLE(pt, INTERVAL '{cfg.group_wait_ms / 1000:.3f}' SECOND), `partition`,
                 `offset` / {cfg.group_size}"""))
    return AsyncDataStream.unordered_wait(
        groups, InferAndRoute(cfg), NO_OPERATOR_TIMEOUT, capacity=cfg.groups_in_flight, output_type=ROUTED_TYPE,
    ).name("parse, infer over HTTP, route")


def _routed_in_thread(t_env: StreamTableEnvironment, cfg: DispatcherConfig) -> Any:
    """Thread mode: each record, keyed by its partition, through `InferAndRouteInThread` inside the JVM."""
    records = t_env.to_data_stream(t_env.sql_query(
        "SELECT k, v, `topic`, `partition`, `offset`, ts, headers FROM kafka_input"))
    return (records.key_by(lambda row: row[3], key_type=Types.INT())
            .process(InferAndRouteInThread(cfg), output_type=ROUTED_TYPE)
            .name("parse, infer over HTTP, route (thread mode)"))


def make_environment(cfg: DispatcherConfig, restore_from: str | None = None) -> StreamExecutionEnvironment:
    conf = Configuration()
    conf.set_string("python.executable", os.environ.get("PYFLINK_PYTHON", sys.executable))
    conf.set_string("python.execution-mode", cfg.execution_mode)
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
    # The Python operator hands its outputs back to Flink when a bundle ends, and a bundle ends only after every
    # call in it completed: small bundles keep results flowing during a backlog instead of arriving all at once.
    conf.set_string("python.fn-execution.bundle.size", str(cfg.bundle_size or 4 * cfg.groups_in_flight))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_time_ms))
    # A record crosses network shuffles between the job's tasks (at least the one into the SQL window), each flushed
    # every buffer timeout: Flink's 100 ms put about 35 ms on the p50 at 300 msg/s (bench/RESULTS.md, issue 20).
    conf.set_string("execution.buffer-timeout.interval", f"{cfg.buffer_timeout_ms} ms")
    # Flink's Prometheus reporter for a local MiniCluster (a cluster takes its reporters from its own config, as
    # imagery/local/stack.py writes it for the local standalone cluster); the jar ships in the wheel's plugins/.
    for key, value in reporter_options(cfg.prometheus_port).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE
                             if cfg.delivery_guarantee == "exactly-once" else CheckpointingMode.AT_LEAST_ONCE)
    if cfg.connector_jars:
        env.add_jars(*(j if "://" in j else Path(j).resolve().as_uri() for j in cfg.connector_jars))
    return env


LOCAL_LOG4J = Path(__file__).resolve().parents[1] / "log4j-local.properties"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    # read only where this process starts Flink itself (the local MiniCluster), not under `flink run`
    os.environ.setdefault("LOG4J_PROPERTIES", str(LOCAL_LOG4J))
    # PyFlink's local default ("loopback") runs every subtask's Python as threads of this process, under one GIL,
    # so parallelism would gain nothing; a worker process per subtask is what a cluster does anyway.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    if cfg.prometheus_port:
        _put_reporter_on_local_classpath()
    if cfg.execution_mode == "thread":  # the local JVM's embedded Python imports what this process does
        os.environ["PYTHONPATH"] = embedded_python.python_path()
    restore_from = checkpoints.resume_path(cfg.resume, cfg.checkpoint_dir, cfg.group_id)
    print(f"{cfg.name}: resuming from {restore_from}" if restore_from else
          f"{cfg.name}: no checkpoint to resume from; starting from the {cfg.starting_offsets} offsets", flush=True)
    env = make_environment(cfg, restore_from)
    result = build_pipeline(env, cfg).execute()
    if not cfg.detached:
        savepoints = checkpoints.savepoint_dir(checkpoints.job_dir(cfg.checkpoint_dir, cfg.group_id))
        run_until_stopped(result.get_job_client(), savepoints)
        result.wait()


def _put_reporter_on_local_classpath() -> None:
    """A local MiniCluster finds no plugins (it reports "Available factories: []"), so the Prometheus reporter jar
    of the wheel's plugins/ goes on the local JVM's classpath, through the one variable PyFlink's launcher adds to it
    (HADOOP_CLASSPATH). Under `flink run` the JVM is already running and this changes nothing."""
    import pyflink

    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    jars = sorted(plugin.glob("flink-metrics-prometheus-*.jar"))
    if jars:
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(
            p for p in (str(jars[-1]), os.environ.get("HADOOP_CLASSPATH", "")) if p)


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
    print(f"stopped with a savepoint at {path}; the next start resumes from it", flush=True)


if __name__ == "__main__":
    main()
