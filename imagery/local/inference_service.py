"""Run the inference service as a local process (tests, the demo, benchmarks), pointed at the local stack's MinIO.

It launches `python -m services.inference_http` by module path and talks to it over HTTP only: of `services/` it
imports the settings module alone (pure pydantic: the names of the variables the service reads), never torch,
FastAPI or the service's code (the dispatcher's side never needs them).

    with InferenceService(StackSettings(), team="fruit").start() as svc:
        httpx.post(f"{svc.base_url}/infer_json", json={"bucket": ..., "key": ...})

Secrets (MinIO's secret key, the bearer token) reach the process as files, never as variables or arguments: each
start writes them, mode 0600, into a private folder of its own (0700) that stop removes, and hands the service
their paths (MINIO_SECRET_KEY_FILE, AUTH_TOKEN_FILE). A secret given in ENV as itself (AUTH_TOKEN=...) is moved
into such a file too. With `tls` the service serves HTTPS (base_url https://...), and readiness is checked against
the very certificate handed to it.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import tempfile
from pathlib import Path

from imagery.local.certs import CertFiles
from imagery.local.settings import StackSettings
from imagery.process import Process, ProcessError, Stopped, free_port, http_200, log_tail, spawn
from imagery.repo import REPO_ROOT
from schemas import READYZ_ROUTE
from services.inference_http.settings import (
    SECRET_FILES,
    checked_service_environment,
    environment_names,
    service_environment,
)


class InferenceServiceError(ProcessError):
    """The service process died or did not become ready; the message carries its log's tail."""


def _write_private(path: Path, text: str) -> None:
    """TEXT into a new file at PATH that only this user may read (0600 from its creation: never readable by others
    for a moment), not following a link planted there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


class InferenceService:
    readiness_path = READYZ_ROUTE  # answers 200 once the model is warm and storage answers

    def __init__(
        self,
        stack: StackSettings,
        team: str = "fruit",
        port: int | None = None,
        weights_path: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        access_log: bool = False,
        *,
        auth_token: str | None = None,
        tls: CertFiles | None = None,
        minio_secure: bool = False,
        minio_ca_file: Path | None = None,
        minio_access_key: str | None = None,
        minio_secret_key: str | None = None,
    ) -> None:
        """ENV: more of the service's variables (from `service_environment(...)`); a name it does not read raises.
        AUTH_TOKEN: the bearer token the infer routes will need. TLS: serve HTTPS with this certificate and key.
        MINIO_SECURE, MINIO_CA_FILE: reach MinIO over TLS, trusting that CA bundle too. MINIO_ACCESS_KEY and
        MINIO_SECRET_KEY: credentials other than the stack's (a team's reader, say)."""
        self.stack = stack
        self.team = team
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.tls = tls
        self.base_url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self.weights_path = weights_path
        self.extra_env = checked_service_environment(env or {})
        names = environment_names()
        # secrets given in ENV as themselves go into files like the others
        given = {field: self.extra_env.pop(names[field]) for field in SECRET_FILES if names[field] in self.extra_env}
        if auth_token is not None and given.get("auth_token"):
            raise ValueError("the token is given twice: as auth_token and as AUTH_TOKEN in env")
        self.secrets: dict[str, str] = {  # by the setting's field name; those with a *_FILE in ENV are the caller's
            field: value
            for field, value in {
                "minio_secret_key": given.get("minio_secret_key") or minio_secret_key or stack.minio_secret_key,
                "auth_token": auth_token if auth_token is not None else given.get("auth_token"),
            }.items()
            if value and names[SECRET_FILES[field]] not in self.extra_env
        }
        self.minio_secure = minio_secure
        self.minio_ca_file = minio_ca_file
        self.minio_access_key = minio_access_key or stack.minio_access_key
        self.log_path = log_path or stack.logs_dir / f"inference-{team}-{self.port}.log"
        self.access_log = access_log
        self.process: Process | None = None
        self.secrets_dir: Path | None = None  # while it runs: the private folder of its secret files

    def _write_secrets(self) -> dict[str, str]:
        """The secrets into files of a fresh private folder; the variables naming them."""
        self._remove_secrets()
        self.secrets_dir = Path(tempfile.mkdtemp(prefix=f"imagery-inference-{self.team}-"))  # mode 0700
        names = environment_names()
        files = {}
        for field, value in self.secrets.items():
            path = self.secrets_dir / field
            _write_private(path, value)
            files[names[SECRET_FILES[field]]] = str(path)
        return files

    def _remove_secrets(self) -> None:
        folder, self.secrets_dir = self.secrets_dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def environment(self, secret_files: dict[str, str] | None = None) -> dict[str, str]:
        """What the service's process gets on top of this one's environment: SECRET_FILES are the variables that
        name the files holding its secrets (`start` writes them)."""
        settings = service_environment(
            team=self.team,
            minio_endpoint=self.stack.minio_endpoint,
            minio_access_key=self.minio_access_key,
            minio_secure=self.minio_secure,
            minio_ca_file=self.minio_ca_file,
            host=self.host,
            port=self.port,
            access_log=self.access_log,
            weights_path=self.weights_path,
            tls_cert_file=self.tls.cert if self.tls else None,
            tls_key_file=self.tls.key if self.tls else None,
        )
        # a secret this process inherited in its own environment must not reach the service: "" is none to it
        cleared = {environment_names()[field]: "" for field in SECRET_FILES}
        return {"PYTHONUNBUFFERED": "1", **cleared, **settings, **self.extra_env, **(secret_files or {})}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.inference_http"]

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context that trusts the service's own certificate (pinned, whoever issued it); None over HTTP."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.cert))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
        return context

    def start(self, timeout_s: float = 180) -> InferenceService:
        """Launch the process; return once `readiness_path` answers 200. Raises InferenceServiceError otherwise."""
        if self.running:
            return self
        try:
            self.process = spawn(
                self.command(),
                self.log_path,
                name=f"the {self.team} inference service",
                env=self.environment(self._write_secrets()),
                cwd=REPO_ROOT,
            )
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        url = f"{self.base_url}{self.readiness_path}"
        context = self.client_ssl_context()
        try:
            self.process.wait_ready(http_200(url, context=context), timeout_s)
        except ProcessError as exc:
            raise InferenceServiceError(str(exc)) from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def stop(self, timeout_s: float = 15.0) -> Stopped | None:
        """SIGTERM to the process group (uvicorn shuts down gracefully), SIGKILL if it lingers; waits. The secret
        files go with it."""
        process, self.process = self.process, None
        try:
            return None if process is None else process.stop(timeout_s)
        finally:
            self._remove_secrets()

    def kill(self) -> Stopped | None:
        """SIGKILL to the process group: a crash, nothing answered or flushed."""
        process, self.process = self.process, None
        try:
            return None if process is None else process.kill()
        finally:
            self._remove_secrets()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> InferenceService:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
