"""compose.yaml (with compose.gpu.yaml and deploy/prometheus.yml) from one template and the list of teams:
deploy/compose.yaml.j2 and deploy/teams.yaml. `imagery new-team` adds a team to the list and regenerates;
`imagery compose` regenerates after an edit; a unit test fails when the committed files and the template disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from imagery.local import prometheus
from imagery.local.versions import FLINK_VERSION, KAFKA_VERSION
from imagery.repo import DEPLOY_DIR, REPO_ROOT
from imagery.teams import TEAMS_FILE, Team, load_teams, parse_teams
from schemas import INFER_JSON_ROUTE, READYZ_ROUTE, limits, topics
from streaming.dispatch.metrics import REPORTER_FACTORY

FIRST_HTTP_PORT = 28001
# every Flink container of the stack runs one reporter, so it always gets the range's first port
FLINK_REPORTER_PORT = prometheus.port_range()[0]


@dataclass(frozen=True)
class ComposeFiles:
    teams: Path
    compose: Path
    gpu: Path
    prometheus: Path
    template_dir: Path = DEPLOY_DIR

    @classmethod
    def in_repo(cls, root: Path = REPO_ROOT) -> ComposeFiles:
        return cls(root / TEAMS_FILE.relative_to(REPO_ROOT), root / "compose.yaml", root / "compose.gpu.yaml",
                   root / "deploy" / "prometheus.yml")


def prometheus_config(teams: list[Team]) -> str:
    """The stack's Prometheus: the local one's config (imagery/local/prometheus.py), with each team's service by
    its compose name, and Flink's JobManager and TaskManagers found by DNS (so scaled TaskManagers are scraped)."""
    config = prometheus.config({t.team: [f"{t.service}-inference-http:8000"] for t in teams}, interval_s=15,
                               rule_files=[Path("/etc/prometheus/alerts.yml")])
    for job in config["scrape_configs"]:
        if job["job_name"] == prometheus.FLINK_JOB:
            job.pop("static_configs")
            job["dns_sd_configs"] = [{"names": ["flink-jobmanager", "flink-taskmanager"], "type": "A",
                                      "port": FLINK_REPORTER_PORT}]
    header = "# GENERATED with compose.yaml by `imagery compose` (imagery/compose.py): do not edit\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def render(teams: list[Team], template_dir: Path = DEPLOY_DIR) -> dict[str, str]:
    """{"compose.yaml": ..., "compose.gpu.yaml": ..., "prometheus.yml": ...} for these teams."""
    unpublished = [t.team for t in teams if t.http_port is None]
    if unpublished:
        raise ValueError(f"teams without an http_port (where compose publishes their service): {unpublished}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    context = {
        "teams": teams,
        "slots": sum(t.parallelism for t in teams) or 1,
        "flink_version": FLINK_VERSION,
        "kafka_version": KAFKA_VERSION,
        "dlq_topic": topics.DLQ_TOPIC,
        "max_transaction_ms": limits.KAFKA_MAX_TRANSACTION_MS,
        "reporter_factory": REPORTER_FACTORY,
        "reporter_port": FLINK_REPORTER_PORT,
        "readyz_route": READYZ_ROUTE,
        "infer_json_route": INFER_JSON_ROUTE,
    }
    rendered = {name: env.get_template(f"{name}.j2").render(context) for name in ("compose.yaml", "compose.gpu.yaml")}
    return {**rendered, "prometheus.yml": prometheus_config(teams)}


def write(files: ComposeFiles) -> None:
    rendered = render(load_teams(files.teams), files.template_dir)
    files.compose.write_text(rendered["compose.yaml"])
    files.gpu.write_text(rendered["compose.gpu.yaml"])
    files.prometheus.write_text(rendered["prometheus.yml"])


def add_team(files: ComposeFiles, team: str, weights: str) -> Team:
    """Append `team` to the teams file (the next free host port; the file's comments kept) and regenerate the
    compose files."""
    text = files.teams.read_text()
    teams = parse_teams(text)
    if any(t.team == team for t in teams):
        raise ValueError(f"{files.teams} already has team {team}")
    entry = Team(team=team, weights=weights,
                        http_port=max((t.http_port for t in teams if t.http_port), default=FIRST_HTTP_PORT - 1) + 1)
    block = yaml.safe_dump([entry.model_dump()], sort_keys=False)
    files.teams.write_text(text + ("" if text.endswith("\n") else "\n") + block if teams
                           else text + "teams:\n" + block)
    write(files)
    return entry
