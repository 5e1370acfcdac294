"""The secured compose variant on a real Docker engine (`make test-compose`, beside test_compose_stack.py).

What the README's "On compose" says, in a copy of the checkout: `imagery compose-secrets`, then
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
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from adapters.fruit_defect.samples import make_image
from imagery import audit, compose_secrets, kafka_config, kafka_io, storage_access
from imagery.compose import ComposeFiles, load_teams
from imagery.pipeline_run import produce_messages
from imagery.repo import REPO_ROOT as REPO
from schemas import INFER_JSON_ROUTE, topics

# the images take minutes to build the first time (the suite's 600 s per test is for tests, not builds)
pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PROJECT = "imagery-compose-secure-test"
# host ports of their own (the plain test's stack, a local stack or a user's may run beside it); the team's service
# keeps its http_port from deploy/teams.yaml, as in the plain test
PORTS = {"KAFKA_HOST_PORT": "49092", "MINIO_HOST_PORT": "49000", "MINIO_CONSOLE_HOST_PORT": "49001",
         "FLINK_HOST_PORT": "48081", "PROMETHEUS_HOST_PORT": "49090"}
BOOTSTRAP = f"localhost:{PORTS['KAFKA_HOST_PORT']}"
FLINK = f"http://localhost:{PORTS['FLINK_HOST_PORT']}"
PROMETHEUS = f"http://localhost:{PORTS['PROMETHEUS_HOST_PORT']}"
ENV_FILE = Path(os.environ.get("IMAGERY_COMPOSE_ENV_FILE", REPO / "deploy" / "local-images" / "images.env"))
FILES = ["-f", "compose.yaml", "-f", "compose.secure.yaml"]


def step(text: str) -> None:
    print(f"\n== {time.strftime('%H:%M:%S')} {text}", flush=True)


class Compose:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # the classic builder: Compose's default (bake) needs buildx, which Debian's docker.io does not have
        self.env = {**os.environ, **PORTS, "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}

    def command(self, *args: str) -> list[str]:
        return ["docker", "compose", "-p", PROJECT, "--env-file", str(ENV_FILE.resolve()), *FILES, *args]

    def __call__(self, *args: str, timeout_s: float = 1800) -> float:
        started = time.monotonic()
        print("$", " ".join(self.command(*args)), flush=True)
        subprocess.run(self.command(*args), cwd=self.workdir, env=self.env, check=True, timeout=timeout_s)
        took = time.monotonic() - started
        print(f"   ({took:.0f} s)", flush=True)
        return took

    def output(self, *args: str) -> str:
        return subprocess.run(self.command(*args), cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              check=True, timeout=300).stdout

    def logs(self, service: str, lines: int = 60) -> str:
        return subprocess.run(self.command("logs", "--no-color", "--tail", str(lines), service), cwd=self.workdir,
                              env=self.env, capture_output=True, text=True).stdout


def imagery(checkout: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """The checkout's `imagery` CLI, run in the checkout (as a user runs it in theirs)."""
    return subprocess.run([sys.executable, "-m", "imagery.cli", *args], cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(checkout), "COLUMNS": "200"}, timeout=timeout_s)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (tracked and untracked files, not ignored ones: no ./secrets) with the weights."""
    workdir = tmp_path_factory.mktemp("compose-secure") / "imagery"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, workdir / name)
    assert not (workdir / "secrets").exists()
    for team in load_teams(ComposeFiles.in_repo().teams):
        assert (REPO / "weights" / team.weights).is_file(), f"run `make weights` first: weights/{team.weights}"
        shutil.copy2(REPO / "weights" / team.weights, workdir / "weights" / team.weights)
    return workdir


@pytest.fixture(scope="module")
def secrets_dir(checkout) -> Path:
    made = imagery(checkout, "compose-secrets")
    print(made.stdout, made.stderr, flush=True)
    assert made.returncode == 0, made.stdout + made.stderr
    return checkout / "secrets"


@pytest.fixture(scope="module")
def compose(checkout, secrets_dir):
    c = Compose(checkout)
    yield c
    for service in ("kafka", "minio", "init", "fruit-inference-http", "flink-dispatcher-fruit", "flink-taskmanager"):
        print(f"--- last logs of {service}:\n{c.logs(service, 30)}")
    c("down", "-v", "--remove-orphans", timeout_s=300)


@pytest.fixture(scope="module")
def admin(secrets_dir) -> kafka_io.Connection:
    """The admin, as the host's tooling is: SASL_SSL through host-admin.properties, on the published port."""
    return kafka_io.Connection(BOOTSTRAP, kafka_config.load(secrets_dir / compose_secrets.HOST_ADMIN))


def wait_for_job(name: str, timeout_s: float = 600) -> str:
    """Until the job runs (all its tasks RUNNING), once; fails if it ever runs twice."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            jobs = [j for j in httpx.get(f"{FLINK}/jobs/overview", timeout=5).raise_for_status().json()["jobs"]
                    if j["name"] == name and j["state"] not in ("FINISHED", "CANCELED", "FAILED")]
            assert len(jobs) <= 1, f"{name} runs twice: {jobs}"
            if jobs:
                detail = httpx.get(f"{FLINK}/jobs/{jobs[0]['jid']}", timeout=5).json()
                if detail["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in detail["vertices"]):
                    return str(jobs[0]["jid"])
            last = jobs
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"{name} not running after {timeout_s} s; last seen: {last}")


def outcomes(admin: kafka_io.Connection, team: str, expected: int, timeout_s: float = 300) -> tuple[list, list]:
    """(results, dead letters) of the team's input records, read committed as the admin, until `expected` are in."""
    deadline = time.monotonic() + timeout_s
    while True:
        results = kafka_io.read_to_end(admin, topics.result_topic(team)).records
        letters = [r for r in kafka_io.read_to_end(admin, topics.DLQ_TOPIC).records
                   if r.headers.get(topics.HEADER_TOPIC, b"").decode() == topics.input_topic(team)]
        if len(results) + len(letters) >= expected or time.monotonic() > deadline:
            return results, letters
        time.sleep(3)


