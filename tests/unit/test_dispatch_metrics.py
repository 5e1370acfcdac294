"""The dispatcher's metrics: what it counts per record, image, dead letter and call, and how Flink reads it."""

from __future__ import annotations

import asyncio

import orjson

from schemas import INFER_JSON_ROUTE, DispatcherIdentity
from streaming.dispatch.client import InferenceClient
from streaming.dispatch.handler import Dispatcher
from streaming.dispatch.http import Answer
from streaming.dispatch.metrics import STAGES, DispatcherMetrics, percentile, reporter_options
from streaming.dispatch.records import KafkaInput
from streaming.dispatch.retry import RetryPolicy
from tests.unit.standin_service import RESPONSE  # a result in the service's shape


class FakeGroup:
    """The shape of PyFlink's MetricGroup that `register` uses (add_group, gauge), recording what was made."""

    def __init__(self, path: tuple[str, ...] = (), made: dict | None = None) -> None:
        self.path, self.made = path, {} if made is None else made

    def add_group(self, name: str, extra: str | None = None) -> FakeGroup:
        return FakeGroup(self.path + ((name,) if extra is None else (f"{name}={extra}",)), self.made)

    def gauge(self, name: str, read) -> None:
        self.made[".".join(self.path + (name,))] = read


class Service:
    """A transport answering like the fruit service: a result, a 404, or a 503 once then a result."""

    def __init__(self) -> None:
        self.calls = 0

    async def request(self, method: str, path: str, body: bytes = b"", answer_timeout_s: float = 30.0) -> Answer:
        self.calls += 1
        if b"missing" in body:
            return Answer(404, b'{"error": {"type": "object_not_found", "message": "no", "stage": "fetch"}}')
        if b"flaky" in body and self.calls == 1:
            return Answer(500, b'{"error": {"type": "runner_failed", "message": "once", "stage": "infer"}}')
        return Answer(200, orjson.dumps(RESPONSE))

    async def aclose(self) -> None:
        pass


def test_dispatcher_counts_records_results_dead_letters_and_retries():
    metrics = DispatcherMetrics()
    client = InferenceClient(
        f"http://svc{INFER_JSON_ROUTE}", policy=RetryPolicy(attempts=3, base_ms=1, max_ms=2), transport=Service()
    )
    dispatcher = Dispatcher(client, "fruit", DispatcherIdentity(job="j/0", group_id="g", host="h"), metrics=metrics)
    values = [
        b'{"bucket": "fruit-a", "key": "flaky.jpg"}',
        b'{"bucket": "fruit-a", "key": "ok.jpg"}',
        b'{"bucket": "fruit-a", "key": "missing.jpg"}',
        b"not json",
        b'{"key": "no-bucket.jpg"}',
    ]
    records = [KafkaInput(value=v, key=None, topic="in", partition=0, offset=i) for i, v in enumerate(values)]

    async def go():
        for record in records:  # one at a time: the flaky one is the first call
            await dispatcher.handle(record)

    asyncio.run(asyncio.wait_for(go(), 30))
    assert (metrics.records, metrics.images, metrics.results) == (5, 5, 2)
    assert {s: n for s, n in metrics.dead_letters.items() if n} == {"fetch": 1, "parse": 1, "validate": 1}
    assert metrics.retries == 1 and metrics.http_calls == 3 and metrics.in_flight == 0
    assert metrics.in_flight_peak() == 1 and metrics.in_flight_peak() == 0  # a peak is reported once
    assert metrics.latency_ms(0.5) >= 0 and len(metrics._latencies) == 2  # successes only


def test_register_exposes_every_number_as_a_gauge_with_the_stage_as_a_label():
    metrics = DispatcherMetrics()
    group = FakeGroup()
    metrics.register(group)
    assert {f"imagery.stage={s}.dead_letters" for s in STAGES} <= set(group.made)
    assert {
        "imagery.records",
        "imagery.results",
        "imagery.retries",
        "imagery.in_flight_peak",
        "imagery.circuit_opened",
        "imagery.http_latency_p99_ms",
    } <= set(group.made)
    metrics.dead_letter("fetch")
    metrics.dead_letter("no-such-stage")  # counted, as a failure of the dispatcher
    assert group.made["imagery.stage=fetch.dead_letters"]() == 1
    assert group.made["imagery.stage=dispatch.dead_letters"]() == 1
    assert group.made["imagery.dead_letters_total"]() == 2
    assert all(isinstance(read(), int) for read in group.made.values())  # PyFlink gauges take integers


def test_latency_percentiles_cover_the_recent_window_only():
    now = [0.0]
    metrics = DispatcherMetrics(clock=lambda: now[0])
    for ms in range(1, 101):
        metrics.call_started()
        metrics.call_finished(1, float(ms))
    assert (metrics.latency_ms(0.5), metrics.latency_ms(0.95), metrics.latency_ms(0.99)) == (50, 95, 99)
    now[0] = 61.0
    assert metrics.latency_ms(0.5) == 0  # older than the window
    assert percentile([], 0.5) == 0.0 and percentile([7.0], 0.99) == 7.0


def test_reporter_options_name_the_prometheus_factory_and_a_port_range():
    options = reporter_options("9250-9269")
    assert options["metrics.reporter.prom.port"] == "9250-9269"
    assert options["metrics.reporter.prom.factory.class"].endswith("PrometheusReporterFactory")
    assert reporter_options("") == {}
