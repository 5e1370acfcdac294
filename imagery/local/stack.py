"""Start, probe and stop the local stack as background processes on loopback.

Every part is started by imagery.process in its own process group (so `down` stops its whole group), with its pid
in `<state>/pids/<name>.pid` and its output in `<state>/logs/<name>.log`. `up` returns only when each part
really answers: a Kafka produce/consume round trip, a MinIO bucket call, a Flink TaskManager registered. The parts
are declared once, in PARTS, in the order they start; they stop in the reverse order.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from imagery import kafka_io
from imagery.errors import ToolError
from imagery.local import install
from imagery.local import security as local_security
from imagery.local.settings import StackSettings
from imagery.local.versions import KAFKA_VERSION
from imagery.process import (
    ProcessError,
    Stopped,
    port_open,
    read_pid_file,
    remove_pid_file,
    spawn,
    stop_group,
    write_pid_file,
)
from schemas import limits
from streaming.dispatch.metrics import reporter_options
from streaming.flink import embedded_python

if TYPE_CHECKING:
    from minio import Minio

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0  # SIGTERM's grace: Kafka flushes its logs and closes cleanly well within it

KAFKA, MINIO, FLINK_JOBMANAGER, FLINK_TASKMANAGER = "kafka", "minio", "flink-jobmanager", "flink-taskmanager"


class StackError(ToolError):
    """The stack could not be started or probed; the message names the part and what to look at."""


@dataclass
class Component:
    name: str
    ports: list[int]
    argv: list[str]
    probe: Callable[[], object]  # raises until the part really answers (what it returns is not used)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


# --------------------------------------------------------------------------- processes


def pid_file(settings: StackSettings, name: str) -> Path:
    return settings.pids_dir / f"{name}.pid"


def log_file(settings: StackSettings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def running_pid(settings: StackSettings, name: str) -> int | None:
    return read_pid_file(pid_file(settings, name))


def start(settings: StackSettings, comp: Component) -> bool:
    """Start `comp` unless it already runs; wait until its probe passes. Returns True if it was started."""
    if running_pid(settings, comp.name):
        comp.probe()
        return False
    for port in comp.ports:
        if port_open(settings.host, port):
            raise StackError(
                f"port {port} ({comp.name}) on {settings.host} is already in use by another process: "
                f"stop it or choose another port (see `imagery status` for the IMAGERY_* variables)"
            )
    process = spawn(comp.argv, log_file(settings, comp.name), name=comp.name, env=comp.env, cwd=comp.cwd)
    write_pid_file(pid_file(settings, comp.name), process.pid)
    try:
        process.wait_ready(comp.probe, READY_TIMEOUT_S, poll_s=0.5)
    except ProcessError as exc:
        process.stop(STOP_TIMEOUT_S)
        remove_pid_file(pid_file(settings, comp.name))
        raise StackError(str(exc)) from None
    return True


def stop(settings: StackSettings, name: str, timeout_s: float = STOP_TIMEOUT_S) -> Stopped | None:
    """Stop the part's whole process group (SIGTERM, then SIGKILL past TIMEOUT_S); None if it was not running."""
    pid = running_pid(settings, name)
    if pid is None:
        return None
    stopped = stop_group(pid, timeout_s)
    remove_pid_file(pid_file(settings, name))
    return stopped


