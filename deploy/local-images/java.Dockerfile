# imagery-local/java:17-bookworm — the JRE the local Flink and Kafka images share (one layer, built once).
FROM imagery-local/python:3.11-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
