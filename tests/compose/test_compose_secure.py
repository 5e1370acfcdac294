"""The secured compose variant on a real Docker engine (`make test-compose`, beside test_compose_stack.py).

What docs/security.md's "On compose" says, in a copy of the checkout: `imagery compose-secrets`, then
`docker compose -f compose.yaml -f compose.secure.yaml up -d --build` under a project and host ports of its own;
publish from the host as the admin through `secrets/host-admin.properties` (the CLI's `produce`, a Connection for two
bad messages) and by uploads to MinIO over TLS (its bucket events reach Kafka over SASL_SSL as `minio-events`); every
message lands once, in the results or the DLQ, and `imagery.audit` as the admin finds the range clean; the stack's
Prometheus scrapes the service over https; a plaintext client is refused on the published Kafka port, the service
answers only https and only with the token; no secret is in `docker compose config` or a container's environment;
then `down -v`.

IMAGERY_COMPOSE_ENV_FILE picks the image sources, as for test_compose_stack.py.
"""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.fruit_defect.samples import make_image
from imagery import audit, compose_secrets, kafka_config, kafka_io, storage_access
from imagery.compose import load_teams
from imagery.pipeline_run import produce_messages
from schemas import INFER_JSON_ROUTE, topics
from tests.compose.harness import (
    Compose,
    assert_exactly_once,
    copy_checkout,
    prometheus_value,
    step,
    wait_for_jobs,
)
from tests.kafka_refusal import refusal

# the images take minutes to build the first time (the suite's 600 s per test is for tests, not builds)
pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PROJECT = "imagery-compose-secure-test"
# host ports of their own (the plain test's stack, a local stack or a user's may run beside it); the team's service
# keeps its http_port from deploy/teams.yaml, as in the plain test
PORTS = {
    "KAFKA_HOST_PORT": "49092",
    "MINIO_HOST_PORT": "49000",
    "MINIO_CONSOLE_HOST_PORT": "49001",
    "FLINK_HOST_PORT": "48081",
    "PROMETHEUS_HOST_PORT": "49090",
}
BOOTSTRAP = f"localhost:{PORTS['KAFKA_HOST_PORT']}"
FLINK = f"http://localhost:{PORTS['FLINK_HOST_PORT']}"
PROMETHEUS = f"http://localhost:{PORTS['PROMETHEUS_HOST_PORT']}"
FILES = ["compose.yaml", "compose.secure.yaml"]


