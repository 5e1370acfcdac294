"""The whole pipeline with every hop secured, on real parts: Kafka over SASL_SSL (SCRAM-SHA-512) as the team's own
principal with its ACLs, MinIO over TLS as the team's own MinIO user, the service over TLS with a token from a file,
exactly-once; then what a wrong password does, and a scan for secrets wherever a process, the Flink REST API, a log
or a dead letter could show one."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagery import audit, kafka_config, kafka_io, storage_access
from imagery.local import security, stack
from imagery.local.certs import Authority
from imagery.local.inference_service import InferenceService
from imagery.pipeline_run import DispatcherProcess, collect, produce_messages, submit_to_cluster
from schemas import INFER_JSON_ROUTE, topics
from tests.conftest import unique
from tests.helpers import put
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def minio_reader(secured_stack, stack_security) -> Iterator[tuple[str, str]]:
    """The fruit teams' MinIO user (reads fruit and fruit-* only), made as MinIO's root over TLS."""
    access_key, secret_key = f"fruit-reader-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(18)
    admin = storage_access.minio_admin(
        secured_stack.minio_endpoint,
        secured_stack.minio_access_key,
        stack.minio_secret_key(secured_stack),
        secure=True,
        ca_file=stack_security.ca,
    )
    storage_access.ensure_team_reader(admin, "fruit", access_key, secret_key)
    yield access_key, secret_key
    storage_access.remove_team_reader(admin, "fruit", access_key)


@pytest.fixture(scope="module")
def secured_service(
    secured_stack, stack_security, minio_reader, fruit_weights, tmp_path_factory
) -> Iterator[InferenceService]:
    """The fruit service over TLS, its infer routes behind the stack's token, reading MinIO over TLS as its reader;
    ALLOWED_BUCKETS='*' so that what MinIO's policy forbids is MinIO's answer, not the service's."""
    service = InferenceService(
        secured_stack,
        team="fruit",
        weights_path=str(fruit_weights),
        env={**FRUIT_SERVICE_ENV, "ALLOWED_BUCKETS": "*"},
        log_path=tmp_path_factory.mktemp("secured-service") / "service.log",
        auth_token=security.read_secret(stack_security.service_token_file),
        tls=stack_security.service,
        minio_secure=True,
        minio_ca_file=stack_security.ca,
        minio_access_key=minio_reader[0],
        minio_secret_key=minio_reader[1],
    )
    with service.start():
        yield service


def job_args(secured_stack, stack_security, service: InferenceService, team, client_file: Path) -> list[str]:
    """The dispatcher's flags with every secret in a file: the team's Kafka client file, the token's file."""
    return [
        "--bootstrap",
        secured_stack.bootstrap,
        "--kafka-config",
        str(client_file),
        "--team",
        team.name,
        "--http-url",
        f"{service.base_url}{INFER_JSON_ROUTE}",
        "--http-ca-file",
        str(stack_security.ca),
        "--auth-token-file",
        str(stack_security.service_token_file),
        "--delivery-guarantee",
        "exactly-once",
        "--checkpoint-interval-ms",
        "2000",
        "--backoff-ms",
        "50",
        "--backoff-max-ms",
        "500",
    ]


def secrets_of(secured_stack, stack_security, team, minio_reader) -> dict[str, str]:
    """Every secret this run uses, by what it is."""
    _, team_options = kafka_config.jaas_options(kafka_config.read_properties(team.client_file)["sasl.jaas.config"])
    found = {
        "the team's SASL password": team_options["password"],
        "admin's SASL password": security.read_secret(stack_security.admin_password_file),
        "the service's token": security.read_secret(stack_security.service_token_file),
        "the team's MinIO secret key": minio_reader[1],
        "MinIO's root password": stack.minio_secret_key(secured_stack),
    }
    for files in (stack_security.admin_cert, stack_security.service, stack_security.broker):
        body = "".join(files.key.read_text().splitlines()[1:-1])
        found[f"the private key of {files.cert.name}"] = body[:40]
    return found


def leaks(where: str, text: str, known: dict[str, str]) -> list[str]:
    return [f"{what} in {where}" for what, value in known.items() if value and value in text]


