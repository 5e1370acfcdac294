"""A private certificate authority for the secured local stack and its tests: one CA, and leaf certificates it
issues for servers (Kafka, MinIO, the service) and for clients (mTLS principals), made with Debian's `openssl`.

Files are PEM. A leaf's key is unencrypted PKCS#8 (`BEGIN PRIVATE KEY`, what Kafka's PEM keystores, librdkafka,
MinIO and Python's ssl all read), mode 0600; `<name>.pem` holds the key and then the certificate, the one-file form
Kafka's `ssl.keystore.type=PEM` takes. Everything is made once and kept: a second call with the same name returns
the files already there.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagery.errors import ToolError

CA_NAME = "ca"
LOCAL_HOSTS = ("localhost", "127.0.0.1")
VALID_DAYS = 825  # the longest a browser-era leaf may live; the stack's CA lives ten years
_CA_DAYS = 3650


class CertificateError(ToolError):
    """openssl is missing or refused; the message says which step and why."""


@dataclass(frozen=True)
class CertFiles:
    """One issued certificate: its certificate, its key, and both in one file (key first)."""

    cert: Path
    key: Path
    bundle: Path


def _openssl(*args: str | Path, cwd: Path | None = None) -> None:
    if shutil.which("openssl") is None:
        raise CertificateError("openssl is not installed (Debian: apt-get install openssl)")
    done = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {done.stderr.strip()[-800:]}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    path.chmod(0o600)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ")


def cert_files(folder: Path, name: str) -> CertFiles:
    """Where the certificate NAME issued in FOLDER is (or will be)."""
    return CertFiles(folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.pem")


class Authority:
    """The CA kept in FOLDER (made on first use), and what it issues there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert = folder / f"{CA_NAME}.crt"
        self._key = folder / f"{CA_NAME}.key"
        if not self.cert.exists():
            self._make()

    def _make(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        _new_key(self._key)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            self._key,
            "-out",
            self.cert,
            "-days",
            str(_CA_DAYS),
            "-subj",
            f"/CN=imagery local CA {os.urandom(4).hex()}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )

    def issue(
        self, name: str, hosts: Sequence[str] = LOCAL_HOSTS, *, expired: bool = False, organization: str | None = None
    ) -> CertFiles:
        """The certificate `name` (its subject CN, and so its Kafka principal `User:<name>` under the stack's
        mapping rule), for servers at HOSTS and for clients alike; `expired`: one whose validity ended yesterday;
        `organization`: a subject O as well (Kubernetes reads a client certificate's O as the user's group)."""
        files = cert_files(self.folder, name)
        if files.bundle.exists():
            return files
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(hours=1), now + dt.timedelta(days=VALID_DAYS))
        )
        work = self.folder / f".issue-{name}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "new").mkdir(parents=True)
        (work / "index.txt").write_text("")
        (work / "serial").write_text(os.urandom(8).hex() + "\n")
        san = ", ".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
        (work / "ca.cnf").write_text(
            "[ca]\ndefault_ca = local\n"
            "[local]\ndatabase = index.txt\nnew_certs_dir = new\nserial = serial\ndefault_md = sha256\n"
            "policy = anything\nunique_subject = no\n"
            "[anything]\norganizationName = optional\ncommonName = supplied\n"
            "[leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
            f"extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = {san}\n"
        )
        _new_key(files.key)
        subject = (f"/O={organization}" if organization else "") + f"/CN={name}"
        _openssl("req", "-new", "-key", files.key, "-out", work / "leaf.csr", "-subj", subject)
        _openssl(
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-extensions",
            "leaf",
            "-cert",
            self.cert,
            "-keyfile",
            self._key,
            "-in",
            "leaf.csr",
            "-out",
            files.cert,
            "-startdate",
            _stamp(start),
            "-enddate",
            _stamp(end),
            cwd=work,
        )
        files.bundle.write_text(files.key.read_text() + files.cert.read_text())
        files.bundle.chmod(0o600)
        shutil.rmtree(work, ignore_errors=True)
        return files
