"""The job's Python operator: groups of one partition's records in, each record's routed outputs out.

It wraps `Dispatcher` (streaming/dispatch/handler.py), which handles every record on its own (its own calls, its own
result or dead letter), and runs inside the JVM (PyFlink's thread mode).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from schemas import DispatcherIdentity
from streaming.dispatch.client import InferenceClient
from streaming.dispatch.config import DispatcherConfig
from streaming.dispatch.handler import Dispatcher
from streaming.dispatch.in_flight import InFlight
from streaming.dispatch.metrics import DispatcherMetrics
from streaming.dispatch.records import KafkaInput, Output
from streaming.dispatch.retry import RetryPolicy

_BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
# What the operator emits: the outputs of one or more groups as one element, one array per field (flattened back into
# records in SQL, `tables.ROUTED`): each element handed from Python to the JVM costs the same whatever it holds
# (bench/RESULTS.md, issue 28). Arrays, not an array of ROWs, for the reason `tables.GROUP_FIELDS` gives.
ROUTED_TYPE = Types.ROW_NAMED(
    ["dlq", "k", "v", "headers"],
    [
        Types.OBJECT_ARRAY(Types.BOOLEAN()),
        Types.OBJECT_ARRAY(_BYTES),
        Types.OBJECT_ARRAY(_BYTES),
        Types.OBJECT_ARRAY(Types.MAP(Types.STRING(), _BYTES)),
    ],
)
# An outage is waited out inside the handling; this bound only catches a wedged call (an asyncio deadline: one timer
# handle on the loop).
WEDGED_CALL_S = 24 * 3600
# How often a partition with calls running looks for finished ones to emit when no record comes
EMIT_TICK_MS = 5


def _epoch_ms(ts: Any) -> int | None:
    if ts is None:
        return None
    if hasattr(ts, "toEpochMilli"):  # the embedded Python gets a TIMESTAMP_LTZ as the JVM's Instant
        return int(ts.toEpochMilli())
    if hasattr(ts, "timestamp"):
        return int(ts.timestamp() * 1000)
    return int(ts)


def kafka_input(partition: int, row: Any) -> KafkaInput:
    """One record: (k, v, topic, offset, ts, headers)."""
    k, v, topic, offset, ts, headers = row
    return KafkaInput(
        value=None if v is None else bytes(v),
        key=None if k is None else bytes(k),
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=_epoch_ms(ts),
        headers={name: bytes(b or b"") for name, b in (headers or {}).items()},
    )


def group_inputs(partition: int, columns: Any) -> list[KafkaInput]:
    """The records of a group: `records` of `tables.grouped_records`, one array per field."""
    return [kafka_input(partition, row) for row in zip(*columns, strict=True)]


GroupEntry = list[tuple[Any, ...]]


def encode_group(records: list[KafkaInput]) -> GroupEntry:
    """A group as the operator keeps it in Flink state (one entry, pickled once by PyFlink's state converter): builtin
    tuples, not one pickled `KafkaInput` per record, whose pickle names the class each time. (A byte-array state type
    is no way around the pickle: PyFlink's embedded converter hands a Python `bytes` over as an array of numbers,
    which the state's byte[] serializer refuses at the checkpoint.)"""
    return [(r.value, r.key, r.topic, r.partition, r.offset, r.timestamp_ms, r.headers) for r in records]


def decode_group(entry: GroupEntry) -> list[KafkaInput]:
    return [
        KafkaInput(value=v, key=k, topic=t, partition=p, offset=o, timestamp_ms=ts, headers=h)
        for v, k, t, p, o, ts, h in entry
    ]


def _dispatcher_factory(cfg: DispatcherConfig, runtime_context: RuntimeContext) -> Callable[[], Dispatcher]:
    """What makes a subtask's `Dispatcher` (call it inside the event loop its HTTP client binds to), with its metrics
    registered with Flink (the Flink UI, and Prometheus through the reporter)."""
    client = functools.partial(
        InferenceClient,
        http_url=cfg.http_url,
        policy=RetryPolicy(attempts=cfg.attempts, base_ms=cfg.backoff_ms, max_ms=cfg.backoff_max_ms),
        attempt_timeout_s=cfg.attempt_timeout_s,
        items_per_request=cfg.items_per_request,
        max_batch_wait_ms=cfg.max_batch_wait_ms,
        max_connections=cfg.capacity + 2,  # + readiness probes
        auth_token=cfg.service_token(),
        ca_file=cfg.http_ca_file or None,
    )
    identity = DispatcherIdentity(
        job=f"{cfg.name}/{_subtask_index(runtime_context)}", group_id=cfg.group_id, host=cfg.host
    )
    metrics = DispatcherMetrics()
    metrics.register(runtime_context.get_metrics_group())

    def new_dispatcher() -> Dispatcher:
        return Dispatcher(
            client(),
            cfg.team,
            identity,
            cfg.max_message_bytes,
            cfg.max_record_bytes,
            in_flight=cfg.capacity,
            metrics=metrics,
        )

    return new_dispatcher


def _subtask_index(runtime_context: RuntimeContext) -> int:
    # PyFlink's embedded context asks the JVM for `getIndexOfThisSubtask`, which Flink 2 moved to its TaskInfo
    return int(runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask())  # type: ignore[attr-defined]


async def _unless_wedged(handling: Awaitable[list[Output]]) -> list[Output]:
    """The outputs, or a TimeoutError after WEDGED_CALL_S, which fails the job: restarting from the last checkpoint
    loses nothing, where a DLQ entry would lie (outages are waited out inside the handling, however long)."""
    try:
        async with asyncio.timeout(WEDGED_CALL_S):
            return await handling
    except TimeoutError:
        raise TimeoutError(f"an inference call did not finish within {WEDGED_CALL_S} s") from None


def routed(outputs: Iterable[Output]) -> Row:
    """OUTPUTS as one element of ROUTED_TYPE."""
    outputs = list(outputs)
    # a result has no headers: None instead of an empty map spares the JVM a map conversion per result
    return Row(
        dlq=[o.dlq for o in outputs],
        k=[o.key for o in outputs],
        v=[o.value for o in outputs],
        headers=[o.headers or None for o in outputs],
    )


class InferAndRoute(KeyedProcessFunction):
    """Groups of one partition's records (`tables.grouped_records`), keyed by their partition, with each group's
    outputs emitted as soon as its calls complete.

    A group is put in keyed MapState (one entry, under its first offset) before its calls start, and removed from it
    in the same step that emits its outputs (`_emit`, on Flink's task thread, from the next group or timer of its
    partition; a timer every `EMIT_TICK_MS` while calls run). So a checkpoint holds every record it has read either
    in that state or in its outputs: after a restore, the groups the state holds are sent again (`_resume`), and the
    outputs they had produced since were never committed. The calls run on an event loop in a thread of the function's
    own; finished ones reach the task thread through `InFlight`."""

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        new_dispatcher = _dispatcher_factory(self.config, runtime_context)
        self.in_flight: InFlight[list[Output]] = InFlight()
        self.resumed: set[int] = set()  # partitions whose entries in state were sent again since this start
        self.timer_at: dict[int, int] = {}
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="imagery-dispatch", daemon=True)
        self.loop_thread.start()

        async def make() -> Dispatcher:  # inside the loop its HTTP client and semaphore bind to
            return new_dispatcher()

        self.dispatcher = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        self.groups = runtime_context.get_map_state(
            MapStateDescriptor("groups_in_flight", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        )
        # groups held per partition: as many as images in flight, since a light load makes groups of one record
        self.max_held = self.config.groups_in_flight

    def close(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            self.loop_thread.join(timeout=5)

    def _start(self, partition: int, entry: int, handling: Awaitable[list[Output]]) -> None:
        self.in_flight.start(partition, entry)
        call = asyncio.run_coroutine_threadsafe(_unless_wedged(handling), self.loop)

        def finished(done: Any) -> None:
            if done.exception() is not None:
                self.in_flight.fail(done.exception())
            else:
                self.in_flight.finish(partition, entry, done.result())

        call.add_done_callback(finished)

    def _arm(self, ctx: Any, partition: int) -> None:
        now = ctx.timer_service().current_processing_time()
        if self.timer_at.get(partition, 0) <= now:
            self.timer_at[partition] = at = (now // EMIT_TICK_MS + 1) * EMIT_TICK_MS
            ctx.timer_service().register_processing_time_timer(at)

    def process_element(self, records: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        # (the operator hands over the row's second field, `records`: it takes the first for the key)
        partition = ctx.get_current_key()
        self._resume(partition)
        group = group_inputs(partition, records)
        while self.in_flight.running(partition) >= self.max_held:  # back-pressure: Kafka waits, not memory
            self.in_flight.wait_for_finished(partition, timeout_s=1.0)
            yield from self._emit(partition)
        entry = group[0].offset
        self.groups.put(entry, encode_group(group))
        self._start(partition, entry, self.dispatcher.handle_group(group))
        yield from self._emit(partition)
        self._arm(ctx, partition)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        partition = ctx.get_current_key()
        self._resume(partition)
        yield from self._emit(partition)
        if self.in_flight.running(partition):
            self._arm(ctx, partition)

    def _emit(self, partition: int) -> Iterator[Row]:
        finished = self.in_flight.take(partition)
        for entry, _ in finished:
            self.groups.remove(entry)
        if finished:
            yield routed(output for _, outputs in finished for output in outputs)

    def _resume(self, partition: int) -> None:
        """After a start or restore, send again the groups the restored state holds (their outputs, if any had been
        emitted, belonged to a checkpoint that did not complete)."""
        if partition in self.resumed:
            return
        self.resumed.add(partition)  # before this, nothing of the partition was sent by this process
        for entry, records in list(self.groups.items()):
            self._start(partition, entry, self.dispatcher.handle_group(decode_group(records)))
