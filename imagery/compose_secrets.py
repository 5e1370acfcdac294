"""The secrets of the compose stack's secured variant (compose.secure.yaml), made by `imagery compose-secrets` into a
git-ignored folder (default ./secrets, beside compose.yaml), which compose.secure.yaml declares file by file as
top-level compose `secrets:` and mounts in each service that needs one, at /run/secrets/<file> (or where the
service looks for it). Nothing secret is ever in a compose file or a variable: only these files' paths.

What is made, once (a second run keeps every secret it finds and adds only what is missing: a new team's files,
or a certificate re-issued because it lacks a name the stack now needs):
- a private CA (`ca.crt`; its key `ca.key` never leaves the host) and, issued by it: the broker's certificate
  (`kafka-broker.pem`, key and certificate in one file, SANs `kafka` and `localhost`), MinIO's (`minio.crt`,
  `minio.key`; `minio`, `localhost`), the inference services' (`inference.crt`, `inference.key`; every
  `<service>-inference-http` of deploy/teams.yaml, `localhost`) and the admin's client certificate (`admin.pem`, CN
  `admin`: the admin principal on the broker's mTLS listener);
- the admin's SCRAM password (`admin.password`) and its client files, in the Java client's names
  (--kafka-config): `admin.properties` (SASL_SSL, SCRAM-SHA-512) and `admin-mtls.properties` (mTLS), both with
  container paths under /run/secrets, and `host-admin.properties` (SASL_SSL, this folder's own paths) for the
  host's tooling, which reaches the broker's EXTERNAL listener at localhost;
- `broker-client.properties`: the broker's health check, as the broker itself (mTLS, its own certificate);
- MinIO's root password (`minio-root.password`), the SCRAM password of the Kafka user its bucket notifications
  write as (`minio-events.password`, user `minio-events`) and `minio-notify.env`, the same password as MinIO's
  notification variables (MINIO_CONFIG_ENV_FILE: MinIO reads it at start; no variable holds it);
- per team: the service's bearer token (`<team>.token`), the dispatcher's Kafka client file
  (`<team>.kafka.properties`: SASL_SSL, SCRAM as `team-<team>` with a random password, container paths) and the
  secret key of the team's own MinIO user `<bucket>-reader` (`<team>.minio.secret`). `init` applies both as they
  are (imagery/provision.py reuses a file it finds in --credentials-dir).

Modes. Compose without Swarm bind-mounts a file secret as it is on the host: read-only, with the host file's owner
and mode (a secret's uid, gid and mode are ignored). So a file that a container's non-root user reads must be
readable by others on the host; the folder itself is mode 0700, which keeps every file in it from the host's other
users. The images' users decide which files those are:
- kafka runs as appuser (uid 1000, in apache/kafka and the local stand-in): the broker's key and certificate and its
  health check's file are 0644;
- the inference service runs as `inference` (uid 10001): its certificate and key, the team's token and MinIO
  secret are 0644;
- Flink's containers (JobManager, TaskManagers, the dispatchers) run as `flink` (uid 9999): the team's Kafka client
  file and token are 0644;
- Prometheus runs as `nobody`: the CA certificate (public anyway) is 0644;
- MinIO and `init` run as root: what only they read stays 0600 (MinIO's key, its root password, MinIO's Kafka
  password, every admin file and password); so do the CA's key and host-admin.properties, which no container gets.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from imagery.errors import ToolError
from imagery.kafka_config import write_secret
from imagery.local import security
from imagery.local.certs import Authority, CertFiles
from imagery.provision import team_client_file, team_minio_secret_file
from imagery.teams import Team
from schemas import topics

DEFAULT_DIR = Path("secrets")
CONTAINER_DIR = PurePosixPath("/run/secrets")  # where compose mounts a secret by default
SHARED, PRIVATE = 0o644, 0o600  # SHARED: a container's non-root user reads it (the folder is 0700)

ADMIN = security.ADMIN
BROKER = security.BROKER
MINIO = security.MINIO
SERVICE = "inference"
EVENTS_USER = "minio-events"  # the Kafka user MinIO's bucket notifications write as (to the teams' input topics)

CA = "ca.crt"
BROKER_KEYSTORE = f"{BROKER}.pem"
BROKER_CLIENT = "broker-client.properties"
MINIO_CERT, MINIO_KEY = f"{MINIO}.crt", f"{MINIO}.key"
SERVICE_CERT, SERVICE_KEY = f"{SERVICE}.crt", f"{SERVICE}.key"
ADMIN_KEYSTORE = f"{ADMIN}.pem"
ADMIN_PASSWORD = "admin.password"
ADMIN_SASL = "admin.properties"
ADMIN_MTLS = "admin-mtls.properties"
HOST_ADMIN = "host-admin.properties"
MINIO_ROOT_PASSWORD = "minio-root.password"
EVENTS_PASSWORD = f"{EVENTS_USER}.password"
MINIO_NOTIFY_ENV = "minio-notify.env"

BROKER_HOSTS = ("kafka", "localhost")
MINIO_HOSTS = ("minio", "localhost")


def team_token(team: str) -> str:
    return f"{team}.token"


def team_kafka(team: str) -> str:
    return team_client_file(Path(), team).name


def team_minio_secret(team: str) -> str:
    return team_minio_secret_file(Path(), team).name


def service_hosts(teams: Sequence[Team]) -> list[str]:
    """The names the inference services are reached by: each team's compose service, and localhost (its health
    check, and the host through its published port)."""
    return [f"{t.service}-inference-http" for t in teams] + ["localhost"]


def container_path(name: str) -> str:
    """Where a secret of this folder is in a container that has it at the default place."""
    return str(CONTAINER_DIR / name)


def manifest(teams: Sequence[Team]) -> dict[str, int]:
    """Every file `make` leaves in the folder, and its mode."""
    files = {
        CA: SHARED,
        "ca.key": PRIVATE,
        f"{BROKER}.crt": SHARED,
        f"{BROKER}.key": PRIVATE,
        BROKER_KEYSTORE: SHARED,
        BROKER_CLIENT: SHARED,
        MINIO_CERT: SHARED,
        MINIO_KEY: PRIVATE,
        f"{MINIO}.pem": PRIVATE,
        SERVICE_CERT: SHARED,
        SERVICE_KEY: SHARED,
        f"{SERVICE}.pem": PRIVATE,
        f"{ADMIN}.crt": SHARED,
        f"{ADMIN}.key": PRIVATE,
        ADMIN_KEYSTORE: PRIVATE,
        ADMIN_PASSWORD: PRIVATE,
        ADMIN_SASL: PRIVATE,
        ADMIN_MTLS: PRIVATE,
        HOST_ADMIN: PRIVATE,
        MINIO_ROOT_PASSWORD: PRIVATE,
        EVENTS_PASSWORD: PRIVATE,
        MINIO_NOTIFY_ENV: PRIVATE,
    }
    for t in teams:
        files.update({team_token(t.team): SHARED, team_kafka(t.team): SHARED, team_minio_secret(t.team): SHARED})
    return files


@dataclass
class Made:
    folder: Path
    made: list[str] = field(default_factory=list)  # files that did not exist before this run
    kept: list[str] = field(default_factory=list)


class SecretsError(ToolError):
    """The folder cannot hold the secrets as they must be; the message says why."""


def _san_hosts(cert: Path) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    done = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"], capture_output=True, text=True
    )
    return set(re.findall(r"(?:DNS|IP Address):([^,\s]+)", done.stdout)) if done.returncode == 0 else set()


def _issue(authority: Authority, name: str, hosts: Sequence[str]) -> CertFiles:
    """NAME's certificate for HOSTS: the one already there if it covers them all, else a new one (its key too)."""
    cert = authority.folder / f"{name}.crt"
    if cert.exists() and not set(hosts) <= _san_hosts(cert):
        for suffix in (".crt", ".key", ".pem"):
            (authority.folder / f"{name}{suffix}").unlink(missing_ok=True)
    return authority.issue(name, hosts)


