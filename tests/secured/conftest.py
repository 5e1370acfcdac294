"""The secured stack (`imagery up --secure`) on free ports in a state folder of the session's own, beside the plain
stack the other tests use: Kafka over SASL_SSL (SCRAM-SHA-512) and mTLS with ACLs, MinIO over TLS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagery import kafka_config, kafka_io, provision
from imagery.local import security, stack
from imagery.local.settings import StackSettings
from imagery.process import free_port
from schemas import topics


@pytest.fixture(scope="session")
def secured_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("secured-state"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_mtls_port=free_port(),
        minio_port=free_port(),
        minio_console_port=free_port(),
        secure=True,
    )
    started = stack.up(settings, flink=False, log=lambda _: None)
    yield settings
    stack.down(settings, started, log=lambda _: None)


@pytest.fixture(scope="session")
def stack_security(secured_stack: StackSettings) -> security.StackSecurity:
    return security.ensure(secured_stack)


@pytest.fixture(scope="session")
def admin(secured_stack: StackSettings) -> kafka_io.Connection:
    """The operator (a super user) over SASL_SSL."""
    return stack.kafka_admin(secured_stack)


@dataclass(frozen=True)
class SecuredTeam:
    """A team provisioned on the secured Kafka: its topics, its principal's ACLs and its own client file."""

    name: str
    client_file: Path

    @property
    def input_topic(self) -> str:
        return topics.input_topic(self.name)

    @property
    def result_topic(self) -> str:
        return topics.result_topic(self.name)

    def connection(self, bootstrap: str) -> kafka_io.Connection:
        return kafka_io.Connection(bootstrap, kafka_config.load(self.client_file))


def make_team(
    admin: kafka_io.Connection,
    security_files: security.StackSecurity,
    credentials: Path,
    prefix: str = "fruit",
    partitions: int = 2,
) -> SecuredTeam:
    """A new team `<prefix>_<unique>` (the fruit service reads its bucket, fruit-<unique>), as `imagery provision`
    makes one on a secured Kafka."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    kafka_io.create_topics(admin, [topics.input_topic(name), topics.result_topic(name)], partitions=partitions)
    kafka_io.create_topics(admin, [topics.DLQ_TOPIC], partitions=2)
    client = provision.ensure_team_principal(admin, name, security_files.admin_sasl, credentials)
    return SecuredTeam(name, client)


@pytest.fixture
def new_team(
    admin: kafka_io.Connection, stack_security: security.StackSecurity, tmp_path: Path
) -> Iterator[Callable[..., SecuredTeam]]:
    made: list[SecuredTeam] = []

    def make(prefix: str = "fruit", partitions: int = 2) -> SecuredTeam:
        team = make_team(admin, stack_security, tmp_path / "credentials", prefix, partitions)
        made.append(team)
        return team

    yield make
    kafka_io.delete_topics(admin, [t for team in made for t in (team.input_topic, team.result_topic)])
