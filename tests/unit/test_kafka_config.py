"""The Kafka client properties file: how it is read (Java's .properties rules), what the job keeps for itself, how it
reaches Flink's shaded client and librdkafka, and that no secret value shows in an error or a printed Connection."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from imagery import kafka_access, kafka_io
from imagery.kafka_config import jaas_line, jaas_options, librdkafka_settings, load, write_properties
from streaming.dispatch.kafka_properties import (
    FLINK_SHADED_KAFKA_PACKAGE,
    KafkaConfigError,
    flink_kafka_options,
    parse_properties,
    read_properties,
)

SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
OAUTH = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
SECRET = "s3cr3t-Value"  # what no error may show


# ---------------------------------------------------------------------------- parse_properties


def test_comments_and_blank_lines_are_skipped():
    text = "# a comment\n! another\n\n   \n  # indented comment\nsecurity.protocol=SSL\n"
    assert parse_properties(text) == {"security.protocol": "SSL"}


@pytest.mark.parametrize("line", ["a=b", "a = b", "a:b", "a : b", "a b", "  a\t=\tb", "a=b\r"])
def test_a_key_and_its_value_part_by_equals_colon_or_space(line):
    assert parse_properties(line) == {"a": "b"}


def test_a_value_keeps_its_inner_separators_and_trailing_spaces():
    assert parse_properties("url = https://h:8443/a=b c \n") == {"url": "https://h:8443/a=b c "}


def test_a_line_ending_in_an_odd_count_of_backslashes_goes_on():
    text = 'sasl.jaas.config=x.ScramLoginModule required \\\n    username="u" \\\n    password="p";\nnext=1\n'
    assert parse_properties(text) == {
        "sasl.jaas.config": 'x.ScramLoginModule required username="u" password="p";',
        "next": "1",
    }


def test_an_even_count_of_trailing_backslashes_is_an_escaped_backslash():
    assert parse_properties("path=C:\\\\dir\\\\\nnext=1\n") == {"path": "C:\\dir\\", "next": "1"}


def test_escapes_in_keys_and_values():
    text = "my\\ key\\=x = tab\\there\\nnewline \\u00e9t\\u00E9 \\q\n"
    assert parse_properties(text) == {"my key=x": "tab\there\nnewline été q"}


def test_a_later_entry_wins():
    assert parse_properties("a=1\na=2\n") == {"a": "2"}


# ---------------------------------------------------------------------------- read_properties


def test_read_properties_reads_a_file(tmp_path):
    file = tmp_path / "client.properties"
    file.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n")
    assert read_properties(file) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}


@pytest.mark.parametrize(
    "name",
    [
        "bootstrap.servers",
        "group.id",
        "transactional.id",
        "isolation.level",
        "enable.auto.commit",
        "auto.offset.reset",
        "key.serializer",
        "value.deserializer",
        "max.request.size",
        "transaction.timeout.ms",
    ],
)
def test_entries_the_job_sets_itself_are_refused_by_name_never_by_value(tmp_path, name):
    file = tmp_path / "client.properties"
    file.write_text(f"security.protocol=SSL\n{name}={SECRET}\n")
    with pytest.raises(KafkaConfigError) as err:
        read_properties(file)
    assert name in str(err.value) and str(file) in str(err.value)
    assert SECRET not in str(err.value)


def test_every_job_owned_entry_is_named_at_once(tmp_path):
    file = tmp_path / "client.properties"
    file.write_text(f"bootstrap.servers={SECRET}:9092\ngroup.id={SECRET}\ntransactional.id={SECRET}\n")
    with pytest.raises(KafkaConfigError) as err:
        read_properties(file)
    message = str(err.value)
    assert all(name in message for name in ("bootstrap.servers", "group.id", "transactional.id"))
    assert SECRET not in message
    assert "--bootstrap" in message and "--group-id" in message  # where each is set instead


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(KafkaConfigError, match="cannot read the Kafka client properties file .*nope.properties"):
        read_properties(tmp_path / "nope.properties")


# ---------------------------------------------------------------------------- flink_kafka_options


def test_flink_options_prefix_every_entry_and_move_kafka_classes_to_the_shaded_package():
    handler = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
    entries = {
        "security.protocol": "SASL_SSL",
        "sasl.jaas.config": f'{SCRAM} required username="u" password="p";',
        "sasl.login.callback.handler.class": handler,
        "ssl.truststore.location": "/etc/org.apache.kafka.certs/ca.pem",  # not a class entry: left as it is
        "client.id": "org.apache.kafka.tool",
    }
    assert flink_kafka_options(entries) == {
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.jaas.config": (
            f'{FLINK_SHADED_KAFKA_PACKAGE}common.security.scram.ScramLoginModule required username="u" password="p";'
        ),
        "properties.sasl.login.callback.handler.class": (
            f"{FLINK_SHADED_KAFKA_PACKAGE}common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
        ),
        "properties.ssl.truststore.location": "/etc/org.apache.kafka.certs/ca.pem",
        "properties.client.id": "org.apache.kafka.tool",
    }


def test_a_class_already_in_the_shaded_package_is_not_moved_twice():
    shaded = f"{FLINK_SHADED_KAFKA_PACKAGE}common.security.scram.ScramLoginModule required;"
    assert flink_kafka_options({"sasl.jaas.config": shaded}) == {"properties.sasl.jaas.config": shaded}


def test_a_class_outside_kafka_is_left_as_it_is():
    krb = "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true;"
    assert flink_kafka_options({"sasl.jaas.config": krb}) == {"properties.sasl.jaas.config": krb}


# ---------------------------------------------------------------------------- librdkafka_settings


def test_sasl_ssl_with_scram_and_a_pem_truststore():
    entries = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": f'{SCRAM} required username="alice" password="{SECRET}";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/kafka/ca.pem",
    }
    assert librdkafka_settings(entries) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }


def test_plain_takes_its_credentials_from_the_jaas_line_too():
    entries = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": f'{PLAIN} required username="KEY" password="{SECRET}";',
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert librdkafka_settings(entries) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "KEY",
        "sasl.password": SECRET,
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_mtls_with_a_pem_keystore_reads_key_and_certificate_from_the_one_file():
    entries = {
        "security.protocol": "SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": "/etc/kafka/user.pem",
        "ssl.key.password": SECRET,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/kafka/ca.crt",
    }
    assert librdkafka_settings(entries) == {
        "security.protocol": "SSL",
        "ssl.certificate.location": "/etc/kafka/user.pem",
        "ssl.key.location": "/etc/kafka/user.pem",
        "ssl.key.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.crt",
    }


def test_mtls_with_a_pkcs12_keystore():
    entries = {
        "security.protocol": "SSL",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": "/etc/kafka/user.p12",
        "ssl.keystore.password": SECRET,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/kafka/ca.crt",
    }
    assert librdkafka_settings(entries) == {
        "security.protocol": "SSL",
        "ssl.keystore.location": "/etc/kafka/user.p12",
        "ssl.keystore.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.crt",
    }


def test_oauthbearer_client_credentials():
    entries = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example.com/oauth2/token",
        "sasl.jaas.config": f'{OAUTH} required clientId="imagery" clientSecret="{SECRET}" scope="kafka";',
    }
    assert librdkafka_settings(entries) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example.com/oauth2/token",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "imagery",
        "sasl.oauthbearer.client.secret": SECRET,
        "sasl.oauthbearer.scope": "kafka",
    }


def test_an_empty_identification_algorithm_turns_host_checking_off_as_in_java():
    assert librdkafka_settings({"ssl.endpoint.identification.algorithm": ""}) == {
        "ssl.endpoint.identification.algorithm": "none"
    }


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        (
            {"ssl.truststore.location": "/etc/kafka/truststore.jks", "ssl.truststore.password": SECRET},
            "ssl.truststore.location",
        ),
        (
            {"ssl.truststore.type": "JKS", "ssl.truststore.location": "/etc/kafka/truststore.jks"},
            "ssl.truststore.location",
        ),
        (
            {
                "ssl.keystore.type": "JKS",
                "ssl.keystore.location": "/etc/kafka/keystore.jks",
                "ssl.keystore.password": SECRET,
            },
            "ssl.keystore.location",
        ),
        (
            {
                "sasl.mechanism": "GSSAPI",
                "sasl.jaas.config": "com.sun.security.auth.module.Krb5LoginModule required "
                f'useKeyTab=true keyTab="/etc/{SECRET}.keytab" principal="{SECRET}@EXAMPLE.COM";',
            },
            "Krb5LoginModule",
        ),
        ({"sasl.kerberos.service.name": SECRET}, "sasl.kerberos.service.name"),
        ({"ssl.truststore.certificates": f"-----BEGIN CERTIFICATE-----{SECRET}"}, "ssl.truststore.certificates"),
        ({"sasl.login.callback.handler.class": f"com.example.{SECRET}"}, "sasl.login.callback.handler.class"),
        ({"sasl.jaas.config": f'{SCRAM} required username="alice";'}, "needs username and password"),
        ({"sasl.jaas.config": f"not a jaas line {SECRET}"}, "sasl.jaas.config"),
        (
            {"ssl.truststore.type": "PEM", "ssl.truststore.location": "/ca.pem", "ssl.truststore.password": SECRET},
            "ssl.truststore.password",
        ),
    ],
)
def test_what_librdkafka_cannot_honour_is_refused_by_name_without_its_value(entries, named):
    with pytest.raises(KafkaConfigError) as err:
        librdkafka_settings(entries)
    assert named in str(err.value)
    assert SECRET not in str(err.value)


def test_every_refused_entry_is_named_at_once():
    with pytest.raises(KafkaConfigError) as err:
        librdkafka_settings(
            {"sasl.kerberos.service.name": "kafka", "ssl.truststore.location": "/t.jks", "security.protocol": "SSL"}
        )
    assert "sasl.kerberos.service.name" in str(err.value) and "ssl.truststore.location" in str(err.value)


def test_load_names_the_file_and_the_entry_never_the_value(tmp_path):
    file = tmp_path / "client.properties"
    file.write_text(f"security.protocol=SASL_SSL\nsasl.kerberos.service.name={SECRET}\n")
    with pytest.raises(KafkaConfigError) as err:
        load(file)
    assert str(err.value).startswith(str(file)) and "sasl.kerberos.service.name" in str(err.value)
    assert SECRET not in str(err.value)


# ---------------------------------------------------------------------------- jaas_line


@pytest.mark.parametrize("password", ['pa"ss\\word', '\\"', "ends with \\", '"', "plain", "a=b;c d:#!"])
def test_jaas_line_round_trips_through_jaas_options(password):
    line = jaas_line(SCRAM, "team-fruit", password)
    assert jaas_options(line) == (SCRAM, {"username": "team-fruit", "password": password})


def test_a_jaas_line_round_trips_through_a_properties_file(tmp_path):
    password = 'pa"ss\\word=x:y #z'
    file = write_properties(
        tmp_path / "team.properties",
        {"security.protocol": "SASL_SSL", "sasl.jaas.config": jaas_line(SCRAM, "u", password)},
    )
    assert file.stat().st_mode & 0o777 == 0o600
    assert librdkafka_settings(read_properties(file))["sasl.password"] == password


# ---------------------------------------------------------------------------- kafka_access.team_acls


def test_a_team_gets_exactly_the_acls_of_the_table():
    allowed = {(b.restype, b.name, b.resource_pattern_type, b.operation) for b in kafka_access.team_acls("fruit")}
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    assert allowed == {
        (topic, "imagery.new.fruit", literal, read),
        (topic, "imagery.new.fruit", literal, describe),
        (group, "http-dispatcher-fruit", literal, read),
        (group, "http-dispatcher-fruit.", prefixed, read),
        (topic, "inference.results.fruit", literal, write),
        (topic, "inference.results.fruit", literal, describe),
        (topic, "dlq.inference.http", literal, write),
        (topic, "dlq.inference.http", literal, describe),
        (txn, "imagery-http-dispatcher-fruit-", prefixed, write),
        (txn, "imagery-http-dispatcher-fruit-", prefixed, describe),
        (txn, "imagery-http-dispatcher-fruit.", prefixed, write),
        (txn, "imagery-http-dispatcher-fruit.", prefixed, describe),
    }
    bindings = kafka_access.team_acls("fruit")
    assert len(bindings) == len(allowed)
    assert {(b.principal, b.host, b.permission_type) for b in bindings} == {
        ("User:team-fruit", "*", AclPermissionType.ALLOW)
    }


def test_a_teams_acls_name_the_dlq_it_is_given():
    names = {b.name for b in kafka_access.team_acls("fruit", dlq_topic="dlq.other")}
    assert "dlq.other" in names and "dlq.inference.http" not in names


@pytest.mark.parametrize("team", ["fruit-west", "fruit.west", "Fruit", ""])
def test_a_team_name_whose_prefixes_could_cover_another_teams_is_refused(team):
    with pytest.raises(kafka_access.AccessError, match="lower-case letters, digits and '_'"):
        kafka_access.team_acls(team)


# ---------------------------------------------------------------------------- kafka_io.Connection


def test_a_connection_prints_as_its_servers_alone():
    settings = {
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.key.password": SECRET,
        "sasl.oauthbearer.client.secret": SECRET,
    }
    kafka = kafka_io.Connection("broker-1:9096,broker-2:9096", settings)
    assert str(kafka) == "broker-1:9096,broker-2:9096" and f"{kafka}" == str(kafka)
    for shown in (repr(kafka), f"{kafka!r}", str([kafka]), repr({"kafka": kafka}), "%s %r" % (kafka, kafka)):
        assert SECRET not in shown and "alice" not in shown
    assert "broker-1:9096" in repr(kafka)


def test_a_plain_target_is_a_connection_without_settings():
    assert kafka_io.connection("h:9092") == kafka_io.Connection("h:9092")
    kafka = kafka_io.Connection("h:9092", {"security.protocol": "SSL"})
    assert kafka_io.connection(kafka) is kafka