# --------------------------------------------------------------------------- Kafka


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka makes them (Uuid.randomUuid): base64 of 16 random bytes, never starting with
    '-', which the storage tool's argument parser would read as an option (a 1-in-32 failure of `imagery up`)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_component(settings: StackSettings) -> Component:
    home = install.kafka_home(settings)
    conf_dir = settings.state_dir / "kafka-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    h, port, cport = settings.host, settings.kafka_port, settings.kafka_controller_port
    if settings.secure:
        security = local_security.ensure(settings)
        listeners = local_security.broker_properties(settings, security)
        ports = [port, settings.kafka_mtls_port, cport]
    else:
        listeners = [
            f"listeners=PLAINTEXT://{h}:{port},CONTROLLER://{h}:{cport}",
            f"advertised.listeners=PLAINTEXT://{h}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
        ports = [port, cport]
    props = conf_dir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{h}:{cport}",
                *listeners,
                f"log.dirs={settings.kafka_data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # exactly-once sinks hold transactions open across a checkpoint: allow up to 15 minutes
                f"transaction.max.timeout.ms={limits.KAFKA_MAX_TRANSACTION_MS}",
                "auto.create.topics.enable=true",
                "delete.topic.enable=true",
                "",
            ]
        )
    )
    log4j = conf_dir / "log4j2.properties"
    log4j.write_text(
        "status = warn\n"
        "appender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
        "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
        "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        "logger.kafkaorg.name = org.apache.kafka\nlogger.kafkaorg.level = WARN\n"
        "logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"
    )
    classpath = str(home / "libs" / "*")
    java = [
        "java",
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
    ]
    if not (settings.kafka_data / "meta.properties").exists():
        settings.kafka_data.mkdir(parents=True, exist_ok=True)
        cluster_id = kafka_cluster_id()
        formatted = subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{formatted.stdout}\n{formatted.stderr}")
    return Component(
        name=KAFKA,
        ports=ports,
        argv=[*java, "kafka.Kafka", str(props)],
        probe=lambda: secured_kafka_ready(settings) if settings.secure else kafka_round_trip(settings.bootstrap),
    )


def kafka_admin(settings: StackSettings, mtls: bool = False) -> kafka_io.Connection:
    """The stack's Kafka as its operator reaches it: plain, or on the secured stack as `admin` (SASL_SSL, or mTLS)."""
    from imagery import kafka_config

    if not settings.secure:
        return kafka_io.Connection(settings.bootstrap)
    security = local_security.files(settings)
    return kafka_io.Connection(
        settings.mtls_bootstrap if mtls else settings.bootstrap,
        kafka_config.load(security.admin_mtls if mtls else security.admin_sasl),
    )


def secured_kafka_ready(settings: StackSettings) -> None:
    """The secured broker serves its operator by both doors. Admin's SCRAM credential is made here, as admin by
    its certificate (a super user), not when the storage is formatted: the storage tool takes it on its command
    line, where every process list would show the password."""
    from imagery import kafka_access

    as_certificate = kafka_admin(settings, mtls=True)
    kafka_round_trip(as_certificate)
    password = local_security.read_secret(local_security.files(settings).admin_password_file)
    kafka_access.ensure_scram_user(as_certificate, local_security.ADMIN, password)
    kafka_round_trip(kafka_admin(settings))


