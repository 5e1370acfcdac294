"""The secured compose variant without Docker: compose.secure.yaml renders for the teams, every secret a service
uses is declared and mounted where it is read, no secret value is in a rendered file, the committed files are the
template's, and `imagery compose-secrets` makes its files once, with the modes the containers' users need.
(tests/compose/test_compose_secure.py runs it on a real Docker engine.)"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml

from imagery import compose, compose_secrets, kafka_config
from imagery.local import security
from imagery.local.certs import CertFiles
from imagery.local.settings import StackSettings
from imagery.teams import Team
from services.inference_http.settings import checked_service_environment
from streaming.dispatch.kafka_properties import read_properties

SECRET_PATH = re.compile(r"/run/secrets/([\w.-]+)")


class Reset:
    """Compose's `!reset` (the key is removed from what the files below set)."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML with compose's merge tags."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load(text: str) -> dict:
    return yaml.load(text, Loader=ComposeLoader)  # noqa: S506 (a SafeLoader with one more tag)


def repo_teams() -> list[Team]:
    return compose.load_teams(compose.ComposeFiles.in_repo().teams)


@pytest.fixture(scope="module")
def teams() -> list[Team]:
    """The repository's teams, and one more whose name has a '_' (its service name has a '-')."""
    return [*repo_teams(), Team(team="orchard_west", weights="orchard_west_best.pt", http_port=28099)]


@pytest.fixture(scope="module")
def rendered(teams) -> dict[str, str]:
    return compose.render(teams)


@pytest.fixture(scope="module")
def secured(rendered) -> dict:
    return load(rendered["compose.secure.yaml"])


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory, teams) -> Path:
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    compose_secrets.make(folder, teams)
    return folder


def mounted(spec: dict) -> dict[str, str]:
    """A service's secrets: where each is in the container -> its source."""
    out = {}
    for entry in spec.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return out


def strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_secure_overlay_renders_every_team(secured, teams):
    services, declared = secured["services"], secured["secrets"]
    init = "\n".join(services["init"]["command"])
    for t in teams:
        svc, job = services[f"{t.service}-inference-http"], services[f"flink-dispatcher-{t.service}"]
        assert svc["environment"]["MINIO_ACCESS_KEY"] == f"{t.bucket}-reader"  # provision's name for its user
        assert svc["environment"]["MINIO_SECURE"] == "1" and "MINIO_SECRET_KEY" not in svc["environment"]
        assert svc["environment"]["AUTH_TOKEN_FILE"] == f"/run/secrets/{t.team}.token"
        assert "https://localhost:8000" in svc["healthcheck"]["test"][-1]
        assert job["environment"]["HTTP_URL"].startswith(f"https://{t.service}-inference-http:8000/")
        assert job["environment"]["KAFKA_CONFIG_FILE"] == f"/run/secrets/{t.team}.kafka.properties"
        assert "DELIVERY_GUARANTEE" not in job["environment"]  # as compose.yaml: the dispatcher's default
        assert {f"{t.team}.token", f"{t.team}.kafka.properties", f"{t.team}.minio.secret"} <= set(declared)
        assert f" {t.spec}" in init
        target = t.events_target_id
        assert services["minio"]["environment"][f"MINIO_NOTIFY_KAFKA_SASL_USERNAME_{target}"] == "minio-events"
        assert services["minio"]["environment"][f"MINIO_NOTIFY_KAFKA_TLS_{target}"] == "on"
        assert f"/run/secrets/{t.team}.token" in mounted(services["flink-taskmanager"])
    # the admin's credential first (over mTLS), then MinIO's events user, then provision, all as the admin
    lines = services["init"]["command"][-1].splitlines()
    assert lines[0].startswith("imagery --kafka-config /run/secrets/admin-mtls.properties kafka-user admin ")
    assert "kafka-user minio-events" in lines[1] and "provision" in lines[2] and "--minio-secure" in lines[2]
    assert isinstance(services["minio"]["environment"]["MINIO_ROOT_PASSWORD"], Reset)
    assert isinstance(services["init"]["environment"]["MINIO_SECRET_KEY"], Reset)
    # the same image ports as compose.yaml (the EXTERNAL listener stays at 19092)
    assert "ports" not in services["kafka"]


def test_every_secret_a_service_uses_is_declared_mounted_and_made(secured, teams, secrets_dir):
    declared = secured["secrets"]
    made = compose_secrets.manifest(teams)
    for name, spec in declared.items():
        assert spec == {"file": f"./secrets/{name}"}, name
        assert name in made, f"{name}: declared, but `imagery compose-secrets` does not make it"
    for service, spec in secured["services"].items():
        inside = mounted(spec)
        assert set(inside.values()) <= set(declared), service
        # every /run/secrets path the service's settings, command and health check name is mounted there ...
        for text in strings({k: v for k, v in spec.items() if k in ("environment", "command", "healthcheck")}):
            for name in SECRET_PATH.findall(text):
                assert f"/run/secrets/{name}" in inside, f"{service} uses /run/secrets/{name} without mounting it"
        # ... and so is every file that a mounted client file names (its CA, its key store)
        for source in inside.values():
            if source.endswith(".properties"):
                for path in read_properties(secrets_dir / source).values():
                    for name in SECRET_PATH.findall(path):
                        assert f"/run/secrets/{name}" in inside, f"{service}: {source} names /run/secrets/{name}"
    # MinIO's TLS files where --certs-dir looks, and the services' only one
    assert mounted(secured["services"]["minio"])["/certs/private.key"] == "minio.key"
    # what only the host uses is never mounted
    used = {s for spec in secured["services"].values() for s in mounted(spec).values()}
    assert not used & {"ca.key", compose_secrets.HOST_ADMIN}


