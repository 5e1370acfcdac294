"""What a librdkafka client says when a Kafka refuses it: for the secured stack's tests and the secured compose
stack's."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def refusal(bootstrap: str, settings: dict[str, str], expect: str, deadline_s: float = 20.0) -> str:
    """What librdkafka reports when a client with SETTINGS asks BOOTSTRAP for its metadata (which must fail), read
    until it says EXPECT or the deadline passes. (Its logs and errors reach their callbacks only from poll, as they
    come: the client keeps trying to connect, and says why each try failed.)"""
    said: dict[str, None] = {}  # what the client reported, each once, in order

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said[record.getMessage()] = None

    logger = logging.getLogger(f"refusal-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # librdkafka's levels map to logging's: a disconnection is INFO
    logger.addHandler(Collect())
    # confluent-kafka's stubs type a config's values as str | int | float; the client also takes a `logger` object and
    # callbacks such as `error_cb`
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **settings,
        "logger": logger,
        "log_level": 6,
        "error_cb": lambda error: said.setdefault(error.str()),
    }
    client = AdminClient(config)
    with pytest.raises(KafkaException) as failed:
        client.list_topics(timeout=8)
    said[str(failed.value)] = None
    end = time.monotonic() + deadline_s
    while expect not in " | ".join(said) and time.monotonic() < end:
        client.poll(0.2)
    return " | ".join(said)
