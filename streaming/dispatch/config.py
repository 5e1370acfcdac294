"""The dispatcher's settings: the seed's arguments, each also readable from the seed compose entry's variable."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from schemas import limits, topics
from streaming.dispatch import checkpoints

DeliveryGuarantee = Literal["at-least-once", "exactly-once"]
StartingOffsets = Literal["group", "earliest", "latest"]
RestartStrategy = Literal["exponential-delay", "none"]


@dataclass(frozen=True)
class DispatcherConfig:
    bootstrap: str
    team: str
    http_url: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group_id: str
    parallelism: int = 1
    capacity: int = 64  # in-flight messages per parallel instance
    items_per_request: int = 1  # 1: /infer_json per message; more: /infer_batch
    max_batch_wait_ms: float = 5.0
    request_timeout_s: float = 30.0
    attempts: int = 5
    backoff_ms: int = 200
    backoff_max_ms: int = 10_000
    delivery_guarantee: DeliveryGuarantee = "at-least-once"
    checkpoint_interval_ms: int = 5_000
    starting_offsets: StartingOffsets = "group"
    auth_token: str | None = None
    bundle_size: int = 0  # 0: 4 x capacity
    bundle_time_ms: int = 200
    job_name: str = ""
    connector_jars: tuple[str, ...] | None = None  # None: the cached jars of connectors/connectors.txt
    checkpoint_dir: str = ""  # "": checkpoints.default_checkpoint_dir()
    resume: str = "latest"
    max_message_bytes: int = limits.MAX_MESSAGE_BYTES
    max_record_bytes: int = limits.KAFKA_MAX_RECORD_BYTES
    restart_strategy: RestartStrategy = "exponential-delay"

    @property
    def name(self) -> str:
        return self.job_name or f"http-dispatcher-{self.team}"

    @property
    def host(self) -> str:
        return socket.gethostname()


# (flag, seed/compose variable, type, default, help); a default of None means "derived from --team"
_OPTIONS: list[tuple[str, str, type, object, str]] = [
    ("--bootstrap", "KAFKA_BOOTSTRAP", str, "127.0.0.1:9092", "Kafka bootstrap servers"),
    ("--team", "TEAM", str, None, "team name (required)"),
    ("--http-url", "HTTP_URL", str, "http://127.0.0.1:8000/infer_json", "the service's /infer_json URL"),
    ("--input-topic", "INPUT_TOPIC", str, None, "default imagery.new.<team>"),
    ("--output-topic", "OUTPUT_TOPIC", str, None, "default inference.results.<team>"),
    ("--dlq-topic", "DLQ_TOPIC", str, topics.DLQ_TOPIC, "dead-letter topic"),
    ("--group-id", "GROUP_ID", str, None, "default http-dispatcher-<team>"),
    ("--parallelism", "PARALLELISM", int, 1, "Flink parallelism"),
    ("--capacity", "CAPACITY", int, 64, "in-flight messages per parallel instance"),
    ("--items-per-request", "ITEMS_PER_REQUEST", int, 1, "1 = /infer_json, more = /infer_batch"),
    ("--max-batch-wait-ms", "MAX_BATCH_WAIT_MS", float, 5.0, "how long /infer_batch waits to fill"),
    ("--request-timeout-s", "REQUEST_TIMEOUT_S", float, 30.0, "one HTTP request's timeout"),
    ("--attempts", "ATTEMPTS", int, 5, "tries per message for retryable failures (outages are not counted)"),
    ("--backoff-ms", "BACKOFF_MS", int, 200, "first retry delay; doubles per attempt, with jitter"),
    ("--backoff-max-ms", "BACKOFF_MAX_MS", int, 10_000, "retry delay cap"),
    ("--delivery-guarantee", "DELIVERY_GUARANTEE", str, "at-least-once", "at-least-once | exactly-once"),
    ("--checkpoint-interval-ms", "CHECKPOINT_INTERVAL_MS", int, 5_000, "Flink checkpoint interval"),
    ("--checkpoint-dir", "CHECKPOINT_DIR", str, "",
     "where checkpoints and savepoints are kept, per --group-id (a file:// or plain path the JobManager, the "
     "TaskManagers and the submitting client share; or s3://...); default: the local stack's state folder"),
    ("--resume", "RESUME", str, "latest",
     "latest (the group's newest retained checkpoint or savepoint in --checkpoint-dir; none at first) | none "
     "(start from --starting-offsets) | a checkpoint or savepoint path"),
    ("--starting-offsets", "STARTING_OFFSETS", str, "group",
     "group (committed offsets of --group-id, earliest if none) | earliest | latest"),
    ("--auth-token", "AUTH_TOKEN", str, None, "bearer token for the service, if it wants one"),
    ("--bundle-size", "BUNDLE_SIZE", int, 0,
     "records per Python bundle (results are handed on when a bundle ends); 0 = 4 x capacity"),
    ("--bundle-time-ms", "BUNDLE_TIME_MS", int, 200, "longest a Python bundle stays open"),
    ("--job-name", "JOB_NAME", str, "", "Flink job name (default http-dispatcher-<team>)"),
    ("--connector-jars", "CONNECTOR_JARS", str, None,
     "comma-separated jar paths/URLs to add to the job; default: the cached jars from connectors/connectors.txt,"
     " or none when the cluster's lib/ already has them (pass an empty string)"),
    ("--max-message-bytes", "MAX_MESSAGE_BYTES", int, limits.MAX_MESSAGE_BYTES,
     "larger input records (key + value + headers) go to the DLQ as message_too_large; at most a quarter of "
     "--max-record-bytes, so that every result and dead letter fits"),
    ("--max-record-bytes", "MAX_RECORD_BYTES", int, limits.KAFKA_MAX_RECORD_BYTES,
     "the producers' max.request.size; every record written is built to fit (the topics and the broker must "
     "take records this large: Kafka's defaults do)"),
    ("--restart-strategy", "RESTART_STRATEGY", str, "exponential-delay",
     "exponential-delay | none (a failure ends the job: for a supervisor that restarts it, and for tests)"),
]


def parse_args(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> DispatcherConfig:
    env = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(description="Kafka -> HTTP inference -> results/DLQ, one PyFlink job per team")
    for flag, var, typ, default, help_text in _OPTIONS:
        # argparse runs `type` over string defaults too, so values from the environment are converted alike
        parser.add_argument(flag, type=typ, default=env.get(var, default), help=f"{help_text} [env {var}]")
    ns = parser.parse_args(argv)
    if not ns.team:
        parser.error("--team (or TEAM) is required")
    if ns.delivery_guarantee not in ("at-least-once", "exactly-once"):
        parser.error("--delivery-guarantee must be at-least-once or exactly-once")
    if ns.starting_offsets not in ("group", "earliest", "latest"):
        parser.error("--starting-offsets must be group, earliest or latest")
    for name in ("parallelism", "capacity", "items_per_request", "attempts"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if ns.restart_strategy not in ("exponential-delay", "none"):
        parser.error("--restart-strategy must be exponential-delay or none")
    if ns.delivery_guarantee == "exactly-once" and 2 * ns.checkpoint_interval_ms > limits.KAFKA_MAX_TRANSACTION_MS:
        parser.error("with exactly-once, --checkpoint-interval-ms must be at most "
                     f"{limits.KAFKA_MAX_TRANSACTION_MS // 2} (a transaction stays open from one checkpoint to the "
                     "next, within the broker's limit)")
    if not 4 * ns.max_message_bytes <= ns.max_record_bytes:
        parser.error("--max-message-bytes must be at most a quarter of --max-record-bytes")
    team = ns.team
    return DispatcherConfig(**{
        **vars(ns),
        "input_topic": ns.input_topic or topics.input_topic(team),
        "output_topic": ns.output_topic or topics.result_topic(team),
        "group_id": ns.group_id or f"http-dispatcher-{team}",
        "checkpoint_dir": checkpoints.as_uri(ns.checkpoint_dir) or checkpoints.default_checkpoint_dir(),
        "auth_token": ns.auth_token or None,
        "connector_jars": None if ns.connector_jars is None else tuple(j for j in ns.connector_jars.split(",") if j),
    })
