"""The whole pipeline on real parts: Kafka -> PyFlink dispatcher -> the fruit service (MinIO + torch) -> Kafka."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from minio.notificationconfig import NotificationConfig, QueueConfig

from imagery.local import stack
from imagery.local.inference_service import InferenceService
from imagery.local.settings import StackSettings
from imagery.pipeline_run import DispatcherProcess, collect, produce_messages, submit_to_cluster
from imagery.process import free_port
from schemas import HEALTHZ_ROUTE, INFER_JSON_ROUTE
from tests.conftest import remove_bucket, unique
from tests.helpers import put

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_S = 240


def dispatcher_args(
    bootstrap: str, team: str, service: InferenceService | str, inp: str, out: str, dlq: str, *extra: str
) -> list[str]:
    """The job's arguments for TEAM's SERVICE (or its base URL); EXTRA after them, so a flag there wins."""
    return [
        "--bootstrap",
        bootstrap,
        "--team",
        team,
        "--http-url",
        f"{service if isinstance(service, str) else service.base_url}{INFER_JSON_ROUTE}",
        "--input-topic",
        inp,
        "--output-topic",
        out,
        "--dlq-topic",
        dlq,
        "--group-id",
        unique("g"),
        "--checkpoint-interval-ms",
        "2000",
        "--backoff-ms",
        "50",
        "--backoff-max-ms",
        "500",
        *extra,
    ]


def test_every_message_lands_exactly_once_and_bad_ones_in_dlq_with_stage(
    bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    good = []
    for i in range(16):
        kind = "defect" if i % 2 else "clean"
        put(minio, bucket, f"{kind}/{i}.jpg", fruit_images[kind])
        good.append({"id": f"{run}-{i}", "bucket": bucket, "key": f"{kind}/{i}.jpg", "camera": "c1", "kind": kind})
    put(minio, bucket, "notes/readme.jpg", b"this is text, not a JPEG")
    bad: list[dict | bytes] = [
        f"not json {run}".encode(),
        {"id": f"{run}-nobucket", "key": "clean/0.jpg"},
        {"id": f"{run}-missing", "bucket": bucket, "key": "nowhere/none.jpg"},
        {"id": f"{run}-text", "bucket": bucket, "key": "notes/readme.jpg"},
    ]
    produce_messages(bootstrap, inp, [*good, *bad])
    with DispatcherProcess(
        dispatcher_args(bootstrap, "fruit", fruit_service, inp, out, dlq), tmp_path / "dispatcher.log"
    ) as job:
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: len(c.results) + len(c.dead) >= len(good) + len(bad),
            JOB_TIMEOUT_S,
            watch=job.check_alive,
        )
    assert sorted(got.results) == sorted(m["id"] for m in good), "every good message has exactly one result"
    assert got.result_count == len(good), "no duplicate results"
    for msg in good:
        result = got.results[msg["id"]]
        assert result["label"] == msg["kind"], result  # the real model tells clean from defect
        assert result["team"] == "fruit" and result["camera"] == "c1" and result["echo"] == {"kind": msg["kind"]}
        assert result["timings"]["total_ms"] > 0 and result["source"]["topic"] == inp
    stages = {}
    for letter in got.dead:
        text = letter.original_value_text or ""
        assert run in text
        stages[json.loads(text)["id"] if text.startswith("{") else "invalid-json"] = letter.error.stage
        assert letter.team == "fruit" and letter.source.topic == inp
    assert stages == {
        "invalid-json": "parse",
        f"{run}-nobucket": "validate",
        f"{run}-missing": "fetch",
        f"{run}-text": "decode",
    }
    missing = next(d for d in got.dead if f"{run}-missing" in (d.original_value_text or ""))
    assert missing.error.http_status == 404 and missing.error.attempts == 1 and not missing.error.retryable


def test_service_outage_mid_run_loses_nothing_and_fills_no_dlq(
    stack_settings, bootstrap, new_topic, minio, bucket, fruit_weights, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    for kind in ("clean", "defect"):
        put(minio, bucket, f"{kind}.jpg", fruit_images[kind])
    first = [{"id": f"{run}-a{i}", "bucket": bucket, "key": f"{'clean' if i % 2 else 'defect'}.jpg"} for i in range(10)]
    second = [{"id": f"{run}-b{i}", "bucket": bucket, "key": "clean.jpg"} for i in range(10)]
    service = InferenceService(stack_settings, team="fruit", log_path=tmp_path / "service.log").start()
    try:
        with DispatcherProcess(
            dispatcher_args(bootstrap, "fruit", service, inp, out, dlq), tmp_path / "dispatcher.log"
        ) as job:
            produce_messages(bootstrap, inp, first)
            got = collect(bootstrap, out, dlq, lambda c: len(c.results) >= 3, JOB_TIMEOUT_S, watch=job.check_alive)
            assert len(got.results) >= 3, "the pipeline is flowing before the outage"
            service.stop()
            produce_messages(bootstrap, inp, second)  # these arrive while nothing answers
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{service.base_url}{HEALTHZ_ROUTE}", timeout=1)
            outage = collect(bootstrap, out, dlq, lambda c: bool(c.dead), 8, watch=job.check_alive)
            assert not outage.dead, "an outage must not send anything to the DLQ"
            service.start()
            want = {m["id"] for m in first + second}
            got = collect(
                bootstrap,
                out,
                dlq,
                lambda c: want <= set(c.results) or bool(c.dead),
                JOB_TIMEOUT_S,
                watch=job.check_alive,
            )
    finally:
        service.stop()
    assert set(got.results) == want
    assert not got.dead


def test_minio_upload_with_bucket_notification_flows_through(
    stack_settings, bootstrap, new_topic, fruit_weights, fruit_images, tmp_path
):
    """No producer code: MinIO itself publishes the S3 event to the team's input topic."""
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    ports = [free_port(), free_port()]
    notify = StackSettings(
        state_dir=tmp_path / "state",
        minio_port=ports[0],
        minio_console_port=ports[1],
        kafka_port=stack_settings.kafka_port,
    )
    comp = stack.minio_component(
        notify,
        name="minio-notify",
        extra_env={
            "MINIO_NOTIFY_KAFKA_ENABLE_IMAGERY": "on",
            "MINIO_NOTIFY_KAFKA_BROKERS_IMAGERY": stack_settings.bootstrap,
            "MINIO_NOTIFY_KAFKA_TOPIC_IMAGERY": inp,
        },
    )
    stack.start(notify, comp)
    try:
        client = stack.minio_client(notify)
        bucket = unique("fruit-notify")
        client.make_bucket(bucket)
        client.set_bucket_notification(
            bucket,
            NotificationConfig(
                queue_config_list=[
                    QueueConfig(["s3:ObjectCreated:*"], config_id="imagery", queue="arn:minio:sqs::IMAGERY:kafka")
                ]
            ),
        )
        service = InferenceService(notify, team="fruit", log_path=tmp_path / "service.log").start()
        try:
            with DispatcherProcess(
                dispatcher_args(bootstrap, "fruit", service, inp, out, dlq), tmp_path / "dispatcher.log"
            ) as job:
                put(client, bucket, "orchard/row 1/apple+1.jpg", fruit_images["defect"])
                got = collect(
                    bootstrap, out, dlq, lambda c: bool(c.results or c.dead), JOB_TIMEOUT_S, watch=job.check_alive
                )
        finally:
            service.stop()
            remove_bucket(client, bucket)
    finally:
        stack.stop(notify, "minio-notify")
    assert not got.dead, [d.error for d in got.dead]
    (result,) = got.results.values()
    assert (result["bucket"], result["key"], result["label"]) == (bucket, "orchard/row 1/apple+1.jpg", "defect")


def test_flink_run_on_the_standalone_cluster_exactly_once(
    flink_cluster, bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    run = uuid.uuid4().hex[:8]
    put(minio, bucket, "a.jpg", fruit_images["defect"])
    msgs = [{"id": f"{run}-{i}", "bucket": bucket, "key": "a.jpg"} for i in range(8)]
    produce_messages(bootstrap, inp, msgs)
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
    )
    # `imagery dispatch --jobmanager`, as the README has it: the job's jars ship with it (this cluster's lib/ lacks
    # them)
    job_id, _ = submit_to_cluster(args, f"{flink_cluster.host}:{flink_cluster.flink_rest_port}")
    try:
        got = collect(bootstrap, out, dlq, lambda c: len(c.results) >= len(msgs) or bool(c.dead), JOB_TIMEOUT_S)
    finally:
        httpx.patch(f"{flink_cluster.flink_rest_url}/jobs/{job_id}?mode=cancel", timeout=10)
    assert sorted(got.results) == sorted(m["id"] for m in msgs) and not got.dead
    assert got.result_count == len(msgs)
    assert all(r["label"] == "defect" for r in got.results.values())
