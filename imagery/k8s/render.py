"""A team's Kubernetes objects, rendered by Helm from deploy/helm/ and the team's entry of deploy/teams.yaml.

Two charts: `imagery-team` (one release per team: its FlinkDeployment, its inference Deployment, Service,
PodDisruptionBudget, HorizontalPodAutoscaler, monitors and the JobManager's RBAC) and `imagery-platform` (one
release per cluster: the PrometheusRule of ops/prometheus/alerts.yml and the Grafana dashboard, which every team
shares; per team they would be evaluated once per team). Helm rather than Kustomize: a team is a set of parameters
(its name, weights, partitions, parallelism), which Helm's values express and Kustomize's overlays would copy per
team; and a release gives operators `helm upgrade`, `helm rollback` and an uninstall that removes what it made.

teams.yaml stays the one place a team is declared: `team_values` turns an entry into the chart's team values, and
a cluster's own settings (images, Kafka, MinIO, secrets) come from the platform team's values files on top.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from imagery.errors import ToolError
from imagery.local import install
from imagery.local.settings import StackSettings
from imagery.repo import DEPLOY_DIR
from imagery.teams import Team

TEAM_CHART = DEPLOY_DIR / "helm" / "imagery-team"
PLATFORM_CHART = DEPLOY_DIR / "helm" / "imagery-platform"
PLATFORM_RELEASE = "imagery-platform"
DEFAULT_NAMESPACE = "imagery"


class RenderError(ToolError):
    """Helm refused the chart or its values; the message is Helm's."""


def release_name(team: Team) -> str:
    """The team's Helm release (a DNS label: no '_')."""
    return f"imagery-{team.service}"


def team_values(team: Team) -> dict[str, Any]:
    """The chart's values that deploy/teams.yaml decides for the team."""
    return {
        "team": team.team,
        "weights": team.weights,
        "partitions": team.partitions,
        "parallelism": team.parallelism,
        "itemsPerRequest": team.items_per_request,
        "inputTopic": team.input_topic,
        "groupId": team.group_id,
    }


def helm() -> Path:
    """The pinned Helm, built into the cache by `make setup` (imagery/local/install.py)."""
    binary = install.helm_binary(StackSettings())
    if not binary.exists():
        raise RenderError(f"Helm is not installed at {binary}: run `make setup` (or `imagery setup`)")
    return binary


def run_helm(
    args: Sequence[str | Path], *, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Helm, its own INFO lines (charts with linked files log one per link) kept out of the error text."""
    done = subprocess.run([str(helm()), *map(str, args)], input=stdin, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        errors = "\n".join(line for line in done.stderr.splitlines() if "level=INFO" not in line)
        raise RenderError(f"helm {args[0]} failed: {errors.strip()}")
    return done


def values_args(values_files: Iterable[Path], values: dict[str, Any] | None = None) -> list[str]:
    """`-f FILE` for each file, then the given values last (they win), through stdin."""
    args = [arg for path in values_files for arg in ("-f", str(path))]
    return [*args, "-f", "-"] if values else args


def template(
    chart: Path, release: str, namespace: str, values_files: Iterable[Path] = (), values: dict[str, Any] | None = None
) -> str:
    """`helm template` of one release: the objects as `helm install` would create them."""
    done = run_helm(
        ["template", release, chart, "--namespace", namespace, *values_args(values_files, values)],
        stdin=yaml.safe_dump(values) if values else None,
    )
    return done.stdout


def release_values(team: Team, secured: bool = False) -> dict[str, Any]:
    """What `imagery k8s render` gives the team's release over the cluster's values files: its teams.yaml entry,
    and with SECURED the names of its Secrets (imagery/k8s/secrets.py)."""
    from imagery.k8s.secrets import secured_values

    return {**team_values(team), **(secured_values(team) if secured else {})}


def render_team(
    team: Team, namespace: str = DEFAULT_NAMESPACE, values_files: Iterable[Path] = (), secured: bool = False
) -> str:
    # the cluster's files first, the team's entry last: teams.yaml decides what it declares
    return template(TEAM_CHART, release_name(team), namespace, values_files, release_values(team, secured))


def render_platform(namespace: str = DEFAULT_NAMESPACE, values_files: Iterable[Path] = ()) -> str:
    return template(PLATFORM_CHART, PLATFORM_RELEASE, namespace, values_files)


def render(
    teams: Iterable[Team],
    namespace: str = DEFAULT_NAMESPACE,
    values_files: Sequence[Path] = (),
    platform: bool = True,
    secured: bool = False,
) -> str:
    """Every object of the platform release (unless platform=False) and of each team's, as one YAML stream."""
    parts = [render_platform(namespace)] if platform else []
    parts += [render_team(team, namespace, values_files, secured) for team in teams]
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts)


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]
