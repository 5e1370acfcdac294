"""The service's configuration, from the environment: each field is read from the variable of its name in upper
case (TEAM, MAX_BATCH_SIZE; `environment_names`)."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch (cheap: it decides the worker count)."""
    return Path("/dev/nvidiactl").exists() and os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str = "auto") -> int:
    """Worker processes per service (and so per GPU: a service uses one). On a GPU, one process cannot feed it:
    each image costs interpreter time on its way in and out, under one GIL per process, so half the cores (at
    most 8) each run a worker, the other half left to the threads of decoding, fetching and torch (bench/RESULTS.md,
    "Issue 10, step by step": on an H100, 8 workers served 2.7x one worker's rate on /infer_json, 3.2x on
    /infer_batch). On the CPU alone, one: torch's own threads already use
    every core for the forward pass, and more processes would only split them."""
    if device != "cpu" and gpu_present():
        return max(1, min(8, usable_cores() // 2))
    return 1


# a secret given as itself -> the setting naming a file that holds it (the form to prefer: see `secret_warnings`)
SECRET_FILES = {"auth_token": "auth_token_file", "minio_secret_key": "minio_secret_key_file"}


class ServiceSettings(BaseSettings):
    # hide_input_in_errors: a validation error must never print what it was given (a secret among it)
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True)

    # --- which model
    team: str = Field(default="", description="the team whose runner this service serves (TEAM)")
    weights_path: str | None = Field(default=None, description="the runner's weights; the runner has a default")
    model_tag: str | None = Field(default=None, description="passed to the runner's constructor")
    runner_module: str | None = Field(
        default=None,
        description="a module (dotted path, on the Python path) that sets TEAM and RUNNER, for a runner "
        "kept outside adapters/ (e.g. in the team's own package); default: the adapters/*_runner.py declaring TEAM",
    )

    # --- storage
    minio_endpoint: str = "127.0.0.1:9000"
    minio_access_key: str = "minioadmin"
    minio_secret_key: SecretStr = Field(
        default=SecretStr("minioadmin"),
        description="the secret itself: shows in the process environment, prefer "
        "MINIO_SECRET_KEY_FILE; the default is the local stack's",
    )
    minio_secret_key_file: Path | None = Field(
        default=None, description="a file holding MinIO's secret key (its content, less a trailing newline)"
    )
    minio_secure: bool = Field(default=False, description="MinIO over TLS (https)")
    minio_ca_file: Path | None = Field(
        default=None,
        description="a PEM bundle of CAs to trust for MinIO over TLS (MINIO_SECURE=1), besides the "
        "default roots (certifi's, and the system's for the object GETs); unset: the default roots alone",
    )
    minio_region: str | None = None
    allowed_buckets: str = Field(
        default="",
        description="comma-separated bucket names or globs (fnmatch) this service may read; others get "
        "403. Empty: the team's own, TEAM and TEAM-* (e.g. fruit, fruit-hot; '_' in TEAM read as '-'); '*' allows "
        "every bucket",
    )
    fetch_concurrency: int = Field(default=32, ge=1, description="object fetches in flight at once (threads)")
    storage_timeout_s: float = Field(default=10.0, gt=0, description="connect/read timeout of one MinIO call")

    # --- batching and admission
    max_batch_size: int = Field(default=32, ge=1, description="1 turns dynamic batching off")
    max_batch_delay_ms: float = Field(default=5.0, ge=0, description="how long a batch may wait to fill")
    max_queue: int = Field(default=256, ge=1, description="images admitted at once; beyond it: 429")
    request_timeout_ms: float = Field(default=30_000, gt=0, description="per request; past it: 504")
    retry_after_s: int = Field(default=1, ge=0, description="the Retry-After of a 429")
    max_batch_items: int = Field(default=256, ge=1, description="items one /infer_batch request may carry")

    # --- input limits
    max_object_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="larger objects: 413")
    max_image_pixels: int = Field(default=50_000_000, ge=1, description="declared width*height above it: 415")
    max_jpeg_scan_pixels: int = Field(
        default=500_000_000,
        ge=1,
        description="a JPEG's progressive scans times its pixels above it: 415 (a real "
        "photo has about 10 scans; thousands of them make one image cost minutes of CPU)",
    )
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="request bodies above it: 413")

    # --- compute
    device: Literal["auto", "cpu", "cuda"] = "auto"
    decode_threads: int = Field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)), ge=1)
    warmup_batches: int = Field(default=2, ge=0, description="warm-up forward passes per batch size")
    compile: Literal["auto", "off", "inductor", "aot_eager"] = Field(
        default="auto",
        description=(
            "torch.compile the forward pass during warm-up, checked against eager (the same top-1); auto: inductor "
            "on a GPU, off on the CPU (there it took 46 s of the cores it would save at the first start, 8.6 s with "
            "torch's cache warm, for 1.30x: bench/RESULTS.md, issue 19); aot_eager: trace without generating code "
            "(tests)"
        ),
    )
    compile_mode: str = Field(
        default="default", description="torch.compile's mode (default, reduce-overhead, max-autotune-no-cudagraphs)"
    )

    # --- processes
    workers: int = Field(
        default=0,
        ge=0,
        description="HTTP worker processes serving one port; with more than one, "
        "the model lives once, in the server's own process (the scheduler, scheduler.py), and the "
        "workers are fronts that feed it; 0: the default from the cores and the GPU "
        "(settings.default_workers)",
    )

    # --- set by server.py for its worker processes, not by users
    scheduler_socket: str | None = Field(
        default=None,
        description="the Unix socket of the scheduler that owns the model (WORKERS > 1): this process is an HTTP front",
    )

    # --- HTTP
    auth_token: SecretStr | None = Field(
        default=None,
        description="if set, infer routes need this bearer token; "
        "shows in the process environment: prefer AUTH_TOKEN_FILE",
    )
    auth_token_file: Path | None = Field(
        default=None,
        description="a file holding the bearer token the infer routes need (its content, less a trailing newline)",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="serve HTTPS with this PEM certificate (chain); needs TLS_KEY_FILE"
    )
    tls_key_file: Path | None = Field(default=None, description="the PEM private key of TLS_CERT_FILE")
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    access_log: bool = False
    header_timeout_s: float = Field(default=10.0, gt=0, description="a request's head must arrive within it")
    body_timeout_s: float = Field(default=30.0, gt=0, description="a request's body must arrive within it: 408")
    keep_alive_s: int = Field(default=5, ge=1, description="an idle keep-alive connection is closed after it")
    max_connections: int = Field(default=1024, ge=1, description="connections and requests at once; beyond: 503")

    @field_validator("team")
    @classmethod
    def _normalise_team(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="before")
    @classmethod
    def _empty_is_not_given(cls, data: Any) -> Any:
        """A secret, or a file setting, set to "" is not given (the default holds): `AUTH_TOKEN=` in a compose
        file or a launcher clearing an inherited variable must not count as a second source of the secret."""
        if isinstance(data, dict):
            blank = {*SECRET_FILES, *SECRET_FILES.values(), "minio_ca_file", "tls_cert_file", "tls_key_file"}
            data = {k: v for k, v in data.items() if not (k.lower() in blank and v in ("", None))}
        return data

    @model_validator(mode="after")
    def _secrets_and_files(self) -> ServiceSettings:
        names = environment_names()
        for secret, file_field in SECRET_FILES.items():
            path: Path | None = getattr(self, file_field)
            if path is None:
                continue
            if secret in self.model_fields_set:
                raise ValueError(
                    f"{names[secret]} and {names[file_field]} are both set: give the secret once, "
                    f"as {names[file_field]} (the path of a file holding it)"
                )
            setattr(self, secret, SecretStr(_read_secret(names[file_field], path)))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file") if self.tls_key_file is None else ("tls_key_file", "tls_cert_file")
            )
            raise ValueError(
                f"{names[given]} is set without {names[missing]}: HTTPS needs both the certificate "
                f"and its key (or neither, for plain HTTP)"
            )
        for file_field in ("tls_cert_file", "tls_key_file", "minio_ca_file"):
            path = getattr(self, file_field)
            if path is not None:
                _check_readable(names[file_field], path)
        if self.minio_ca_file is not None:
            if not self.minio_secure:
                raise ValueError(
                    f"{names['minio_ca_file']} is set but {names['minio_secure']} is off: set "
                    f"{names['minio_secure']}=1 to reach MinIO over TLS, or unset "
                    f"{names['minio_ca_file']}"
                )
            if b"-----BEGIN CERTIFICATE-----" not in self.minio_ca_file.read_bytes():
                raise ValueError(f"{names['minio_ca_file']}={self.minio_ca_file}: no PEM certificate in it")
        return self

    def secret_warnings(self) -> list[str]:
        """One warning per secret given as itself rather than by a file: what the service logs once at start. It
        names the variable, never its value."""
        names = environment_names()
        warnings = []
        for secret, file_field in SECRET_FILES.items():
            if secret in self.model_fields_set and getattr(self, file_field) is None and getattr(self, secret):
                warnings.append(
                    f"{names[secret]} is set in the process environment, where whoever can inspect the process "
                    f"reads it (/proc/<pid>/environ, `docker inspect`, the pod spec): put the secret in a file "
                    f"(mode 0600, or a mounted Kubernetes/Docker secret) and set {names[file_field]} to its path "
                    f"instead"
                )
        return warnings

    @property
    def tls(self) -> bool:
        """Whether the service serves HTTPS (TLS_CERT_FILE and TLS_KEY_FILE)."""
        return self.tls_cert_file is not None

    @property
    def worker_count(self) -> int:
        """WORKERS, or its default for this machine when it is 0."""
        return self.workers or default_workers(self.device)

    @cached_property
    def bucket_patterns(self) -> tuple[str, ...]:
        given = tuple(p.strip() for p in self.allowed_buckets.split(",") if p.strip())
        own = topics.team_bucket(self.team)
        return given or (own, f"{own}-*")

    def bucket_allowed(self, bucket: str) -> bool:
        allowed = self._allowed_buckets.get(bucket)
        if allowed is None:  # fnmatch per image cost 7% of the GIL's time under load (issue 10): answers are kept
            allowed = any(fnmatch.fnmatchcase(bucket, pattern) for pattern in self.bucket_patterns)
            if len(self._allowed_buckets) < 4096:  # bounded: bucket names come from callers
                self._allowed_buckets[bucket] = allowed
        return allowed

    @cached_property
    def _allowed_buckets(self) -> dict[str, bool]:
        return {}


