"""The Kubernetes control plane of `make test-k8s`: a real, single-node etcd + kube-apiserver that a test starts,
points `kubectl` and `helm` at, and stops, so that a Helm chart is installed against real server-side validation,
admission and CRDs rather than a mock.

It is only the control plane: no kubelet, no container runtime, no scheduler, no controller manager. Objects are
stored and validated, never run: a Deployment gets no Pods, a new namespace gets no `default` ServiceAccount (so the
ServiceAccount admission plugin refuses a bare Pod unless one is created), and a deleted namespace stays
Terminating. Whatever needs containers to run is the caller's business (see the `make test-k8s` tests):
imagery.k8s.node adds a node (containerd, kubelet, controller manager, scheduler) that runs pods.

Versions (imagery/local/versions.py): kube-apiserver and kubectl are built from the Go module k8s.io/kubernetes
at KUBERNETES_VERSION (upstream publishes no module-friendly binaries; a wrapper module replaces each `./staging`
module by its published v0.x twin), etcd is Debian's ETCD_DEBIAN_PACKAGE at ETCD_VERSION, unpacked into the cache.

    binaries = ensure_binaries()              # first time: several minutes of `go build`; then instant
    with start_control_plane(tmp_path, binaries) as plane:
        plane.apply_crds([Path("deploy/crds.yaml")])
        plane.kubectl("get", "crd", check=True)
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from imagery import process
from imagery.errors import ToolError
from imagery.local.certs import Authority, CertFiles
from imagery.local.install import GO_HINT, InstallError, console, require_tool, run_streaming
from imagery.local.settings import StackSettings
from imagery.local.versions import ETCD_DEBIAN_PACKAGE, ETCD_VERSION, KUBERNETES_VERSION

KUBERNETES_MODULE = "k8s.io/kubernetes"
# the staging modules (k8s.io/api, k8s.io/client-go, ...) are published as v0.<minor>.<patch> of the same release
STAGING_VERSION = "v0." + KUBERNETES_VERSION.removeprefix("v").split(".", 1)[1]
COMMANDS = ("kube-apiserver", "kubectl")
# both places Kubernetes' own build (hack/lib/version.sh) stamps its version into
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
WRAPPER_MODULE = "imagery.local/k8s-build"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"  # kubeadm's default
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "imagery-admin"
ADMIN_GROUP = "system:masters"  # bound to cluster-admin by the API server's bootstrap RBAC policy
CRD_KIND = "customresourcedefinition.apiextensions.k8s.io"
ETCD_START_S = 30.0
APISERVER_START_S = 120.0  # its post-start hooks (bootstrap RBAC, priority levels) take a while on 2 cores


class ControlPlaneError(ToolError):
    """kubectl refused, or a CRD was not established in time; the message carries kubectl's output."""


