"""The secured Kafka refuses what it must, with an error that says why, and confines each team to its own names.

Real broker (SASL_SSL with SCRAM-SHA-512, mTLS, the StandardAuthorizer), real librdkafka clients."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from imagery import kafka_config, kafka_io
from imagery.local import security
from imagery.local.certs import Authority
from schemas import topics

pytestmark = pytest.mark.integration


def refusal(bootstrap: str, settings: dict[str, str]) -> str:
    """What librdkafka reports when a client with SETTINGS asks BOOTSTRAP for its metadata (which must fail)."""
    said: dict[str, None] = {}  # what the client reported, each once, in order

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said[record.getMessage()] = None

    logger = logging.getLogger(f"refusal-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(Collect())
    client = AdminClient({"bootstrap.servers": bootstrap, **settings, "logger": logger, "log_level": 3,
                          "error_cb": lambda error: said.setdefault(error.str())})
    with pytest.raises(KafkaException) as failed:
        client.list_topics(timeout=8)
    client.poll(1)  # the errors and logs the client met reach their callbacks from poll
    return " | ".join([*said, str(failed.value)])


def test_a_plaintext_client_is_refused(secured_stack):
    # the broker closes a connection that does not start TLS, before any Kafka request is answered
    said = refusal(secured_stack.bootstrap, {"security.protocol": "PLAINTEXT"})
    assert "Disconnected" in said and "APIVERSION_QUERY" in said, said


def test_a_server_certificate_from_another_ca_is_refused(secured_stack, stack_security, tmp_path):
    stranger = Authority(tmp_path / "other-ca")
    settings = {**kafka_config.load(stack_security.admin_sasl), "ssl.ca.location": str(stranger.cert)}
    assert "certificate verify failed" in refusal(secured_stack.bootstrap, settings)


def test_an_expired_client_certificate_is_refused(secured_stack, stack_security, tmp_path):
    expired = Authority(stack_security.folder / "pki").issue(f"{security.ADMIN}-expired", expired=True)
    settings = {**kafka_config.load(stack_security.admin_mtls), "ssl.certificate.location": str(expired.cert),
                "ssl.key.location": str(expired.key)}
    # Java's TLS answers an expired client certificate with the alert certificate_unknown (46); the broker's log
    # names the expiry
    assert "alert certificate unknown" in refusal(secured_stack.mtls_bootstrap, settings)


def test_a_wrong_password_is_refused_naming_authentication(secured_stack, stack_security):
    settings = {**kafka_config.load(stack_security.admin_sasl), "sasl.password": "not-the-password"}
    assert "Authentication failed" in refusal(secured_stack.bootstrap, settings)


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
        kafka_io.producer(as_a, {"transactional.id": f"imagery-{topics.dispatcher_group(b.name)}-x-results"}
                          ).init_transactions(15)

    # its own: a writes its results and uses its transactional ids
    kafka_io.produce(as_a, a.result_topic, [(b"k", b"a's result")])
    kafka_io.producer(as_a, {"transactional.id": f"imagery-{topics.dispatcher_group(a.name)}-x-results"}
                      ).init_transactions(15)
    # nothing of b's was lost or added: its input is as it was, readable by b, and its results empty
    assert kafka_io.end_offsets(admin, b.input_topic) == before
    mine = kafka_io.read_to_end(as_b, b.input_topic, group_id=topics.dispatcher_group(b.name))
    assert [r.value for r in mine.records] == [b"b's own message"]
    assert kafka_io.read_to_end(admin, b.result_topic).records == []
