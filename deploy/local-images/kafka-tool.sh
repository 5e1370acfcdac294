#!/bin/bash
# kafka-broker-api-versions.sh as compose's health check calls it (kafka-tools, which has the real one, is not
# on Maven Central): BrokerReady asks the broker for its metadata and exits 0 when it answers.
exec java -Xmx64m -cp "/opt/kafka/libs/*:/opt/kafka/ready" BrokerReady "$@"