# ---------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class KubeBinaries:
    """The three programs a control plane runs (kubectl included, the client its tests drive it with)."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path


def binaries_dir(cache_dir: Path | None = None) -> Path:
    """Where ensure_binaries keeps them: keyed by version inside CACHE_DIR (default: the stack's cache)."""
    return (cache_dir or StackSettings().cache_dir) / "k8s" / KUBERNETES_VERSION / "bin"


def _marker_text() -> str:
    """The `.complete` marker's content: a changed etcd pin must invalidate a cache keyed by Kubernetes' version."""
    return f"kubernetes {KUBERNETES_VERSION}\netcd {ETCD_VERSION}\n"


def ensure_binaries(cache_dir: Path | None = None) -> KubeBinaries:
    """Build kube-apiserver and kubectl, fetch etcd, all once: a `.complete` marker makes the next call instant.
    CACHE_DIR is the cache's root (default: StackSettings().cache_dir, so `$IMAGERY_CACHE_DIR` or ~/.cache/imagery);
    the binaries go to <root>/k8s/<KUBERNETES_VERSION>/bin/. Raises InstallError saying what failed."""
    bin_dir = binaries_dir(cache_dir)
    binaries = KubeBinaries(bin_dir / "kube-apiserver", bin_dir / "kubectl", bin_dir / "etcd")
    marker = bin_dir / ".complete"
    if completed(marker, _marker_text()):
        return binaries
    bin_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(bin_dir / ".lock"):
        if completed(marker, _marker_text()):  # another process finished it while this one waited
            return binaries
        if not (binaries.kube_apiserver.exists() and binaries.kubectl.exists()):
            build_kubernetes(bin_dir)
        if not _etcd_matches(binaries.etcd):
            _fetch_etcd(binaries.etcd)
        marker.write_text(_marker_text())
    return binaries


def completed(marker: Path, text: str) -> bool:
    """Whether a build finished under the pins TEXT names (a changed pin invalidates the marker)."""
    return marker.exists() and marker.read_text() == text


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on LOCK_PATH: two test runs starting at once build once, not twice into one folder."""
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _go_json(go: str, *args: str) -> dict[str, Any]:
    """A `go` subcommand's -json answer (quick ones only: its output is captured, not streamed), run outside any
    module: inside one, `go mod download` would record what it fetched in that module's go.sum."""
    done = subprocess.run([go, *args], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise InstallError(f"go {shlex.join(args)} failed: {done.stderr.strip()[-1500:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def build_kubernetes(
    bin_dir: Path, commands: Sequence[str] = COMMANDS, build_name: str = "build", minutes: str = "4 to 8"
) -> None:
    """`go build` COMMANDS (default: kube-apiserver and kubectl) of k8s.io/kubernetes into BIN_DIR, from a wrapper
    module (in the folder BUILD_NAME beside BIN_DIR) that requires k8s.io/kubernetes: the module cannot be
    `go install`ed directly, its go.mod replaces the staging modules by directories of its repository. MINUTES: what
    the progress line announces for a first build on 2 cores."""
    go = require_tool("go", GO_HINT)
    module = _go_json(go, "mod", "download", "-json", f"{KUBERNETES_MODULE}@{KUBERNETES_VERSION}")
    build_dir = bin_dir.parent / build_name
    _write_wrapper_module(go, Path(module["GoMod"]), build_dir, commands)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-trimpath -buildvcs=false")
    run_streaming(
        [go, "-C", str(build_dir), "mod", "tidy", "-v"],
        f"Resolving {KUBERNETES_MODULE} {KUBERNETES_VERSION}'s dependencies",
        env=env,
    )
    partial = bin_dir / ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    run_streaming(
        [
            go,
            "-C",
            str(build_dir),
            "build",
            "-v",
            "-ldflags",
            _version_ldflags(_release_date(module)),
            "-o",
            f"{partial}/",
            *(f"{KUBERNETES_MODULE}/cmd/{command}" for command in commands),
        ],
        f"Building {', '.join(commands)} {KUBERNETES_VERSION} (first time only: {minutes} minutes on 2 cores)",
        env=env,
    )
    for command in commands:  # moved in only once whole, so an interrupted build is never taken for a finished one
        os.replace(partial / command, bin_dir / command)
    partial.rmdir()


def _write_wrapper_module(go: str, upstream_go_mod: Path, build_dir: Path, commands: Sequence[str]) -> None:
    """A go.mod requiring k8s.io/kubernetes, with each of its `=> ./staging/...` replacements (read from its own
    go.mod, so a new release's list is followed) pointed at the published module instead, and its `go` and `godebug`
    lines copied: a dependency's godebug settings do not apply, only the main module's."""
    upstream = _go_json(go, "mod", "edit", "-json", str(upstream_go_mod))
    replaces = upstream.get("Replace") or []
    staging = sorted(r["Old"]["Path"] for r in replaces if r["New"]["Path"].startswith("./staging/"))
    if not staging:
        raise InstallError(f"{upstream_go_mod} has no `=> ./staging/...` replacements: its layout changed")
    godebug = upstream.get("GoDebug") or []
    lines = [f"module {WRAPPER_MODULE}", "", f"go {upstream['Go']}", ""]
    lines += [f"godebug {entry['Key']}={entry['Value']}" for entry in godebug]
    lines += ["", f"require {KUBERNETES_MODULE} {KUBERNETES_VERSION}", "", "tool ("]
    lines += [f"\t{KUBERNETES_MODULE}/cmd/{command}" for command in commands]
    lines += [")", "", "replace ("]
    lines += [f"\t{path} => {path} {STAGING_VERSION}" for path in staging]
    lines += [")", ""]
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    (build_dir / "go.mod").write_text("\n".join(lines))


def _release_date(module: dict[str, Any]) -> str:
    """The release's time from the module proxy's .info (a reproducible buildDate: the source's, not the build's)."""
    info = json.loads(Path(module["Info"]).read_text())
    return str(info["Time"])


def _version_ldflags(build_date: str) -> str:
    """The -X stamps Kubernetes' own build sets: without gitVersion a binary says v0.0.0-master+$Format:%H$, which
    kubectl cannot parse as a server version. The module proxy knows no commit, so gitCommit is left empty."""
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    stamps = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    return " ".join(f"-X {package}.{key}={value}" for package in VERSION_PACKAGES for key, value in stamps.items())


def _etcd_matches(etcd: Path) -> bool:
    """Whether ETCD is there and is ETCD_VERSION (the bin folder is keyed by Kubernetes' version only)."""
    if not etcd.exists():
        return False
    done = subprocess.run([str(etcd), "--version"], capture_output=True, text=True)
    return f"etcd Version: {ETCD_VERSION}\n" in done.stdout


def _fetch_etcd(dest: Path) -> None:
    """Unpack Debian's etcd package into the cache (`dpkg -x`): no system-wide install, no service started."""
    require_tool("dpkg-deb", "this needs Debian's dpkg (the etcd binary comes from Debian's package)")
    console.print(f"[bold]Fetching etcd {ETCD_VERSION} (Debian's {ETCD_DEBIAN_PACKAGE})[/bold]")
    with tempfile.TemporaryDirectory(prefix="imagery-etcd-") as tmp:
        deb = _download_deb(Path(tmp))
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], "reading the package's version").strip()
        if not version.startswith(f"{ETCD_VERSION}-"):
            raise InstallError(
                f"apt offers {ETCD_DEBIAN_PACKAGE} {version}, but ETCD_VERSION is {ETCD_VERSION}: "
                "update imagery/local/versions.py (and check it still works with kube-apiserver)"
            )
        _run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], "unpacking the package")
        partial = dest.with_name(dest.name + ".partial")
        shutil.copy2(Path(tmp) / "root/usr/bin/etcd", partial)
        os.replace(partial, dest)


