"""Where the local stack lives and listens. Every value can be overridden by an `IMAGERY_*` variable."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGERY_")

    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_mtls_port: int = 9094  # the secured stack's second listener: TLS with a client certificate (mTLS)
    minio_port: int = 9000
    minio_console_port: int = 9001
    flink_rest_port: int = 8081
    minio_access_key: str = "minioadmin"
    minio_secret_key: str = "minioadmin"
    kafka_heap: str = "768m"
    # downloads and builds, keyed by version inside; shared by every checkout and by CI
    cache_dir: Path = Path.home() / ".cache" / "imagery"
    # pids, logs, config and data of the running stack
    state_dir: Path = Path.home() / ".local" / "state" / "imagery"
    kafka_data_dir: Path | None = None
    # the secured stack (`imagery up --secure`): Kafka over SASL_SSL and mTLS with ACLs, MinIO over TLS; the CA,
    # certificates, passwords and client files are made at its first start and kept in security_dir
    secure: bool = False
    minio_data_dir: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def minio_endpoint(self) -> str:
        return f"{self.host}:{self.minio_port}"

    @property
    def flink_rest_url(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"

    @cached_property
    def kafka_data(self) -> Path:
        return self.kafka_data_dir or self.state_dir / "kafka-data"

    @cached_property
    def minio_data(self) -> Path:
        return self.minio_data_dir or self.state_dir / "minio-data"

    @property
    def mtls_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_mtls_port}"

    @property
    def security_dir(self) -> Path:
        return self.state_dir / "security"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def checkpoints_dir(self) -> Path:
        """Where the jobs this machine starts keep their checkpoints and savepoints (each group in a folder of its
        own): the job is told with --checkpoint-dir, and the local standalone cluster shares this file system."""
        return self.state_dir / "checkpoints"