def test_no_secret_value_is_in_a_rendered_file(rendered, secrets_dir, teams):
    values = set()
    for name in compose_secrets.manifest(teams):
        text = (secrets_dir / name).read_text()
        if name.endswith(".properties"):
            for entry, value in read_properties(secrets_dir / name).items():
                if entry == "sasl.jaas.config":
                    values.add(kafka_config.jaas_options(value)[1]["password"])
        elif name.endswith((".password", ".token", ".secret")):
            values.add(text.strip())
        elif name.endswith((".key", ".pem")):
            values.update(line for line in text.splitlines() if line and not line.startswith("-----"))
    assert len(values) > 10
    for name, text in rendered.items():
        leaked = [v for v in values if v in text]
        assert not leaked, f"{name} holds a secret"
    for service, spec in load(rendered["compose.secure.yaml"])["services"].items():
        for variable, value in (spec.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", variable) and not isinstance(value, Reset):
                assert variable.endswith("_FILE") or variable.startswith("MINIO_NOTIFY_KAFKA_SASL_"), (
                    service,
                    variable,
                )


def test_the_committed_secure_files_are_what_the_template_makes():
    files = compose.ComposeFiles.in_repo()
    rendered = compose.render(compose.load_teams(files.teams))
    assert files.secure.read_text() == rendered["compose.secure.yaml"], (
        "compose.secure.yaml is stale: run `imagery compose`"
    )
    assert files.secure_prometheus.read_text() == rendered["prometheus.secure.yml"], (
        "deploy/prometheus.secure.yml is stale: run `imagery compose`"
    )


def test_the_secured_broker_is_the_secured_local_broker():
    """compose.secure.yaml's KAFKA_* variables, read back as the image reads them (kafka-run.sh's rule), have the
    secured local broker's settings (imagery/local/security.py)."""

    def read_back(variable: str) -> str:
        key = variable.removeprefix("KAFKA_").lower()
        return key.replace("___", "-").replace("__", "@").replace("_", ".").replace("@", "_")

    properties = {
        read_back(name): value.replace("$$", "$") for name, value in compose.secure_kafka_environment().items()
    }
    assert properties == {
        **compose.secure_broker_properties(),
        "advertised.listeners": properties["advertised.listeners"],
    }
    folder = Path("/nowhere")
    leaf = CertFiles(folder / "x.crt", folder / "x.key", folder / "x.pem")
    files = security.StackSecurity(folder, folder / "ca.crt", leaf, leaf, leaf, leaf, *[folder / "x"] * 5)
    local = dict(
        line.split("=", 1)
        for line in security.broker_properties(StackSettings(secure=True), files)
        if not line.startswith(
            (
                "listeners",
                "advertised.",
                "ssl.keystore.location",
                "ssl.truststore.location",
                "inter.broker.",
                "controller.listener.names",
            )
        )
    )
    for name, value in local.items():
        if name.startswith("listener.name.sasl_ssl."):
            name = name.replace("sasl_ssl", "internal")
        if name == "listener.name.mtls.ssl.client.auth":
            name = "listener.name.admin.ssl.client.auth"
        if name != "listener.security.protocol.map":
            assert properties[name] == value, name
    assert properties["listener.name.external.scram-sha-512.sasl.jaas.config"].endswith("required;")
    # no listener is named so that the official image asks for keystore variables of its own
    assert "SSL://" not in properties["advertised.listeners"] and "SASL_" not in properties["advertised.listeners"]
    assert properties["advertised.listeners"].endswith(
        "EXTERNAL://${KAFKA_EXTERNAL_HOST:-localhost}:${KAFKA_HOST_PORT:-29092}"
    )


def test_the_services_get_only_variables_they_read(rendered):
    base, secured = load(rendered["compose.yaml"])["services"], load(rendered["compose.secure.yaml"])["services"]
    for name, spec in secured.items():
        if name.endswith("-inference-http"):
            env = {
                k: str(v)
                for k, v in {**base[name]["environment"], **spec["environment"]}.items()
                if not isinstance(v, Reset)
            }
            checked_service_environment(env)


def test_the_plain_services_read_minio_s_key_from_a_file(rendered):
    doc = load(rendered["compose.yaml"])
    for name, spec in doc["services"].items():
        if name.endswith("-inference-http"):
            assert "MINIO_SECRET_KEY" not in spec["environment"]
            assert spec["configs"] == [
                {"source": "minio-secret-key", "target": spec["environment"]["MINIO_SECRET_KEY_FILE"]}
            ]
    assert doc["configs"]["minio-secret-key"] == {"content": "${MINIO_SECRET_KEY:-minioadmin}"}


def test_prometheus_scrapes_the_secured_services_over_https(rendered):
    jobs = {job["job_name"]: job for job in yaml.safe_load(rendered["prometheus.secure.yml"])["scrape_configs"]}
    assert jobs["imagery-inference"]["scheme"] == "https"
    assert jobs["imagery-inference"]["tls_config"] == {"ca_file": "/run/secrets/ca.crt"}
    plain = {job["job_name"]: job for job in yaml.safe_load(rendered["prometheus.yml"])["scrape_configs"]}
    assert "scheme" not in plain["imagery-inference"]


def test_compose_secrets_makes_its_files_once_with_the_modes_the_containers_need(tmp_path, monkeypatch):
    teams = repo_teams()
    monkeypatch.chdir(tmp_path)
    folder = Path("secrets")  # as the command's default: relative to where it runs
    first = compose_secrets.make(folder, teams)
    wanted = compose_secrets.manifest(teams)
    assert sorted(first.made) == sorted(wanted) and not first.kept
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, mode in wanted.items():
        assert stat.S_IMODE((folder / name).stat().st_mode) == mode, name
    # read by non-root users in their containers: the broker's key (kafka, uid 1000), the service's (uid 10001), the
    # teams' files (the service, Flink's uid 9999); what root alone reads, or no container, stays 0600
    assert wanted["kafka-broker.pem"] == wanted["inference.key"] == wanted["fruit.kafka.properties"] == 0o644
    assert (
        wanted["minio.key"]
        == wanted["admin.properties"]
        == wanted["ca.key"]
        == wanted["host-admin.properties"]
        == wanted["minio-notify.env"]
        == 0o600
    )
    before = {name: (folder / name).read_bytes() for name in wanted}

    again = compose_secrets.make(folder, teams)
    assert not again.made and sorted(again.kept) == sorted(wanted)
    assert {name: (folder / name).read_bytes() for name in wanted} == before

    # a new team: its files are added, the services' certificate is issued again for its name, the rest is kept
    more = [*teams, Team(team="apples", weights="apples_best.pt", http_port=28002)]
    third = compose_secrets.make(folder, more)
    assert {"apples.token", "apples.kafka.properties", "apples.minio.secret"} <= set(third.made)
    assert (folder / "inference.crt").read_bytes() != before["inference.crt"]
    assert {"apples-inference-http", "fruit-inference-http", "localhost"} <= compose_secrets._san_hosts(
        folder / "inference.crt"
    )
    for name in ("ca.crt", "kafka-broker.pem", "admin.password", "fruit.kafka.properties", "fruit.token"):
        assert (folder / name).read_bytes() == before[name], name
    assert "MINIO_NOTIFY_KAFKA_SASL_PASSWORD_APPLES=" in (folder / "minio-notify.env").read_text()


def test_the_client_files(secrets_dir, teams):
    # the containers' files name container paths; the host's names this folder, and the tooling can read it
    admin = read_properties(secrets_dir / "admin.properties")
    assert admin["security.protocol"] == "SASL_SSL" and admin["sasl.mechanism"] == "SCRAM-SHA-512"
    assert admin["ssl.truststore.location"] == "/run/secrets/ca.crt"
    assert read_properties(secrets_dir / "admin-mtls.properties")["ssl.keystore.location"] == "/run/secrets/admin.pem"
    host = kafka_config.load(secrets_dir / "host-admin.properties")
    assert host["ssl.ca.location"] == str((secrets_dir / "ca.crt").resolve())
    assert host["sasl.username"] == "admin"
    assert host["sasl.password"] == (secrets_dir / "admin.password").read_text().strip()
    for t in teams:
        team = kafka_config.load(secrets_dir / f"{t.team}.kafka.properties")
        assert team["sasl.username"] == f"team-{t.team}" and team["ssl.ca.location"] == "/run/secrets/ca.crt"
    assert compose_secrets._san_hosts(secrets_dir / "kafka-broker.crt") >= {"kafka", "localhost"}
    assert compose_secrets._san_hosts(secrets_dir / "minio.crt") >= {"minio", "localhost"}
    events = (secrets_dir / "minio-events.password").read_text().strip()
    assert (secrets_dir / "minio-notify.env").read_text().splitlines() == [
        f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD_{t.events_target_id}={events}" for t in teams
    ]


def test_minio_s_events_user_may_write_to_the_input_topics_alone():
    from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

    from imagery import kafka_access

    bindings = kafka_access.topic_writer_acls("minio-events", ["imagery.new.fruit", "imagery.new.apples"])
    assert {(b.restype, b.name, b.resource_pattern_type, b.principal, b.operation) for b in bindings} == {
        (ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:minio-events", op)
        for topic in ("imagery.new.fruit", "imagery.new.apples")
        for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
    }
