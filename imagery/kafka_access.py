"""Who may do what on a secured Kafka: SCRAM users, and the ACLs that confine a team's dispatcher to its own
topics, groups and transactional ids. Made through the admin API as a principal allowed to (a super user).

A team's principal (`User:team-<team>`, schemas.topics.team_principal) may:

| resource | name | pattern | operations |
|---|---|---|---|
| topic | imagery.new.<team> | literal | READ, DESCRIBE |
| group | http-dispatcher-<team> | literal | READ |
| group | http-dispatcher-<team>. | prefixed | READ (more jobs of the team: `http-dispatcher-<team>.<name>`) |
| topic | inference.results.<team> | literal | WRITE, DESCRIBE |
| topic | dlq.inference.http | literal | WRITE, DESCRIBE |
| transactional id | imagery-http-dispatcher-<team>- and -<team>. | prefixed | WRITE, DESCRIBE |

Team names with '-' or '.' are refused here: their prefixes would cover another team's names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from imagery import kafka_io
from imagery.errors import ToolError
from schemas import topics

SCRAM_ITERATIONS = 8192
_TEAM_NAME = re.compile(r"[a-z0-9_]+")


class AccessError(ToolError):
    """A user or an ACL could not be made; the message says which and why."""


def ensure_scram_user(kafka: kafka_io.Target, user: str, password: str, timeout_s: float = 30.0) -> None:
    """USER's SCRAM-SHA-512 credential set to PASSWORD (made, or replaced: a rotation)."""
    client = kafka_io.admin(kafka)  # kept referenced while its futures are awaited
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), password.encode()
    )
    for future in client.alter_user_scram_credentials([upsert], request_timeout=timeout_s).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            raise AccessError(f"could not set the SCRAM credential of {user!r}: {exc.args[0].str()}") from None


def _binding(
    kind: ResourceType, name: str, pattern: ResourcePatternType, principal: str, operation: AclOperation
) -> AclBinding:
    return AclBinding(kind, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def team_acls(team: str, dlq_topic: str = topics.DLQ_TOPIC) -> list[AclBinding]:
    """What TEAM's dispatcher needs, and nothing more (the table above)."""
    if not _TEAM_NAME.fullmatch(team):
        raise AccessError(
            f"team {team!r}: a secured team's name is lower-case letters, digits and '_' (a '-' or '.' "
            "would let its prefixed ACLs cover another team's groups and transactional ids)"
        )
    principal = f"User:{topics.team_principal(team)}"
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    group = topics.dispatcher_group(team)
    grants = [
        (ResourceType.TOPIC, topics.input_topic(team), literal, (AclOperation.READ, AclOperation.DESCRIBE)),
        (ResourceType.GROUP, group, literal, (AclOperation.READ,)),
        (ResourceType.GROUP, f"{group}.", prefixed, (AclOperation.READ,)),
        (ResourceType.TOPIC, topics.result_topic(team), literal, (AclOperation.WRITE, AclOperation.DESCRIBE)),
        (ResourceType.TOPIC, dlq_topic, literal, (AclOperation.WRITE, AclOperation.DESCRIBE)),
        *(
            (
                ResourceType.TRANSACTIONAL_ID,
                f"imagery-{group}{sep}",
                prefixed,
                (AclOperation.WRITE, AclOperation.DESCRIBE),
            )
            for sep in "-."
        ),
    ]
    return [_binding(kind, name, pattern, principal, op) for kind, name, pattern, ops in grants for op in ops]


def topic_writer_acls(user: str, topic_names: Iterable[str]) -> list[AclBinding]:
    """What a producer that writes to TOPIC_NAMES and nothing else needs (WRITE and DESCRIBE on each, literal): the
    user MinIO's bucket notifications write as (compose.secure.yaml), on the teams' input topics."""
    return [
        _binding(ResourceType.TOPIC, name, ResourcePatternType.LITERAL, f"User:{user}", op)
        for name in topic_names
        for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
    ]


def create_acls(kafka: kafka_io.Target, bindings: Iterable[AclBinding], timeout_s: float = 30.0) -> None:
    """Create BINDINGS (an ACL that exists already is left as it is)."""
    client = kafka_io.admin(kafka)
    for binding, future in client.create_acls(list(bindings), request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            raise AccessError(f"could not create the ACL {binding}: {exc.args[0].str()}") from None


def ensure_team_access(
    kafka: kafka_io.Target, team: str, password: str | None, dlq_topic: str = topics.DLQ_TOPIC
) -> None:
    """TEAM's principal with its ACLs; with PASSWORD, also its SCRAM credential (a team on mTLS has none: its
    certificate's CN is its principal)."""
    if password is not None:
        ensure_scram_user(kafka, topics.team_principal(team), password)
    create_acls(kafka, team_acls(team, dlq_topic))
