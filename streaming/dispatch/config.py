"""The dispatcher's settings: the seed's arguments, each also readable from the seed compose entry's variable."""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from schemas import limits, topics
from streaming.dispatch import checkpoints
from streaming.dispatch.metrics import PROMETHEUS_PORTS

DeliveryGuarantee = Literal["at-least-once", "exactly-once"]
StartingOffsets = Literal["group", "earliest", "latest"]
RestartStrategy = Literal["exponential-delay", "none"]


def option(default: Any, env: str, help: str) -> Any:
    """A setting: its default, the seed/compose variable it is also read from, and its help. The flag is the field's
    name with dashes (`--items-per-request`); its type and choices come from the annotation."""
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class DispatcherConfig:
    """Every setting of the dispatcher, once: `parse_args` builds the command line and the environment from it."""

    bootstrap: str = option("127.0.0.1:9092", "KAFKA_BOOTSTRAP", "Kafka bootstrap servers")
    team: str = option("", "TEAM", "team name (required)")
    http_url: str = option("http://127.0.0.1:8000/infer_json", "HTTP_URL", "the service's /infer_json URL")
    input_topic: str = option("", "INPUT_TOPIC", "default imagery.new.<team>")
    output_topic: str = option("", "OUTPUT_TOPIC", "default inference.results.<team>")
    dlq_topic: str = option(topics.DLQ_TOPIC, "DLQ_TOPIC", "dead-letter topic")
    group_id: str = option("", "GROUP_ID", "default http-dispatcher-<team>")
    parallelism: int = option(1, "PARALLELISM", "Flink parallelism (give the input topic at least as many partitions)")
    capacity: int = option(64, "CAPACITY", "images in flight at the service per parallel instance")
    group_size: int = option(
        64, "GROUP_SIZE", "most records of one partition handed to Python at once (PyFlink's operator costs about a "
        "millisecond per element, whatever it holds)")
    group_wait_ms: int = option(10, "GROUP_WAIT_MS", "longest a record waits for its group to fill")
    items_per_request: int = option(1, "ITEMS_PER_REQUEST", "1 = /infer_json, more = /infer_batch")
    max_batch_wait_ms: float = option(5.0, "MAX_BATCH_WAIT_MS", "how long /infer_batch waits to fill")
    request_timeout_s: float = option(30.0, "REQUEST_TIMEOUT_S", "one HTTP request's timeout")
    attempts: int = option(5, "ATTEMPTS", "tries per message for retryable failures (outages are not counted)")
    backoff_ms: int = option(200, "BACKOFF_MS", "first retry delay; doubles per attempt, with jitter")
    backoff_max_ms: int = option(10_000, "BACKOFF_MAX_MS", "retry delay cap")
    delivery_guarantee: DeliveryGuarantee = option("at-least-once", "DELIVERY_GUARANTEE",
                                                   "at-least-once | exactly-once")
    checkpoint_interval_ms: int = option(5_000, "CHECKPOINT_INTERVAL_MS", "Flink checkpoint interval")
    checkpoint_dir: str = option(
        "", "CHECKPOINT_DIR", "where checkpoints and savepoints are kept, per --group-id (a file:// or plain path the "
        "JobManager, the TaskManagers and the submitting client share; or s3://...); default: the local stack's "
        "state folder")
    resume: str = option(
        "latest", "RESUME", "latest (the group's newest retained checkpoint or savepoint in --checkpoint-dir; none at "
        "first) | none (start from --starting-offsets) | a checkpoint or savepoint path")
    starting_offsets: StartingOffsets = option(
        "group", "STARTING_OFFSETS", "group (committed offsets of --group-id, earliest if none) | earliest | latest")
    auth_token: str | None = option(None, "AUTH_TOKEN", "bearer token for the service, if it wants one")
    bundle_size: int = option(
        0, "BUNDLE_SIZE", "groups per Python bundle (results are handed on when a bundle ends); 0 = 4 x the groups "
        "in flight")
    bundle_time_ms: int = option(
        25, "BUNDLE_TIME_MS", "longest a Python bundle stays open (it ends when its calls are answered, and only "
        "then are its results handed on: short bundles, short latency)")
    job_name: str = option("", "JOB_NAME", "Flink job name (default http-dispatcher-<team>)")
    connector_jars: tuple[str, ...] = option(
        (), "CONNECTOR_JARS", "comma-separated jar paths/URLs to add to the job (`imagery dispatch` passes the cached "
        "jars of streaming/flink/connectors.txt); default none: a cluster's lib/ has them")
    max_message_bytes: int = option(
        limits.MAX_MESSAGE_BYTES, "MAX_MESSAGE_BYTES", "larger input records (key + value + headers) go to the DLQ as "
        "message_too_large; at most a quarter of --max-record-bytes, so that every result and dead letter fits")
    max_record_bytes: int = option(
        limits.KAFKA_MAX_RECORD_BYTES, "MAX_RECORD_BYTES", "the producers' max.request.size; every record written is "
        "built to fit (the topics and the broker must take records this large: Kafka's defaults do)")
    restart_strategy: RestartStrategy = option(
        "exponential-delay", "RESTART_STRATEGY",
        "exponential-delay | none (a failure ends the job: for a supervisor that restarts it, and for tests)")
    prometheus_port: str = option(
        PROMETHEUS_PORTS, "PROMETHEUS_PORT", "port range of Flink's Prometheus reporter when the job runs on a local "
        "MiniCluster (each JobManager/TaskManager takes the first free one); empty: no reporter. A cluster's own "
        "config decides there")
    detached: bool = option(
        False, "IMAGERY_DETACHED", "submit and return (for `flink run --detached`) instead of waiting for the job "
        "and stopping it with a savepoint on SIGTERM")

    @property
    def name(self) -> str:
        return self.job_name or topics.dispatcher_group(self.team)

    def transactional_id_prefix(self, sink: str) -> str:
        """The Kafka transactional-id prefix of one of the job's exactly-once sinks (`results`, `dlq`): one per job
        identity, the same across every restart of that job.

        A job is its consumer group (its checkpoints are kept per group, streaming/dispatch/checkpoints.py) writing
        to its output topics. Two jobs that shared a prefix would each, at start and on recovery, fence and abort
        the other's open transactions (the connector probes `<prefix>-<subtask>-<checkpoint id>` upward from its
        restored checkpoint), and the connector drops a committable whose producer was fenced: results lost in
        silence. So the prefix names the group, readable for `kafka-transactions.sh`, plus a digest of the group and
        every topic the job reads and writes. A change of topics is a new identity; the connector still aborts the
        old prefix's lingering transactions when it restores a state written under it."""
        identity = "\0".join((self.group_id, self.input_topic, self.output_topic, self.dlq_topic))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return f"imagery-{self.group_id}-{digest}-{sink}"

    @property
    def groups_in_flight(self) -> int:
        """Groups the async operator holds. `capacity` bounds the images at the service (a semaphore in the
        dispatcher); groups are small when the load is light (a few records per window), so as many groups as
        images may be needed to keep `capacity` images in flight."""
        return max(2, self.capacity)

    @property
    def host(self) -> str:
        return socket.gethostname()