def kafka_round_trip(bootstrap: kafka_io.Target, timeout_s: float = 10.0) -> None:
    """Produce a unique value to a health topic and read it back: the broker really works, not just listens."""
    from confluent_kafka import Message, TopicPartition

    host, port = kafka_io.connection(bootstrap).bootstrap.split(",")[0].rsplit(":", 1)
    if not port_open(host, int(port)):
        raise StackError(f"nothing listens on {bootstrap} yet")  # spares librdkafka's connect-refused noise
    topic = "__imagery_stack_check"
    token = uuid.uuid4().hex.encode()
    producer = kafka_io.producer(bootstrap, config={"message.timeout.ms": int(timeout_s * 1000), "log_level": 2})
    delivered: list[Message] = []
    failed: list[str] = []
    producer.produce(
        topic, token, on_delivery=lambda err, msg: failed.append(str(err)) if err else delivered.append(msg)
    )
    producer.flush(timeout_s)
    if not delivered:
        raise StackError(f"Kafka produce to {bootstrap} failed: {failed[:1] or 'timed out'}")
    msg_partition, msg_offset = delivered[0].partition(), delivered[0].offset()
    assert msg_partition is not None and msg_offset is not None  # a delivered record has both
    with kafka_io.consumer(bootstrap, config={"log_level": 2}) as reader:
        reader.assign([TopicPartition(topic, msg_partition, msg_offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is not None and not msg.error() and msg.value() == token:
                return
        raise StackError(f"Kafka at {bootstrap} accepted a message but did not serve it back")


# --------------------------------------------------------------------------- MinIO


def minio_component(settings: StackSettings, extra_env: dict[str, str] | None = None, name: str = MINIO) -> Component:
    settings.minio_data.mkdir(parents=True, exist_ok=True)
    # the secured stack's MinIO serves TLS with its certificate from the stack's CA (security.py)
    tls = ["--certs-dir", str(local_security.ensure(settings).minio_certs_dir)] if settings.secure else []
    return Component(
        name=name,
        ports=[settings.minio_port, settings.minio_console_port],
        argv=[
            str(install.minio_binary(settings)),
            "server",
            str(settings.minio_data),
            "--address",
            settings.minio_endpoint,
            "--console-address",
            f"{settings.host}:{settings.minio_console_port}",
            "--quiet",
            *tls,
        ],
        env={
            "MINIO_ROOT_USER": settings.minio_access_key,
            **_minio_root_password(settings),
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            **(extra_env or {}),
        },
        probe=lambda: minio_bucket_call(settings),
    )


def _minio_root_password(settings: StackSettings) -> dict[str, str]:
    """MinIO's root password: the secured stack's from a file MinIO reads itself, the plain stack's as given."""
    if settings.secure:
        return {"MINIO_ROOT_PASSWORD_FILE": str(local_security.files(settings).minio_root_password_file)}
    return {"MINIO_ROOT_PASSWORD": settings.minio_secret_key}


def minio_secret_key(settings: StackSettings) -> str:
    if settings.secure:
        return local_security.read_secret(local_security.files(settings).minio_root_password_file)
    return settings.minio_secret_key


def minio_client(settings: StackSettings) -> Minio:
    """The stack's MinIO as its root user (over TLS on the secured stack, trusting the stack's CA)."""
    from imagery import storage_access

    return storage_access.minio_client(
        settings.minio_endpoint,
        settings.minio_access_key,
        minio_secret_key(settings),
        secure=settings.secure,
        ca_file=local_security.files(settings).ca if settings.secure else None,
    )


def minio_bucket_call(settings: StackSettings) -> None:
    if not port_open(settings.host, settings.minio_port):
        raise StackError(f"nothing listens on {settings.minio_endpoint} yet")  # spares the client's retry noise
    client = minio_client(settings)
    client.bucket_exists("imagery-stack-check")


# --------------------------------------------------------------------------- Flink


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


def flink_conf_dir(settings: StackSettings) -> Path:
    """A conf dir of our own (the wheel's stays untouched): ports, memory sizes, our Python for workers."""
    conf = settings.state_dir / "flink-conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        src = flink_home() / "conf" / name
        if src.exists():
            (conf / name).write_text(src.read_text())
    # start from the wheel's own config (it carries the --add-opens flags Java 17 needs), then ours on top
    config = _flatten(yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text()) or {})
    config.update(
        {
            "jobmanager.rpc.address": settings.host,
            "jobmanager.bind-host": settings.host,
            "taskmanager.bind-host": settings.host,
            "taskmanager.host": settings.host,
            "rest.address": settings.host,
            "rest.bind-address": settings.host,
            "rest.port": settings.flink_rest_port,
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "2048m",
            "taskmanager.numberOfTaskSlots": 4,
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            # thread mode: PEMJA (in flink-python, on the daemons' classpath: flink_env) loads libpython into the JVM
            # once; loaded again through each job's own class loader, it failed at the second job of a TaskManager (its
            # workaround reads a ClassLoader field Java 17 no longer has: NoSuchFieldException loadedLibraryNames)
            "classloader.parent-first-patterns.additional": "pemja.",
            # Flink's Prometheus reporter (plugins/metrics-prometheus of the wheel): JobManager and TaskManager each
            # take the first free port of the range, as a local MiniCluster job does (streaming/dispatch/metrics.py)
            **reporter_options(),
        }
    )
    (conf / "config.yaml").write_text(yaml.safe_dump(config, default_flow_style=False, width=10_000))
    return conf


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def flink_env(settings: StackSettings) -> dict[str, str]:
    return {
        "FLINK_HOME": str(flink_home()),
        "FLINK_CONF_DIR": str(flink_conf_dir(settings)),
        "FLINK_LOG_DIR": str(settings.logs_dir),
        "FLINK_PID_DIR": str(settings.pids_dir),
        # the wheel keeps flink-python in opt/; thread mode needs it (PEMJA) on the daemons' own classpath, which
        # Flink's scripts extend with HADOOP_CLASSPATH
        "HADOOP_CLASSPATH": os.pathsep.join(str(p) for p in sorted((flink_home() / "opt").glob("flink-python-*.jar"))),
    }


def flink_jobmanager_component(settings: StackSettings) -> Component:
    return Component(
        name=FLINK_JOBMANAGER,
        ports=[settings.flink_rest_port],
        argv=["bash", str(flink_home() / "bin" / "jobmanager.sh"), "start-foreground"],
        env=flink_env(settings),
        probe=lambda: _flink_overview(settings),
    )


def flink_taskmanager_component(settings: StackSettings) -> Component:
    # a job in thread mode runs its Python inside this JVM, which imports what this venv does
    env = {**flink_env(settings), "PYTHONPATH": embedded_python.python_path()}
    return Component(
        name=FLINK_TASKMANAGER,
        ports=[],
        argv=["bash", str(flink_home() / "bin" / "taskmanager.sh"), "start-foreground"],
        env=env,
        probe=lambda: _flink_has_taskmanager(settings),
    )


def _flink_overview(settings: StackSettings) -> dict:
    resp = httpx.get(f"{settings.flink_rest_url}/overview", timeout=2.0)
    resp.raise_for_status()
    return resp.json()


def _flink_has_taskmanager(settings: StackSettings) -> None:
    if _flink_overview(settings).get("slots-total", 0) < 1:
        raise StackError("no Flink TaskManager slot registered yet")


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class Part:
    """One part of the stack as `up`, `down` and `status` know it."""

    name: str
    component: Callable[[StackSettings], Component]  # its command and probe (writing its config first)
    address: Callable[[StackSettings], str]
    note: Callable[[StackSettings], str]
    flink: bool = False  # started by `up --flink` only


def _kafka_note(settings: StackSettings) -> str:
    if not settings.secure:
        return f"Kafka {KAFKA_VERSION}, KRaft; IMAGERY_KAFKA_PORT"
    sec = local_security.files(settings)
    return (
        f"Kafka {KAFKA_VERSION}, SASL_SSL (SCRAM-SHA-512) here and mTLS on {settings.mtls_bootstrap}, ACLs on; "
        f"client files (--kafka-config): {sec.admin_sasl}, {sec.admin_mtls}; CA: {sec.ca}; for a service over "
        f"TLS: TLS_CERT_FILE {sec.service.cert}, TLS_KEY_FILE {sec.service.key}, AUTH_TOKEN_FILE "
        f"{sec.service_token_file}"
    )


PARTS: tuple[Part, ...] = (  # in start order; `down` stops them in the reverse order
    Part(KAFKA, kafka_component, lambda s: s.bootstrap, lambda s: _kafka_note(s)),
    Part(
        MINIO,
        minio_component,
        lambda s: f"{'https' if s.secure else 'http'}://{s.minio_endpoint}",
        lambda s: (
            f"root user {s.minio_access_key}, its secret "
            + (f"in {local_security.files(s).minio_root_password_file}" if s.secure else "IMAGERY_MINIO_SECRET_KEY")
            + "; IMAGERY_MINIO_PORT"
        ),
    ),
    Part(
        FLINK_JOBMANAGER,
        flink_jobmanager_component,
        lambda s: s.flink_rest_url,
        lambda s: "REST + UI; IMAGERY_FLINK_REST_PORT",
        flink=True,
    ),
    Part(
        FLINK_TASKMANAGER,
        flink_taskmanager_component,
        lambda s: "-",
        lambda s: "registers with the JobManager",
        flink=True,
    ),
)


def up(settings: StackSettings, flink: bool = False, log: Callable[[str], None] = print) -> list[str]:
    """Install what is missing, start what is not running; return the names this call started."""
    install.ensure_all(settings)
    started = []
    for part in PARTS:
        if part.flink and not flink:
            continue
        t0 = time.monotonic()
        if start(settings, part.component(settings)):
            started.append(part.name)
            log(f"started {part.name} ({time.monotonic() - t0:.1f}s to ready)")
        else:
            log(f"{part.name} already running")
    return started


def down(settings: StackSettings, names: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    """Stop the parts named (default: all) that run, in the reverse of their start order."""
    order = [part.name for part in reversed(PARTS)]
    # a name that is no part (a second MinIO of a test's) was started after the parts: it stops first
    for name in order if names is None else sorted(names, key=lambda n: order.index(n) if n in order else -1):
        stopped = stop(settings, name)
        if stopped is not None:
            log(f"stopped {name}" + ("" if stopped.clean else f" ({stopped})"))


def status(settings: StackSettings) -> list[dict[str, object]]:
    return [
        {
            "name": part.name,
            "pid": running_pid(settings, part.name),
            "address": part.address(settings),
            "note": part.note(settings),
        }
        for part in PARTS
    ]
