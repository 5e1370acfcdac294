"""`imagery provision` when MinIO or Kafka says no: MinIO without the team's Kafka notification target is a warning
that says what to set (the topics and the bucket are made), and the tooling's known errors end `imagery` with one
line, `error: <message>`, and status 1, never a traceback. No services: MinIO and Kafka are stood in for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from minio.error import S3Error

from imagery import cli, provision
from imagery.errors import ToolError
from imagery.kafka_config import jaas_line, write_properties
from imagery.teams import Team
from tests.helpers import run_cli_main

FRUIT = Team.from_spec("fruit:2:fruit_cls_best.ts")
ARN_REFUSED = (
    "InvalidArgument",
    "A specified destination ARN does not exist or is not well-formed. Verify the destination ARN.",
)  # what the local MinIO answers (seen on `imagery up`'s MinIO)


def s3_error(code: str, message: str) -> S3Error:
    return S3Error(None, code, message, "/fruit", "req-1", "host-1", bucket_name="fruit")  # type: ignore[arg-type]


class FakeMinio:
    """Minio's bucket calls, answering set_bucket_notification with REFUSAL."""

    def __init__(self, refusal: S3Error | None = None) -> None:
        self.buckets: set[str] = set()
        self.notifications: dict[str, object] = {}
        self.refusal = refusal

    def bucket_exists(self, name: str) -> bool:
        return name in self.buckets

    def make_bucket(self, name: str) -> None:
        self.buckets.add(name)

    def set_bucket_notification(self, name: str, config: object) -> None:
        if self.refusal is not None:
            raise self.refusal
        self.notifications[name] = config


# ---------------------------------------------------------------------------- ensure_bucket_events


def test_the_bucket_is_made_and_its_events_wired_to_the_teams_target():
    minio = FakeMinio()
    provision.ensure_bucket_events(minio, FRUIT)  # type: ignore[arg-type]
    assert minio.buckets == {"fruit"}
    queue = minio.notifications["fruit"].queue_config_list[0]  # type: ignore[attr-defined]
    assert queue.queue == "arn:minio:sqs::FRUIT:kafka" and queue.events == ["s3:ObjectCreated:*"]


def test_minio_without_the_teams_target_says_what_to_set_and_the_bucket_is_made():
    minio = FakeMinio(s3_error(*ARN_REFUSED))
    with pytest.raises(provision.EventsTargetMissing) as err:
        provision.ensure_bucket_events(minio, FRUIT)  # type: ignore[arg-type]
    assert minio.buckets == {"fruit"}
    assert isinstance(err.value, provision.ProvisionError)
    message = str(err.value)
    for part in (
        "arn:minio:sqs::FRUIT:kafka",
        "imagery.new.fruit",
        "MINIO_NOTIFY_KAFKA_ENABLE_FRUIT=on",
        "MINIO_NOTIFY_KAFKA_BROKERS_FRUIT=",
        "MINIO_NOTIFY_KAFKA_TOPIC_FRUIT=imagery.new.fruit",
        "compose.yaml",
        "imagery up",
        "imagery provision",
    ):
        assert part in message, part
    assert "S3 operation failed" not in message and "\n" not in message


def test_the_variables_are_named_by_the_targets_id():
    team = Team.from_spec("orchard_west:2:w.pt")
    message = str(provision.events_target_missing(team))
    assert "MINIO_NOTIFY_KAFKA_TOPIC_ORCHARD_WEST=imagery.new.orchard_west" in message
    assert "arn:minio:sqs::ORCHARD_WEST:kafka" in message and "bucket orchard-west" in message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDenied", "Access Denied."),
        ("InvalidArgument", "A header you provided implies functionality that is not implemented"),
    ],
)
def test_other_refusals_are_minios_own(code, message):
    with pytest.raises(S3Error) as err:
        provision.ensure_bucket_events(FakeMinio(s3_error(code, message)), FRUIT)  # type: ignore[arg-type]
    assert err.value.code == code


