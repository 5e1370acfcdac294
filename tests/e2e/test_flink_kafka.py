"""A real PyFlink job on the MiniCluster reads Kafka through KafkaSource and writes through KafkaSink."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagery import kafka_io
from imagery.local import install

pytestmark = pytest.mark.e2e


def test_pyflink_kafka_source_to_kafka_sink(bootstrap, new_topic, stack_settings, tmp_path):
    source, sink = new_topic("flink-in"), new_topic("flink-out")
    words = [f"word-{i}" for i in range(20)]
    kafka_io.produce(bootstrap, source, [w.encode() for w in words])
    jar = install.connector_jars(stack_settings)[0]
    job = Path(__file__).parent / "jobs" / "kafka_passthrough.py"
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, str(job), bootstrap, source, sink, jar.as_uri()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = kafka_io.read_topic(bootstrap, sink, until=len(words), timeout_s=30)
    assert sorted((r.value or b"").decode() for r in got) == sorted(w.upper() for w in words)  # no value: no word