def assert_exactly_once(admin: kafka_io.Connection, team: str, timeout_s: float = 300) -> tuple[int, int]:
    ends = kafka_io.end_offsets(admin, topics.input_topic(team))
    wanted = {(p, o) for p, end in ends.items() for o in range(end)}
    results, letters = outcomes(admin, team, len(wanted), timeout_s)
    got = [(json.loads(r.value)["source"]["partition"], json.loads(r.value)["source"]["offset"]) for r in results]
    got += [(int(r.headers[topics.HEADER_PARTITION]), int(r.headers[topics.HEADER_OFFSET])) for r in letters]
    doubled = sorted({x for x in got if got.count(x) > 1})
    assert not doubled, f"{team}: {len(doubled)} input records ended twice, e.g. {doubled[:5]}"
    missing = sorted(wanted - set(got))
    assert not missing, f"{team}: {len(missing)} of {len(wanted)} input records never ended, e.g. {missing[:5]}"
    print(f"   {team}: {len(wanted)} input records -> {len(results)} results + {len(letters)} dead letters, once",
          flush=True)
    return len(results), len(letters)


def refusal(settings: dict[str, str]) -> str:
    """What librdkafka reports when a client with SETTINGS asks the published Kafka port for its metadata (which
    must fail)."""
    said: dict[str, None] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said[record.getMessage()] = None

    logger = logging.getLogger(f"refusal-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(Collect())
    client = AdminClient({"bootstrap.servers": BOOTSTRAP, **settings, "logger": logger, "log_level": 3,
                          "error_cb": lambda error: said.setdefault(error.str())})
    with pytest.raises(KafkaException) as failed:
        client.list_topics(timeout=8)
    client.poll(1)
    return " | ".join([*said, str(failed.value)])


def prometheus_value(expr: str, at_least: float, timeout_s: float = 120) -> float:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=5).json()
            values = [float(s["value"][1]) for s in last["data"]["result"]]
            if values and sum(values) >= at_least:
                return sum(values)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(3)
    raise AssertionError(f"{expr}: not {at_least} after {timeout_s} s; last answer: {last}")


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
    wait_for_job(team.group_id)

    step("publish from the host as the admin (host-admin.properties): uploads to MinIO over TLS, messages, bad ones")
    root = storage_access.minio_client(f"localhost:{PORTS['MINIO_HOST_PORT']}", "minioadmin",
                                       (secrets_dir / compose_secrets.MINIO_ROOT_PASSWORD).read_text().strip(),
                                       secure=True, ca_file=ca)
    keys = []
    for i in range(8):
        data = make_image("clean" if i % 2 else "defect", i)
        keys.append(f"first/{i:04d}.jpg")
        root.put_object(team.bucket, keys[-1], io.BytesIO(data), len(data), content_type="image/jpeg")
    produced = imagery(checkout, "--kafka-config", str(secrets_dir / compose_secrets.HOST_ADMIN), "produce",
                       team.team, team.bucket, *keys[:4], "first/no-such-image.jpg", "--bootstrap", BOOTSTRAP)
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
    prometheus_value(f'up{{job="imagery-inference", team="{team.team}"}}', 1)

    step("refusals: a plaintext client on the published Kafka port; the service over http, or without the token")
    # (through Docker's port proxy the client sees the broker hang up on it: a transport failure, no answer)
    said = refusal({"security.protocol": "PLAINTEXT"})
    assert "Broker transport failure" in said or "Disconnected" in said, said
    assert topics.input_topic(team.team) in kafka_io.admin(admin).list_topics(timeout=10).topics  # the port serves
    print(f"   plaintext: {said}", flush=True)
    wrong = {**kafka_config.load(secrets_dir / compose_secrets.HOST_ADMIN), "sasl.password": "not-the-password"}
    assert "Authentication failed" in refusal(wrong)
    service = f"localhost:{team.http_port}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{service}/readyz", timeout=5)
    tls = ssl.create_default_context(cafile=str(ca))
    assert httpx.get(f"https://{service}/readyz", verify=tls, timeout=5).status_code == 200
    anonymous = httpx.post(f"https://{service}{INFER_JSON_ROUTE}", json={"bucket": team.bucket, "key": keys[0]},
                           verify=tls, timeout=30)
    assert anonymous.status_code == 401

    step("no secret in the merged compose file or in any container's environment")
    values = secret_values(secrets_dir)
    assert len(values) > 10
    merged = compose.output("config")
    assert not [v for v in values if v in merged], "a secret is in `docker compose config`"
    for container in compose.output("ps", "-aq").split():
        env = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", container],
                             capture_output=True, text=True, check=True).stdout
        assert not [v for v in values if v in env], f"a secret is in the environment of {container}"
    print(f"   the secured stack, from build to here: {time.monotonic() - started:.0f} s", flush=True)
