"""What a team needs before its service and job start, made idempotently (the compose stack's `init`):
its weights file is there, its topics exist with their partitions, its bucket exists and sends the
s3:ObjectCreated events of uploads to its input topic, so that an upload alone starts the flow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from minio import Minio

from imagery import kafka_io
from imagery.teams import Team
from schemas import topics


class ProvisionError(RuntimeError):
    """A team cannot start; the message says what is missing and how to fix it."""


def check_weights(weights_dir: Path, teams: list[Team]) -> None:
    missing = [t for t in teams if not (weights_dir / t.weights).is_file()]
    if missing:
        lines = [f"  weights/{t.weights} (team {t.team})" for t in missing]
        raise ProvisionError(
            "missing weights, so these teams' services cannot start:\n" + "\n".join(lines) + "\n"
            "Put each team's file in ./weights (the fruit team's: `make weights`), then `docker compose up -d`.")
    # init runs as a user of its own, as the services do: what it cannot read, they cannot either
    unreadable = [t for t in teams if not os.access(weights_dir / t.weights, os.R_OK)]
    if unreadable:
        raise ProvisionError("the services cannot read " + ", ".join(f"weights/{t.weights}" for t in unreadable)
                             + ": make them readable by others (chmod a+r)")


def ensure_topics(bootstrap: str, teams: list[Team], dlq_partitions: int = 4) -> list[str]:
    for t in teams:
        kafka_io.create_topics(bootstrap, [topics.input_topic(t.team), topics.result_topic(t.team)], t.partitions)
    kafka_io.create_topics(bootstrap, [topics.DLQ_TOPIC, topics.replay_ledger()], dlq_partitions)
    return [name for t in teams for name in (topics.input_topic(t.team), topics.result_topic(t.team))]


def ensure_bucket_events(client: Minio, team: Team) -> None:
    """The team's bucket, with its uploads' events going to the team's input topic."""
    from minio.notificationconfig import NotificationConfig, QueueConfig

    if not client.bucket_exists(team.bucket):
        client.make_bucket(team.bucket)
    config = NotificationConfig(queue_config_list=[
        QueueConfig(["s3:ObjectCreated:*"], config_id=f"imagery-{team.team}", queue=team.events_target)])
    client.set_bucket_notification(team.bucket, config)


def provision(bootstrap: str, minio_client: Minio, weights_dir: Path | None, teams: list[Team],
              log: Callable[[str], object] = print) -> None:
    if weights_dir is not None:
        check_weights(weights_dir, teams)
        log(f"weights: {', '.join(t.weights for t in teams)} present")
    made = ensure_topics(bootstrap, teams)
    log(f"topics: {', '.join(made)}, {topics.DLQ_TOPIC} exist")
    for t in teams:
        ensure_bucket_events(minio_client, t)
        log(f"bucket {t.bucket}: uploads go to {topics.input_topic(t.team)}")
