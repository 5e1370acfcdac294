"""What a team needs before its service and job start, made idempotently (the compose stack's `init`):
its weights file is there, its topics exist with their partitions, its bucket exists and sends the
s3:ObjectCreated events of uploads to its input topic, so that an upload alone starts the flow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from minio import Minio
from minio.error import S3Error
from minio.minioadmin import MinioAdmin

from imagery import kafka_access, kafka_io, storage_access
from imagery.errors import ToolError
from imagery.kafka_config import jaas_line, jaas_options, write_properties
from imagery.teams import Team
from schemas import topics
from streaming.dispatch.kafka_properties import read_properties


class ProvisionError(ToolError):
    """A team cannot start; the message says what is missing and how to fix it."""


def check_weights(weights_dir: Path, teams: list[Team]) -> None:
    missing = [t for t in teams if not (weights_dir / t.weights).is_file()]
    if missing:
        lines = [f"  weights/{t.weights} (team {t.team})" for t in missing]
        raise ProvisionError(
            "missing weights, so these teams' services cannot start:\n" + "\n".join(lines) + "\n"
            "Put each team's file in ./weights (the fruit team's: `make weights`), then `docker compose up -d`."
        )
    # init runs as a user of its own, as the services do: what it cannot read, they cannot either
    unreadable = [t for t in teams if not os.access(weights_dir / t.weights, os.R_OK)]
    if unreadable:
        raise ProvisionError(
            "the services cannot read "
            + ", ".join(f"weights/{t.weights}" for t in unreadable)
            + ": make them readable by others (chmod a+r)"
        )


def ensure_topics(bootstrap: kafka_io.Target, teams: list[Team], dlq_partitions: int = 4) -> list[str]:
    for t in teams:
        kafka_io.create_topics(bootstrap, [topics.input_topic(t.team), topics.result_topic(t.team)], t.partitions)
    kafka_io.create_topics(bootstrap, [topics.DLQ_TOPIC, topics.replay_ledger()], dlq_partitions)
    return [name for t in teams for name in (topics.input_topic(t.team), topics.result_topic(t.team))]


class EventsTargetMissing(ProvisionError):
    """MinIO has no Kafka notification target for a team: its bucket is made, but its uploads start nothing."""


def events_target_missing(team: Team) -> EventsTargetMissing:
    """What is missing for TEAM's uploads to start the flow, and how to add it."""
    name = team.events_target_id
    return EventsTargetMissing(
        f"bucket {team.bucket} exists, but its uploads start nothing: MinIO has no Kafka notification target "
        f"{team.events_target} to send their events to {team.input_topic}. Give MinIO these variables and restart "
        f"it: MINIO_NOTIFY_KAFKA_ENABLE_{name}=on, MINIO_NOTIFY_KAFKA_BROKERS_{name}=<Kafka's host:port as MinIO "
        f"reaches it>, MINIO_NOTIFY_KAFKA_TOPIC_{name}={team.input_topic} (compose.yaml sets them for the teams in "
        f"deploy/teams.yaml; on the local stack, set them for `imagery up`); then run `imagery provision` again. "
        f"Until then, the flow starts only from messages (`imagery produce`)."
    )


def _unknown_target(exc: S3Error) -> bool:
    """Whether MinIO refused a bucket notification because it has no target of that ARN."""
    return exc.code == "InvalidArgument" and "arn" in (exc.message or "").lower()


def ensure_bucket_events(client: Minio, team: Team) -> None:
    """The team's bucket, with its uploads' events going to the team's input topic. Raises EventsTargetMissing
    (the bucket made) when MinIO has no Kafka notification target for the team."""
    from minio.notificationconfig import NotificationConfig, QueueConfig

    if not client.bucket_exists(team.bucket):
        client.make_bucket(team.bucket)
    config = NotificationConfig(
        queue_config_list=[
            QueueConfig(["s3:ObjectCreated:*"], config_id=f"imagery-{team.team}", queue=team.events_target)
        ]
    )
    try:
        client.set_bucket_notification(team.bucket, config)
    except S3Error as exc:
        if _unknown_target(exc):
            raise events_target_missing(team) from None
        raise