def _converter(annotation: Any) -> tuple[Callable[[str], Any], tuple[str, ...] | None]:
    """How a flag's text becomes the field's value, and its choices (from a Literal)."""
    if get_origin(annotation) is Literal:
        return str, get_args(annotation)
    if annotation is bool:
        return lambda text: text.strip().lower() in ("1", "true", "yes", "on"), None
    if annotation in (int, float):
        return annotation, None
    if get_origin(annotation) is tuple:
        return lambda text: tuple(item for item in text.split(",") if item), None
    return str, None  # str, str | None


def parse_args(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> DispatcherConfig:
    env = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(description="Kafka -> HTTP inference -> results/DLQ, one PyFlink job per team")
    hints = get_type_hints(DispatcherConfig)
    for f in fields(DispatcherConfig):
        convert, choices = _converter(hints[f.name])
        var = f.metadata["env"]
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", default=convert(env.get(var, "")),
                                help=f"{f.metadata['help']} [env {var}=1]")
            continue
        default = env[var] if var in env else f.default
        # argparse runs `type` over string defaults too, so values from the environment are converted alike
        parser.add_argument(flag, type=convert, default=default, choices=choices, metavar=var,
                            help=f"{f.metadata['help']} [env {var}]")
    ns = parser.parse_args(argv)
    if not ns.team:
        parser.error("--team (or TEAM) is required")
    for name in ("parallelism", "capacity", "items_per_request", "attempts", "group_size", "group_wait_ms"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
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
        "group_id": ns.group_id or topics.dispatcher_group(team),
        "checkpoint_dir": checkpoints.as_uri(ns.checkpoint_dir) or checkpoints.default_checkpoint_dir(),
        "auth_token": ns.auth_token or None,
    })
