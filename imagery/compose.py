"""compose.yaml (with compose.gpu.yaml and deploy/prometheus.yml) from one template and the list of teams:
deploy/compose.yaml.j2 and deploy/teams.yaml. `imagery new-team` adds a team to the list and regenerates;
`imagery compose` regenerates after an edit; a unit test fails when the committed files and the template disagree.

The secured variant is a second file on top of compose.yaml, from its own template: compose.secure.yaml (from
deploy/compose.secure.yaml.j2, with deploy/prometheus.secure.yml), whose secrets `imagery compose-secrets` makes
(imagery/compose_secrets.py): `docker compose -f compose.yaml -f compose.secure.yaml up -d --build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from imagery import compose_secrets
from imagery.errors import ToolError
from imagery.local import prometheus, security
from imagery.local.versions import FLINK_VERSION, KAFKA_VERSION
from imagery.repo import DEPLOY_DIR, REPO_ROOT
from imagery.teams import TEAMS_FILE, Team, load_teams, parse_teams
from schemas import INFER_JSON_ROUTE, READYZ_ROUTE, limits, topics
from streaming.dispatch.metrics import REPORTER_FACTORY

FIRST_HTTP_PORT = 28001
# where compose.yaml's services find MinIO's secret key (a compose config; the secured variant mounts another file)
MINIO_SECRET_KEY_FILE = "/etc/imagery/minio-secret-key"
# every Flink container of the stack runs one reporter, so it always gets the range's first port
FLINK_REPORTER_PORT = prometheus.port_range()[0]


class ComposeError(ToolError, ValueError):
    """The teams file cannot make the compose files as asked (a team without its http_port, a team added twice)."""


@dataclass(frozen=True)
class ComposeFiles:
    teams: Path
    compose: Path
    gpu: Path
    prometheus: Path
    template_dir: Path = DEPLOY_DIR

    @classmethod
    def in_repo(cls, root: Path = REPO_ROOT) -> ComposeFiles:
        return cls(
            root / TEAMS_FILE.relative_to(REPO_ROOT),
            root / "compose.yaml",
            root / "compose.gpu.yaml",
            root / "deploy" / "prometheus.yml",
        )

    @property
    def secure(self) -> Path:
        """The secured variant, beside compose.yaml (its secrets' paths are relative to that folder)."""
        return self.compose.with_name("compose.secure.yaml")

    @property
    def secure_prometheus(self) -> Path:
        return self.prometheus.with_name("prometheus.secure.yml")


def prometheus_config(teams: list[Team], ca_file: str | None = None) -> str:
    """The stack's Prometheus: the local one's config (imagery/local/prometheus.py), with each team's service by
    its compose name, and Flink's JobManager and TaskManagers found by DNS (so scaled TaskManagers are scraped).
    With CA_FILE (the secured variant), the services are scraped over https, trusting that CA."""
    config = prometheus.config(
        {t.team: [f"{t.service}-inference-http:8000"] for t in teams},
        interval_s=15,
        rule_files=[Path("/etc/prometheus/alerts.yml")],
    )
    for job in config["scrape_configs"]:
        if job["job_name"] == prometheus.FLINK_JOB:
            job.pop("static_configs")
            job["dns_sd_configs"] = [
                {"names": ["flink-jobmanager", "flink-taskmanager"], "type": "A", "port": FLINK_REPORTER_PORT}
            ]
        if job["job_name"] == prometheus.SERVICE_JOB and ca_file is not None:
            job.update({"scheme": "https", "tls_config": {"ca_file": ca_file}})
    header = (
        f"# GENERATED with {'compose.secure.yaml' if ca_file else 'compose.yaml'} by `imagery compose` "
        "(imagery/compose.py): do not edit\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


# The secured broker's listeners: containers on INTERNAL (kafka:9092) and the host on EXTERNAL (published), both
# SASL_SSL with SCRAM; ADMIN (kafka:9094) takes a client certificate (mTLS): the admin before its SCRAM credential
# exists, and the broker itself (inter-broker traffic, its health check); the controller over SSL. (Not named
# SASL_SSL and SSL: the official image reads a listener named so as asking for its own keystore variables.)
SECURE_LISTENERS = {
    "INTERNAL": ("SASL_SSL", 9092),
    "CONTROLLER": ("SSL", 9093),
    "ADMIN": ("SSL", 9094),
    "EXTERNAL": ("SASL_SSL", 19092),
}
EXTERNAL_ADDRESS = "${KAFKA_EXTERNAL_HOST:-localhost}:${KAFKA_HOST_PORT:-29092}"  # compose's variables


def secure_broker_properties() -> dict[str, str]:
    """server.properties entries of compose.secure.yaml's broker, over compose.yaml's: the secured local broker's
    (imagery/local/security.py `broker_properties`: SASL_SSL with SCRAM-SHA-512, mTLS, an SSL controller, the
    StandardAuthorizer, the broker and the admin as super users, a certificate's CN as its principal), with
    compose's listeners and the files of compose_secrets at /run/secrets."""
    sasl = [name for name, (protocol, _) in SECURE_LISTENERS.items() if protocol == "SASL_SSL"]
    mtls = [name for name, (protocol, _) in SECURE_LISTENERS.items() if protocol == "SSL"]
    return {
        "listeners": ",".join(f"{name}://:{port}" for name, (_, port) in SECURE_LISTENERS.items()),
        "advertised.listeners": f"INTERNAL://kafka:{SECURE_LISTENERS['INTERNAL'][1]},"
        f"ADMIN://kafka:{SECURE_LISTENERS['ADMIN'][1]},EXTERNAL://{EXTERNAL_ADDRESS}",
        "listener.security.protocol.map": ",".join(
            f"{name}:{protocol}" for name, (protocol, _) in SECURE_LISTENERS.items()
        ),
        "inter.broker.listener.name": "ADMIN",
        "sasl.enabled.mechanisms": security.SCRAM_MECHANISM,
        **{
            f"listener.name.{name.lower()}.{security.SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                f"{security.SCRAM_LOGIN_MODULE} required;"
            )
            for name in sasl
        },
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": compose_secrets.container_path(compose_secrets.BROKER_KEYSTORE),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": compose_secrets.container_path(compose_secrets.CA),
        **{f"listener.name.{name.lower()}.ssl.client.auth": "required" for name in mtls},
        "ssl.principal.mapping.rules": security.PRINCIPAL_MAPPING,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{security.BROKER};User:{security.ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def kafka_variable(name: str) -> str:
    """A server.properties name as the Kafka image's variable: `_` is `__`, `-` is `___`, `.` is `_`
    (deploy/local-images/kafka-run.sh reads them back as the official image does)."""
    return "KAFKA_" + name.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def secure_kafka_environment() -> dict[str, str]:
    """`secure_broker_properties` as compose.secure.yaml's KAFKA_* variables (a literal `$` doubled for compose;
    the advertised address keeps its compose variables)."""
    return {
        kafka_variable(name): value if name == "advertised.listeners" else value.replace("$", "$$")
        for name, value in secure_broker_properties().items()
    }


def render(teams: list[Team], template_dir: Path = DEPLOY_DIR) -> dict[str, str]:
    """{"compose.yaml": ..., "compose.gpu.yaml": ..., "compose.secure.yaml": ..., "prometheus.yml": ...,
    "prometheus.secure.yml": ...} for these teams."""
    from imagery.provision import team_minio_access_key

    unpublished = [t.team for t in teams if t.http_port is None]
    if unpublished:
        raise ComposeError(f"teams without an http_port (where compose publishes their service): {unpublished}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
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
        "minio_secret_key_file": MINIO_SECRET_KEY_FILE,
        # the secured variant
        "kafka_environment": secure_kafka_environment(),
        "minio_readers": {t.team: team_minio_access_key(t.team) for t in teams},
        "events_user": compose_secrets.EVENTS_USER,
        "scram": security.SCRAM_MECHANISM,
    }
    rendered = {
        name: env.get_template(f"{name}.j2").render(context)
        for name in ("compose.yaml", "compose.gpu.yaml", "compose.secure.yaml")
    }
    return {
        **rendered,
        "prometheus.yml": prometheus_config(teams),
        "prometheus.secure.yml": prometheus_config(teams, compose_secrets.container_path(compose_secrets.CA)),
    }


def write(files: ComposeFiles) -> None:
    rendered = render(load_teams(files.teams), files.template_dir)
    files.compose.write_text(rendered["compose.yaml"])
    files.gpu.write_text(rendered["compose.gpu.yaml"])
    files.secure.write_text(rendered["compose.secure.yaml"])
    files.prometheus.write_text(rendered["prometheus.yml"])
    files.secure_prometheus.write_text(rendered["prometheus.secure.yml"])


def add_team(files: ComposeFiles, team: str, weights: str) -> Team:
    """Append `team` to the teams file (the next free host port; the file's comments kept) and regenerate the
    compose files."""
    text = files.teams.read_text()
    teams = parse_teams(text)
    if any(t.team == team for t in teams):
        raise ComposeError(f"{files.teams} already has team {team}")
    entry = Team(
        team=team,
        weights=weights,
        http_port=max((t.http_port for t in teams if t.http_port), default=FIRST_HTTP_PORT - 1) + 1,
    )
    block = yaml.safe_dump([entry.model_dump()], sort_keys=False)
    files.teams.write_text(text + ("" if text.endswith("\n") else "\n") + block if teams else text + "teams:\n" + block)
    write(files)
    return entry
