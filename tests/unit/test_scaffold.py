"""`imagery new-team`: the runner it writes works as written, and compose.yaml stays valid with the new services."""

from __future__ import annotations

import importlib.util
import io
import shutil

import pytest
import yaml
from PIL import Image

from streaming import scaffold


def test_new_team_writes_a_working_runner_and_valid_compose_services(tmp_path):
    compose = tmp_path / "compose.yaml"
    shutil.copy(scaffold.REPO_ROOT / "compose.yaml", compose)
    path = scaffold.new_team("orchard_west", adapters_dir=tmp_path, compose_file=compose)

    spec = importlib.util.spec_from_file_location("orchard_west_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TEAM == "orchard_west" and module.RUNNER.__name__ == "OrchardWestRunner"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (250, 250, 250)).save(buf, "JPEG")
    out = module.RUNNER().run(buf.getvalue())
    assert out["label"] == "bright" and {"score", "confidence", "latency_ms_model"} <= set(out)

    services = yaml.safe_load(compose.read_text())["services"]
    svc, job = services["orchard-west-inference-http"], services["flink-dispatcher-orchard-west"]
    assert svc["environment"]["TEAM"] == "orchard_west"
    assert job["environment"]["INPUT_TOPIC"] == "imagery.new.orchard_west"
    assert job["environment"]["HTTP_URL"] == "http://orchard-west-inference-http:8000/infer_json"
    assert job["image"] == services["flink-jobmanager"]["image"]  # the anchors resolved
    assert "fruit-inference-http" in services

    with pytest.raises(scaffold.ScaffoldError):
        scaffold.new_team("orchard_west", adapters_dir=tmp_path, compose_file=compose)


@pytest.mark.parametrize("bad", ["Fruit", "a", "9lives", "has-dash", "x" * 40])
def test_team_names_are_checked(bad):
    with pytest.raises(scaffold.ScaffoldError):
        scaffold.check_team(bad)
