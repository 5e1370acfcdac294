#!/bin/bash
# Builds local stand-ins for the official base images, for a Docker engine that reaches no image registry
# (only Debian's mirror, PyPI and Maven Central): a Debian bookworm base made with debootstrap, then Python,
# Java, Flink (from the PyFlink wheel), Kafka (the local stack's Maven jars), MinIO (the local stack's
# `go install` build) and Prometheus (Debian's package). compose.yaml then builds and runs on them with
# `--env-file deploy/local-images/images.env`, which swaps only the image sources. Each image is rebuilt only when its version label changes.
#
# Needs: root (debootstrap), docker, and `make setup` done (the Kafka jars and MinIO binary in the cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${IMAGERY_CACHE_DIR:-$HOME/.cache/imagery}
py=${PYTHON:-$repo/.venv/bin/python}
read -r KAFKA_VERSION FLINK_VERSION MINIO_VERSION < <(cd "$repo" && "$py" -c \
  'from imagery.local.versions import *; print(KAFKA_VERSION, FLINK_VERSION, MINIO_VERSION)')
suite=bookworm
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}

label_of() { docker image inspect -f '{{ index .Config.Labels "org.imagery.version" }}' "$1" 2>/dev/null || true; }

# build IMAGE VERSION DOCKERFILE [files to put in the context ...]
build() {
  local image=$1 base_version=$2 dockerfile=$3; shift 3
  # the version, and a digest of the recipe: a changed Dockerfile, script or health check rebuilds the image
  local version
  version="$base_version-$(cat "$here/$dockerfile" "$here"/*-*.sh "$here"/kafka-ready/*.java | sha256sum | cut -c1-12)"
  if [ "$(label_of "$image")" = "$version" ]; then echo ">> $image ($version): up to date"; return; fi
  echo ">> building $image ($version)"
  local ctx; ctx=$(mktemp -d)
  cp "$here/$dockerfile" "$ctx/Dockerfile"
  for item in "$@"; do cp -a "$item" "$ctx/"; done
  DOCKER_BUILDKIT=0 docker build --label "org.imagery.version=$version" -t "$image" "$ctx"
  rm -rf "$ctx"
}

# 1. Debian: debootstrap into the cache once, then import
if [ "$(label_of imagery-local/debian:$suite)" != "$suite" ]; then
  rootfs=$cache/docker/rootfs-$suite
  if [ ! -f "$rootfs.complete" ]; then
    echo ">> debootstrap $suite into $rootfs (a few minutes, first time only)"
    rm -rf "$rootfs"; mkdir -p "$(dirname "$rootfs")"
    debootstrap --variant=minbase "$suite" "$rootfs" http://deb.debian.org/debian
    touch "$rootfs.complete"
  fi
  echo ">> importing $rootfs as imagery-local/debian:$suite"
  tar -C "$rootfs" -c . | docker import --change "LABEL org.imagery.version=$suite" - "imagery-local/debian:$suite"
fi

# 2. what the images copy from the host: the CA bundle, the Kafka jars and MinIO binary of the local stack's
#    cache (`make setup`), and the broker check compiled against those jars with the host's JDK
host=$(mktemp -d); trap 'rm -rf "$host"' EXIT
cp "$ca" "$host/host-ca.crt"
kafka_libs=$cache/kafka/$KAFKA_VERSION/libs
cp -r "$kafka_libs" "$host/libs"
mkdir -p "$host/ready" && javac -d "$host/ready" -cp "$kafka_libs/*" "$here/kafka-ready/BrokerReady.java"
cp "$cache/minio/$MINIO_VERSION/minio" "$host/minio"

build imagery-local/python:3.11-$suite "3.11-$suite" python.Dockerfile "$host/host-ca.crt"
build imagery-local/java:17-$suite "17-$suite" java.Dockerfile
build imagery-local/flink:java17 "$FLINK_VERSION" flink.Dockerfile "$here/flink-entrypoint.sh"
build imagery-local/kafka "$KAFKA_VERSION" kafka.Dockerfile "$host/libs" "$host/ready" "$here/kafka-run.sh" "$here/kafka-tool.sh"
build imagery-local/minio "$MINIO_VERSION" minio.Dockerfile "$host/minio" "$here/mc-ready.sh"
build imagery-local/prometheus "2.42-$suite" prometheus.Dockerfile
echo ">> local base images ready; use: docker compose --env-file deploy/local-images/images.env ..."
