"""The local stack's pure helpers."""

from __future__ import annotations

import uuid

import pytest

from imagery.local import stack
from imagery.local.inference_service import InferenceService
from imagery.local.settings import StackSettings


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    # base64 of a first byte 0xf8..0xfb starts with '-', which kafka-storage's parser takes for an option
    ids = iter([uuid.UUID(bytes=b"\xf8" + b"\x01" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(ids))
    cluster_id = stack.kafka_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22


def test_down_stops_the_parts_in_the_reverse_of_their_start_order(monkeypatch, tmp_path):
    stopped: list[str] = []
    monkeypatch.setattr(stack, "stop", lambda settings, name: stopped.append(name))
    settings = StackSettings(state_dir=tmp_path)
    stack.down(settings, log=lambda _: None)
    assert stopped == [part.name for part in reversed(stack.PARTS)]
    assert [row["name"] for row in stack.status(settings)] == [part.name for part in stack.PARTS]
    stopped.clear()
    stack.down(settings, ["kafka", "minio-notify", "minio"], log=lambda _: None)  # in the order they started
    assert stopped == ["minio-notify", "minio", "kafka"]


def test_the_service_launcher_refuses_a_variable_the_service_does_not_read(tmp_path):
    with pytest.raises(ValueError, match="MAX_BACH_SIZE"):
        InferenceService(StackSettings(state_dir=tmp_path), env={"MAX_BACH_SIZE": "1"})
