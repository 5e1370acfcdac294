"""`imagery new-team <team>`: write the team's runner module and its two compose services.

Templates are text files read as text (adapters/runner_template.py.txt), never imported: this side of the
project does not import the service or torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from schemas import topics

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNER_TEMPLATE = REPO_ROOT / "adapters" / "runner_template.py.txt"
TEAM_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


class ScaffoldError(ValueError):
    pass


def check_team(team: str) -> str:
    if not TEAM_RE.match(team):
        raise ScaffoldError("team must be 2-31 characters of lowercase letters, digits and '_', starting with a "
                            "letter (it names a module, topics and compose services)")
    return team


def runner_source(team: str) -> str:
    class_name = "".join(part.capitalize() for part in team.split("_")) + "Runner"
    return RUNNER_TEMPLATE.read_text().replace("__TEAM__", team).replace("__CLASS__", class_name)


def compose_services(team: str) -> str:
    """The two services a team adds to compose.yaml, in the shape of the fruit example there."""
    service = team.replace("_", "-")
    return f"""
  # ---- team {team} ----------------------------------------------------------------------------
  {service}-inference-http:
    image: imagery-inference-http:latest
    build: {{ context: ., dockerfile: services/inference_http/Dockerfile }}
    environment:
      TEAM: {team}
      WEIGHTS_PATH: /app/weights/{team}_best.pt
      MINIO_ENDPOINT: minio:9000
      MINIO_ACCESS_KEY: ${{MINIO_ACCESS_KEY:-minioadmin}}
      MINIO_SECRET_KEY: ${{MINIO_SECRET_KEY:-minioadmin}}
      MINIO_SECURE: "0"
      # ALLOWED_BUCKETS: {service},{service}-*  (the default: the team's own buckets; others are refused with 403)
    volumes: ["./weights:/app/weights:ro"]
    depends_on: {{ minio: {{ condition: service_healthy }} }}
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/readyz')"]
      interval: 5s
      retries: 60
    restart: unless-stopped

  flink-dispatcher-{service}:
    <<: *flink-image
    depends_on:
      flink-jobmanager: {{ condition: service_started }}
      flink-taskmanager: {{ condition: service_started }}
      {service}-inference-http: {{ condition: service_healthy }}
    environment:
      <<: *flink-env
      KAFKA_BOOTSTRAP: kafka:9092
      INPUT_TOPIC: {topics.input_topic(team)}
      TEAM: {team}
      HTTP_URL: http://{service}-inference-http:8000/infer_json
      DLQ_TOPIC: {topics.DLQ_TOPIC}
      GROUP_ID: http-dispatcher-{team}
      PARALLELISM: 2
      ITEMS_PER_REQUEST: 8  # /infer_batch: 1.8x the pipeline rate of /infer_json (bench/RESULTS.md)
      CONNECTOR_JARS: ""
      CHECKPOINT_DIR: file:///flink-checkpoints
      IMAGERY_DETACHED: "1"
    command:
      - bash
      - -c
      - |
        until flink list -m flink-jobmanager:8081 >/dev/null 2>&1; do echo 'waiting for the JobManager'; sleep 3; done
        if flink list -r -m flink-jobmanager:8081 | grep -q ': http-dispatcher-{team} (RUNNING)'; then exit 0; fi
        flink run -m flink-jobmanager:8081 --detached --python /opt/imagery/streaming/flink/jobs/http_dispatcher.py
    restart: on-failure
"""


def new_team(team: str, adapters_dir: Path = REPO_ROOT / "adapters", compose_file: Path | None = None) -> Path:
    """Write adapters/<team>_runner.py; with `compose_file`, append the services before its `volumes:` block."""
    check_team(team)
    path = adapters_dir / f"{team}_runner.py"
    if path.exists():
        raise ScaffoldError(f"{path} already exists")
    if compose_file is not None:
        text = compose_file.read_text()
        if f"{team.replace('_', '-')}-inference-http:" in text:
            raise ScaffoldError(f"{compose_file} already has services for team {team}")
        marker = "\nvolumes:\n"
        head, sep, tail = text.rpartition(marker)
        compose_file.write_text(head + compose_services(team) + sep + tail if sep else text + compose_services(team))
    path.write_text(runner_source(team))
    return path
