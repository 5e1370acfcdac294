"""Smoke test of imagery.k8s.control_plane: the binaries build, the control plane starts, and it is a real API server
(its version, server-side validation that a client-side dry run does not do, CRDs served once established).

Not in the default testpaths: `make test-k8s` runs it (the first run builds kube-apiserver: several minutes)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagery.k8s.control_plane import ControlPlane, ensure_binaries, start_control_plane
from imagery.local.versions import KUBERNETES_VERSION

GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    binaries = ensure_binaries()
    with start_control_plane(tmp_path_factory.mktemp("control-plane"), binaries) as started:
        yield started
    stopped = started.stop()
    assert all(each.clean for each in stopped), [str(each) for each in stopped]


@pytest.fixture
def namespace(plane: ControlPlane) -> str:
    """A fresh namespace (never deleted: without a controller manager a deleted namespace stays Terminating)."""
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", name, check=True)
    return name


def test_server_reports_the_pinned_version(plane: ControlPlane) -> None:
    done = plane.kubectl("version", "-o", "json", check=True)
    versions = json.loads(done.stdout)
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def _gpu_deployment(namespace: str, request: str, limit: str) -> str:
    container = {
        "name": "infer",
        "image": "registry.invalid/infer:1",
        "resources": {"requests": {GPU: request}, "limits": {GPU: limit}},
    }
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "infer", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "infer"}},
                "template": {"metadata": {"labels": {"app": "infer"}}, "spec": {"containers": [container]}},
            },
        }
    )


def test_server_side_dry_run_refuses_what_client_side_allows(plane: ControlPlane, namespace: str) -> None:
    unequal = _gpu_deployment(namespace, request="1", limit="2")
    client = plane.kubectl("apply", "--dry-run=client", "-f", "-", stdin=unequal)
    assert client.returncode == 0, client.stderr
    server = plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=unequal)
    assert server.returncode != 0
    assert GPU in server.stderr, server.stderr
    equal = plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=_gpu_deployment(namespace, "1", "1"))
    assert equal.returncode == 0, equal.stderr
    assert "server dry run" in equal.stdout


def _widget_crd() -> dict[str, object]:
    size = {"type": "integer", "minimum": 1}
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": size}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.imagery.local"},
        "spec": {
            "group": "smoke.imagery.local",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def _widget(namespace: str, size: int) -> str:
    return json.dumps(
        {
            "apiVersion": "smoke.imagery.local/v1",
            "kind": "Widget",
            "metadata": {"name": f"w{size}", "namespace": namespace},
            "spec": {"size": size},
        }
    )


def test_applied_crds_are_served(plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    crd_file = tmp_path / "widgets.crd.json"
    crd_file.write_text(json.dumps(_widget_crd()))
    assert plane.apply_crds([crd_file]) == ("widgets.smoke.imagery.local",)
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=_widget(namespace, 3), check=True)
    got = plane.kubectl("get", "widgets", "-n", namespace, "-o", "json", check=True)
    assert [item["spec"]["size"] for item in json.loads(got.stdout)["items"]] == [3]
    refused = plane.kubectl("apply", "--server-side", "-f", "-", stdin=_widget(namespace, 0))
    assert refused.returncode != 0 and "spec.size" in refused.stderr, refused.stderr