def _download_deb(folder: Path) -> Path:
    """`apt-get download` the package into FOLDER; `apt-get update` first only if the lists are stale or missing."""
    apt = require_tool("apt-get", "this needs Debian's apt (the etcd binary comes from Debian's package)")
    download = [apt, "download", "-q", ETCD_DEBIAN_PACKAGE]
    if subprocess.run(download, cwd=folder, capture_output=True).returncode != 0:
        _run([apt, "update", "-q"], "apt-get update (the package lists are stale)")
        _run(download, f"apt-get download {ETCD_DEBIAN_PACKAGE}", cwd=folder)
    debs = sorted(folder.glob(f"{ETCD_DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise InstallError(f"apt-get download {ETCD_DEBIAN_PACKAGE} left no .deb in {folder}")
    return debs[0]


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    """A quick command's stdout; InstallError with its stderr if it fails."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout


# ---------------------------------------------------------------------------- certificates and kubeconfig


@dataclass(frozen=True)
class Pki:
    """The control plane's credentials: one CA signs the server's certificate and the admin's client certificate
    (so it is also the client CA; imagery.k8s.node issues its kubelet's certificate with it too); the
    service-account key signs and verifies ServiceAccount tokens (the node's controller manager signs with it)."""

    ca: Path
    serving: CertFiles
    admin: CertFiles
    service_account_key: Path
    service_account_public_key: Path  # --service-account-key-file reads no PKCS#8 private key: give it the public


def _make_pki(folder: Path) -> Pki:
    authority = Authority(folder)
    key = folder / "service-accounts.key"
    _run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
        "making the service-account signing key",
    )
    key.chmod(0o600)
    public_key = folder / "service-accounts.pub"
    _run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public_key)], "deriving its public key")
    return Pki(
        ca=authority.cert,
        serving=authority.issue("kube-apiserver", ("localhost", "127.0.0.1", "kubernetes", "kubernetes.default.svc")),
        admin=authority.issue(ADMIN_USER, organization=ADMIN_GROUP),
        service_account_key=key,
        service_account_public_key=public_key,
    )


