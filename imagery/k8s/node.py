"""A node that runs pods, joined to a control plane of imagery.k8s.control_plane: its own containerd (config, root,
state and socket in the node's workdir, never the system's /etc/containerd or /run/containerd), the
kube-controller-manager (Deployments -> ReplicaSets -> Pods, service-account tokens, node lifecycle), the
kube-scheduler and a kubelet, pods wired by the CNI bridge plugin to a bridge of the node's own on a /24 that the
host routes to, so a test reaches a pod at its IP. No kube-proxy (no Service IPs): use pod IPs or hostNetwork.

Root only (containerd, runc, network namespaces, mounts); a cgroup v1 host without systemd as init is what it was
made on (kubelet: cgroupDriver cgroupfs, its pods under a cgroup root of the node's own, /imagery-<name>).

Versions (imagery/local/versions.py): kubelet, kube-controller-manager and kube-scheduler are built from the same
wrapper module as kube-apiserver (KUBERNETES_VERSION), the CNI plugins from github.com/containernetworking/plugins
at CNI_PLUGINS_VERSION; containerd and runc are Debian's (apt-get install containerd runc). The sandbox ("pause")
image is a static Go program built here and written as an image tarball by this module, imported into the node's
containerd: nothing is pulled from a registry.

    with start_control_plane(tmp / "plane", ensure_binaries()) as plane, \\
            start_node(tmp / "node", plane, ensure_node_binaries()) as node:
        node.import_image(build_static_go_image("imagery.local/web:1", SERVER_GO, tmp / "web.tar"))
        plane.kubectl("apply", "-f", "deployment.yaml", check=True)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from imagery import process
from imagery.errors import ToolError
from imagery.k8s.control_plane import (
    KUBERNETES_VERSION,
    ControlPlane,
    binaries_dir,
    build_kubernetes,
    completed,
    exclusive,
    write_kubeconfig,
)
from imagery.local.certs import Authority
from imagery.local.install import GO_HINT, InstallError, require_tool, run_streaming
from imagery.local.versions import CNI_PLUGINS_VERSION

NODE_COMMANDS = ("kubelet", "kube-controller-manager", "kube-scheduler")
CNI_MODULE = "github.com/containernetworking/plugins"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")  # loopback: containerd sets up each pod's lo with it
CNI_PACKAGES = {
    "bridge": "plugins/main/bridge",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
    "portmap": "plugins/meta/portmap",
}
PAUSE_IMAGE = "imagery.local/pause:1"  # bump the tag when _PAUSE_GO changes (the cache is keyed by it)
NODE_NAME = "imagery-node"
POD_CIDR = "10.244.0.0/24"
CONTAINERD_START_S = 30.0
COMPONENT_START_S = 90.0
NODE_READY_S = 180.0
GRACEFUL_POD_DELETE_S = 45.0
# folders outside the workdir that a node makes and no setting moves: the kubelet's device-plugin socket folder
# (so two nodes cannot run on one host at once), libcni's result cache. Removed on stop unless they were there before.
HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/lib/cni"))
DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")

# the sandbox's process: sleeps until SIGTERM/SIGINT and reaps what is reparented to it (it is PID 1 of a pod that
# shares its process namespace)
_PAUSE_GO = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tif pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


class NodeError(ToolError):
    """The node did not become Ready, or its containerd refused an image; the message says what was seen."""


# ---------------------------------------------------------------------------- binaries and images


@dataclass(frozen=True)
class NodeBinaries:
    """What a node runs beyond the control plane's binaries: the three Kubernetes programs, the CNI plugins' folder,
    the pause image's tarball (its reference: PAUSE_IMAGE), and Debian's containerd and its ctr client."""

    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    cni_bin_dir: Path
    pause_image: Path
    containerd: Path
    ctr: Path


def _node_marker_text() -> str:
    return f"kubernetes {KUBERNETES_VERSION}\ncni-plugins {CNI_PLUGINS_VERSION}\npause {PAUSE_IMAGE}\n"


def ensure_node_binaries(cache_dir: Path | None = None) -> NodeBinaries:
    """Build kubelet, kube-controller-manager and kube-scheduler (beside kube-apiserver, in
    <cache>/k8s/<KUBERNETES_VERSION>/bin/, from a wrapper module of their own in ../build-node), the CNI plugins
    (bin/cni/) and the pause image (bin/pause.tar), all once: a `.node-complete` marker makes the next call instant.
    Raises InstallError saying what failed (or that containerd or runc is missing)."""
    containerd = Path(require_tool("containerd", "apt-get install containerd runc (Debian's containerd 1.6)"))
    ctr = Path(require_tool("ctr", "apt-get install containerd (it ships ctr)"))
    require_tool("runc", "apt-get install runc")
    bin_dir = binaries_dir(cache_dir)
    binaries = NodeBinaries(
        bin_dir / "kubelet",
        bin_dir / "kube-controller-manager",
        bin_dir / "kube-scheduler",
        bin_dir / "cni",
        bin_dir / "pause.tar",
        containerd,
        ctr,
    )
    marker = bin_dir / ".node-complete"
    if completed(marker, _node_marker_text()):
        return binaries
    bin_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(bin_dir / ".lock"):
        if completed(marker, _node_marker_text()):
            return binaries
        if not all((bin_dir / command).exists() for command in NODE_COMMANDS):
            build_kubernetes(bin_dir, NODE_COMMANDS, "build-node", minutes="2 to 10")
        _build_cni_plugins(binaries.cni_bin_dir)
        build_static_go_image(PAUSE_IMAGE, _PAUSE_GO, binaries.pause_image)
        marker.write_text(_node_marker_text())
    return binaries


def _build_cni_plugins(dest: Path) -> None:
    """`go install` the four CNI plugins at CNI_PLUGINS_VERSION into DEST (moved in whole)."""
    go = require_tool("go", GO_HINT)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOBIN=str(partial), GOFLAGS="-trimpath -buildvcs=false")
    run_streaming(
        [
            go,
            "install",
            "-ldflags",
            "-s -w",
            *(f"{CNI_MODULE}/{CNI_PACKAGES[name]}@{CNI_PLUGINS_VERSION}" for name in CNI_PLUGINS),
        ],
        f"Building the CNI plugins {', '.join(CNI_PLUGINS)} {CNI_PLUGINS_VERSION}",
        env=env,
    )
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)


def build_static_go_image(
    reference: str, main_go: str, dest: Path, *, args: Sequence[str] = (), exposed_ports: Sequence[int] = ()
) -> Path:
    """Compile MAIN_GO (a `package main` using the standard library only) into a static linux/amd64 binary and write
    an image holding only it, /app (its entrypoint, then ARGS), as a docker-archive tarball at DEST tagged REFERENCE
    (what `ctr images import` and `docker load` read). Returns DEST."""
    go = require_tool("go", GO_HINT)
    with tempfile.TemporaryDirectory(prefix="imagery-image-") as tmp:
        source = Path(tmp)
        (source / "go.mod").write_text("module imagery.local/image\n\ngo 1.22\n")
        (source / "main.go").write_text(main_go)
        env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH="amd64", GOFLAGS="-trimpath -buildvcs=false")
        done = subprocess.run(
            [go, "build", "-ldflags", "-s -w", "-o", "app", "."], cwd=source, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise InstallError(f"go build of {reference}'s program failed: {done.stderr.strip()[-1500:]}")
        write_image_tarball(dest, reference, {"app": (source / "app").read_bytes()}, ["/app", *args], exposed_ports)
    return dest


def write_image_tarball(
    dest: Path, reference: str, files: Mapping[str, bytes], entrypoint: Sequence[str], exposed_ports: Sequence[int] = ()
) -> None:
    """A one-layer linux/amd64 image of FILES (path in the image -> content; all executable), as a docker-archive
    tarball tagged REFERENCE: manifest.json, the config and the layer (uncompressed)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), 0o755, 0
            tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(entrypoint),
            "Env": ["PATH=/"],
            "WorkingDir": "/",
            **({"ExposedPorts": {f"{port}/tcp": {} for port in exposed_ports}} if exposed_ports else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "imagery.k8s.node.write_image_tarball"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, mode="w") as tar:
        for name, content in (
            (config_name, config_bytes),
            (layer_name, layer_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    os.replace(partial, dest)


# ---------------------------------------------------------------------------- configuration files


def _containerd_config(root: Path, cni_bin_dir: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6's config (version 2): everything of its own under ROOT, the CRI plugin with cgroupfs runc,
        the pause image imported here as its sandbox image, netns mounts under its state dir (not /run/netns), runc's
    state under its own state dir (not /run/containerd/runc)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
temp = "{root / "tmp"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{root / "containerd.sock"}"

[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # no CAP_SYS_RESOURCE here (a sandboxed root): runc cannot lower oom_score_adj below containerd's own, so the
  # kubelet's negative values (-998 for a sandbox) are clamped to it instead of failing every container's start
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true

[{cri}.cni]
  bin_dir = "{cni_bin_dir}"
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1

[{cri}.containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{root / "state" / "runc"}"
"""


def _cni_config(bridge: str, pod_cidr: str, ipam_dir: Path) -> dict[str, object]:
    """The pods' network: a bridge of the node's own, its gateway address the subnet's first (so the host routes
    POD_CIDR to it), no masquerading (pods need not reach out), portmap for hostPort."""
    return {
        "cniVersion": "1.0.0",
        "name": "imagery-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(
    workdir: Path, ca: Path, containerd_socket: Path, cgroup_root: str, port: int, healthz_port: int
) -> dict[str, object]:
    """KubeletConfiguration (JSON is YAML): cgroupfs (no systemd), its pods under CGROUP_ROOT, swap tolerated,
    eviction and image GC thresholds that a shared developer machine's disk does not trip, loopback-only ports."""
    endpoint = f"unix://{containerd_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": cgroup_root,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "podLogsDir": str(workdir / "pod-logs"),
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "maxPods": 30,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "5s",
        "fileCheckFrequency": "5s",
        "syncFrequency": "10s",
    }


# ---------------------------------------------------------------------------- cgroups, mounts, leftovers

_CGROUP_V1 = Path("/sys/fs/cgroup")


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup (v1's, and in hybrid mode the unified one, where runc
    makes each container's cgroup too)."""
    return [path for path in sorted(_CGROUP_V1.iterdir()) if path.is_dir() and (path / "cgroup.procs").exists()]


def _make_cgroup_root(name: str) -> None:
    """Create /NAME in each hierarchy (kubelet refuses a cgroupRoot that does not exist); cpuset's copies its
    parent's cpus and mems (a new v1 cpuset is empty, and nothing could run in it)."""
    for hierarchy in _cgroup_hierarchies():
        folder = hierarchy / name
        folder.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (folder / knob).write_text((hierarchy / knob).read_text())


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _cgroup_hierarchies():
        for procs in (hierarchy / name).rglob("cgroup.procs") if (hierarchy / name).exists() else ():
            try:
                pids.update(int(line) for line in procs.read_text().split())
            except OSError:
                continue
    return pids


def _kill_cgroup(name: str, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process left in the cgroup root NAME (a pod's containers the kubelet did not stop), and wait
    until none is left; the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while (pids := _cgroup_pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return sorted(set(killed))


def _remove_cgroup_root(name: str) -> list[str]:
    """rmdir /NAME and everything below it, deepest first, in each hierarchy; what could not be removed."""
    left: list[str] = []
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / name
        if not top.exists():
            continue
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for folder in [*folders, top]:
            for _ in range(20):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while a killed process is still being torn down
                    time.sleep(0.1)
            else:
                left.append(str(folder))
    return left


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ROOT, deepest (last mounted) first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return list(reversed(points))


def _unmount_all(root: Path) -> list[str]:
    """Unmount everything at or below ROOT (the kubelet's rshared root dir, pods' volumes, containerd's overlay
    rootfs, shm and netns mounts); lazily when busy. What stays mounted."""
    for point in _mounts_under(root):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    return _mounts_under(root)


def _shims_of(containerd_socket: Path) -> list[int]:
    """The containerd-shim processes serving the containerd at SOCKET (they outlive it: shims are daemons)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and str(containerd_socket).encode() in argv:
            found.append(int(entry))
    return found


def _kill_pids(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)


# ---------------------------------------------------------------------------- the node


@dataclass(frozen=True)
class Cleanup:
    """What Node.stop did: how each process group stopped, and what it had to remove by force (the pids it killed in
    the node's cgroups, the shims it killed: empty when the kubelet had stopped every pod) and could not remove
    (mount points under the workdir, cgroup folders: empty when all went well)."""

    stopped: tuple[process.Stopped, ...]
    killed_in_cgroups: tuple[int, ...] = ()
    killed_shims: tuple[int, ...] = ()
    still_mounted: tuple[str, ...] = ()
    cgroups_left: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return all(each.clean for each in self.stopped) and not self.still_mounted and not self.cgroups_left


class Node:
    """A running node (made by start_node): containerd, kube-controller-manager, kube-scheduler and a kubelet,
    registered as `name` and Ready. A context manager: leaving it stops them all and removes what they created."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        plane: ControlPlane,
        binaries: NodeBinaries,
        containerd_socket: Path,
        bridge: str,
        cgroup_root: str,
        pod_cidr: str,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.plane = plane
        self.binaries = binaries
        self.socket = containerd_socket
        self.bridge = bridge
        self.cgroup_root = cgroup_root
        self.pod_cidr = pod_cidr
        self.logs_dir = workdir / "logs"
        self.processes: dict[str, process.Process] = {}
        self.host_dirs_before = {folder for folder in HOST_DIRS if folder.exists()}
        self._cleanup: Cleanup | None = None

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def ctr(self, *args: str, check: bool = True, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Debian's ctr against this node's containerd, in the CRI's namespace k8s.io."""
        argv = [str(self.binaries.ctr), "--address", str(self.socket), "--namespace", "k8s.io", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise NodeError(
                f"ctr {' '.join(args)} failed (exit {done.returncode}): {(done.stderr + done.stdout).strip()[-1500:]}"
            )
        return done

    def import_image(self, image: Path | str, timeout_s: float = 1200.0) -> str:
        """Import an image into the node's containerd (namespace k8s.io, where the kubelet finds it): IMAGE is an
        image tarball (docker-archive or OCI, e.g. build_static_go_image's) or the reference of an image in the local
        Docker engine (`docker save`d first). Returns ctr's report. A pod then uses it by its reference with
        imagePullPolicy IfNotPresent or Never."""
        if Path(image).exists():
            return self.ctr("images", "import", str(image), timeout_s=timeout_s).stdout
        docker = require_tool("docker", f"{image} is no file, and reading it from Docker needs the docker CLI")
        with tempfile.TemporaryDirectory(prefix="imagery-image-") as tmp:
            tarball = Path(tmp) / "image.tar"
            done = subprocess.run([docker, "save", "-o", str(tarball), str(image)], capture_output=True, text=True)
            if done.returncode != 0:
                raise NodeError(f"docker save {image} failed: {done.stderr.strip()[-800:]}")
            # the inference image (torch) is about 6 GB: unpacking it takes minutes on 2 cores
            return self.ctr("images", "import", str(tarball), timeout_s=timeout_s).stdout

    def stop(self) -> Cleanup:
        """Stop everything, and remove what it made: first the controllers (nothing recreates pods), the pods deleted
        through the API while the kubelet still runs (so it tears their sandboxes down: CNI DEL, unmounts), then the
        kubelet, the scheduler and containerd; then by force what is left: processes in the node's cgroup root,
        shims, mounts under its workdir, its cgroups and bridge. Idempotent; what it found (see Cleanup)."""
        if self._cleanup is not None:
            return self._cleanup
        stopped = []
        if (manager := self.processes.pop("kube-controller-manager", None)) is not None:
            stopped.append(manager.stop())
        kubelet = self.processes.get("kubelet")
        if kubelet is not None and kubelet.running and not self.plane.stopped:
            self._delete_pods()
        for name in ("kubelet", "kube-scheduler", "containerd"):
            if (started := self.processes.pop(name, None)) is not None:
                stopped.append(started.stop())
        killed = _kill_cgroup(self.cgroup_root)
        shims = _shims_of(self.socket)
        _kill_pids(shims)
        mounted = _unmount_all(self.workdir)
        if not mounted:  # the images' unpacked layers: gigabytes (the inference image is about 6 GB)
            shutil.rmtree(self.socket.parent / "root", ignore_errors=True)
        cgroups_left = _remove_cgroup_root(self.cgroup_root)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        for folder in HOST_DIRS:  # what the kubelet and libcni made outside the workdir (their paths are fixed)
            if folder not in self.host_dirs_before:
                shutil.rmtree(folder, ignore_errors=True)
        self._cleanup = Cleanup(tuple(stopped), tuple(killed), tuple(shims), tuple(mounted), tuple(cgroups_left))
        return self._cleanup

    def _delete_pods(self) -> None:
        """Delete every pod bound to this node and wait (bounded) until the kubelet has removed them."""
        selector = f"spec.nodeName={self.name}"
        try:  # best effort: what the kubelet leaves, stop removes by force
            self.plane.kubectl(
                "delete",
                "pods",
                "--all-namespaces",
                f"--field-selector={selector}",
                "--wait=true",
                f"--timeout={GRACEFUL_POD_DELETE_S:.0f}s",
                "--grace-period=5",
                timeout_s=GRACEFUL_POD_DELETE_S + 15,
            )
        except subprocess.TimeoutExpired:
            pass


def _node_conditions(plane: ControlPlane, name: str) -> dict[str, str]:
    done = plane.kubectl("get", "node", name, "-o", "json", timeout_s=15)
    if done.returncode != 0:
        raise process.NoAnswerYet(f"node {name}: {done.stderr.strip()}")
    status = json.loads(done.stdout).get("status", {})
    return {
        c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')}" for c in status.get("conditions", [])
    }


def _node_ready(plane: ControlPlane, name: str) -> process.StartupProbe:
    def probe() -> None:
        conditions = _node_conditions(plane, name)
        if not conditions.get("Ready", "").startswith("True"):
            raise process.NoAnswerYet(f"node {name} not Ready: {conditions.get('Ready', 'no Ready condition yet')}")

    return probe


def _service_accounts_ready(plane: ControlPlane) -> process.StartupProbe:
    """The controllers act: the `default` namespace got its `default` ServiceAccount (a pod needs one)."""

    def probe() -> None:
        done = plane.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name", timeout_s=15)
        if done.returncode != 0:
            raise process.NoAnswerYet(f"no default ServiceAccount yet: {done.stderr.strip()}")

    return probe


def _insecure_https_200(url: str) -> process.StartupProbe:
    """A component's /healthz on its self-signed serving certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return process.http_200(url, context=context)


def _both(first: process.StartupProbe, second: process.StartupProbe) -> process.StartupProbe:
    def probe() -> None:
        first()
        second()

    return probe


def start_node(
    workdir: Path,
    plane: ControlPlane,
    binaries: NodeBinaries | None = None,
    *,
    name: str = NODE_NAME,
    pod_cidr: str = POD_CIDR,
    ready_timeout_s: float = NODE_READY_S,
) -> Node:
    """Start a node joined to PLANE, its files (configs, containerd's root and state, the kubelet's root dir, logs/)
    in WORKDIR; return once the node is Ready and the controllers have made the `default` ServiceAccount. The kubelet
    authenticates as system:node:NAME (group system:nodes, a certificate from the plane's CA: the Node authorizer
    applies); the controller manager and the scheduler as the plane's admin. Pods get addresses of POD_CIDR on a
    bridge `imgbr-<hash>`. Raises process.ProcessError (with the failing log's tail) or NodeError, and leaves
    nothing running, if something does not come up. Root only."""
    if os.geteuid() != 0:
        raise NodeError("a node needs root (containerd, runc, network namespaces, mounts)")
    if _answers(DEVICE_PLUGIN_SOCKET):
        raise NodeError(f"another kubelet runs on this host ({DEVICE_PLUGIN_SOCKET} answers): one node at a time")
    binaries = binaries or ensure_node_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    tag = hashlib.sha256(str(workdir).encode()).hexdigest()[:8]
    bridge, cgroup_root = f"imgbr-{tag}", f"{name}-{tag}"
    node = Node(
        name, workdir, plane, binaries, workdir / "containerd" / "containerd.sock", bridge, cgroup_root, pod_cidr
    )
    try:
        _start(node, plane, binaries, ready_timeout_s)
    except BaseException:
        node.stop()
        raise
    return node


def _start(node: Node, plane: ControlPlane, binaries: NodeBinaries, ready_timeout_s: float) -> None:
    workdir, logs = node.workdir, node.logs_dir
    # containerd, with the CNI config in place before it starts (its CRI plugin reads conf_dir)
    cni_conf_dir = workdir / "cni" / "net.d"
    cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (cni_conf_dir / "10-imagery.conflist").write_text(
        json.dumps(_cni_config(node.bridge, node.pod_cidr, workdir / "cni" / "ipam"), indent=2) + "\n"
    )
    containerd_dir = node.socket.parent
    containerd_dir.mkdir(parents=True, exist_ok=True)
    config = containerd_dir / "config.toml"
    config.write_text(_containerd_config(containerd_dir, binaries.cni_bin_dir, cni_conf_dir))
    node.processes["containerd"] = process.spawn(
        [str(binaries.containerd), "--config", str(config)], logs / "containerd.log", name="containerd"
    )
    node.processes["containerd"].wait_ready(_socket_answers(node), CONTAINERD_START_S)
    node.import_image(binaries.pause_image)

    # the controllers, as the admin; the kubelet as system:node:<name>
    pki = plane.pki
    authority = Authority(pki.ca.parent)
    kubelet_cert = authority.issue(
        f"system:node:{node.name}", ("localhost", "127.0.0.1", node.name), organization="system:nodes"
    )
    kubelet_kubeconfig = write_kubeconfig(
        workdir / "kubelet.kubeconfig",
        plane.server,
        pki.ca,
        kubelet_cert,
        f"system:node:{node.name}",
        cluster=node.name,
    )
    admin = str(plane.kubeconfig)
    manager_port, scheduler_port, kubelet_port, healthz_port = process.free_ports(4)
    node.processes["kube-controller-manager"] = process.spawn(
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}",
            "--bind-address=127.0.0.1",
            f"--secure-port={manager_port}",
            f"--cert-dir={workdir / 'controller-manager'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca}",
            "--use-service-account-credentials=true",
            "--cluster-name=imagery",
            "--controllers=*",
            "--node-monitor-period=2s",
        ],
        logs / "kube-controller-manager.log",
        name="kube-controller-manager",
    )
    node.processes["kube-scheduler"] = process.spawn(
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={admin}",
            f"--authentication-kubeconfig={admin}",
            f"--authorization-kubeconfig={admin}",
            "--bind-address=127.0.0.1",
            f"--secure-port={scheduler_port}",
            f"--cert-dir={workdir / 'scheduler'}",
            "--leader-elect=false",
        ],
        logs / "kube-scheduler.log",
        name="kube-scheduler",
    )

    _make_cgroup_root(node.cgroup_root)
    kubelet_config = workdir / "kubelet-config.json"
    kubelet_config.write_text(
        json.dumps(
            _kubelet_config(workdir, pki.ca, node.socket, f"/{node.cgroup_root}", kubelet_port, healthz_port), indent=2
        )
        + "\n"
    )
    node.processes["kubelet"] = process.spawn(
        [
            str(binaries.kubelet),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={workdir / 'kubelet'}",
            f"--cert-dir={workdir / 'kubelet-pki'}",
            f"--hostname-override={node.name}",
            "--v=2",
        ],
        logs / "kubelet.log",
        name="kubelet",
    )

    deadline = time.monotonic() + ready_timeout_s
    for component, probe in (
        ("kube-controller-manager", _insecure_https_200(f"https://127.0.0.1:{manager_port}/healthz")),
        ("kube-scheduler", _insecure_https_200(f"https://127.0.0.1:{scheduler_port}/healthz")),
        ("kubelet", process.http_200(f"http://127.0.0.1:{healthz_port}/healthz")),
    ):
        node.processes[component].wait_ready(probe, max(deadline - time.monotonic(), COMPONENT_START_S))
    kubelet = node.processes["kubelet"]
    kubelet.wait_ready(
        _both(_node_ready(plane, node.name), _service_accounts_ready(plane)), max(deadline - time.monotonic(), 10.0)
    )


def _socket_answers(node: Node) -> process.StartupProbe:
    def probe() -> None:
        if not node.socket.exists():
            raise process.NoAnswerYet(f"no socket {node.socket} yet")
        done = node.ctr("version", check=False, timeout_s=10)
        if done.returncode != 0:
            raise process.NoAnswerYet(done.stderr.strip())

    return probe


def _answers(socket_path: Path) -> bool:
    """Whether something accepts connections on the unix socket SOCKET_PATH."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(str(socket_path)) == 0


if __name__ == "__main__":  # `python -m imagery.k8s.node`: build ahead, outside a test's timeout
    for path in vars(ensure_node_binaries()).values():
        print(path)
