# imagery-local/kafka:4.2.2 — stands in for apache/kafka:4.2.2 where no registry is reachable: the broker jars
# the local stack fetched from Maven Central, configured from KAFKA_* variables as the official image is
# (KAFKA_LISTENER_SECURITY_PROTOCOL_MAP -> listener.security.protocol.map), KRaft storage formatted on first start.
FROM imagery-local/java:17-bookworm
COPY libs/ /opt/kafka/libs/
COPY kafka-run.sh /etc/kafka/docker/run
COPY ready/ /opt/kafka/ready/
COPY kafka-tool.sh /opt/kafka/bin/kafka-broker-api-versions.sh
RUN useradd --system --uid 1000 --home-dir /opt/kafka appuser \
 && mkdir -p /var/lib/kafka/data && chown -R appuser /var/lib/kafka
USER appuser
EXPOSE 9092
CMD ["/etc/kafka/docker/run"]
