"""Names both sides use (Kafka topics and headers, the dispatcher's group, a team's bucket): the one place
each is defined."""

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
# Set by `imagery dlq replay` on the re-published message: how many times it has been replayed; the first record
# it replays (topic-partition-offset), so a replay keeps that record's message ids; and, for an S3 event with
# several records, the one record the replay is for.
HEADER_REPLAY_COUNT = "__imagery.replay.count"
HEADER_REPLAY_OF = "__imagery.replay.of"
HEADER_REPLAY_RECORD = "__imagery.replay.record"


def input_topic(team: str) -> str:
    return INPUT_TOPIC_PREFIX + team


def result_topic(team: str) -> str:
    return RESULT_TOPIC_PREFIX + team


def dispatcher_group(team: str) -> str:
    """The team's dispatcher: its Kafka consumer group and its Flink job name, by default."""
    return f"http-dispatcher-{team}"


def team_principal(team: str) -> str:
    """The team's principal on a secured Kafka (`User:<this>`): its SCRAM user name, or its certificate's CN."""
    return f"team-{team}"


def team_bucket(team: str) -> str:
    """The team's own bucket (its service reads it and `<bucket>-*` by default): a bucket name has no '_'."""
    return team.replace("_", "-")


def replay_ledger(dlq_topic: str = DLQ_TOPIC) -> str:
    """Which dead letters of `dlq_topic` `imagery dlq replay` has re-published (written with the replays)."""
    return dlq_topic + ".replayed"
