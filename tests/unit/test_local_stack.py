"""The local stack's pure helpers."""

from __future__ import annotations

import uuid

from imagery.local import stack


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    # base64 of a first byte 0xf8..0xfb starts with '-', which kafka-storage's parser takes for an option
    ids = iter([uuid.UUID(bytes=b"\xf8" + b"\x01" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(ids))
    cluster_id = stack.kafka_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
