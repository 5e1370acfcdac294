"""The real local stack: Kafka and MinIO answer, and `imagery up/status/down` leaves nothing behind."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import pytest
from minio.error import S3Error

from imagery import kafka_io
from imagery.local import stack
from imagery.local.settings import StackSettings
from imagery.process import free_port, port_open

pytestmark = pytest.mark.integration


def test_kafka_produce_consume_round_trip(bootstrap, new_topic):
    topic = new_topic("roundtrip", partitions=3)
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(30)]
    kafka_io.produce(bootstrap, topic, sent, headers=[("h", b"1")])
    got = kafka_io.read_topic(bootstrap, topic, until=len(sent), timeout_s=30)
    assert sorted((r.key, r.value) for r in got) == sorted(sent)
    assert {r.partition for r in got} <= {0, 1, 2}
    assert all(r.headers == {"h": b"1"} for r in got)


def test_minio_put_get_and_missing_object(minio, bucket):
    body = os.urandom(4096)
    minio.put_object(bucket, "dir/a.bin", io.BytesIO(body), len(body))
    resp = minio.get_object(bucket, "dir/a.bin")
    try:
        assert resp.read() == body
    finally:
        resp.close()
        resp.release_conn()
    with pytest.raises(S3Error) as err:
        minio.stat_object(bucket, "dir/missing.bin")
    assert err.value.code == "NoSuchKey"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imagery.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_up_status_down_leaves_no_process(tmp_path, stack_settings):
    """A second, separate stack (own ports, own state folder) goes up, reports itself, and goes away whole."""
    ports = {
        "KAFKA_PORT": free_port(),
        "KAFKA_CONTROLLER_PORT": free_port(),
        "MINIO_PORT": free_port(),
        "MINIO_CONSOLE_PORT": free_port(),
    }
    env = {
        **os.environ,
        "COLUMNS": "300",
        "IMAGERY_STATE_DIR": str(tmp_path / "state"),
        **{f"IMAGERY_{k}": str(v) for k, v in ports.items()},
    }
    up = _cli(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    settings = StackSettings(
        state_dir=tmp_path / "state",
        kafka_port=ports["KAFKA_PORT"],
        kafka_controller_port=ports["KAFKA_CONTROLLER_PORT"],
        minio_port=ports["MINIO_PORT"],
        minio_console_port=ports["MINIO_CONSOLE_PORT"],
    )
    running = [stack.running_pid(settings, n) for n in ("kafka", "minio")]
    pids = [pid for pid in running if pid]
    assert pids == running, running
    status = _cli(env, "status")
    assert status.returncode == 0
    assert f"127.0.0.1:{ports['KAFKA_PORT']}" in status.stdout and "running" in status.stdout
    stack.kafka_round_trip(settings.bootstrap)

    down = _cli(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not port_open("127.0.0.1", ports["KAFKA_PORT"])
    assert "stopped" in _cli(env, "status").stdout


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **os.environ,
            "COLUMNS": "300",
            "IMAGERY_STATE_DIR": str(tmp_path / "state"),
            "IMAGERY_KAFKA_PORT": str(port),
            "IMAGERY_KAFKA_CONTROLLER_PORT": str(free_port()),
        }
        result = _cli(env, "up")
    assert result.returncode == 1
    # on stderr, as every error of the CLI (`error: <message>`, one line)
    assert f"port {port} (kafka)" in result.stderr and "already in use" in result.stderr
