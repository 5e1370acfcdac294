"""Install the stack's real parts into a version-keyed cache outside the checkout.

Each `ensure_*` is idempotent: a finished install leaves a `.complete` marker and the next call returns at once.
Kafka's jars come from Maven Central through Maven (it resolves the broker's transitive jars for us), MinIO is
built from source with `go install` (upstream publishes source only), the Flink connector jars are plain
downloads checked against Maven Central's published SHA-1, and Helm (which renders the Kubernetes charts of
deploy/helm/ for `imagery k8s` and its tests) is built with `go install` too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from imagery.errors import ToolError
from imagery.local.settings import StackSettings
from imagery.local.versions import HELM_MODULE, HELM_VERSION, KAFKA_VERSION, MINIO_MODULE, MINIO_VERSION
from streaming.flink import connectors

KAFKA_POM = Path(__file__).with_name("kafka-broker.pom.xml")

console = Console(stderr=True)


GO_HINT = "install Go 1.24+ (https://go.dev/dl or Debian's golang-go backport)"


class InstallError(ToolError):
    """A part of the stack could not be installed; the message says what to do."""


def kafka_home(settings: StackSettings) -> Path:
    return settings.cache_dir / "kafka" / KAFKA_VERSION


def helm_binary(settings: StackSettings) -> Path:
    return settings.cache_dir / "tools" / f"helm-{HELM_VERSION}" / "bin" / "helm"


def minio_binary(settings: StackSettings) -> Path:
    return settings.cache_dir / "minio" / MINIO_VERSION / "minio"


def connector_jars(settings: StackSettings) -> list[Path]:
    return connectors.jar_paths(settings.cache_dir / "connectors")


def require_tool(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise InstallError(f"`{tool}` is not on PATH: {hint}")
    return path


def run_streaming(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a slow command, echoing its lines dimmed so a long build visibly moves."""
    console.print(f"[bold]{what}[/bold]")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-40:]
        console.print(f"  [dim]{line[:160]}[/dim]", highlight=False)
    if proc.wait() != 0:
        raise InstallError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def ensure_kafka(settings: StackSettings) -> Path:
    home = kafka_home(settings)
    if (home / ".complete").exists():
        return home
    mvn = require_tool("mvn", "install Maven (Debian: apt-get install -y maven)")
    require_tool("java", "install a JDK 17+ (Debian: apt-get install -y openjdk-17-jre-headless)")
    libs = home / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    run_streaming(
        [
            mvn,
            "-B",
            "-ntp",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={KAFKA_VERSION}",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        f"Fetching Apache Kafka {KAFKA_VERSION} broker jars from Maven Central",
    )
    if not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise InstallError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {libs}")
    (home / ".complete").touch()
    return home


def _go_install(binary: Path, module: str, version: str, what: str) -> Path:
    """`go install MODULE@VERSION` into BINARY's folder, once (a `.complete` marker beside it)."""
    if binary.exists() and (binary.parent / ".complete").exists():
        return binary
    go = require_tool("go", GO_HINT)
    env = dict(os.environ, GOBIN=str(binary.parent), CGO_ENABLED="0", GOFLAGS="-trimpath")
    run_streaming(
        [go, "install", "-v", f"{module}@{version}"],
        f"Building {what} {version} with `go install` (first time only: minutes on 2 cores)",
        env=env,
    )
    if not binary.exists():
        raise InstallError(f"go install finished but {binary} is missing")
    (binary.parent / ".complete").touch()
    return binary


def ensure_minio(settings: StackSettings) -> Path:
    return _go_install(minio_binary(settings), MINIO_MODULE, MINIO_VERSION, "MinIO")


def ensure_helm(settings: StackSettings) -> Path:
    return _go_install(helm_binary(settings), f"{HELM_MODULE}/cmd/helm", HELM_VERSION, "Helm")


def _download(url: str, dest: Path) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(f"  {dest.name}", total=total or None)
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                progress.advance(task, len(chunk))
    tmp.rename(dest)


def ensure_connectors(settings: StackSettings) -> list[Path]:
    def download(name: str, url: str, dest: Path) -> None:
        console.print(f"[bold]Fetching Flink connector {name} from Maven Central[/bold]")
        _download(url, dest)

    try:
        return connectors.fetch(settings.cache_dir / "connectors", download)
    except connectors.ConnectorError as exc:
        raise InstallError(str(exc)) from exc


def ensure_all(settings: StackSettings) -> None:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    kafka = ensure_kafka(settings)
    console.print(f"[green]✓[/green] Kafka {KAFKA_VERSION}: {kafka}")
    jars = ensure_connectors(settings)
    console.print(f"[green]✓[/green] Flink connectors: {', '.join(j.name for j in jars)}")
    minio = ensure_minio(settings)
    console.print(f"[green]✓[/green] MinIO {MINIO_VERSION}: {minio}")
    helm = ensure_helm(settings)
    console.print(f"[green]✓[/green] Helm {HELM_VERSION}: {helm}")
