"""The secured Kafka refuses what it must, with an error that says why, and confines each team to its own names.

Real broker (SASL_SSL with SCRAM-SHA-512, mTLS, the StandardAuthorizer), real librdkafka clients."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException

from imagery import kafka_config, kafka_io, provision, storage_access
from imagery.local import security, stack
from imagery.local.certs import Authority
from imagery.repo import REPO_ROOT
from schemas import topics
from tests.kafka_refusal import refusal

pytestmark = pytest.mark.integration


def test_a_plaintext_client_is_refused(secured_stack):
    # the broker closes a connection that does not start TLS, before any Kafka request is answered
    said = refusal(secured_stack.bootstrap, {"security.protocol": "PLAINTEXT"}, expect="APIVERSION_QUERY")
    assert "Disconnected" in said and "APIVERSION_QUERY" in said, said
    # the tooling, given no properties file, says what is missing in one line
    env = {k: v for k, v in os.environ.items() if k != "IMAGERY_KAFKA_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "imagery.cli", "dlq", "show", "--bootstrap", secured_stack.bootstrap],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "--kafka-config" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_server_certificate_from_another_ca_is_refused(secured_stack, stack_security, tmp_path):
    stranger = Authority(tmp_path / "other-ca")
    settings = {**kafka_config.load(stack_security.admin_sasl), "ssl.ca.location": str(stranger.cert)}
    assert "certificate verify failed" in refusal(secured_stack.bootstrap, settings, expect="certificate verify")


def test_an_expired_client_certificate_is_refused(secured_stack, stack_security, tmp_path):
    expired = Authority(stack_security.folder / "pki").issue(f"{security.ADMIN}-expired", expired=True)
    settings = {
        **kafka_config.load(stack_security.admin_mtls),
        "ssl.certificate.location": str(expired.cert),
        "ssl.key.location": str(expired.key),
    }
    # Java's TLS answers an expired client certificate with the alert certificate_unknown (46); the broker's log
    # names the expiry
    assert "alert certificate unknown" in refusal(secured_stack.mtls_bootstrap, settings, expect="alert certificate")


def test_a_wrong_password_is_refused_naming_authentication(secured_stack, stack_security):
    settings = {**kafka_config.load(stack_security.admin_sasl), "sasl.password": "not-the-password"}
    assert "Authentication failed" in refusal(secured_stack.bootstrap, settings, expect="Authentication failed")


def test_a_team_reaches_its_own_topics_and_ids_only(secured_stack, admin, new_team):
    a, b = new_team(), new_team()
    kafka_io.produce(admin, b.input_topic, [(b"k", b"b's own message")])
    before = kafka_io.end_offsets(admin, b.input_topic)
    as_a, as_b = a.connection(secured_stack.bootstrap), b.connection(secured_stack.bootstrap)

    with kafka_io.consumer(as_a, group_id=topics.dispatcher_group(a.name), from_earliest=True) as reader:
        reader.subscribe([b.input_topic])
        denied = None
        for _ in range(100):  # a deadline of ~20 s: poll waits 0.2 s
            msg = reader.poll(0.2)
            assert msg is None or msg.error() is not None, "team a read team b's input"
            if msg is not None:
                denied = msg.error()
                break
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied

    with pytest.raises(RuntimeError, match="(?i)authorization failed"):
        kafka_io.produce(as_a, b.result_topic, [(b"k", b"forged result")], timeout_s=15)
    with pytest.raises(KafkaException, match="(?i)authoriz"):
        kafka_io.producer(
            as_a, {"transactional.id": f"imagery-{topics.dispatcher_group(b.name)}-x-results"}
        ).init_transactions(15)

    # its own: a writes its results and uses its transactional ids
    kafka_io.produce(as_a, a.result_topic, [(b"k", b"a's result")])
    kafka_io.producer(
        as_a, {"transactional.id": f"imagery-{topics.dispatcher_group(a.name)}-x-results"}
    ).init_transactions(15)
    # nothing of b's was lost or added: its input is as it was, readable by b, and its results empty
    assert kafka_io.end_offsets(admin, b.input_topic) == before
    mine = kafka_io.read_to_end(as_b, b.input_topic, group_id=topics.dispatcher_group(b.name))
    assert [r.value for r in mine.records] == [b"b's own message"]
    assert kafka_io.read_to_end(admin, b.result_topic).records == []


def test_provision_makes_a_teams_principal_acls_and_minio_user_and_no_output_shows_a_secret(
    secured_stack, stack_security, admin, tmp_path
):
    """`imagery --kafka-config ADMIN provision` on the secured stack, as an operator runs it; then `status` and
    `health` on it: none of their output shows a secret."""
    team = f"fruit_{uuid.uuid4().hex[:8]}"
    credentials = tmp_path / "credentials"
    s = secured_stack
    env = {
        **os.environ,
        "IMAGERY_STATE_DIR": str(s.state_dir),
        "IMAGERY_KAFKA_PORT": str(s.kafka_port),
        "IMAGERY_KAFKA_MTLS_PORT": str(s.kafka_mtls_port),
        "IMAGERY_MINIO_PORT": str(s.minio_port),
        "IMAGERY_SECURE": "1",
        "MINIO_SECRET_KEY_FILE": str(stack_security.minio_root_password_file),
        "IMAGERY_KAFKA_CONFIG": str(stack_security.admin_sasl),
        "COLUMNS": "200",
    }

    def imagery(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "imagery.cli", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, 1), done.stderr[-2000:]
        return done.stdout + done.stderr

    said = imagery(
        "provision",
        f"{team}:2:w.ts",
        "--minio",
        s.minio_endpoint,
        "--minio-secure",
        "--minio-ca-file",
        str(stack_security.ca),
        "--credentials-dir",
        str(credentials),
    )
    client_file = provision.team_client_file(credentials, team)
    minio_secret = provision.team_minio_secret_file(credentials, team)
    assert client_file.stat().st_mode & 0o077 == 0 and minio_secret.stat().st_mode & 0o077 == 0, said
    # the team's principal writes its own results; its MinIO user reads its own bucket and no other
    as_team = kafka_io.Connection(s.bootstrap, kafka_config.load(client_file))
    kafka_io.produce(as_team, topics.result_topic(team), [(b"k", b"a result")])
    bucket = topics.team_bucket(team)
    stack.minio_client(s).put_object(bucket, "a.jpg", io.BytesIO(b"x"), 1)
    reader = storage_access.minio_client(
        s.minio_endpoint,
        provision.team_minio_access_key(team),
        minio_secret.read_text().strip(),
        secure=True,
        ca_file=stack_security.ca,
    )
    assert reader.get_object(bucket, "a.jpg").read() == b"x"

    said += imagery("status", "--secure") + imagery("health", "--team", team)
    _, options = kafka_config.jaas_options(kafka_config.read_properties(client_file)["sasl.jaas.config"])
    known = {
        "the team's SASL password": options["password"],
        "the team's MinIO secret": minio_secret.read_text().strip(),
        "admin's SASL password": security.read_secret(stack_security.admin_password_file),
        "MinIO's root password": security.read_secret(stack_security.minio_root_password_file),
    }
    assert not [what for what, value in known.items() if value in said], said
    flat = "".join(said.split())  # rich folds long lines to the terminal's width
    assert str(client_file) in flat and "admin.properties" in flat, said  # it says where the secrets are