# ---------------------------------------------------------------------------- the command, through main()


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """The topics are made (a stand-in for Kafka); MinIO is the command's own client, stood in for per test."""
    monkeypatch.setattr(
        provision,
        "ensure_topics",
        lambda _bootstrap, teams, dlq_partitions=4: [
            name for t in teams for name in (t.input_topic, f"inference.results.{t.team}")
        ],
    )


def minio_refusing(monkeypatch: pytest.MonkeyPatch, refusal: S3Error | None) -> FakeMinio:
    minio = FakeMinio(refusal)
    monkeypatch.setattr("imagery.storage_access.minio_client", lambda *_args, **_kwargs: minio)
    return minio


def test_provision_without_minios_target_warns_and_goes_on_for_every_team(monkeypatch, capsys, no_kafka):
    minio = minio_refusing(monkeypatch, s3_error(*ARN_REFUSED))
    assert run_cli_main(monkeypatch, "provision", "fruit:2:fruit_cls_best.ts", "apples:2:apples.pt") == 0
    out = capsys.readouterr()
    assert minio.buckets == {"fruit", "apples"}
    assert out.out.count("warning: bucket ") == 2
    assert "MINIO_NOTIFY_KAFKA_ENABLE_APPLES=on" in out.out
    assert "topics: imagery.new.fruit" in out.out and "topics: imagery.new.apples" in out.out
    assert "uploads go to" not in out.out
    assert "Traceback" not in out.out + out.err


def test_a_frozen_s3_error_is_one_line_and_status_1(monkeypatch, capsys, no_kafka):
    minio_refusing(monkeypatch, s3_error("AccessDenied", "Access Denied."))
    assert run_cli_main(monkeypatch, "provision", "fruit:2:fruit_cls_best.ts") == 1
    out = capsys.readouterr()
    assert out.err == "error: MinIO refused a call on /fruit (AccessDenied): Access Denied.\n"
    assert "Traceback" not in out.out and "frozen" not in out.err


