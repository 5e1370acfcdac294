"""A team's secret files (as `imagery provision --credentials-dir` writes them) as Kubernetes Secrets.

The chart mounts them where the dispatcher and the service read files, never as variables or arguments:
- `<release>-kafka`: the team's Kafka client properties as `kafka.properties`, each key or trust store it names
  beside it, and its `*.location` entries moved to the mount (/etc/imagery/kafka/<file>);
- `<release>-minio`: the secret key of the team's MinIO reader, as `secret-key`.
`secured_values` names them in the team's values (with the reader's access key), so `imagery k8s render --secured`
and `helm install` use them.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from imagery import provision
from imagery.errors import ToolError
from imagery.k8s.render import release_name
from imagery.kafka_config import properties_text, write_secret
from imagery.teams import Team
from streaming.dispatch.kafka_properties import read_properties

KAFKA_MOUNT = "/etc/imagery/kafka"  # where the chart mounts the Kafka Secret (templates/flinkdeployment.yaml)
KAFKA_PROPERTIES_KEY = "kafka.properties"
MINIO_SECRET_KEY = "secret-key"


class SecretFilesError(ToolError):
    """A team's secret file is missing: provision the team first."""


def kafka_secret_name(team: Team) -> str:
    return f"{release_name(team)}-kafka"


def minio_secret_name(team: Team) -> str:
    return f"{release_name(team)}-minio"


def secured_values(team: Team) -> dict[str, Any]:
    """The team's values that point the chart at its Secrets."""
    return {
        "kafka": {"configSecret": kafka_secret_name(team)},
        "minio": {"secretKeySecret": minio_secret_name(team), "accessKey": provision.team_minio_access_key(team.team)},
    }


def _secret(name: str, namespace: str, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "imagery"}},
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }


def _required(path: Path) -> Path:
    if not path.is_file():
        raise SecretFilesError(
            f"{path} is missing: `imagery provision` (or `new-team`) on the secured cluster writes it"
        )
    return path


def team_secrets(team: Team, credentials_dir: Path, namespace: str) -> list[dict[str, Any]]:
    """The team's two Secrets, from CREDENTIALS_DIR."""
    entries = read_properties(_required(provision.team_client_file(credentials_dir, team.team)))
    files: dict[str, bytes] = {}
    for name, value in list(entries.items()):
        if name.endswith(".location"):
            store = _required(Path(value))
            files[store.name] = store.read_bytes()
            entries[name] = f"{KAFKA_MOUNT}/{store.name}"
    files[KAFKA_PROPERTIES_KEY] = properties_text(entries).encode()
    minio_key = _required(provision.team_minio_secret_file(credentials_dir, team.team)).read_bytes().strip()
    return [
        _secret(kafka_secret_name(team), namespace, files),
        _secret(minio_secret_name(team), namespace, {MINIO_SECRET_KEY: minio_key}),
    ]


def write_team_secrets(path: Path, teams: list[Team], credentials_dir: Path, namespace: str) -> Path:
    """Every team's Secrets in one manifest at PATH (mode 0600: it holds the secrets), for `kubectl apply -f`."""
    secrets = [secret for team in teams for secret in team_secrets(team, credentials_dir, namespace)]
    return write_secret(path, yaml.safe_dump_all(secrets, sort_keys=False))
