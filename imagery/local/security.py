"""The secured local stack's material (`imagery up --secure`): made at its first start, kept in the state folder's
`security/` (mode 0700), and reused after.

- A private CA (certs.py) and certificates it issues: the broker's, MinIO's, the inference service's, and the
  operator's client certificate (CN `admin`).
- Kafka: a SASL_SSL listener (SCRAM-SHA-512) for passwords, an SSL listener that requires a client certificate
  (mTLS) and an SSL controller listener, the StandardAuthorizer with no access where no ACL allows it; a
  certificate's CN is its principal (`CN=admin` is `User:admin`), so a team is the same principal by either door.
- Client properties files, in the Java client's names (what the dispatcher's and the tooling's --kafka-config
  take): `admin.properties` (SASL_SSL as admin) and `admin-mtls.properties` (mTLS as admin).
- The inference service's token, in a file.

Every secret is a file of mode 0600 here, read by what needs it; none is printed, and none goes on a command line.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from imagery.kafka_config import jaas_line, write_properties, write_secret
from imagery.local.certs import CA_NAME, Authority, CertFiles, cert_files
from imagery.local.settings import StackSettings

ADMIN = "admin"  # the operator: a Kafka super user, by its SCRAM password or its certificate
BROKER = "kafka-broker"  # the broker's own certificate: its inter-broker and controller traffic (a super user)
MINIO = "minio"
SERVICE = "inference-service"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# a certificate's principal is its CN (`User:admin`), not its whole DN
PRINCIPAL_MAPPING = "RULE:^CN=([^,]+)$/$1/,DEFAULT"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"


@dataclass(frozen=True)
class StackSecurity:
    folder: Path
    ca: Path
    broker: CertFiles
    minio: CertFiles
    service: CertFiles
    admin_cert: CertFiles
    admin_password_file: Path
    minio_root_password_file: Path
    service_token_file: Path
    admin_sasl: Path  # client properties: SASL_SSL, SCRAM, as admin
    admin_mtls: Path  # client properties: SSL with admin's certificate

    @property
    def minio_certs_dir(self) -> Path:
        """MinIO's --certs-dir: its certificate and key as it names them, and the CA it trusts."""
        return self.folder / "minio-certs"


def secret_file(path: Path, nbytes: int = 24) -> Path:
    """A random secret in PATH (made once, mode 0600)."""
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(nbytes) + "\n")
    return path


def read_secret(path: Path) -> str:
    return path.read_text().strip()


def write_client_properties(
    path: Path, ca: Path, *, scram: tuple[str, str] | None = None, keystore: Path | None = None
) -> Path:
    """A Kafka client properties file (mode 0600): SASL_SSL with SCRAM as (user, password), or SSL with KEYSTORE
    (a PEM file with the key and the certificate) for mTLS; both trust CA."""
    trust = {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca)}
    if scram is not None:
        entries = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.jaas.config": jaas_line(SCRAM_LOGIN_MODULE, *scram),
            **trust,
        }
    else:
        assert keystore is not None, "a client needs a password or a certificate"
        entries = {
            "security.protocol": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            **trust,
        }
    return write_properties(path, entries)


def files(settings: StackSettings) -> StackSecurity:
    """Where the stack's security material is: paths alone, no file is read or made (`ensure` makes them)."""
    folder = settings.security_dir
    pki = folder / "pki"
    return StackSecurity(
        folder=folder,
        ca=pki / f"{CA_NAME}.crt",
        broker=cert_files(pki, BROKER),
        minio=cert_files(pki, MINIO),
        service=cert_files(pki, SERVICE),
        admin_cert=cert_files(pki, ADMIN),
        admin_password_file=folder / "admin.password",
        minio_root_password_file=folder / "minio-root.password",
        service_token_file=folder / "service.token",
        admin_sasl=folder / "admin.properties",
        admin_mtls=folder / "admin-mtls.properties",
    )


def ensure(settings: StackSettings) -> StackSecurity:
    """The stack's security material, made where missing (at a start; what only reads it takes `files`)."""
    security = files(settings)
    security.folder.mkdir(parents=True, exist_ok=True)
    security.folder.chmod(0o700)
    authority = Authority(security.folder / "pki")
    for name in (BROKER, MINIO, SERVICE, ADMIN):
        authority.issue(name, ("localhost", settings.host))
    for secret in (security.admin_password_file, security.minio_root_password_file, security.service_token_file):
        secret_file(secret)
    if not security.admin_sasl.exists():
        write_client_properties(
            security.admin_sasl, security.ca, scram=(ADMIN, read_secret(security.admin_password_file))
        )
    if not security.admin_mtls.exists():
        write_client_properties(security.admin_mtls, security.ca, keystore=security.admin_cert.bundle)
    certs = security.minio_certs_dir
    (certs / "CAs").mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("public.crt", security.minio.cert),
        ("private.key", security.minio.key),
        ("CAs/ca.crt", security.ca),
    ):
        if not (certs / name).exists():
            write_secret(certs / name, source.read_text())
    return security


def broker_properties(settings: StackSettings, security: StackSecurity) -> list[str]:
    """server.properties lines of the secured broker (its listeners, TLS, SASL and the authorizer)."""
    h = settings.host
    return [
        f"listeners=SASL_SSL://{h}:{settings.kafka_port},MTLS://{h}:{settings.kafka_mtls_port},"
        f"CONTROLLER://{h}:{settings.kafka_controller_port}",
        f"advertised.listeners=SASL_SSL://{h}:{settings.kafka_port},MTLS://{h}:{settings.kafka_mtls_port}",
        "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL,MTLS:SSL",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=MTLS",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={SCRAM_LOGIN_MODULE} required;",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={security.broker.bundle}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={security.ca}",
        "listener.name.mtls.ssl.client.auth=required",
        "listener.name.controller.ssl.client.auth=required",
        f"ssl.principal.mapping.rules={PRINCIPAL_MAPPING}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{BROKER};User:{ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]