def _password(path: Path) -> str:
    return security.read_secret(security.secret_file(path))


def make(folder: Path, teams: Sequence[Team], hosts: Sequence[str] = ()) -> Made:
    """Every secret of compose.secure.yaml for TEAMS in FOLDER, made where missing (see the module's docstring);
    HOSTS: more names the host's clients reach Kafka and MinIO by (KAFKA_EXTERNAL_HOST)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    before = {p.name for p in folder.iterdir()}
    authority = Authority(folder.resolve())  # (openssl runs in a folder of its own: absolute paths)
    _issue(authority, BROKER, (*BROKER_HOSTS, *hosts))
    _issue(authority, MINIO, (*MINIO_HOSTS, *hosts))
    _issue(authority, SERVICE, service_hosts(teams))
    _issue(authority, ADMIN, ("localhost",))  # a client's certificate: its CN is the principal

    inside = CONTAINER_DIR / CA
    admin_password = _password(folder / ADMIN_PASSWORD)
    security.write_client_properties(folder / ADMIN_SASL, Path(inside), scram=(ADMIN, admin_password))
    security.write_client_properties(folder / ADMIN_MTLS, Path(inside), keystore=Path(CONTAINER_DIR / ADMIN_KEYSTORE))
    security.write_client_properties(folder / HOST_ADMIN, (folder / CA).resolve(), scram=(ADMIN, admin_password))
    security.write_client_properties(
        folder / BROKER_CLIENT, Path(inside), keystore=Path(CONTAINER_DIR / BROKER_KEYSTORE)
    )
    security.secret_file(folder / MINIO_ROOT_PASSWORD)
    events_password = _password(folder / EVENTS_PASSWORD)
    write_secret(
        folder / MINIO_NOTIFY_ENV,
        "".join(f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD_{t.events_target_id}={events_password}\n" for t in teams),
    )

    for t in teams:
        security.secret_file(folder / team_token(t.team))
        kafka = folder / team_kafka(t.team)
        if not kafka.exists():  # its password lives in it alone: made once
            security.write_client_properties(
                kafka, Path(inside), scram=(topics.team_principal(t.team), secrets.token_urlsafe(24))
            )
        minio_secret = folder / team_minio_secret(t.team)
        if not minio_secret.exists():
            write_secret(minio_secret, secrets.token_urlsafe(24))

    wanted = manifest(teams)
    missing = sorted(name for name in wanted if not (folder / name).is_file())
    if missing:
        raise SecretsError(f"{folder}: could not make {', '.join(missing)}")
    for name, mode in wanted.items():
        (folder / name).chmod(mode)
    return Made(folder, made=sorted(set(wanted) - before), kept=sorted(set(wanted) & before))