def imagery(checkout: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """The checkout's `imagery` CLI, run in the checkout (as a user runs it in theirs)."""
    return subprocess.run(
        [sys.executable, "-m", "imagery.cli", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(checkout), "COLUMNS": "200"},
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (no ./secrets: the test makes them, as a user does) with the weights."""
    workdir = copy_checkout(tmp_path_factory.mktemp("compose-secure") / "imagery")
    assert not (workdir / "secrets").exists()
    return workdir


@pytest.fixture(scope="module")
def secrets_dir(checkout) -> Path:
    made = imagery(checkout, "compose-secrets")
    print(made.stdout, made.stderr, flush=True)
    assert made.returncode == 0, made.stdout + made.stderr
    return checkout / "secrets"


@pytest.fixture(scope="module")
def compose(checkout, secrets_dir):
    c = Compose(checkout, PROJECT, PORTS, FILES)
    yield c
    for service in ("kafka", "minio", "init", "fruit-inference-http", "flink-dispatcher-fruit", "flink-taskmanager"):
        print(f"--- last logs of {service}:\n{c.logs(service, 30)}")
    c("down", "-v", "--remove-orphans", timeout_s=300)


@pytest.fixture(scope="module")
def admin(secrets_dir) -> kafka_io.Connection:
    """The admin, as the host's tooling is: SASL_SSL through host-admin.properties, on the published port."""
    return kafka_io.Connection(BOOTSTRAP, kafka_config.load(secrets_dir / compose_secrets.HOST_ADMIN))


def secret_values(folder: Path) -> set[str]:
    """The passwords, tokens and key material of the secrets folder."""
    values = set()
    for path in folder.iterdir():
        text = path.read_text()
        if path.name.endswith((".password", ".token", ".secret")):
            values.add(text.strip())
        elif path.name.endswith(".properties") and "sasl.jaas.config" in text:
            values.add(kafka_config.load(path)["sasl.password"])
        elif path.name.endswith((".key", ".pem")):
            values.update(line for line in text.splitlines() if line and not line.startswith("-----"))
    return values


def test_the_secured_compose_stack(compose, checkout, secrets_dir, admin):
    started = time.monotonic()
    team = load_teams(checkout / "deploy" / "teams.yaml")[0]
    ca = secrets_dir / compose_secrets.CA

    step("build the images, and up: the secured variant on top of compose.yaml")
    compose("build")
    compose("up", "-d")
    wait_for_jobs(FLINK, {team.group_id})

    step("publish from the host as the admin (host-admin.properties): uploads to MinIO over TLS, messages, bad ones")
    root = storage_access.minio_client(
        f"localhost:{PORTS['MINIO_HOST_PORT']}",
        "minioadmin",
        (secrets_dir / compose_secrets.MINIO_ROOT_PASSWORD).read_text().strip(),
        secure=True,
        ca_file=ca,
    )
    keys = []
    for i in range(8):
        data = make_image("clean" if i % 2 else "defect", i)
        keys.append(f"first/{i:04d}.jpg")
        root.put_object(team.bucket, keys[-1], io.BytesIO(data), len(data), content_type="image/jpeg")
    produced = imagery(
        checkout,
        "--kafka-config",
        str(secrets_dir / compose_secrets.HOST_ADMIN),
        "produce",
        team.team,
        team.bucket,
        *keys[:4],
        "first/no-such-image.jpg",
        "--bootstrap",
        BOOTSTRAP,
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    produce_messages(admin, team.input_topic, [b"{not json"])
    results, letters = assert_exactly_once(admin, team.team)
    assert (results, letters) == (12, 2)  # 8 uploads (bucket events) + 4 messages; a missing image, bad JSON

    step("imagery.audit, as the admin, over the whole input topic: clean")
    ends = kafka_io.end_offsets(admin, team.input_topic)
    report = audit.audit(admin, team.team, end=ends)
    print(f"   {report.as_dict()}", flush=True)
    assert report.clean and report.records == sum(ends.values()) == 14, report.as_dict()

    step("the stack's Prometheus scrapes the service over https, trusting the CA")
    prometheus_value(PROMETHEUS, f'up{{job="imagery-inference", team="{team.team}"}}', 1)

    step("refusals: a plaintext client on the published Kafka port; the service over http, or without the token")
    # (through Docker's port proxy the client sees the broker hang up on it: a transport failure, no answer)
    said = refusal(BOOTSTRAP, {"security.protocol": "PLAINTEXT"}, expect="Broker transport failure")
    assert "Broker transport failure" in said or "Disconnected" in said, said
    assert topics.input_topic(team.team) in kafka_io.admin(admin).list_topics(timeout=10).topics  # the port serves
    print(f"   plaintext: {said}", flush=True)
    wrong = {**kafka_config.load(secrets_dir / compose_secrets.HOST_ADMIN), "sasl.password": "not-the-password"}
    assert "Authentication failed" in refusal(BOOTSTRAP, wrong, expect="Authentication failed")
    service = f"localhost:{team.http_port}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{service}/readyz", timeout=5)
    tls = ssl.create_default_context(cafile=str(ca))
    assert httpx.get(f"https://{service}/readyz", verify=tls, timeout=5).status_code == 200
    anonymous = httpx.post(
        f"https://{service}{INFER_JSON_ROUTE}", json={"bucket": team.bucket, "key": keys[0]}, verify=tls, timeout=30
    )
    assert anonymous.status_code == 401

    step("no secret in the merged compose file or in any container's environment")
    values = secret_values(secrets_dir)
    assert len(values) > 10
    merged = compose.output("config")
    assert not [v for v in values if v in merged], "a secret is in `docker compose config`"
    for container in compose.output("ps", "-aq").split():
        env = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Config.Env}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not [v for v in values if v in env], f"a secret is in the environment of {container}"
    print(f"   the secured stack, from build to here: {time.monotonic() - started:.0f} s", flush=True)
