"""The Kubernetes objects of deploy/helm/, rendered by the pinned Helm from deploy/teams.yaml, checked offline:
Kubernetes 1.34's schemas (strict), the operators' CRDs of deploy/k8s/crds, the project's rules, and the team list.
Each rule is also shown to fail on an object that breaks it (a check that cannot fail proves nothing)."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from imagery import compose, scaffold
from imagery.k8s import crds, render, secrets, sizing, validate
from imagery.local.versions import FLINK_VERSION
from imagery.repo import ALERT_RULES
from imagery.teams import Team, load_teams
from schemas import HEALTHZ_ROUTE, INFER_JSON_ROUTE, READYZ_ROUTE, topics
from streaming.dispatch.metrics import REPORTER_FACTORY
from streaming.flink.jobs import JOB_FILE

FRUIT = Team(team="fruit", weights="fruit_cls_best.ts", partitions=4, parallelism=2)
# every optional branch of the team chart: a secured cluster's values
SECURED_CLUSTER = {
    "images": {"flink": "registry.example/imagery-flink:1.0", "inference": "registry.example/imagery-inference:1.0"},
    "kafka": {"bootstrap": "kafka.kafka.svc:9093"},
    "minio": {"endpoint": "minio.storage.svc:9000", "secure": True, "caSecret": "imagery-ca"},
    "authTokenSecret": "imagery-token",
    "service": {
        "tls": {"secret": "fruit-tls", "caSecret": "imagery-ca"},
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "dispatcher": {
        "autoscaler": True,
        "extraArgs": ["--capacity=64"],
        "initialSavepointPath": "s3://imagery-flink-state/http-dispatcher-fruit/savepoints/savepoint-1",
    },
}
PVC_STATE = {
    "dispatcher": {"state": {"uri": "file:///flink-state", "claim": "flink-state"}},
    "service": {"autoscaling": {"enabled": False}},
}


def values_file(tmp_path: Path, values: dict, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def objects_of(text: str) -> list[dict]:
    return render.documents(text)


def one(objects: list[dict], kind: str) -> dict:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def messages(problems: list[validate.Problem]) -> str:
    return "\n".join(map(str, problems))


@pytest.fixture(scope="module")
def fruit_objects() -> list[dict]:
    return objects_of(render.render_team(FRUIT))


def test_every_team_of_teams_yaml_renders_and_passes_every_check():
    teams = load_teams()
    objects = objects_of(render.render(teams))
    assert validate.problems(objects, teams) == []
    kinds = {o["kind"] for o in objects}
    assert {
        "FlinkDeployment",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    } <= kinds


@pytest.mark.parametrize("values", [SECURED_CLUSTER, PVC_STATE], ids=["secured", "pvc-state"])
def test_a_cluster_s_values_render_objects_that_pass(tmp_path, values):
    objects = objects_of(render.render([FRUIT], values_files=[values_file(tmp_path, values)], secured=True))
    assert validate.problems(objects, [FRUIT]) == []


def test_a_secured_render_reads_every_secret_from_a_mounted_file(tmp_path):
    objects = objects_of(render.render_team(FRUIT, values_files=[values_file(tmp_path, SECURED_CLUSTER)], secured=True))
    job = one(objects, "FlinkDeployment")
    args = job["spec"]["job"]["args"]
    assert "--kafka-config=/etc/imagery/kafka/kafka.properties" in args
    assert "--auth-token-file=/etc/imagery/auth/token" in args
    assert "--http-ca-file=/etc/imagery/service-ca/ca.crt" in args
    assert not any("token=" in a or "password" in a or "secret" in a.lower() for a in args)
    volumes = {v["name"]: v for v in job["spec"]["podTemplate"]["spec"]["volumes"]}
    assert volumes["kafka-config"]["secret"]["secretName"] == secrets.kafka_secret_name(FRUIT)
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MINIO_SECRET_KEY_FILE"] and env["AUTH_TOKEN_FILE"] and env["TLS_KEY_FILE"]
    assert env["MINIO_ACCESS_KEY"] == "fruit-reader"
    assert not {"MINIO_SECRET_KEY", "AUTH_TOKEN"} & set(env)
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    monitor = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert monitor["scheme"] == "https" and monitor["tlsConfig"]["ca"]["secret"]["name"] == "imagery-ca"


def test_the_dispatcher_runs_the_job_file_with_compose_s_names_and_the_exactly_once_settings(fruit_objects):
    job = one(fruit_objects, "FlinkDeployment")
    spec = job["spec"]
    args = validate._args(job)
    assert spec["job"]["args"][:2] == ["-py", f"/opt/imagery/{JOB_FILE.relative_to(JOB_FILE.parents[3])}"]
    assert args["team"] == "fruit" and args["input-topic"] == topics.input_topic("fruit")
    assert args["group-id"] == topics.dispatcher_group("fruit") and args["dlq-topic"] == topics.DLQ_TOPIC
    assert args["http-url"] == f"http://fruit-inference.imagery.svc:8000{INFER_JSON_ROUTE}"
    assert args["delivery-guarantee"] == "exactly-once" and args["resume"] == "none"
    assert spec["job"]["upgradeMode"] == "savepoint" and spec["job"]["parallelism"] == 2
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"] == f"s3://imagery-flink-state/{topics.dispatcher_group('fruit')}"
    assert conf["execution.checkpointing.savepoint-dir"].endswith("/savepoints")
    assert conf["metrics.reporter.prom.factory.class"] == REPORTER_FACTORY
    assert conf["metrics.reporter.prom.port"] == str(compose.FLINK_REPORTER_PORT)
    assert spec["flinkVersion"] == "v" + "_".join(FLINK_VERSION.split(".")[:2])
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{FLINK_VERSION}.jar"


def test_the_service_asks_for_a_gpu_in_limits_with_probes_on_its_routes(fruit_objects):
    container = one(fruit_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    resources = container["resources"]
    assert resources["limits"][validate.GPU] == 1 and validate.GPU not in resources["requests"]
    assert container["readinessProbe"]["httpGet"]["path"] == READYZ_ROUTE
    assert container["livenessProbe"]["httpGet"]["path"] == HEALTHZ_ROUTE
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # the warm-up's compile
    hpa = one(fruit_objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "inference_queue_depth"


def test_the_platform_release_carries_alerts_yml_unchanged():
    rule = one(objects_of(render.render_platform()), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]


# ---- what must fail ------------------------------------------------------------------------------------------------


def broken(objects: list[dict], kind: str, edit) -> list[dict]:
    objects = copy.deepcopy(objects)
    edit(one(objects, kind))
    return objects


def inference_container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_a_gpu_in_requests_only_fails(fruit_objects):
    def gpu_in_requests(d):
        resources = inference_container(d)["resources"]
        resources["requests"][validate.GPU] = resources["limits"].pop(validate.GPU)

    assert "in requests only" in messages(validate.problems(broken(fruit_objects, "Deployment", gpu_in_requests)))


def test_a_gpu_request_unequal_to_its_limit_fails(fruit_objects):
    def unequal(d):
        inference_container(d)["resources"]["requests"][validate.GPU] = 2

    assert "differ from limits" in messages(validate.problems(broken(fruit_objects, "Deployment", unequal)))


@pytest.mark.parametrize("probe", validate.REQUIRED_PROBES)
def test_a_missing_probe_fails(fruit_objects, probe):
    found = validate.problems(broken(fruit_objects, "Deployment", lambda d: inference_container(d).pop(probe)))
    assert f"has no {probe}" in messages(found)


def test_a_deployment_without_a_disruption_budget_fails(fruit_objects):
    objects = [o for o in fruit_objects if o["kind"] != "PodDisruptionBudget"]
    assert "no PodDisruptionBudget" in messages(validate.problems(objects))


@pytest.mark.parametrize("mode", ["stateless", None])
def test_an_upgrade_mode_that_restores_no_state_fails(fruit_objects, mode):
    def set_mode(job):
        if mode is None:
            job["spec"]["job"].pop("upgradeMode")  # the operator's default is stateless
        else:
            job["spec"]["job"]["upgradeMode"] = mode

    assert "without its state" in messages(validate.problems(broken(fruit_objects, "FlinkDeployment", set_mode)))


def test_helm_refuses_a_stateless_upgrade_mode_in_the_values(tmp_path):
    with pytest.raises(render.RenderError, match="upgradeMode"):
        render.render_team(FRUIT, values_files=[values_file(tmp_path, {"dispatcher": {"upgradeMode": "stateless"}})])


def test_at_least_once_or_a_job_that_picks_its_own_checkpoint_fails(fruit_objects):
    def edit(job):
        args = job["spec"]["job"]["args"]
        args[args.index("--delivery-guarantee=exactly-once")] = "--delivery-guarantee=at-least-once"
        args.remove("--resume=none")

    found = messages(validate.problems(broken(fruit_objects, "FlinkDeployment", edit)))
    assert "exactly-once" in found and "--resume" in found


def test_a_team_missing_from_the_render_fails(fruit_objects):
    apples = Team(team="apples", weights="apples.ts")
    found = messages(validate.problems(fruit_objects, [FRUIT, apples]))
    assert "team/apples: no FlinkDeployment" in found and "team/apples: no Deployment" in found
    assert "team/fruit" not in found


def test_an_unknown_field_fails_in_built_in_and_custom_objects(fruit_objects):
    objects = broken(fruit_objects, "Deployment", lambda d: d["spec"].update(replicaz=2))
    objects = broken(objects, "FlinkDeployment", lambda j: j["spec"]["job"].update(upgradeMod="savepoint"))
    found = messages(validate.schema_problems(objects))
    assert "Deployment/fruit-inference" in found and "replicaz" in found
    assert "FlinkDeployment/fruit-dispatcher" in found and "upgradeMod" in found


def test_a_flink_version_the_crd_does_not_know_fails(fruit_objects):
    objects = broken(fruit_objects, "FlinkDeployment", lambda j: j["spec"].update(flinkVersion="v1_12"))
    assert "flinkVersion" in messages(validate.schema_problems(objects))


def test_a_parallelism_above_the_partitions_is_refused():
    with pytest.raises(render.RenderError, match="exceeds the input topic's 2 partitions"):
        render.render_team(Team(team="fruit", weights="w.ts", partitions=2, parallelism=3))


# ---- one source --------------------------------------------------------------------------------------------------


def test_new_team_adds_the_team_to_the_render(tmp_path):
    files = compose.ComposeFiles.in_repo(tmp_path)  # the same layout, in tmp_path
    files.teams.parent.mkdir()
    shutil.copy(compose.ComposeFiles.in_repo().teams, files.teams)
    scaffold.new_team("orchard_west", adapters_dir=tmp_path, compose_files=files)
    teams = load_teams(files.teams)
    objects = objects_of(render.render(teams, platform=False))
    assert validate.problems(objects, teams) == []
    job = [o for o in objects if o["kind"] == "FlinkDeployment" and "orchard" in o["metadata"]["name"]]
    assert job and job[0]["metadata"]["name"] == "orchard-west-dispatcher"


def test_the_chart_s_defaults_name_what_the_code_names():
    """A plain `helm install` (no `imagery k8s values`) gets the same topic and group as the code derives."""
    values = yaml.safe_load((render.TEAM_CHART / "values.yaml").read_text())
    assert values["flinkRelease"] == FLINK_VERSION and values["reporterFactory"] == REPORTER_FACTORY
    assert values["reporterPort"] == compose.FLINK_REPORTER_PORT and values["dlqTopic"] == topics.DLQ_TOPIC
    assert values["routes"]["readyz"] == READYZ_ROUTE and values["routes"]["healthz"] == HEALTHZ_ROUTE
    assert values["routes"]["inferJson"] == INFER_JSON_ROUTE
    plain = objects_of(
        render.template(render.TEAM_CHART, "plain", "imagery", values={"team": "orchard_west", "weights": "w.ts"})
    )
    args = validate._args(one(plain, "FlinkDeployment"))
    assert args["group-id"] == topics.dispatcher_group("orchard_west")
    assert args["input-topic"] == topics.input_topic("orchard_west")


def test_the_crd_files_are_the_published_ones_and_only_the_flink_version_enum_is_extended():
    crds.check_sources()
    for entry in crds.sources():
        assert hashlib.sha256(entry.file.read_bytes()).hexdigest() == entry.sha256
    loaded = {c["metadata"]["name"]: c for c in crds.definitions()}
    flink = loaded[crds.FLINK_DEPLOYMENT_CRD]
    original = yaml.safe_load((crds.CRD_DIR / "flinkdeployments.flink.apache.org-v1.yml").read_text())
    for version, pristine in zip(flink["spec"]["versions"], original["spec"]["versions"], strict=True):
        enum = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
        before = pristine["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
        assert enum == before + list(crds.FLINK_VERSIONS_AFTER_PINNED)
        pristine["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["flinkVersion"]["enum"] = enum
    assert flink == original


# ---- secrets -----------------------------------------------------------------------------------------------------


def test_a_team_s_secret_files_become_secrets_with_the_stores_at_the_mount(tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (creds / "fruit.kafka.properties").write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca}\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
        'required username="team-fruit" password="s3cret";\n'
    )
    (creds / "fruit.minio.secret").write_text("minio-key\n")
    out = secrets.write_team_secrets(tmp_path / "secrets.yaml", [FRUIT], creds, "imagery")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    kafka, minio = yaml.safe_load_all(out.read_text())
    data = {k: base64.b64decode(v).decode() for k, v in kafka["data"].items()}
    assert f"ssl.truststore.location={secrets.KAFKA_MOUNT}/ca.pem" in data["kafka.properties"]
    assert data["ca.pem"] == ca.read_text()
    assert base64.b64decode(minio["data"]["secret-key"]) == b"minio-key"
    assert kafka["metadata"]["name"] == secrets.kafka_secret_name(FRUIT)


def test_a_missing_secret_file_is_named(tmp_path):
    with pytest.raises(secrets.SecretFilesError, match="fruit.kafka.properties is missing"):
        secrets.team_secrets(FRUIT, tmp_path, "imagery")


# ---- sizing ------------------------------------------------------------------------------------------------------


def test_the_sizing_model_follows_its_measured_figures():
    small, large = sizing.plan(1_000), sizing.plan(50_000)
    # 50,000 x 0.573 ms = 28.7 cores, at 70% = 41 slots; 128 partitions (2 x 41, a power of two); 13 GPUs of 5,688/s
    # at 70%
    assert (large.parallelism, large.partitions, large.gpus) == (41, 128, 13)
    assert large.capacity * large.parallelism >= 50_000 * sizing.SERVICE_P50_S_AT_SATURATION  # Little's law
    assert (small.parallelism, small.partitions, small.gpus) == (1, 4, 1)
    assert large.parallelism <= large.partitions
