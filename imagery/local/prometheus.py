"""A Prometheus server of our own for the local stack and the tests: Debian's `prometheus` package (2.42), started
on a free port with a generated config and a temporary storage folder, scraping the inference services and Flink's
Prometheus reporter ports, evaluating ops/prometheus/alerts.yml.

`imagery prometheus` runs one in the foreground for a person; the tests start one per module.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from imagery.errors import ToolError
from imagery.process import Process, ProcessError, free_port, http_200, spawn
from imagery.repo import ALERT_RULES
from schemas import METRICS_ROUTE
from streaming.dispatch.metrics import PROMETHEUS_PORTS

SERVICE_JOB = "imagery-inference"  # the scrape job of the inference services (the alerts name it)
FLINK_JOB = "flink"  # the scrape job of Flink's reporter ports
DEFAULT_PORT = 9090
INSTALL_HINT = "install Debian's prometheus package (apt-get install -y prometheus; .ci/run does)"


class PrometheusError(ToolError):
    pass


def port_range(ports: str = PROMETHEUS_PORTS) -> list[int]:
    first, _, last = ports.partition("-")
    return list(range(int(first), int(last or first) + 1))


def config(
    services: dict[str, list[str]],
    flink_host: str = "127.0.0.1",
    flink_ports: str = PROMETHEUS_PORTS,
    interval_s: float = 5.0,
    rule_files: list[Path] | None = None,
) -> dict:
    """prometheus.yml: each team's services (host:port) labelled with the team, and every port of Flink's reporter
    range (JobManagers, TaskManagers and local MiniCluster jobs each take one; the unused ones are just `up` 0)."""
    interval = f"{interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in (rule_files if rule_files is not None else [ALERT_RULES])],
        "scrape_configs": [
            {
                "job_name": SERVICE_JOB,
                "metrics_path": METRICS_ROUTE,
                "static_configs": [
                    {"targets": targets, "labels": {"team": team}} for team, targets in services.items()
                ],
            },
            {
                "job_name": FLINK_JOB,
                "static_configs": [{"targets": [f"{flink_host}:{port}" for port in port_range(flink_ports)]}],
            },
        ],
    }


def binary(name: str = "prometheus") -> str:
    path = shutil.which(name)
    if not path:
        raise PrometheusError(f"`{name}` is not on PATH: {INSTALL_HINT}")
    return path


@dataclass
class PrometheusServer:
    services: dict[str, list[str]]
    port: int = 0
    interval_s: float = 5.0
    host: str = "127.0.0.1"
    storage: Path | None = None
    log_path: Path | None = None
    process: Process | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, config_path: Path) -> list[str]:
        return [
            binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ]

    def write_config(self) -> Path:
        self.port = self.port or free_port(self.host)
        if self.storage is None:
            self.storage = Path(tempfile.mkdtemp(prefix="imagery-prometheus-"))
        self.storage.mkdir(parents=True, exist_ok=True)
        path = self.storage / "prometheus.yml"
        path.write_text(yaml.safe_dump(config(self.services, interval_s=self.interval_s), sort_keys=False))
        self.log_path = self.log_path or self.storage / "prometheus.log"
        return path

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        command = self.command(self.write_config())
        assert self.log_path is not None  # write_config chose it
        self.process = spawn(command, self.log_path, name="prometheus")
        try:
            self.process.wait_ready(http_200(f"{self.url}/-/ready", timeout_s=1.0), timeout_s)
        except ProcessError as exc:
            self.stop()
            raise PrometheusError(str(exc)) from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ---- the HTTP API

    def _get(self, path: str, **params: str) -> Any:  # Prometheus's JSON: its shape is per endpoint
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10.0).json()
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's series (raises PrometheusError when the expression does not parse)."""
        return self._get("/api/v1/query", query=expr)["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]
