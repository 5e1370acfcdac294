"""A team as the tooling knows it: one entry of deploy/teams.yaml (compose, provisioning, the demo) and the names
derived from it (its bucket, topics, consumer group, MinIO notification target)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from imagery.errors import ToolError
from imagery.repo import DEPLOY_DIR
from schemas import topics

TEAMS_FILE = DEPLOY_DIR / "teams.yaml"


class TeamSpecError(ToolError, ValueError):
    """A team written as TEAM:PARTITIONS:WEIGHTS_FILE could not be read."""


class NoSuchTeam(ToolError, LookupError):
    """deploy/teams.yaml (or the file asked) has no team of that name."""


class TeamNames(BaseModel):
    """A team by its name alone, and the names every part derives from it (schemas.topics defines each): what the
    tools that look a team up need, with no entry in deploy/teams.yaml (`imagery health`, `imagery tail`)."""

    team: str

    @property
    def service(self) -> str:  # compose service names have no '_'
        return self.team.replace("_", "-")

    @property
    def bucket(self) -> str:
        return topics.team_bucket(self.team)

    @property
    def input_topic(self) -> str:
        return topics.input_topic(self.team)

    @property
    def result_topic(self) -> str:
        return topics.result_topic(self.team)

    @property
    def group_id(self) -> str:
        return topics.dispatcher_group(self.team)

    @property
    def job_name(self) -> str:
        """The Flink job name of the team's dispatcher when it is given none (DispatcherConfig.name)."""
        return topics.dispatcher_group(self.team)

    @property
    def events_target_id(self) -> str:
        """The id of the team's MinIO Kafka notification target (MINIO_NOTIFY_KAFKA_*_<ID> in compose.yaml)."""
        return self.team.upper()

    @property
    def events_target(self) -> str:
        """The ARN of the MinIO Kafka target compose.yaml declares for the team."""
        return f"arn:minio:sqs::{self.events_target_id}:kafka"


class Team(TeamNames):
    """One team's entry in deploy/teams.yaml."""

    weights: str = Field(description="the file in ./weights the team's service loads")
    partitions: int = Field(4, ge=1)
    parallelism: int = Field(2, ge=1)
    http_port: int | None = Field(None, ge=1, le=65535, description="where compose publishes the team's service")
    items_per_request: int = Field(8, ge=1)

    @classmethod
    def from_spec(cls, text: str) -> Team:
        """TEAM:PARTITIONS:WEIGHTS_FILE, as compose.yaml's `init` passes a team to `imagery provision`."""
        try:
            team, partitions, weights = text.split(":")
            return cls(team=team, partitions=int(partitions), weights=weights)
        except ValueError as exc:
            raise TeamSpecError(f"{text!r} is not TEAM:PARTITIONS:WEIGHTS_FILE") from exc

    @property
    def spec(self) -> str:
        return f"{self.team}:{self.partitions}:{self.weights}"


def parse_teams(text: str) -> list[Team]:
    return [Team(**entry) for entry in (yaml.safe_load(text) or {}).get("teams") or []]


def load_teams(path: Path = TEAMS_FILE) -> list[Team]:
    return parse_teams(path.read_text())


def team_named(name: str, path: Path = TEAMS_FILE) -> Team:
    for team in load_teams(path):
        if team.team == name:
            return team
    raise NoSuchTeam(f"{path} has no team {name!r}")
