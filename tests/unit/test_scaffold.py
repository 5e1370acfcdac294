"""`imagery new-team`: the runner it writes works as written, and compose.yaml stays valid with the new services."""

from __future__ import annotations

import importlib.util
import io
import shutil

import pytest
import yaml
from PIL import Image

from imagery import compose, scaffold
from schemas import INFER_JSON_ROUTE


def test_new_team_writes_a_working_runner_and_adds_the_team_to_the_compose_stack(tmp_path):
    files = compose.ComposeFiles.in_repo(tmp_path)  # the same layout, in tmp_path
    files.teams.parent.mkdir()
    shutil.copy(compose.ComposeFiles.in_repo().teams, files.teams)
    compose.write(files)
    before = yaml.safe_load(files.compose.read_text())["services"]
    path = scaffold.new_team("orchard_west", adapters_dir=tmp_path, compose_files=files)

    spec = importlib.util.spec_from_file_location("orchard_west_runner", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TEAM == "orchard_west" and module.RUNNER.__name__ == "OrchardWestRunner"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (250, 250, 250)).save(buf, "JPEG")
    out = module.RUNNER().run(buf.getvalue())
    assert out["label"] == "bright" and {"score", "confidence", "latency_ms_model"} <= set(out)

    doc = yaml.safe_load(files.compose.read_text())
    services = doc["services"]
    svc, job = services["orchard-west-inference-http"], services["flink-dispatcher-orchard-west"]
    assert svc["environment"]["TEAM"] == "orchard_west"
    assert svc["environment"]["WEIGHTS_PATH"] == f"/app/weights/{scaffold.weights_file('orchard_west')}"
    assert job["environment"]["INPUT_TOPIC"] == "imagery.new.orchard_west"
    assert job["environment"]["HTTP_URL"] == f"http://orchard-west-inference-http:8000{INFER_JSON_ROUTE}"
    assert job["image"] == services["flink-jobmanager"]["image"]  # the anchors resolved
    assert "fruit-inference-http" in services and "flink-dispatcher-fruit" in services
    # its uploads' events: a MinIO target for its topic, and `init` makes its topics, bucket and checks its weights
    assert services["minio"]["environment"]["MINIO_NOTIFY_KAFKA_TOPIC_ORCHARD_WEST"] == "imagery.new.orchard_west"
    assert f"orchard_west:4:{scaffold.weights_file('orchard_west')}" in services["init"]["command"]
    # a port of its own on the host, and a slot for each of its subtasks
    ports = [s["ports"][0] for name, s in services.items() if name.endswith("-inference-http")]
    assert len(set(ports)) == len(ports)
    slots = sum(t.parallelism for t in compose.load_teams(files.teams))
    assert f"taskmanager.numberOfTaskSlots: {slots}" in services["flink-taskmanager"]["environment"]["FLINK_PROPERTIES"]
    # what a running stack keeps when a team joins (`docker compose up -d` recreates only what changed): the
    # JobManager (no HA: a restart loses the jobs) and the other teams' services and dispatchers
    for kept in ("flink-jobmanager", "kafka", "fruit-inference-http", "flink-dispatcher-fruit"):
        assert services[kept] == before[kept], kept
    # each image is built once, by one service: the others run it
    built = [s["image"] for s in services.values() if "build" in s]
    assert sorted(built) == sorted({s["image"] for s in services.values() if s["image"].startswith("imagery-")})
    # the stack's Prometheus scrapes its service too, with its team's label
    scraped = yaml.safe_load(files.prometheus.read_text())["scrape_configs"]
    assert {"targets": ["orchard-west-inference-http:8000"], "labels": {"team": "orchard_west"}} in next(
        job["static_configs"] for job in scraped if job["job_name"] == "imagery-inference"
    )
    gpu = yaml.safe_load(files.gpu.read_text())["services"]
    assert {"fruit-inference-http", "orchard-west-inference-http"} <= set(gpu)

    with pytest.raises(scaffold.ScaffoldError):
        scaffold.new_team("orchard_west", adapters_dir=tmp_path / "elsewhere", compose_files=files)


def test_the_committed_compose_files_are_what_the_template_makes():
    files = compose.ComposeFiles.in_repo()
    rendered = compose.render(compose.load_teams(files.teams))
    assert files.compose.read_text() == rendered["compose.yaml"], "compose.yaml is stale: run `imagery compose`"
    assert files.gpu.read_text() == rendered["compose.gpu.yaml"], "compose.gpu.yaml is stale: run `imagery compose`"
    assert files.prometheus.read_text() == rendered["prometheus.yml"], "prometheus.yml is stale: run `imagery compose`"


@pytest.mark.parametrize("bad", ["Fruit", "a", "9lives", "has-dash", "x" * 40])
def test_team_names_are_checked(bad):
    with pytest.raises(scaffold.ScaffoldError):
        scaffold.check_team(bad)


def test_compose_sets_only_variables_the_inference_service_reads():
    """The service ignores variables it does not know, so a misspelt one in the template would silently leave a
    setting at its default: every variable compose gives a team's service must be one of ServiceSettings'."""
    import yaml

    from services.inference_http.settings import checked_service_environment

    rendered = compose.render(compose.load_teams(compose.ComposeFiles.in_repo().teams))
    checked = 0
    for name in ("compose.yaml", "compose.gpu.yaml"):
        services = yaml.safe_load(rendered[name]).get("services") or {}
        for service, spec in services.items():
            if service.endswith("-inference-http") and spec.get("environment"):
                checked_service_environment({k: str(v) for k, v in spec["environment"].items()})
                checked += 1
    assert checked >= 1
