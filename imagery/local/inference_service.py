"""Run the inference service as a local process (tests, the demo, benchmarks), pointed at the local stack's MinIO.

It launches `python -m services.inference_http` by module path and talks to it over HTTP
only: nothing here imports torch, FastAPI or `services/` (the dispatcher's side never needs them).

    with InferenceService(StackSettings(), team="fruit").start() as svc:
        httpx.post(f"{svc.base_url}/infer_json", json={"bucket": ..., "key": ...})
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from imagery.local.processes import log_tail, terminate
from imagery.local.settings import StackSettings
from imagery.repo import REPO_ROOT
from schemas import READYZ_ROUTE


class InferenceServiceError(RuntimeError):
    """The service process died or did not become ready; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class InferenceService:
    def __init__(self, stack: StackSettings, team: str = "fruit", port: int | None = None,
                 weights_path: str | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, access_log: bool = False) -> None:
        self.stack = stack
        self.team = team
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self.weights_path = weights_path
        self.extra_env = dict(env or {})
        self.log_path = log_path or stack.logs_dir / f"inference-{team}-{self.port}.log"
        self.access_log = access_log
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "TEAM": self.team,
            "MINIO_ENDPOINT": self.stack.minio_endpoint,
            "MINIO_ACCESS_KEY": self.stack.minio_access_key,
            "MINIO_SECRET_KEY": self.stack.minio_secret_key,
            "MINIO_SECURE": "0",
            "PYTHONUNBUFFERED": "1",
            "HOST": self.host,
            "PORT": str(self.port),
            "ACCESS_LOG": "1" if self.access_log else "0",
        }
        if self.weights_path:
            env["WEIGHTS_PATH"] = str(self.weights_path)
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.inference_http"]

    def start(self, timeout_s: float = 180) -> InferenceService:
        """Launch the process; return once /readyz answers 200. Raises InferenceServiceError otherwise."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== starting {' '.join(self.command())} (team {self.team})\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.environment(), cwd=REPO_ROOT,
                                            start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise InferenceServiceError(
                        f"the {self.team} inference service exited with code {code} while starting; "
                        f"log {self.log_path}:\n{self.log_tail()}")
                try:
                    response = client.get(f"{self.base_url}{READYZ_ROUTE}")
                    if response.status_code == 200:
                        return
                    last = f"{READYZ_ROUTE} {response.status_code}: {response.text[:300]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.2)
        raise InferenceServiceError(f"the {self.team} inference service was not ready within {timeout_s:.0f}s "
                                    f"({last}); log {self.log_path}:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the process group (uvicorn shuts down gracefully), SIGKILL if it lingers; waits."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> InferenceService:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
