"""Run the inference service as a local process (tests, the demo, benchmarks), pointed at the local stack's MinIO.

It launches `python -m services.inference_http` by module path and talks to it over HTTP only: of `services/` it
imports the settings module alone (pure pydantic: the names of the variables the service reads), never torch,
FastAPI or the service's code (the dispatcher's side never needs them).

    with InferenceService(StackSettings(), team="fruit").start() as svc:
        httpx.post(f"{svc.base_url}/infer_json", json={"bucket": ..., "key": ...})
"""

from __future__ import annotations

import sys
from pathlib import Path

from imagery.local.settings import StackSettings
from imagery.process import Process, ProcessError, Stopped, free_port, http_200, log_tail, spawn
from imagery.repo import REPO_ROOT
from schemas import READYZ_ROUTE
from services.inference_http.settings import checked_service_environment, service_environment


class InferenceServiceError(ProcessError):
    """The service process died or did not become ready; the message carries its log's tail."""


class InferenceService:
    readiness_path = READYZ_ROUTE  # answers 200 once the model is warm and storage answers

    def __init__(self, stack: StackSettings, team: str = "fruit", port: int | None = None,
                 weights_path: str | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, access_log: bool = False) -> None:
        """ENV: more of the service's variables (from `service_environment(...)`); a name it does not read raises."""
        self.stack = stack
        self.team = team
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self.weights_path = weights_path
        self.extra_env = checked_service_environment(env or {})
        self.log_path = log_path or stack.logs_dir / f"inference-{team}-{self.port}.log"
        self.access_log = access_log
        self.process: Process | None = None

    def environment(self) -> dict[str, str]:
        """What the service's process gets on top of this one's environment."""
        settings = service_environment(
            team=self.team, minio_endpoint=self.stack.minio_endpoint, minio_access_key=self.stack.minio_access_key,
            minio_secret_key=self.stack.minio_secret_key, minio_secure=False, host=self.host, port=self.port,
            access_log=self.access_log, weights_path=self.weights_path)
        return {"PYTHONUNBUFFERED": "1", **settings, **self.extra_env}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.inference_http"]

    def start(self, timeout_s: float = 180) -> InferenceService:
        """Launch the process; return once `readiness_path` answers 200. Raises InferenceServiceError otherwise."""
        if self.running:
            return self
        self.process = spawn(self.command(), self.log_path, name=f"the {self.team} inference service",
                             env=self.environment(), cwd=REPO_ROOT)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        try:
            self.process.wait_ready(http_200(f"{self.base_url}{self.readiness_path}"), timeout_s)
        except ProcessError as exc:
            raise InferenceServiceError(str(exc)) from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def stop(self, timeout_s: float = 15.0) -> Stopped | None:
        """SIGTERM to the process group (uvicorn shuts down gracefully), SIGKILL if it lingers; waits."""
        process, self.process = self.process, None
        return None if process is None else process.stop(timeout_s)

    def kill(self) -> Stopped | None:
        """SIGKILL to the process group: a crash, nothing answered or flushed."""
        process, self.process = self.process, None
        return None if process is None else process.kill()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> InferenceService:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