def test_every_hop_secured_exactly_once_and_no_secret_shows(
    flink_cluster, secured_stack, stack_security, admin, new_team, secured_service, minio_reader, fruit_images, tmp_path
):
    team = new_team()
    root = stack.minio_client(secured_stack)
    bucket, denied = topics.team_bucket(team.name), unique("other")  # the reader's policy covers fruit-* only
    root.make_bucket(bucket)
    root.make_bucket(denied)
    run = uuid.uuid4().hex[:8]
    good = []
    for i in range(12):
        kind = "defect" if i % 2 else "clean"
        put(root, bucket, f"{kind}/{i}.jpg", fruit_images[kind])
        good.append({"id": f"{run}-{i}", "bucket": bucket, "key": f"{kind}/{i}.jpg", "kind": kind})
    put(root, bucket, "notes/readme.jpg", b"this is text, not a JPEG")
    put(root, denied, "a.jpg", fruit_images["clean"])
    bad: list[dict | bytes] = [
        f"not json {run}".encode(),
        {"id": f"{run}-nobucket", "key": "clean/0.jpg"},
        {"id": f"{run}-missing", "bucket": bucket, "key": "nowhere/none.jpg"},
        {"id": f"{run}-text", "bucket": bucket, "key": "notes/readme.jpg"},
        {"id": f"{run}-denied", "bucket": denied, "key": "a.jpg"},
    ]
    produce_messages(admin, team.input_topic, [*good, *bad])

    args = job_args(secured_stack, stack_security, secured_service, team, team.client_file)
    job_id, submission = submit_to_cluster(args, f"{flink_cluster.host}:{flink_cluster.flink_rest_port}")
    rest = flink_cluster.flink_rest_url
    try:
        got = collect(
            admin,
            team.result_topic,
            topics.DLQ_TOPIC,
            lambda c: len(c.results) + len(c.dead) >= len(good) + len(bad),
            JOB_TIMEOUT_S,
            keep_dead=lambda d: d.team == team.name,
        )
        assert sorted(got.results) == sorted(m["id"] for m in good), [d.error for d in got.dead]
        assert got.result_count == len(good), "no duplicate results"
        assert all(got.results[m["id"]]["label"] == m["kind"] for m in good)
        stages = {}
        for letter in got.dead:
            text = letter.original_value_text or ""
            key = json.loads(text)["id"] if text.startswith("{") else "invalid-json"
            stages[key] = (letter.error.stage, letter.error.http_status)
        assert stages == {
            "invalid-json": ("parse", None),
            f"{run}-nobucket": ("validate", None),
            f"{run}-missing": ("fetch", 404),
            f"{run}-text": ("decode", 415),
            f"{run}-denied": ("fetch", 403),
        }, stages

        # the audit, reading through the operator's file, counts every input offset once
        group = topics.dispatcher_group(team.name)
        audit.wait_until_caught_up(admin, team.input_topic, group, JOB_TIMEOUT_S)
        report = audit.audit(admin, team.name, dlq_topic=topics.DLQ_TOPIC)
        assert report.clean and report.records == len(good) + len(bad), report.as_dict()

        # the secret scan, while the job runs: every process's argv, the Flink REST API, the logs, the dead letters
        known = secrets_of(secured_stack, stack_security, team, minio_reader)
        found: list[str] = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # the process is gone
            found += leaks(f"the argv of pid {cmdline.parent.name}", argv, known)
        vertices = httpx.get(f"{rest}/jobs/{job_id}", timeout=10).raise_for_status().json()["vertices"]
        taskmanagers = httpx.get(f"{rest}/taskmanagers", timeout=10).json()["taskmanagers"]
        for path in [
            f"/jobs/{job_id}",
            f"/jobs/{job_id}/config",
            f"/jobs/{job_id}/plan",
            f"/jobs/{job_id}/exceptions",
            f"/jobs/{job_id}/checkpoints/config",
            "/jobmanager/config",
            "/jobmanager/environment",
            *(f"/jobs/{job_id}/vertices/{v['id']}" for v in vertices),
            *(f"/taskmanagers/{tm['id']}" for tm in taskmanagers),
        ]:
            answer = httpx.get(f"{rest}{path}", timeout=10)
            assert answer.status_code == 200, path
            found += leaks(f"Flink REST {path}", answer.text, known)
        logs = [*flink_cluster.logs_dir.glob("*"), *secured_stack.logs_dir.glob("*"), secured_service.log_path]
        for log in logs:
            if log.is_file():
                found += leaks(f"the log {log}", log.read_text(errors="replace"), known)
        found += leaks("the job's submission output", submission, known)
        for letter in got.dead:
            found += leaks("a dead letter", letter.model_dump_json(), known)
        for record in dead_letters_of(admin, team.name):
            found += leaks("a dead letter's headers", repr(record.headers), known)
        assert not found, found
    finally:
        httpx.patch(f"{rest}/jobs/{job_id}?mode=cancel", timeout=10)


