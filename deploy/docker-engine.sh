#!/bin/bash
# A Docker engine and Compose v2 on a Debian host, for `make test-compose`: Debian's docker.io (and debootstrap,
# for deploy/local-images/), dockerd started as root when it is not running, and the Compose v2 plugin built from
# its Go module (Debian packages only v1). Everything is cached; a second run takes a second.
set -euo pipefail
COMPOSE_VERSION=v2.40.3  # the newest v2 this machine's Go builds (v5 needs a newer Go)
cache=${IMAGERY_CACHE_DIR:-$HOME/.cache/imagery}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo ">> installing Debian's docker.io and debootstrap"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
  echo ">> starting dockerd (log: /tmp/imagery-dockerd.log)"
  as_root sh -c 'nohup dockerd >/tmp/imagery-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null || { tail -20 /tmp/imagery-dockerd.log; exit 1; }
fi

plugin=$cache/tools/docker-compose-$COMPOSE_VERSION/docker-compose
if [ ! -x "$plugin" ]; then
  echo ">> building Docker Compose $COMPOSE_VERSION from its Go module (about 6 minutes, first time only)"
  dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  src=$(mktemp -d); cp -r "$dir/." "$src"; chmod -R u+w "$src"
  # `go install ...@version` refuses this module (its go.mod has exclude directives): build in a copy instead
  (cd "$src" && go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      -o "$plugin.part" ./cmd && mv "$plugin.part" "$plugin")
  rm -rf "$src"
fi
mkdir -p "$HOME/.docker/cli-plugins"
ln -sf "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
docker compose version
