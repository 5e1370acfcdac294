"""Pinned versions of the parts the local stack installs: the one place each is defined.

The Flink connector jars are pinned in streaming/flink/connectors.txt; apache-flink itself in pyproject.toml
(a unit test checks that FLINK_VERSION below and the installed wheel agree).
"""

KAFKA_VERSION = "4.2.2"  # org.apache.kafka:kafka_2.13 on Maven Central, KRaft
MINIO_MODULE = "github.com/minio/minio"
# upstream publishes source only now: a pseudo-version of a pinned commit, built with `go install`
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
FLINK_VERSION = "2.2.1"
