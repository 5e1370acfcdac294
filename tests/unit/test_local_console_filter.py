"""The local job's console filter (streaming/flink/log4j-local.properties) drops exactly the known-harmless warnings:
the idle job's console test proves they are gone; this holds that nothing else goes with them."""

from __future__ import annotations

import re

from streaming.flink.jobs.http_dispatcher import LOCAL_LOG4J

HARMLESS = [
    "No tokens obtained so skipping notifications",
    "Tokens update task not started because either no tokens obtained or none of the tokens specified its renewal date",
    "Error while loading kafka-version.properties: inStream parameter is null",
    "Property auto.offset.reset is provided but will be overridden from earliest to earliest",
    "The scheduled executor service is shutdown and ignores the command "
    "org.apache.flink.runtime.heartbeat.DefaultHeartbeatMonitor@67d08077",
    "Name collision: Group already contains a Metric with the name 'pendingCommittables'. Metric will not be "
    "reported.[, taskmanager, 1ab5, job, kafka_results[11]: Committer, 0]",
    "Name collision: Group already contains a Metric with the name 'currentSendTime'. Metric will not be reported.[]",
]
MEANINGFUL = [
    "Property auto.offset.reset is provided but will be overridden from latest to earliest",
    "Name collision: Group already contains a Metric with the name 'numRecordsIn'. Metric will not be reported.[]",
    "Error while loading kafka-version.properties: Permission denied",
    "Transaction aborted: the broker fenced the producer",
    "The scheduled executor service is shutdown and ignores the command org.apache.flink.runtime.checkpoint.X@1",
    "Could not fetch the delegation tokens: Kerberos ticket expired",
]


def harmless_pattern() -> re.Pattern[str]:
    properties = dict(
        line.split(" = ", 1) for line in LOCAL_LOG4J.read_text().splitlines() if line and not line.startswith("#")
    )
    assert properties["appender.console.filter.harmless.onMatch"] == "DENY"
    return re.compile(properties["appender.console.filter.harmless.regex"])


def test_the_console_filter_drops_the_known_harmless_warnings_and_nothing_else():
    pattern = harmless_pattern()  # log4j's RegexFilter matches the whole message, as fullmatch does
    assert [m for m in HARMLESS if not pattern.fullmatch(m)] == []
    assert [m for m in MEANINGFUL if pattern.fullmatch(m)] == []
