"""The registry finds adapters by file name and TEAM alone; unknown teams are refused with the known ones."""

from __future__ import annotations

import sys
import textwrap

import pytest

from adapters.base import BatchRunner, Runner
from services.inference_http import model_registry
from services.inference_http.model_registry import RegistryError, UnknownTeam


def test_the_shipped_teams_are_known():
    assert {"fruit", "resnet50"} <= set(model_registry.known_teams())


def test_an_unknown_team_is_refused_with_the_known_ones():
    with pytest.raises(UnknownTeam) as err:
        model_registry.get_model_runner("bananas")
    assert "known teams:" in str(err.value) and "fruit" in str(err.value) and "resnet50" in str(err.value)


def test_an_unset_team_says_so():
    with pytest.raises(UnknownTeam, match="TEAM is not set"):
        model_registry.get_model_runner("")


@pytest.fixture
def adapter_package(tmp_path, monkeypatch):
    """A throwaway adapter package on sys.path, to add teams the way a team would: one new module."""
    name = "adapters_under_test"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, package
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def write(package, filename, source):
    (package / filename).write_text(textwrap.dedent(source))


def test_a_new_adapter_module_is_all_it_takes(adapter_package):
    name, package = adapter_package
    write(
        package,
        "orchard_runner.py",
        """
        TEAM = "Orchard"

        class OrchardRunner:
            def __init__(self, weights_path=None, model_tag=None):
                self.weights_path, self.model_tag = weights_path, model_tag

            def run(self, image_bytes_or_uri, model_tag=None, extra=None):
                return {"label": "tree", "score": 1.0, "confidence": 1.0, "latency_ms_model": 0}

        RUNNER = OrchardRunner
    """,
    )
    write(package, "helpers.py", "TEAM = 'not-an-adapter'  # not *_runner.py: ignored\n")
    write(package, "broken_runner.py", "import a_module_that_does_not_exist\nTEAM = 'broken'\nRUNNER = object\n")
    assert model_registry.known_teams(name) == ["broken", "orchard"]
    runner = model_registry.get_model_runner("orchard", weights_path="/w.pt", model_tag="v2", package=name)
    assert isinstance(runner, Runner) and not isinstance(runner, BatchRunner)
    assert (vars(runner)["weights_path"], vars(runner)["model_tag"]) == ("/w.pt", "v2")  # beyond the protocol
    assert runner.run(b"...")["label"] == "tree"
    # the broken module is only imported when its own team is asked for
    with pytest.raises(ModuleNotFoundError):
        model_registry.get_model_runner("broken", package=name)


def test_two_modules_claiming_one_team_is_an_error(adapter_package):
    name, package = adapter_package
    for filename in ("a_runner.py", "b_runner.py"):
        write(package, filename, "TEAM = 'same'\nclass R:\n    def run(self, x): ...\nRUNNER = R\n")
    with pytest.raises(RegistryError, match="declared by both"):
        model_registry.known_teams(name)


def test_a_module_without_a_runner_class_is_an_error(adapter_package):
    name, package = adapter_package
    write(package, "empty_runner.py", "TEAM = 'empty'\n")
    with pytest.raises(RegistryError, match="no RUNNER"):
        model_registry.get_model_runner("empty", package=name)


def test_missing_weights_name_the_path():
    with pytest.raises(RegistryError, match="/nowhere/fruit.ts"):
        model_registry.get_model_runner("fruit", weights_path="/nowhere/fruit.ts")


def test_the_scaffolded_runner_is_found_and_runs(adapter_package):
    import io

    from PIL import Image

    from imagery.scaffold import runner_source

    name, package = adapter_package
    write(package, "orchard_runner.py", runner_source("orchard"))
    assert model_registry.known_teams(name) == ["orchard"]
    runner = model_registry.get_model_runner("orchard", package=name)
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (250, 250, 250)).save(image, format="PNG")
    assert runner.run(image.getvalue())["label"] == "bright"
