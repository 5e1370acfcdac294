"""The Flink image installs the project's base dependencies and its `dispatcher` extra only (no lock, no torch):
every third-party module that streaming/ and schemas/ import must come from one of those. (httptools, imported
by the dispatcher's HTTP client but reached only through uvicorn in the lock, failed the job in the image.)"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from imagery.repo import REPO_ROOT as REPO


def _top_level_imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _top_level_imports(folder: Path) -> set[str]:
    return set().union(*(_top_level_imports_of(path) for path in folder.rglob("*.py")))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_dispatcher_side_declares_every_package_it_imports():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        _normalized(re.split(r"[=<>\[; ]", spec)[0])
        for spec in project["dependencies"] + project["optional-dependencies"]["dispatcher"]
    }
    providers = importlib.metadata.packages_distributions()
    ours = {"schemas", "streaming"}
    imported = (_top_level_imports(REPO / "streaming") | _top_level_imports(REPO / "schemas")) - ours
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    undeclared = {
        name: providers.get(name)
        for name in third_party
        if not {_normalized(d) for d in providers.get(name, [name])} & declared
    }
    assert not undeclared, f"imported by streaming/ or schemas/ but not in pyproject's base or dispatcher: {undeclared}"


def _modules_under(package: str) -> list[str]:
    root = REPO / package
    return sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for path in root.rglob("*.py")
    )


def test_streaming_is_the_dispatcher_alone():
    """Every module under streaming/ (found, not listed) imports none of the service, the runners, torch or the
    tooling: statically (any import statement, even one inside a function) and when imported for real."""
    forbidden = {"services", "adapters", "torch", "imagery"}
    static = {
        path.relative_to(REPO).as_posix(): _top_level_imports_of(path) & forbidden
        for path in (REPO / "streaming").rglob("*.py")
    }
    assert not {p: bad for p, bad in static.items() if bad}
    modules = _modules_under("streaming")
    assert "streaming.flink.jobs.http_dispatcher" in modules and "streaming.flink.keeper" in modules
    probe = (
        f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(forbidden)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# the service's settings (pure pydantic): the launchers write its environment by field name (service_environment)
TOOLING_MAY_IMPORT = {"services", "services.inference_http", "services.inference_http.settings"}


def test_the_tooling_never_imports_the_service_the_runners_or_torch():
    """The CLI starts in a fraction of a second and runs where torch is not installed: of the service it imports
    the settings module alone, and that module nothing of the service's beyond itself."""
    probe = (
        f"import importlib, sys; [importlib.import_module(m) for m in {_modules_under('imagery')!r}]; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'adapters', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert set(filter(None, out.stdout.strip().split(","))) <= TOOLING_MAY_IMPORT


def _pins(specs: list[str]) -> dict[str, str]:
    pins = {}
    for spec in specs:
        spec = spec.split("#")[0].strip()
        if "==" in spec:
            name, version = spec.split("==")
            pins[_normalized(re.sub(r"\[.*\]", "", name))] = version.strip()
    return pins


def test_the_service_image_installs_the_pins_of_pyproject():
    """services/inference_http/requirements.txt (what the service's image installs, torch from its own index) names
    each package at the version pyproject.toml pins for the service: a bump in one place alone fails here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["service"])
    image = _pins((REPO / "services" / "inference_http" / "requirements.txt").read_text().splitlines())
    assert image and {name: version for name, version in image.items() if declared.get(name) != version} == {}
    assert set(declared) <= set(image), f"pinned for the service, not in its image: {set(declared) - set(image)}"
    # torch and torchvision come first, from TORCH_INDEX, in a layer of their own
    dockerfile = (REPO / "services" / "inference_http" / "Dockerfile").read_text()
    first = _pins(re.findall(r"\b(torch(?:vision)?==[\w.+]+)", dockerfile))
    assert first == {name: declared[name] for name in ("torch", "torchvision")}