def _check_readable(variable: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{variable}={path}: cannot read it ({exc.strerror or exc})") from None


def _read_secret(variable: str, path: Path) -> str:
    """The secret in PATH (named by VARIABLE), less its trailing newline; an error names the variable and the
    path, never the content."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{variable}={path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{variable}={path}: the file is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"{variable}={path}: the file is empty")
    return secret


def settings_error(exc: ValidationError) -> str:
    """EXC's problems in a line each, by the variables' names, without the values given (no secret leaks)."""
    names = environment_names()
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        message = error["msg"].removeprefix("Value error, ")
        where = [names.get(str(part), str(part)) for part in error["loc"]]
        lines.append(f"{'.'.join(where)}: {message}" if where else message)
    return "; ".join(lines)


# ---------------------------------------------------------------------------- the environment that sets them


@cache
def environment_names() -> dict[str, str]:
    """Each field's environment variable, as ServiceSettings reads it (its env prefix, or its alias alone; upper
    case, the variables not being case-sensitive)."""
    prefix = ServiceSettings.model_config.get("env_prefix", "")
    names = {}
    for name, field in ServiceSettings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names[name] = (alias or prefix + name).upper()
    return names


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def service_environment(**fields: object) -> dict[str, str]:
    """The environment variables that give the service these settings, by field name: for what launches it (the
    tooling, the tests, the benches). A name that is no field raises ValueError, where the service, which ignores
    variables it does not know, would start with the default. A None value sets nothing (the default holds)."""
    names = environment_names()
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"not a setting of the inference service: {_unknown(unknown, names)}")
    return {names[field]: _text(value) for field, value in fields.items() if value is not None}


def checked_service_environment(env: Mapping[str, str]) -> dict[str, str]:
    """ENV, variables of the service by their environment names (MAX_BATCH_SIZE=64, as a person types them on a
    command line), each name checked like service_environment's: one that sets no setting raises ValueError."""
    fields = {variable: field for field, variable in environment_names().items()}
    unknown = sorted(name for name in env if name.upper() not in fields)
    if unknown:
        raise ValueError(f"not a variable of the inference service: {_unknown(unknown, fields)}")
    return service_environment(**{fields[name.upper()]: value for name, value in env.items()})


def _unknown(names: list[str], known: Mapping[str, str]) -> str:
    """NAMES, each with the nearest known name if one is near (a misspelling), and what is known."""

    def guess(name: str) -> str:
        near = difflib.get_close_matches(name, list(known), n=1) or difflib.get_close_matches(
            name.upper(), list(known), n=1
        )
        return f"{name} (did you mean {near[0]}?)" if near else name

    return f"{', '.join(map(guess, names))}; known: {', '.join(known)}"
