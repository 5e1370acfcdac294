"""The chart's inference Deployment run by a real kubelet (imagery.k8s.node), the service image built from
services/inference_http/Dockerfile (`make test-k8s` builds it as IMAGE), under an exactly-once dispatcher: the
service pod deleted mid-stream is replaced by the Deployment's controllers, its readiness probe holds traffic off it
until the model is loaded, and nothing is lost or doubled (the audit is the oracle).

What differs from a production install, and why: the node has no GPU (the GPU limit is dropped), no
PersistentVolume provisioner (the weights are a hostPath), and no kube-proxy or cluster DNS, so the pod uses the
host's network: the dispatcher (a local job, as the Flink Kubernetes Operator that would run it is not served here)
reaches the pod at a fixed host port across the replacement, and the pod reaches the local stack's MinIO.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from imagery import kafka_io
from imagery.k8s import render
from imagery.k8s.control_plane import ControlPlane, ensure_binaries, start_control_plane
from imagery.k8s.node import Node, ensure_node_binaries, start_node
from imagery.local.settings import StackSettings
from imagery.pipeline_run import DispatcherProcess, collect
from imagery.process import free_port
from imagery.teams import Team
from schemas import INFER_JSON_ROUTE
from tests.e2e.test_dispatcher import JOB_TIMEOUT_S
from tests.e2e.test_recovery import assert_audit_clean
from tests.helpers import put

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a node needs root (containerd, runc, netns, mounts)"),
    pytest.mark.timeout(1800),
]  # importing the 6 GB image into the node's containerd takes minutes

IMAGE = os.environ.get("IMAGERY_K8S_INFERENCE_IMAGE", "imagery-inference-http:k8s")
READY_S = 300.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Node]]:
    workdir = tmp_path_factory.mktemp("k8s-pod")
    with start_control_plane(workdir / "plane", ensure_binaries()) as plane:
        with start_node(workdir / "node", plane, ensure_node_binaries()) as started:
            started.import_image(IMAGE)
            yield plane, started
        cleanup = started.stop()
        assert cleanup.clean, cleanup


def service_deployment(team: Team, namespace: str, port: int, weights: Path, settings: StackSettings) -> str:
    """The chart's Deployment for TEAM, changed only where this node differs from a GPU cluster (module doc)."""
    values = {
        "images": {"inference": IMAGE, "pullPolicy": "Never"},
        "minio": {"endpoint": settings.minio_endpoint, "accessKey": settings.minio_access_key},
        "service": {
            "autoscaling": {"enabled": False},
            "startupSeconds": 300,
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "4Gi", "nvidia.com/gpu": None},
            },
        },
    }  # null: removed
    objects = render.documents(
        render.template(
            render.TEAM_CHART, render.release_name(team), namespace, values={**render.team_values(team), **values}
        )
    )
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    container = pod["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": port}]
    container["env"] += [{"name": "PORT", "value": str(port)}]
    pod["volumes"] = [
        v if v["name"] != "weights" else {"name": "weights", "hostPath": {"path": str(weights.parent)}}
        for v in pod["volumes"]
    ]
    return yaml.safe_dump(deployment)


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict]:
    done = plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json", check=True)
    return json.loads(done.stdout)["items"]


def wait_available(plane: ControlPlane, namespace: str, name: str) -> None:
    done = plane.kubectl(
        "wait",
        "-n",
        namespace,
        f"deployment/{name}",
        "--for=condition=Available",
        f"--timeout={READY_S:.0f}s",
        timeout_s=READY_S + 10,
    )
    if done.returncode != 0:  # say why: the pods' events and the service's own log
        selector = f"app.kubernetes.io/name={name}"
        described = plane.kubectl("describe", "pods", "-n", namespace, "-l", selector).stdout
        logs = plane.kubectl("logs", "-n", namespace, "-l", selector, "--tail=40").stdout
        pytest.fail(f"deployment/{name} not available in {READY_S:.0f}s:\n{described[-4000:]}\n{logs}")


def test_deleting_the_service_pod_mid_stream_loses_nothing(
    node, stack_settings, bootstrap, new_topic, minio, bucket, fruit_weights, fruit_images, tmp_path
):
    plane, _ = node
    namespace = f"imagery-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", namespace, check=True)
    team = Team(team="fruit", weights=fruit_weights.name)
    plane.kubectl(
        "create",
        "secret",
        "generic",
        "imagery-minio",
        "-n",
        namespace,
        f"--from-file=secret-key={_secret_file(tmp_path, stack_settings)}",
        check=True,
    )
    port = free_port()
    name = "fruit-inference"
    plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=True,
        stdin=service_deployment(team, namespace, port, fruit_weights, stack_settings),
    )
    wait_available(plane, namespace, name)
    [first] = pods(plane, namespace, f"app.kubernetes.io/name={name}")

    inp, out, dlq = new_topic("in", partitions=2), new_topic("out"), new_topic("dlq")
    put(minio, bucket, "clean.jpg", fruit_images.clean)
    run = uuid.uuid4().hex[:8]
    ids = [f"{run}-{i}" for i in range(1000)]
    kafka_io.produce(
        bootstrap,
        inp,
        [(i.encode(), json.dumps({"id": i, "bucket": bucket, "key": "clean.jpg"}).encode()) for i in ids],
    )
    args = [
        "--bootstrap",
        bootstrap,
        "--team",
        "fruit",
        "--http-url",
        f"http://127.0.0.1:{port}{INFER_JSON_ROUTE}",
        "--input-topic",
        inp,
        "--output-topic",
        out,
        "--dlq-topic",
        dlq,
        "--group-id",
        f"g-{run}",
        "--delivery-guarantee",
        "exactly-once",
        "--checkpoint-interval-ms",
        "2000",
        "--capacity",
        "8",
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
        "--backoff-ms",
        "50",
        "--backoff-max-ms",
        "500",
    ]
    with DispatcherProcess(args, tmp_path / "job.log") as job:
        got = collect(bootstrap, out, dlq, lambda c: len(c.results) >= 60, JOB_TIMEOUT_S, watch=job.check_alive)
        assert len(got.results) < len(ids), "the pod must go while messages are still to be answered"
        plane.kubectl("delete", "pod", "-n", namespace, first["metadata"]["name"], "--wait=false", check=True)
        deadline = time.monotonic() + READY_S
        while not [
            p
            for p in pods(plane, namespace, f"app.kubernetes.io/name={name}")
            if p["metadata"]["uid"] != first["metadata"]["uid"]
        ]:
            assert time.monotonic() < deadline, "the Deployment did not replace the deleted pod"
            time.sleep(0.5)
        wait_available(plane, namespace, name)
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: len(c.results) >= len(ids) or bool(c.dead),
            JOB_TIMEOUT_S,
            watch=job.check_alive,
        )
        late = collect(bootstrap, out, dlq, lambda c: c.result_count > len(ids), 6, watch=job.check_alive)
        assert_audit_clean(bootstrap, inp, out, dlq, args, job)
    [second] = pods(plane, namespace, f"app.kubernetes.io/name={name}")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert sorted(got.results) == sorted(ids) and not got.dead, "nothing lost, nothing dead-lettered by the outage"
    assert late.result_count == len(ids), f"nothing twice: {late.result_count - len(ids)} duplicates"
    plane.kubectl("delete", "deployment", name, "-n", namespace, "--wait=true", check=True)


def _secret_file(tmp_path: Path, settings: StackSettings) -> Path:
    path = tmp_path / "minio-secret-key"
    path.write_text(settings.minio_secret_key)
    path.chmod(0o600)
    return path