def _client_context(pki: Pki) -> ssl.SSLContext:
    """TLS as the admin: the readiness probe then needs no anonymous access."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    return context


def write_kubeconfig(
    path: Path, server: str, ca: Path, client: CertFiles, user: str, cluster: str = "imagery-test"
) -> Path:
    """A kubeconfig (JSON, which is YAML too) naming the certificate files of USER, for kubectl, helm and the node's
    components."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": cluster,
        "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user, "namespace": "default"}}],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)  # helm warns about a kubeconfig others can read
    return path


# ---------------------------------------------------------------------------- the processes


def _start_etcd(etcd: Path, workdir: Path) -> tuple[process.Process, str]:
    """A one-member etcd on loopback, its data in WORKDIR; (the process, its client URL) once it reports healthy."""
    client, peer = (f"http://127.0.0.1:{port}" for port in process.free_ports(2))
    argv = [
        str(etcd),
        "--name",
        "imagery-test",
        "--data-dir",
        str(workdir / "etcd-data"),
        "--logger",
        "zap",
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"imagery-test={peer}",
        "--initial-cluster-state",
        "new",
    ]
    etcd_process = process.spawn(argv, workdir / "logs" / "etcd.log", name="etcd")
    _wait_or_stop(etcd_process, process.http_200(f"{client}/health"), ETCD_START_S)
    return etcd_process, client


def _apiserver_argv(binary: Path, pki: Pki, port: int, etcd_url: str) -> list[str]:
    """kube-apiserver's flags: the minimum 1.34 requires, plus what makes it behave like a kubeadm cluster's."""
    return [
        str(binary),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--etcd-servers={etcd_url}",
        f"--tls-cert-file={pki.serving.cert}",
        f"--tls-private-key-file={pki.serving.key}",
        f"--client-ca-file={pki.ca}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",  # as kubeadm's: a chart's privileged container must not be refused here only
        # loopback is no valid endpoint of the `kubernetes` Service (and no Pod runs here to reach it): publish none
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]


def _start_apiserver(binary: Path, pki: Pki, etcd_url: str, workdir: Path) -> tuple[process.Process, str]:
    """kube-apiserver on a free loopback port; (the process, its URL) once /readyz answers 200 to the admin."""
    port = process.free_port()
    server = f"https://127.0.0.1:{port}"
    apiserver = process.spawn(
        _apiserver_argv(binary, pki, port, etcd_url), workdir / "logs" / "kube-apiserver.log", name="kube-apiserver"
    )
    _wait_or_stop(apiserver, process.http_200(f"{server}/readyz", context=_client_context(pki)), APISERVER_START_S)
    return apiserver, server


def _wait_or_stop(started: process.Process, probe: process.StartupProbe, timeout_s: float) -> None:
    """Wait until STARTED answers PROBE; one that does not is stopped before the error (with its log) propagates."""
    try:
        started.wait_ready(probe, timeout_s)
    except BaseException:
        started.stop()
        raise


