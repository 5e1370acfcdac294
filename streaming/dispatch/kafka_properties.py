"""Kafka client settings from one properties file, in the Java client's names, as Kafka's own tools take it
(`--command-config`): `security.protocol`, `sasl.mechanism`, `sasl.jaas.config`, `ssl.truststore.*`,
`ssl.keystore.*`, ... The dispatcher hands every entry to its Kafka source and both sinks (`properties.<name>`);
the tooling translates them for librdkafka (imagery/kafka_config.py).

The file is the one secret a client needs (a SASL password sits in `sasl.jaas.config`, key passwords beside it),
so it is read where it is used and its values are never printed: errors name the entry, never its value.
"""

from __future__ import annotations

import re
from pathlib import Path

# What the job sets itself, from its own flags: an entry for one of these would fight them
JOB_OWNED = {
    "bootstrap.servers": "--bootstrap",
    "group.id": "--group-id",
    "transactional.id": "the job (one prefix per job identity: --group-id and its topics)",
    "isolation.level": "the job (read_committed)",
    "enable.auto.commit": "the job (offsets are committed with its checkpoints)",
    "auto.offset.reset": "--starting-offsets",
    "key.serializer": "the job",
    "value.serializer": "the job",
    "key.deserializer": "the job",
    "value.deserializer": "the job",
    "max.request.size": "--max-record-bytes",
    "transaction.timeout.ms": "the job (the broker's transaction.max.timeout.ms)",
}
# Entries whose value names Kafka client classes: flink-sql-connector-kafka bundles the Kafka client relocated
# under this package, so a class named as Kafka documents it must be renamed to the one the jar holds
CLASS_ENTRIES = {
    "sasl.jaas.config",
    "sasl.login.callback.handler.class",
    "sasl.client.callback.handler.class",
    "sasl.login.class",
    "ssl.engine.factory.class",
}
KAFKA_PACKAGE = "org.apache.kafka."
FLINK_SHADED_KAFKA_PACKAGE = "org.apache.flink.kafka.shaded.org.apache.kafka."


class KafkaConfigError(ValueError):
    """The properties file cannot be read or holds an entry that cannot be honoured; the message names the file
    and the entry (never a value)."""


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = match.group(1)
        if char.startswith("u"):
            return chr(int(char[1:], 16))
        return _ESCAPES.get(char, char)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, text)


_ENTRY = re.compile(r"((?:\\.|[^\s=:\\])*)\s*[=:]?\s*(.*)$", re.S)


def _logical_lines(text: str) -> list[str]:
    """The text's entries, one a line: comments and blank lines dropped, continued lines joined."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:  # an odd count of trailing backslashes: it goes on
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    return [*lines, pending] if pending else lines


def parse_properties(text: str) -> dict[str, str]:
    """A Java .properties text (`key=value`, `key: value` or `key value`; `#` and `!` comments; a line ending in
    an odd number of backslashes goes on; `\\t`, `\\n`, `\\uXXXX` escapes), as java.util.Properties reads it."""
    entries: dict[str, str] = {}
    for line in _logical_lines(text):
        match = _ENTRY.match(line)
        assert match is not None  # the pattern matches any text
        entries[_unescape(match.group(1))] = _unescape(match.group(2))
    return entries


def read_properties(path: str | Path) -> dict[str, str]:
    """The file's entries, checked: none may set what the job sets itself. Raises KafkaConfigError."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise KafkaConfigError(f"cannot read the Kafka client properties file {file}: {exc.strerror}") from None
    entries = parse_properties(text)
    owned = sorted(set(entries) & set(JOB_OWNED))
    if owned:
        raise KafkaConfigError(
            f"{file}: " + "; ".join(f"{name} is set by {JOB_OWNED[name]}, not by the file" for name in owned)
        )
    return entries


def flink_kafka_options(entries: dict[str, str]) -> dict[str, str]:
    """The entries as options of a Flink Kafka table (`properties.<name>`), the Kafka client's class names moved to
    the package the connector jar bundles them in."""
    return {
        f"properties.{name}": (
            value.replace(KAFKA_PACKAGE, FLINK_SHADED_KAFKA_PACKAGE)
            if name in CLASS_ENTRIES and FLINK_SHADED_KAFKA_PACKAGE not in value
            else value
        )
        for name, value in entries.items()
    }
