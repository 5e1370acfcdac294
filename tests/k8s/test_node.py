"""A node that runs pods (imagery.k8s.node) joined to the test control plane: a Deployment of a locally built HTTP
server image becomes available (its httpGet readinessProbe passes), the host reaches the pod at its IP, and a
deleted pod is replaced by the Deployment's controllers with one that becomes Ready too.

Not in the default testpaths: `make test-k8s` runs it (root only; the first run builds kubelet, the controller
manager, the scheduler and the CNI plugins: a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagery.k8s.control_plane import ControlPlane, ensure_binaries, start_control_plane
from imagery.k8s.node import Node, build_static_go_image, ensure_node_binaries, start_node

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a node needs root (containerd, runc, netns, mounts)")

IMAGE = "imagery.local/hello-http:1"
PORT = 8080
# a static HTTP server: / answers with the pod's hostname (its name), /healthz 200 for the readiness probe
SERVER_GO = """package main

import (
\t"fmt"
\t"net/http"
\t"os"
)

func main() {
\thost, _ := os.Hostname()
\thttp.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
\thttp.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\\n", host) })
\tif err := http.ListenAndServe(":8080", nil); err != nil {
\t\tpanic(err)
\t}
}
"""
READY_S = 120.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_static_go_image(
        IMAGE, SERVER_GO, tmp_path_factory.mktemp("image") / "hello-http.tar", exposed_ports=(PORT,)
    )


@pytest.fixture
def cluster(tmp_path: Path, image: Path) -> Iterator[tuple[ControlPlane, Node]]:
    """A control plane and a Ready node with the image imported; afterwards, the node's stop left nothing behind
    (function scope: one node per host at a time, and the next test starts its own)."""
    binaries, node_binaries = ensure_binaries(), ensure_node_binaries()
    with start_control_plane(tmp_path / "plane", binaries) as plane:
        started = time.monotonic()
        with start_node(tmp_path / "node", plane, node_binaries) as node:
            print(f"\nnode {node.name} Ready {time.monotonic() - started:.1f}s after its start")
            node.import_image(image)
            yield plane, node
        cleanup = node.stop()
        assert cleanup.clean, cleanup
        assert not cleanup.killed_in_cgroups, cleanup  # the kubelet had stopped every container itself
        _assert_nothing_left(node)


def _assert_nothing_left(node: Node) -> None:
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{node.cgroup_root}"))
    assert subprocess.run(["ip", "link", "show", node.bridge], capture_output=True).returncode != 0
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(node.workdir) not in mounts


def _deployment(namespace: str) -> str:
    probe = {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1, "initialDelaySeconds": 0}
    container = {
        "name": "web",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": PORT}],
        "readinessProbe": probe,
    }
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": 2},
                },
            },
        }
    )


def _get(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl("get", *args, "-o", "json", check=True).stdout)


def _wait_available_pod(plane: ControlPlane, namespace: str, not_named: str | None = None) -> dict[str, Any]:
    """Once the Deployment reports one available replica and its one Ready pod is not NOT_NAMED: that pod."""
    deadline = time.monotonic() + READY_S
    seen = ""
    while time.monotonic() < deadline:
        deployment = _get(plane, "deployment", "web", "-n", namespace)
        pods = [
            pod
            for pod in _get(plane, "pods", "-n", namespace, "-l", "app=web")["items"]
            if pod["metadata"]["name"] != not_named and "deletionTimestamp" not in pod["metadata"]
        ]
        ready = [
            pod
            for pod in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        ]
        if deployment["status"].get("availableReplicas") == 1 and ready:
            return ready[0]
        seen = json.dumps({"deployment": deployment.get("status"), "pods": [pod.get("status") for pod in pods]})[:3000]
        time.sleep(0.5)
    events = plane.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp").stdout
    raise AssertionError(f"no available pod within {READY_S:.0f}s: {seen}\n{events}")


def _hello(pod: dict[str, Any]) -> str:
    with _DIRECT.open(f"http://{pod['status']['podIP']}:{PORT}/", timeout=5) as response:
        return response.read().decode()


def _run_web(plane: ControlPlane) -> tuple[str, dict[str, Any]]:
    """Create a namespace and the Deployment in it; (the namespace, its pod once available)."""
    namespace = f"node-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", namespace, check=True)
    plane.kubectl("apply", "-f", "-", stdin=_deployment(namespace), check=True)
    return namespace, _wait_available_pod(plane, namespace)


def test_deployment_pod_becomes_ready_and_is_replaced(cluster: tuple[ControlPlane, Node]) -> None:
    plane, node = cluster
    started = time.monotonic()
    namespace, first = _run_web(plane)
    print(f"Deployment available {time.monotonic() - started:.1f}s after its creation")
    assert first["spec"]["nodeName"] == node.name
    assert first["status"]["podIP"].startswith(node.pod_cidr.rsplit(".", 1)[0] + ".")
    assert _hello(first) == f"hello from {first['metadata']['name']}\n"

    plane.kubectl("delete", "pod", first["metadata"]["name"], "-n", namespace, "--wait=false", check=True)
    second = _wait_available_pod(plane, namespace, not_named=first["metadata"]["name"])
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert _hello(second) == f"hello from {second['metadata']['name']}\n"


def test_stop_removes_running_pods_by_force_once_the_control_plane_is_gone(tmp_path: Path, image: Path) -> None:
    """With the API server gone the kubelet cannot be asked to delete its pods: stop kills what runs in the node's
    cgroups and the shims, and unmounts what is left, all the same."""
    with start_control_plane(tmp_path / "plane", ensure_binaries()) as plane:
        node = start_node(tmp_path / "node", plane, ensure_node_binaries())
        try:
            node.import_image(image)
            _, pod = _run_web(plane)
        except BaseException:
            node.stop()
            raise
    started = time.monotonic()
    cleanup = node.stop()
    print(f"forced stop {time.monotonic() - started:.1f}s: {cleanup}")
    assert cleanup.killed_in_cgroups and cleanup.killed_shims, cleanup
    assert not cleanup.still_mounted and not cleanup.cgroups_left, cleanup
    _assert_nothing_left(node)
    with pytest.raises(OSError):
        _hello(pod)


def test_node_binaries_are_cached(tmp_path: Path) -> None:
    started = time.monotonic()
    binaries = ensure_node_binaries()
    assert time.monotonic() - started < 5
    assert all(path.exists() for path in vars(binaries).values())