def secured(kafka: kafka_io.Target) -> bool:
    """Whether KAFKA is reached with authentication (so its teams need principals and ACLs)."""
    return kafka_io.connection(kafka).settings.get("security.protocol", "PLAINTEXT").upper() != "PLAINTEXT"


def team_client_file(credentials_dir: Path, team: str) -> Path:
    return credentials_dir / f"{team}.kafka.properties"


def ensure_team_principal(
    kafka: kafka_io.Target, team: str, operator_file: Path, credentials_dir: Path, dlq_topic: str = topics.DLQ_TOPIC
) -> Path:
    """TEAM's principal on a secured Kafka and its ACLs (imagery/kafka_access.py), made as the operator of
    OPERATOR_FILE; returns the team's own client properties file, written (mode 0600) in CREDENTIALS_DIR.

    With SCRAM (the operator's file has a `sasl.jaas.config`), the team gets a SCRAM user with a new random password,
    and its file is the operator's with the team's credentials in place of the operator's. With mTLS, the team's
    principal is its certificate's CN (`team-<team>`), issued by the estate's CA: its file is the operator's with
    the team's key store to fill in, and only the ACLs are made here."""
    import secrets

    entries = read_properties(operator_file)
    client = team_client_file(credentials_dir, team)
    if client.exists():  # made before (or handed over, as compose's secrets are): applied as it is
        existing = read_properties(client)
        password = (
            jaas_options(existing["sasl.jaas.config"])[1].get("password") if "sasl.jaas.config" in existing else None
        )
        kafka_access.ensure_team_access(kafka, team, password, dlq_topic)
        return client
    principal = topics.team_principal(team)
    if "sasl.jaas.config" in entries:
        module, _ = jaas_options(entries["sasl.jaas.config"])
        password = secrets.token_urlsafe(24)
        kafka_access.ensure_team_access(kafka, team, password, dlq_topic)
        entries["sasl.jaas.config"] = jaas_line(module, principal, password)
    else:
        kafka_access.ensure_team_access(kafka, team, None, dlq_topic)
        entries["ssl.keystore.location"] = str(credentials_dir / f"{principal}.pem")
    write_properties(client, entries)
    return client


def team_minio_secret_file(credentials_dir: Path, team: str) -> Path:
    return credentials_dir / f"{team}.minio.secret"


def team_minio_access_key(team: str) -> str:
    return f"{topics.team_bucket(team)}-reader"


def ensure_team_storage_reader(admin: MinioAdmin, team: str, credentials_dir: Path) -> tuple[str, Path]:
    """TEAM's own MinIO user, which a policy lets read the team's buckets alone (imagery/storage_access.py), its
    secret key made once and kept in CREDENTIALS_DIR (mode 0600: the team's service reads it as
    MINIO_SECRET_KEY_FILE). Returns the access key and the secret's file."""
    import secrets

    from imagery.kafka_config import write_secret

    secret = team_minio_secret_file(credentials_dir, team)
    if not secret.exists():
        write_secret(secret, secrets.token_urlsafe(24))
    access_key = team_minio_access_key(team)
    storage_access.ensure_team_reader(admin, team, access_key, secret.read_text().strip())
    return access_key, secret


def provision(
    bootstrap: kafka_io.Target,
    minio_client: Minio,
    weights_dir: Path | None,
    teams: list[Team],
    log: Callable[[str], object] = print,
) -> None:
    if weights_dir is not None:
        check_weights(weights_dir, teams)
        log(f"weights: {', '.join(t.weights for t in teams)} present")
    made = ensure_topics(bootstrap, teams)
    log(f"topics: {', '.join(made)}, {topics.DLQ_TOPIC} exist")
    for t in teams:
        ensure_bucket_events(minio_client, t)
        log(f"bucket {t.bucket}: uploads go to {topics.input_topic(t.team)}")