def test_a_minio_that_does_not_answer_is_one_line(monkeypatch, capsys, no_kafka):
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    class Refusing(FakeMinio):
        def bucket_exists(self, name: str) -> bool:
            raise MaxRetryError(None, "/fruit", NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]

    monkeypatch.setattr("imagery.storage_access.minio_client", lambda *_args, **_kwargs: Refusing())
    assert run_cli_main(monkeypatch, "provision", "--minio", "127.0.0.1:1", "fruit:2:fruit_cls_best.ts") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MinIO did not answer: ") and "Connection refused" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")),
            "error: Kafka: broker down; if this Kafka is secured (TLS, SASL), give its client properties file: "
            "`imagery --kafka-config FILE ...` or IMAGERY_KAFKA_CONFIG\n",
        ),
        (provision.ProvisionError("no weights"), "error: no weights\n"),
        (ToolError("something [in brackets] failed"), "error: something [in brackets] failed\n"),
        (
            TimeoutError(),
            "error: no answer in time: check that Kafka and MinIO run where the command looks for them "
            "(--bootstrap, --minio; `imagery status` for the local stack)\n",
        ),
    ],
)
def test_the_toolings_known_errors_are_one_line(monkeypatch, capsys, error, shown):
    def fail(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(provision, "provision", fail)
    minio_refusing(monkeypatch, None)
    assert run_cli_main(monkeypatch, "provision", "fruit:2:fruit_cls_best.ts") == 1
    out = capsys.readouterr()
    assert shown in out.out + out.err and "Traceback" not in out.out + out.err


def test_a_properties_file_error_is_one_line(monkeypatch, capsys, tmp_path):
    file = tmp_path / "client.properties"
    file.write_text("security.protocol=SSL\nbootstrap.servers=hidden.example.com:9092\n")
    minio_refusing(monkeypatch, None)
    assert run_cli_main(monkeypatch, "--kafka-config", str(file), "provision", "fruit:2:fruit_cls_best.ts") == 1
    out = capsys.readouterr()
    assert "error:" in out.out + out.err and "bootstrap.servers" in out.out + out.err
    assert "hidden.example.com" not in out.out + out.err


def test_an_unexpected_error_is_not_hidden(monkeypatch):
    def fail(*_args: object, **_kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(provision, "provision", fail)
    minio_refusing(monkeypatch, None)
    monkeypatch.setattr(sys, "argv", ["imagery", "provision", "fruit:2:fruit_cls_best.ts"])
    with pytest.raises(KeyError):
        cli.main()


def test_help_still_works(monkeypatch, capsys):
    assert run_cli_main(monkeypatch, "--help") == 0
    assert "provision" in capsys.readouterr().out


# ---------------------------------------------------------------------------- on a secured Kafka


@pytest.fixture
def principals(monkeypatch: pytest.MonkeyPatch, no_kafka: None) -> list[tuple[object, ...]]:
    """ensure_team_principal stood in for: what it was asked, and a team file holding a secret."""
    calls: list[tuple[object, ...]] = []

    def ensure(kafka: object, team: str, operator_file: Path, credentials_dir: Path) -> Path:
        calls.append((kafka, team, operator_file, credentials_dir))
        entries = {"security.protocol": "SASL_SSL"}
        if "sasl.jaas.config" in operator_file.read_text():
            entries["sasl.jaas.config"] = jaas_line("x.ScramLoginModule", f"team-{team}", "TEAM-SECRET")
        else:
            entries["ssl.keystore.location"] = str(credentials_dir / f"team-{team}.pem")
        return write_properties(provision.team_client_file(credentials_dir, team), entries)

    def reader(_admin: object, team: str, credentials_dir: Path) -> tuple[str, Path]:
        return provision.team_minio_access_key(team), provision.team_minio_secret_file(credentials_dir, team)

    monkeypatch.setattr(provision, "ensure_team_principal", ensure)
    monkeypatch.setattr(provision, "ensure_team_storage_reader", reader)  # tests/secured makes a real one
    minio_refusing(monkeypatch, None)
    return calls


def test_a_secured_kafka_gets_each_teams_principal_and_names_its_file(monkeypatch, capsys, tmp_path, principals):
    operator = write_properties(
        tmp_path / "admin.properties",
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": jaas_line(
                "org.apache.kafka.common.security.scram.ScramLoginModule", "admin", "ADMIN-SECRET"
            ),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tmp_path / "ca.crt"),
        },
    )
    credentials = tmp_path / "creds"
    assert (
        run_cli_main(
            monkeypatch,
            "--kafka-config",
            str(operator),
            "provision",
            "--bootstrap",
            "k:9096",
            "--credentials-dir",
            str(credentials),
            "fruit:2:fruit_cls_best.ts",
            "apples:2:a.pt",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert [(str(kafka), team, file, folder) for kafka, team, file, folder in principals] == [
        ("k:9096", "fruit", operator, credentials),
        ("k:9096", "apples", operator, credentials),
    ]
    assert principals[0][0].settings["sasl.username"] == "admin"
    assert str(credentials / "fruit.kafka.properties") in out and str(credentials / "apples.kafka.properties") in out
    assert "TEAM-SECRET" not in out and "ADMIN-SECRET" not in out and "mTLS" not in out


def test_on_mtls_the_command_says_where_the_teams_certificate_goes(monkeypatch, capsys, tmp_path, principals):
    operator = write_properties(
        tmp_path / "admin-mtls.properties",
        {
            "security.protocol": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tmp_path / "admin.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tmp_path / "ca.crt"),
        },
    )
    assert (
        run_cli_main(
            monkeypatch,
            "--kafka-config",
            str(operator),
            "provision",
            "--credentials-dir",
            str(tmp_path / "creds"),
            "fruit:2:fruit_cls_best.ts",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "CN=team-fruit" in out and str(tmp_path / "creds" / "team-fruit.pem") in out


def test_a_plain_kafka_makes_no_principal(monkeypatch, capsys, tmp_path, principals):
    assert (
        run_cli_main(
            monkeypatch, "provision", "--credentials-dir", str(tmp_path / "creds"), "fruit:2:fruit_cls_best.ts"
        )
        == 0
    )
    assert principals == [] and not (tmp_path / "creds").exists()
    assert "bucket fruit: uploads go to imagery.new.fruit" in capsys.readouterr().out
