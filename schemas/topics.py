"""Kafka topic and header names: the one place each is defined."""

from __future__ import annotations

DLQ_TOPIC = "dlq.inference.http"
INPUT_TOPIC_PREFIX = "imagery.new."
RESULT_TOPIC_PREFIX = "inference.results."

# DLQ headers, named like Kafka Connect's `__connect.errors.*` so existing tooling can filter on them.
HEADER_PREFIX = "__imagery.errors."
HEADER_STAGE = HEADER_PREFIX + "stage"
HEADER_TYPE = HEADER_PREFIX + "exception.class.name"
HEADER_MESSAGE = HEADER_PREFIX + "exception.message"
HEADER_HTTP_STATUS = HEADER_PREFIX + "http.status"
HEADER_RETRYABLE = HEADER_PREFIX + "retryable"
HEADER_ATTEMPTS = HEADER_PREFIX + "attempts"
HEADER_TEAM = HEADER_PREFIX + "team"
HEADER_TOPIC = HEADER_PREFIX + "topic"
HEADER_PARTITION = HEADER_PREFIX + "partition"
HEADER_OFFSET = HEADER_PREFIX + "offset"
HEADER_DISPATCHER = HEADER_PREFIX + "dispatcher"
# Set by `imagery dlq replay` on the re-published message: how many times it has been replayed.
HEADER_REPLAY_COUNT = "__imagery.replay.count"


def input_topic(team: str) -> str:
    return INPUT_TOPIC_PREFIX + team


def result_topic(team: str) -> str:
    return RESULT_TOPIC_PREFIX + team
