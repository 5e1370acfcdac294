"""The dispatcher's settings: one pydantic-settings model, each field a flag and an environment variable.

`parse_args` reads the flags with pydantic-settings' `CliSettingsSource` (the flags, their types, choices and `--help`
come from the fields) over the given environment, and pydantic validates the result: a value that cannot work is a
usage error at start, naming its flag and variable, not a failure in the Python operator later.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import JsonDict
from pydantic_settings import BaseSettings, CliSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from schemas import INFER_JSON_ROUTE, limits, topics
from streaming.dispatch import checkpoints, defaults
from streaming.dispatch.kafka_properties import KafkaConfigError, read_properties
from streaming.dispatch.metrics import PROMETHEUS_PORTS

DeliveryGuarantee = Literal["at-least-once", "exactly-once"]
StartingOffsets = Literal["group", "earliest", "latest"]
RestartStrategy = Literal["exponential-delay", "none"]

DESCRIPTION = "Kafka -> HTTP inference -> results/DLQ, one PyFlink job per team"


def setting(default: Any, help: str, *, env: str = "", formerly: str = "", **constraints: Any) -> Any:
    """One setting: its default, its help and pydantic's constraints on its value. Its flag is the field's name with
    dashes (`--items-per-request`), its variable the name in capitals (`ITEMS_PER_REQUEST`) unless `env` names
    another (compose's established names, e.g. KAFKA_BOOTSTRAP); `formerly`: an older field name whose flag and
    variable are still read."""
    names: JsonDict = {key: value for key, value in (("env", env), ("formerly", formerly)) if value}
    return Field(default, description=help, json_schema_extra=names or None, **constraints)


class DispatcherConfig(BaseSettings):
    """Every setting of the dispatcher, once: `parse_args` builds the command line and reads the environment from
    these fields. Frozen and picklable: the job hands it to its Python operator."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers", env="KAFKA_BOOTSTRAP", min_length=1)
    team: str = setting("", "team name (required)")
    http_url: str = setting(f"http://127.0.0.1:8000{INFER_JSON_ROUTE}", f"the service's {INFER_JSON_ROUTE} URL")
    input_topic: str = setting("", "default imagery.new.<team>")
    output_topic: str = setting("", "default inference.results.<team>")
    dlq_topic: str = setting(topics.DLQ_TOPIC, "dead-letter topic", min_length=1)
    group_id: str = setting("", "default http-dispatcher-<team>")
    parallelism: int = setting(1, "Flink parallelism (give the input topic at least as many partitions)", ge=1)
    capacity: int = setting(64, "images in flight at the service per parallel instance", ge=1)
    group_size: int = setting(
        64,
        "most records of one partition handed to Python at once (each element that crosses into Python costs "
        "the same, whatever it holds)",
        ge=1,
    )
    group_wait_ms: int = setting(10, "longest a record waits for its group to fill", ge=1)
    items_per_request: int = setting(defaults.ITEMS_PER_REQUEST, "1 = /infer_json, more = /infer_batch", ge=1)
    max_batch_wait_ms: float = setting(defaults.MAX_BATCH_WAIT_MS, "how long /infer_batch waits to fill", ge=0)
    attempt_timeout_s: float = setting(
        defaults.ATTEMPT_TIMEOUT_S,
        "deadline of one try at the service: one POST, from a free connection to its "
        f"complete answer (connecting included, at most {defaults.CONNECT_TIMEOUT_S:g} s); a try past it is retried. "
        "Not the record's whole budget: that is --attempts tries plus the backoff, and outages are waited out",
        formerly="request_timeout_s",
        gt=0,
    )
    attempts: int = setting(
        defaults.ATTEMPTS, "tries per message for retryable failures (outages are not counted)", ge=1
    )
    backoff_ms: int = setting(defaults.BACKOFF_MS, "first retry delay; doubles per attempt, with jitter", ge=0)
    backoff_max_ms: int = setting(defaults.BACKOFF_MAX_MS, "retry delay cap", ge=0)
    delivery_guarantee: DeliveryGuarantee = setting(
        "exactly-once",
        "exactly-once (every input record ends in exactly one place, result or dead letter, through "
        "crashes and restarts: the outputs are Kafka transactions, which read_committed consumers see once a "
        "checkpoint commits them) | at-least-once (outputs visible at once; a crash or restart can write some of "
        "them twice)",
    )
    # Flink refuses a checkpoint interval under 10 ms
    checkpoint_interval_ms: int = setting(
        1_000,
        "Flink checkpoint interval; under exactly-once also how often results become visible (a committed "
        "result waits about half of it on average: bench/RESULTS.md, issue 28)",
        ge=10,
    )
    checkpoint_dir: str = setting(
        "",
        "where checkpoints and savepoints are kept, per --group-id (a file:// or plain path the JobManager, the "
        "TaskManagers and the submitting client share; or s3://...); required to start a job (`imagery dispatch` "
        "passes the local stack's)",
    )
    resume: str = setting(
        "latest",
        "latest (the group's newest retained checkpoint or savepoint in --checkpoint-dir; none at first) | "
        "none (start from --starting-offsets) | a checkpoint or savepoint path",
        min_length=1,
    )
    starting_offsets: StartingOffsets = setting(
        "group", "group (committed offsets of --group-id, earliest if none) | earliest | latest"
    )
    kafka_config: str = setting(
        "",
        "a Kafka client properties file, in the Java client's names (security.protocol, sasl.mechanism, "
        "sasl.jaas.config, ssl.truststore.*, ssl.keystore.*), as Kafka's tools take --command-config: every entry "
        "goes to the source and both sinks. Read where the job is submitted; the key and trust stores it names must "
        "be at the same paths on the JobManager (partition discovery) and the TaskManagers",
        env="KAFKA_CONFIG_FILE",
    )
    auth_token_file: str = setting(
        "",
        "a file holding the service's bearer token, read by each parallel instance when it starts (on the "
        "TaskManagers: the token itself never travels with the job)",
        env="AUTH_TOKEN_FILE",
    )
    auth_token: SecretStr | None = setting(
        None,
        "the service's bearer token itself: shows in the process list (ps) as a flag, and in the process "
        "environment as a variable; prefer --auth-token-file",
    )
    http_ca_file: str = setting(
        "", "a PEM CA bundle to trust for an https:// --http-url (default: the system's roots)", env="HTTP_CA_FILE"
    )
    buffer_timeout_ms: int = setting(
        5,
        "longest a record waits in a network buffer between Flink tasks (Flink's execution.buffer-timeout; its "
        "default, 100, made a record wait about 50 ms on average at each shuffle)",
        ge=0,
    )
    job_name: str = setting("", "Flink job name (default http-dispatcher-<team>)")
    connector_jars: tuple[str, ...] = setting(
        (),
        "comma-separated jar paths/URLs to add to the job (`imagery dispatch` passes the cached jars of "
        "streaming/flink/connectors.txt); default none: a cluster's lib/ has them",
    )
    max_message_bytes: int = setting(
        limits.MAX_MESSAGE_BYTES,
        "larger input records (key + value + headers) go to the DLQ as message_too_large; at "
        "most a quarter of --max-record-bytes, so that every result and dead letter fits",
        ge=1,
    )
    max_record_bytes: int = setting(
        limits.KAFKA_MAX_RECORD_BYTES,
        "the producers' max.request.size; every record written is built to fit (the "
        "topics and the broker must take records this large: Kafka's defaults do)",
        ge=1,
    )
    restart_strategy: RestartStrategy = setting(
        "exponential-delay",
        "exponential-delay | none (a failure ends the job: for a supervisor that restarts it, and for tests)",
    )
    prometheus_port: str = setting(
        PROMETHEUS_PORTS,
        "port range of Flink's Prometheus reporter when the job runs on a local MiniCluster (each "
        "JobManager/TaskManager takes the first free one); empty: no reporter. A cluster's own config decides there",
    )
    detached: bool = setting(
        False,
        "submit and return (for `flink run --detached`) instead of waiting for the job and stopping it with a "
        "savepoint on SIGTERM",
        env="IMAGERY_DETACHED",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is an argument of parse_args (the keeper and the tests pass their own), so the model reads
        # no process state by itself: its values are the flags (parse_args's CLI source) over the values given.
        return (init_settings,)

    @field_validator("team")
    @classmethod
    def _team_is_given(cls, team: str) -> str:
        if not team:
            raise ValueError("is required")
        return team

    @field_validator("http_url")
    @classmethod
    def _is_an_http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL of the service")
        return url

    @field_validator("input_topic", "output_topic", "group_id")
    @classmethod
    def _named_after_the_team(cls, value: str, info: ValidationInfo) -> str:
        team = info.data.get("team")
        if value or not team:
            return value
        derive = {
            "input_topic": topics.input_topic,
            "output_topic": topics.result_topic,
            "group_id": topics.dispatcher_group,
        }
        return derive[str(info.field_name)](team)

    @field_validator("checkpoint_dir")
    @classmethod
    def _checkpoint_uri(cls, location: str) -> str:
        return checkpoints.as_uri(location)

    @field_validator("auth_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, token: Any) -> Any:
        return token or None

    @field_validator("kafka_config")
    @classmethod
    def _kafka_config_is_honoured(cls, path: str) -> str:
        if path:
            try:
                read_properties(path)  # read again where the job is built: the entries are never kept here
            except KafkaConfigError as exc:
                raise ValueError(str(exc)) from None
        return path

    @field_validator("auth_token_file", "http_ca_file")
    @classmethod
    def _readable_file(cls, path: str) -> str:
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path}")
        return path

    @field_validator("connector_jars", mode="before")
    @classmethod
    def _comma_separated(cls, jars: Any) -> Any:
        """ "a.jar,b.jar" from the environment, and each `--connector-jars` given; "" is none."""
        items = [jars] if isinstance(jars, str) else jars
        return tuple(jar for item in items for jar in item.split(",") if jar)

    @field_validator("detached", mode="before")
    @classmethod
    def _empty_is_false(cls, value: Any) -> Any:
        return value or False

    @field_validator("prometheus_port")
    @classmethod
    def _port_or_range(cls, ports: str) -> str:
        if not re.fullmatch(r"(\d+(-\d+)?)?", ports):
            raise ValueError("must be a port, a range FIRST-LAST, or empty")
        return ports

    @model_validator(mode="after")
    def _settings_that_work_together(self) -> DispatcherConfig:
        longest_interval_ms = limits.KAFKA_MAX_TRANSACTION_MS // 2
        if self.delivery_guarantee == "exactly-once" and self.checkpoint_interval_ms > longest_interval_ms:
            raise ValueError(
                f"with exactly-once, --checkpoint-interval-ms must be at most {longest_interval_ms} (a "
                "transaction stays open from one checkpoint to the next, within the broker's limit)"
            )
        if self.auth_token is not None and self.auth_token_file:
            raise ValueError("give the service's token once: --auth-token-file or --auth-token, not both")
        if self.http_ca_file and not self.http_url.startswith("https://"):
            raise ValueError("--http-ca-file is for an https:// --http-url")
        if not 4 * self.max_message_bytes <= self.max_record_bytes:
            raise ValueError("--max-message-bytes must be at most a quarter of --max-record-bytes")
        return self

    def service_token(self) -> str | None:
        """The service's bearer token: read from --auth-token-file now (where the calls are made), or given."""
        if self.auth_token_file:
            return Path(self.auth_token_file).read_text().strip() or None
        return self.auth_token.get_secret_value() if self.auth_token is not None else None

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
        """Groups the operator holds per partition. `capacity` bounds the images at the service (a semaphore in the
        dispatcher); groups are small when the load is light (a few records per window), so as many groups as
        images may be needed to keep `capacity` images in flight."""
        return max(2, self.capacity)

    @property
    def host(self) -> str:
        return socket.gethostname()


def flag(name: str) -> str:
    """A setting's flag: `--items-per-request` for `items_per_request`."""
    return "--" + name.replace("_", "-")


def variable(name: str) -> str:
    """A setting's environment variable."""
    return str(_extra(name).get("env") or name.upper())


def _former_name(name: str) -> str | None:
    former = _extra(name).get("formerly")
    return former if isinstance(former, str) else None


def _extra(name: str) -> JsonDict:
    """What `setting` recorded beside a field: its variable when not the field's name, its former name."""
    extra = DispatcherConfig.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Each setting given in `env`, as text (pydantic reads it as the field's type): from its variable, else from
    the variable of its former name."""
    values = {}
    for name in DispatcherConfig.model_fields:
        former = _former_name(name)
        for var in (variable(name), *((former.upper(),) if former else ())):
            if var in env:
                values[name] = env[var]
                break
    return values


def _help(name: str) -> str:
    field = DispatcherConfig.model_fields[name]
    default = "" if field.default in ("", None, ()) or field.default is False else f" (default: {field.default})"
    former = _former_name(name)
    formerly = f"; formerly {flag(former)} / {former.upper()}, still read" if former else ""
    value = "=1" if field.annotation is bool else ""
    return f"{field.description}{default} [env {variable(name)}{value}{formerly}]".replace("%", "%%")


def _add_argument(parser: argparse.ArgumentParser, *names: str, **options: Any) -> argparse.Action:
    """Each flag as `--help` shows it: its variable as the value's name, and its help, default and variable."""
    name = options["dest"]
    options["help"] = _help(name)
    if "metavar" in options:
        options["metavar"] = variable(name)
    return parser.add_argument(*names, **options)


def _explain(error: ValidationError) -> str:
    """pydantic's errors in the command line's terms."""
    lines = []
    for problem in error.errors():
        name = problem["loc"][0] if problem["loc"] else None
        message = str(problem["ctx"]["error"]) if problem["type"] == "value_error" else problem["msg"]
        if isinstance(name, str) and name in DispatcherConfig.model_fields:
            message = f"{flag(name)} ({variable(name)}) {problem['input']!r}: {message}"
        lines.append(message)
    return "; ".join(lines)


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> DispatcherConfig:
    """The settings from the flags in `argv` (default: this process's arguments) over the variables in `env` (default:
    this process's environment) over the defaults. A value that cannot work exits with a usage error (status 2)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    former_flags = {
        flag(name)[2:]: flag(former)[2:] for name in DispatcherConfig.model_fields if (former := _former_name(name))
    }
    flags: CliSettingsSource[DispatcherConfig] = CliSettingsSource(
        DispatcherConfig,
        cli_parse_args=sys.argv[1:] if argv is None else list(argv),
        root_parser=parser,
        add_argument_method=_add_argument,
        cli_kebab_case=True,
        cli_implicit_flags="toggle",
        cli_shortcuts=former_flags,
    )
    try:
        # the variables are text: pydantic parses each into its field's type
        variables: dict[str, Any] = from_environment(os.environ if env is None else env)
        config = DispatcherConfig(_cli_settings_source=flags, **variables)
    except ValidationError as exc:
        parser.error(_explain(exc))
    if config.auth_token is not None:
        shown = (
            f"{flag('auth_token')} shows in the process list (ps, /proc/<pid>/cmdline) of every host that runs the job"
            if "auth_token" not in variables
            else f"{variable('auth_token')} shows in the process "
            "environment (/proc/<pid>/environ, the container's or pod's spec)"
        )
        print(
            f"warning: {shown}; put the token in a file and give {flag('auth_token_file')} "
            f"({variable('auth_token_file')})",
            file=sys.stderr,
            flush=True,
        )
    return config