# ---------------------------------------------------------------------------- the control plane


class ControlPlane:
    """A running etcd + kube-apiserver (made by start_control_plane), reached through `kubeconfig` as an admin
    (group system:masters). A context manager: leaving it stops both; the workdir can then be deleted."""

    def __init__(
        self,
        workdir: Path,
        binaries: KubeBinaries,
        etcd: process.Process,
        apiserver: process.Process,
        server: str,
        kubeconfig: Path,
        pki: Pki,
    ) -> None:
        self.workdir = workdir
        self.binaries = binaries
        self.server = server
        self.kubeconfig = kubeconfig
        self.pki = pki
        self.logs_dir = workdir / "logs"
        self._etcd = etcd
        self._apiserver = apiserver
        self._stopped: tuple[process.Stopped, ...] | None = None

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = False, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (its discovery cache kept in the workdir, not ~/.kube).
        CHECK: raise ControlPlaneError, with kubectl's output, if it fails."""
        argv = [
            str(self.binaries.kubectl),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kube-cache'}",
            *args,
        ]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {shlex.join(args)} failed (exit {done.returncode}):\n{(done.stderr + done.stdout).strip()}"
            )
        return done

    def apply_crds(self, paths: Sequence[Path], timeout_s: float = 60.0) -> tuple[str, ...]:
        """`kubectl apply --server-side` each file, then wait until every CustomResourceDefinition in them is
        Established (served: before that, creating its kind fails). The CRDs' names; ControlPlaneError past
        TIMEOUT_S or when kubectl refuses."""
        deadline = time.monotonic() + timeout_s
        names: list[str] = []
        for path in paths:
            done = self.kubectl(
                "apply",
                "--server-side",
                "-o",
                "name",
                "-f",
                str(path),
                check=True,
                timeout_s=_remaining(deadline, f"applying {path}"),
            )
            names += [line.split("/", 1)[1] for line in done.stdout.split() if line.startswith(f"{CRD_KIND}/")]
        if names:
            seconds = _remaining(deadline, "waiting for the CRDs to be established")
            self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={seconds:.0f}s",
                *(f"crd/{name}" for name in names),
                check=True,
                timeout_s=seconds + 10,
            )
        return tuple(names)

    @property
    def stopped(self) -> bool:
        """Whether stop() has been called."""
        return self._stopped is not None

    def stop(self) -> tuple[process.Stopped, ...]:
        """Stop kube-apiserver, then etcd (the server first: it would log etcd's absence while shutting down).
        Idempotent; what each stop took (see process.Stopped)."""
        if self._stopped is None:
            self._stopped = (self._apiserver.stop(), self._etcd.stop())
        return self._stopped


def _remaining(deadline: float, what: str) -> float:
    """Seconds left until DEADLINE (at least 1 for kubectl's --timeout); ControlPlaneError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ControlPlaneError(f"timed out before {what}")
    return max(left, 1.0)


def start_control_plane(workdir: Path, binaries: KubeBinaries) -> ControlPlane:
    """Start etcd and kube-apiserver with their data, credentials, logs (logs/) and an admin kubeconfig in WORKDIR;
    return once the API server is ready. Raises process.ProcessError, with the failing log's tail, and leaves
    nothing running, if either does not come up."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = _make_pki(workdir / "pki")
    etcd, etcd_url = _start_etcd(binaries.etcd, workdir)
    try:
        apiserver, server = _start_apiserver(binaries.kube_apiserver, pki, etcd_url, workdir)
    except BaseException:
        etcd.stop()
        raise
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki.ca, pki.admin, ADMIN_USER)
    return ControlPlane(workdir, binaries, etcd, apiserver, server, kubeconfig, pki)


if __name__ == "__main__":  # `python -m imagery.k8s.control_plane`: build ahead, outside a test's timeout
    for path in vars(ensure_binaries()).values():
        print(path)
