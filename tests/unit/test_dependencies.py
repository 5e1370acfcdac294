"""The Flink image installs the project's base dependencies and its `dispatcher` extra only (no lock, no torch):
every third-party module that streaming/ and schemas/ import must come from one of those. (httptools, imported
by the dispatcher's HTTP client but reached only through uvicorn in the lock, failed the job in the image.)"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _top_level_imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_dispatcher_side_declares_every_package_it_imports():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_normalized(re.split(r"[=<>\[; ]", spec)[0])
                for spec in project["dependencies"] + project["optional-dependencies"]["dispatcher"]}
    providers = importlib.metadata.packages_distributions()
    ours = {"schemas", "streaming", "adapters", "services", "tests", "bench"}
    imported = (_top_level_imports(REPO / "streaming") | _top_level_imports(REPO / "schemas")) - ours
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    undeclared = {name: providers.get(name) for name in third_party
                  if not {_normalized(d) for d in providers.get(name, [name])} & declared}
    assert not undeclared, f"imported by streaming/ or schemas/ but not in pyproject's base or dispatcher: {undeclared}"
