"""The Kafka client properties file (Java client names, streaming/dispatch/kafka_properties.py) for the tooling,
whose clients are librdkafka's (confluent-kafka): each entry translated to librdkafka's name for it, or refused.

librdkafka names some settings as the Java client does (`security.protocol`, `sasl.mechanism`,
`ssl.endpoint.identification.algorithm`, ...), some otherwise (`ssl.truststore.location` is `ssl.ca.location`), and
reads the SASL credentials from settings of their own where Java reads one JAAS line. An entry it cannot honour
(a JKS store, Kerberos, a Java class) is refused with its name: dropping it would make a client that connects
another way than the job does, or not at all, with no word why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from streaming.dispatch.kafka_properties import KafkaConfigError, read_properties

# The same setting under the same name in both clients (librdkafka's CONFIGURATION.md)
SAME_NAME = {
    "security.protocol",
    "sasl.mechanism",
    "ssl.endpoint.identification.algorithm",
    "ssl.key.password",
    "client.id",
    "ssl.cipher.suites",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.oauthbearer.scope",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "connections.max.idle.ms",
    "metadata.max.age.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "retry.backoff.ms",
    "client.rack",
}
_JAAS = re.compile(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*(.*?)\s*;?\s*$", re.S)
_JAAS_OPTION = re.compile(r'([\w.]+)\s*=\s*("(?:\\.|[^"\\])*"|[^\s;]+)')


def jaas_options(line: str) -> tuple[str, dict[str, str]]:
    """A `sasl.jaas.config` value as (login module class, its options)."""
    match = _JAAS.fullmatch(line)
    if match is None:
        raise KafkaConfigError(
            'sasl.jaas.config is not one JAAS login module line (`<LoginModule> required key="value" ...;`)'
        )
    options = {}
    for key, value in _JAAS_OPTION.findall(match.group(3)):
        options[key] = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
    return match.group(1), options


def _jaas(value: str, _entries: dict[str, str]) -> dict[str, str]:
    module, options = jaas_options(value)
    short = module.rsplit(".", 1)[-1]
    if short in ("ScramLoginModule", "PlainLoginModule"):
        if "username" not in options or "password" not in options:
            raise KafkaConfigError(f"sasl.jaas.config: {short} needs username and password")
        return {"sasl.username": options["username"], "sasl.password": options["password"]}
    if short == "OAuthBearerLoginModule":  # client credentials against the token endpoint (sasl.oauthbearer.*)
        settings = {"sasl.oauthbearer.method": "oidc"}
        for java, rdkafka in (
            ("clientId", "sasl.oauthbearer.client.id"),
            ("clientSecret", "sasl.oauthbearer.client.secret"),
            ("scope", "sasl.oauthbearer.scope"),
        ):
            if java in options:
                settings[rdkafka] = options[java]
        return settings
    raise KafkaConfigError(
        f"sasl.jaas.config: the tooling (librdkafka) has no login module {short}; it takes "
        "ScramLoginModule, PlainLoginModule and OAuthBearerLoginModule"
    )


def _store_type(entries: dict[str, str], store: str) -> str:
    return entries.get(f"ssl.{store}.type", "JKS").upper()


def _truststore(value: str, entries: dict[str, str]) -> dict[str, str]:
    if _store_type(entries, "truststore") != "PEM":
        raise KafkaConfigError(
            "ssl.truststore.location: the tooling (librdkafka) reads PEM truststores only: set "
            "ssl.truststore.type=PEM with a PEM CA bundle (`keytool -exportcert -rfc` makes one)"
        )
    return {"ssl.ca.location": value}


def _keystore(value: str, entries: dict[str, str]) -> dict[str, str]:
    kind = _store_type(entries, "keystore")
    if kind == "PEM":  # the key and the certificate chain in one file: librdkafka reads each block from it
        return {"ssl.certificate.location": value, "ssl.key.location": value}
    if kind == "PKCS12":
        return {"ssl.keystore.location": value}
    raise KafkaConfigError(
        f"ssl.keystore.location: the tooling (librdkafka) cannot read a {kind} keystore: use "
        "ssl.keystore.type=PEM (key and certificate in one file) or PKCS12"
    )


def _keystore_password(value: str, entries: dict[str, str]) -> dict[str, str]:
    return {"ssl.keystore.password": value} if _store_type(entries, "keystore") == "PKCS12" else {}


def _identification(value: str, _entries: dict[str, str]) -> dict[str, str]:
    return {"ssl.endpoint.identification.algorithm": value or "none"}  # Java's "" turns host checking off


def _store_kind(_value: str, _entries: dict[str, str]) -> dict[str, str]:
    return {}  # read with its location (_truststore, _keystore)


def _pem_truststore_password(value: str, entries: dict[str, str]) -> dict[str, str]:
    if _store_type(entries, "truststore") == "PEM":
        raise KafkaConfigError(
            "ssl.truststore.password: a PEM truststore has no password (the Java client refuses one too): remove it"
        )
    return {}


TRANSLATED: dict[str, Callable[[str, dict[str, str]], dict[str, str]]] = {
    "sasl.jaas.config": _jaas,
    "ssl.truststore.location": _truststore,
    "ssl.truststore.type": _store_kind,
    "ssl.truststore.password": _pem_truststore_password,
    "ssl.keystore.location": _keystore,
    "ssl.keystore.type": _store_kind,
    "ssl.keystore.password": _keystore_password,
    "ssl.endpoint.identification.algorithm": _identification,
}


def librdkafka_settings(entries: dict[str, str]) -> dict[str, str]:
    """The properties file's entries as librdkafka settings. Raises KafkaConfigError naming the entries it cannot
    honour (all of them at once)."""
    settings: dict[str, str] = {}
    problems = []
    for name, value in entries.items():
        try:
            if name in TRANSLATED:
                settings.update(TRANSLATED[name](value, entries))
            elif name in SAME_NAME:
                settings[name] = value
            else:
                raise KafkaConfigError(
                    f"{name}: the tooling (librdkafka) has no such setting, so it cannot connect "
                    "as the file says; remove it, or keep it in a file for the dispatcher alone"
                )
        except KafkaConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise KafkaConfigError("; ".join(problems))
    return settings


def jaas_line(module: str, username: str, password: str) -> str:
    """A `sasl.jaas.config` value for a user and password login module (SCRAM, PLAIN), quoted as JAAS reads it."""
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'{module} required username="{username}" password="{quoted}";'


def write_secret(path: Path, text: str) -> Path:
    """TEXT in a file at PATH that its owner alone may read, from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def properties_text(entries: dict[str, str]) -> str:
    """ENTRIES in the properties format (a backslash doubled, as the format's escape)."""
    return "".join(f"{name}={value.replace(chr(92), chr(92) * 2)}\n" for name, value in entries.items())


def write_properties(path: Path, entries: dict[str, str]) -> Path:
    """ENTRIES as a properties file at PATH, readable by its owner alone (it holds secrets)."""
    return write_secret(path, properties_text(entries))


def load(path: str | Path) -> dict[str, str]:
    """The librdkafka settings of the properties file at PATH. Raises KafkaConfigError."""
    try:
        return librdkafka_settings(read_properties(path))
    except KafkaConfigError as exc:
        message = str(exc)
        raise KafkaConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None
