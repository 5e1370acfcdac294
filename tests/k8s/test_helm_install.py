"""A team installed by Helm on a real Kubernetes API server (`make test-k8s`; not part of `make test`).

The real kube-apiserver of the pinned version, on etcd, with the operators' CRDs applied and Established, validates
every object server side (strict field validation, admission) as `helm install`, `helm upgrade`, `helm rollback` and
`helm uninstall` create, change and delete them (pods run in test_node.py and test_service_pod.py). No Flink
Kubernetes Operator acts on the FlinkDeployment: the operator that runs Flink 2.x is not served by any registry this
machine reaches (Maven Central holds its API jar up to 1.10.0, whose FlinkVersion ends at v1_20). So the operator's
savepoint path is checked as the spec it acts on, not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from imagery.k8s import crds, render
from imagery.k8s.control_plane import ControlPlane, ensure_binaries, start_control_plane
from imagery.teams import Team

# what a team's release creates, by the API's resource names (kubectl get)
TEAM_RESOURCES = (
    "deployments.apps",
    "services",
    "poddisruptionbudgets.policy",
    "horizontalpodautoscalers.autoscaling",
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "flinkdeployments.flink.apache.org",
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
    "configmaps",
    "secrets",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("k8s")
    with start_control_plane(workdir / "cluster", ensure_binaries()) as plane:
        plane.apply_crds(crds.write_definitions(workdir / "crds"))
        yield plane


@pytest.fixture
def namespace(cluster) -> Iterator[str]:
    name = f"imagery-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name, check=True)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def helm(cluster: ControlPlane, *args: str | Path, stdin: str | None = None) -> str:
    # Helm's cache and config in the cluster's folder, not ~/.cache or ~/.config
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(cluster.workdir / "helm"),
        "HELM_CONFIG_HOME": str(cluster.workdir / "helm"),
        "HELM_DATA_HOME": str(cluster.workdir / "helm"),
    }
    return render.run_helm(list(args), stdin=stdin, env=env).stdout


def team_release(
    cluster: ControlPlane, verb: str, team: Team, namespace: str, *extra: str, values: dict | None = None
) -> str:
    given = {**render.team_values(team), **(values or {})}
    return helm(
        cluster,
        verb,
        render.release_name(team),
        render.TEAM_CHART,
        "--namespace",
        namespace,
        "-f",
        "-",
        *extra,
        stdin=yaml.safe_dump(given),
    )


def get(cluster: ControlPlane, namespace: str, resource: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", resource, name, "-n", namespace, "-o", "json", check=True).stdout)


def names_left(cluster: ControlPlane, namespace: str) -> list[str]:
    done = cluster.kubectl("get", ",".join(TEAM_RESOURCES), "-n", namespace, "-o", "name", check=True)
    # a namespace's own: its default ServiceAccount and CA bundle, which no release makes (made by the controller
    # manager, which does not run here, so none are expected either)
    return [n for n in done.stdout.split() if n not in ("serviceaccount/default", "configmap/kube-root-ca.crt")]


def test_install_upgrade_rollback_uninstall_leave_what_each_should(cluster, namespace):
    team = Team(team=f"t{uuid.uuid4().hex[:6]}", weights="fruit_cls_best.ts", partitions=4, parallelism=2)
    helm(cluster, "install", render.PLATFORM_RELEASE, render.PLATFORM_CHART, "--namespace", namespace)
    team_release(cluster, "install", team, namespace)

    job = get(cluster, namespace, "flinkdeployments.flink.apache.org", f"{team.service}-dispatcher")
    assert job["spec"]["job"]["upgradeMode"] == "savepoint" and job["spec"]["flinkVersion"] == "v2_2"
    deployment = get(cluster, namespace, "deployments.apps", f"{team.service}-inference")
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert get(cluster, namespace, "prometheusrules.monitoring.coreos.com", "imagery-alerts")["spec"]["groups"]

    # an upgrade with a changed flag: the operator would stop the job with a savepoint and start the new spec from it
    team_release(cluster, "upgrade", team, namespace, values={"dispatcher": {"extraArgs": ["--capacity=128"]}})
    upgraded = get(cluster, namespace, "flinkdeployments.flink.apache.org", f"{team.service}-dispatcher")
    assert "--capacity=128" in upgraded["spec"]["job"]["args"]
    assert upgraded["metadata"]["generation"] > job["metadata"]["generation"]
    assert upgraded["spec"]["job"]["upgradeMode"] == "savepoint"

    helm(cluster, "rollback", render.release_name(team), "1", "--namespace", namespace)
    rolled = get(cluster, namespace, "flinkdeployments.flink.apache.org", f"{team.service}-dispatcher")
    assert "--capacity=128" not in rolled["spec"]["job"]["args"]

    helm(cluster, "uninstall", render.release_name(team), "--namespace", namespace)
    helm(cluster, "uninstall", render.PLATFORM_RELEASE, "--namespace", namespace)
    assert names_left(cluster, namespace) == []


def dry_run(cluster: ControlPlane, namespace: str, text: str) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server`: the API server validates and admits every object, and stores none
    (Helm 4's own --dry-run=server sends nothing to the server)."""
    return cluster.kubectl("apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", "-", stdin=text)


def test_every_rendered_object_of_a_secured_cluster_passes_the_api_server(cluster, namespace, tmp_path):
    values = tmp_path / "cluster.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "minio": {"secure": True, "caSecret": "imagery-ca"},
                "authTokenSecret": "imagery-token",
                "service": {"tls": {"secret": "fruit-tls", "caSecret": "imagery-ca"}},
            }
        )
    )
    team = Team(team="fruit", weights="fruit_cls_best.ts")
    done = dry_run(cluster, namespace, render.render([team], namespace, [values], secured=True))
    assert done.returncode == 0, done.stderr
    assert "flinkdeployment.flink.apache.org/fruit-dispatcher serverside-applied (server dry run)" in done.stdout


def test_the_api_server_refuses_a_gpu_request_unequal_to_its_limit(cluster, namespace, tmp_path):
    """The schemas let it through (resources are free-form quantities); the API server does not."""
    team = Team(team="fruit", weights="fruit_cls_best.ts")
    values = tmp_path / "gpu.yaml"
    values.write_text(
        yaml.safe_dump(
            {"service": {"resources": {"requests": {"cpu": "1", "nvidia.com/gpu": 2}, "limits": {"nvidia.com/gpu": 1}}}}
        )
    )
    done = dry_run(cluster, namespace, render.render_team(team, namespace, [values]))
    assert done.returncode != 0 and "must be equal to nvidia.com/gpu limit" in done.stderr


def test_the_api_server_refuses_a_flink_deployment_the_crd_does_not_allow(cluster, namespace, tmp_path):
    team = Team(team="fruit", weights="fruit_cls_best.ts")
    values = tmp_path / "old.yaml"
    values.write_text(yaml.safe_dump({"flinkVersion": "v1_12"}))
    done = dry_run(cluster, namespace, render.render_team(team, namespace, [values]))
    assert done.returncode != 0 and "flinkVersion" in done.stderr