def team_with_messages(secured_stack, admin, team, image: bytes, count: int = 6) -> list[dict]:
    """TEAM's bucket holding IMAGE, and COUNT messages for it in the team's input topic (published as the admin)."""
    root = stack.minio_client(secured_stack)
    bucket = topics.team_bucket(team.name)
    root.make_bucket(bucket)
    put(root, bucket, "a.jpg", image)
    messages = [{"id": f"{team.name}-{i}", "bucket": bucket, "key": "a.jpg"} for i in range(count)]
    produce_messages(admin, team.input_topic, messages)
    return messages


def dead_letters_of(admin, team: str) -> list[kafka_io.Record]:
    """TEAM's records in the DLQ, as written (their headers too)."""
    return [
        r
        for r in kafka_io.read_to_end(admin, topics.DLQ_TOPIC).records
        if r.headers.get(topics.HEADER_TEAM) == team.encode()
    ]


def test_a_wrong_sasl_password_fails_the_job_naming_authentication_and_loses_nothing(
    secured_stack, stack_security, admin, new_team, secured_service, fruit_images, tmp_path
):
    team = new_team()
    messages = team_with_messages(secured_stack, admin, team, fruit_images["defect"])
    entries = kafka_config.read_properties(team.client_file)
    module, options = kafka_config.jaas_options(entries["sasl.jaas.config"])
    wrong = kafka_config.write_properties(
        tmp_path / "wrong.properties",
        {**entries, "sasl.jaas.config": kafka_config.jaas_line(module, options["username"], "not-the-password")},
    )

    args = job_args(secured_stack, stack_security, secured_service, team, wrong)
    failed = DispatcherProcess([*args, "--restart-strategy", "none"], tmp_path / "wrong.log").start()
    try:
        assert failed.proc is not None, "started"
        code = failed.proc.wait(JOB_TIMEOUT_S)
    finally:
        failed.stop()
    log = (tmp_path / "wrong.log").read_text(errors="replace")
    assert code != 0 and re.search(r"(?i)authentication failed", log), log[-3000:]
    assert not dead_letters_of(admin, team.name), "a wrong password sends nothing to the DLQ"

    # the file fixed (the team's own), the job started again: every message lands once
    with DispatcherProcess(
        job_args(secured_stack, stack_security, secured_service, team, team.client_file), tmp_path / "fixed.log"
    ) as job:
        got = collect(
            admin,
            team.result_topic,
            topics.DLQ_TOPIC,
            lambda c: len(c.results) >= len(messages),
            JOB_TIMEOUT_S,
            keep_dead=lambda d: d.team == team.name,
            watch=job.check_alive,
        )
        audit.wait_until_caught_up(admin, team.input_topic, topics.dispatcher_group(team.name), JOB_TIMEOUT_S)
    assert sorted(got.results) == sorted(m["id"] for m in messages) and not got.dead
    report = audit.audit(admin, team.name, dlq_topic=topics.DLQ_TOPIC)
    assert report.clean and report.records == len(messages), report.as_dict()


def test_a_job_over_mtls_as_the_teams_certificate_lands_exactly_once(
    secured_stack, stack_security, admin, new_team, secured_service, fruit_images, tmp_path
):
    """The other tested mechanism: the job's Kafka clients authenticate with the team's certificate (CN
    team-<team>, the same principal and ACLs as its SCRAM user) on the mTLS listener, through a PEM key store."""
    team = new_team()
    certificate = Authority(stack_security.folder / "pki").issue(topics.team_principal(team.name))
    client_file = security.write_client_properties(
        tmp_path / "team-mtls.properties", stack_security.ca, keystore=certificate.bundle
    )
    messages = team_with_messages(secured_stack, admin, team, fruit_images["clean"])
    args = job_args(secured_stack, stack_security, secured_service, team, client_file)
    args[args.index("--bootstrap") + 1] = secured_stack.mtls_bootstrap
    with DispatcherProcess(args, tmp_path / "mtls.log") as job:
        got = collect(
            admin,
            team.result_topic,
            topics.DLQ_TOPIC,
            lambda c: len(c.results) >= len(messages),
            JOB_TIMEOUT_S,
            keep_dead=lambda d: d.team == team.name,
            watch=job.check_alive,
        )
        audit.wait_until_caught_up(admin, team.input_topic, topics.dispatcher_group(team.name), JOB_TIMEOUT_S)
    assert sorted(got.results) == sorted(m["id"] for m in messages) and not got.dead
    assert all(r["label"] == "clean" for r in got.results.values())
    report = audit.audit(admin, team.name, dlq_topic=topics.DLQ_TOPIC)
    assert report.clean and report.records == len(messages), report.as_dict()
