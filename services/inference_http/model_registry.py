"""Which runner serves which team: found from the adapter modules themselves, with no central list.

An adapter is a module `adapters/<name>_runner.py` that sets `TEAM = "<team>"` and `RUNNER = <class>`
(see adapters/base.py). Discovery reads `TEAM` from each module's source without importing it, so one
adapter's missing dependency or import-time bug cannot stop another team's service from starting; only the
selected team's module is imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

from adapters.base import Runner

ADAPTER_PACKAGE = "adapters"
ADAPTER_SUFFIX = "_runner"


class RegistryError(RuntimeError):
    """The service cannot get a runner for its team; the message says why and what to do."""


class UnknownTeam(RegistryError):
    def __init__(self, team: str, known: list[str]) -> None:
        self.team, self.known = team, known
        shown = repr(team) if team else "(TEAM is not set)"
        super().__init__(
            f"unknown team {shown}; known teams: {', '.join(known) or '(none)'}. A team is added by an adapter "
            f"module {ADAPTER_PACKAGE}/<name>{ADAPTER_SUFFIX}.py that sets TEAM and RUNNER "
            f"(`imagery new-team <team>` writes one)."
        )


def _declared_team(path: Path) -> str | None:
    """The string literal assigned to a module-level `TEAM`, read from the source."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        named_team = any(isinstance(target, ast.Name) and target.id == "TEAM" for target in targets)
        if named_team and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value.strip().lower()
    return None


def discover(package: str = ADAPTER_PACKAGE) -> dict[str, str]:
    """team -> adapter module name, for every `<package>/*_runner.py` that declares a TEAM."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RegistryError(f"the adapter package {package!r} cannot be found")
    teams: dict[str, str] = {}
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob(f"*{ADAPTER_SUFFIX}.py")):
            team = _declared_team(path)
            if team is None:
                continue
            module = f"{package}.{path.stem}"
            if team in teams and teams[team] != module:
                raise RegistryError(f"team {team!r} is declared by both {teams[team]} and {module}")
            teams[team] = module
    return teams


def known_teams(package: str = ADAPTER_PACKAGE) -> list[str]:
    return sorted(discover(package))


def runner_class(team: str, package: str = ADAPTER_PACKAGE, module: str | None = None) -> type:
    """The RUNNER of `team`'s adapter module: found in `package` by its TEAM, or `module` itself when given (a
    runner that lives outside adapters/, e.g. in a team's own package: RUNNER_MODULE), which must declare `team`."""
    key = (team or "").strip().lower()
    if module:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise RegistryError(f"RUNNER_MODULE {module!r} cannot be found on the Python path")
        declared = _declared_team(Path(spec.origin)) if spec.origin else None
        if declared != key:
            raise RegistryError(f"RUNNER_MODULE {module} declares TEAM = {declared!r}, not TEAM {key!r}")
        name = module
    else:
        teams = discover(package)
        if key not in teams:
            raise UnknownTeam(team, sorted(teams))
        name = teams[key]
    runner = getattr(importlib.import_module(name), "RUNNER", None)
    if not isinstance(runner, type) or not callable(getattr(runner, "run", None)):
        raise RegistryError(f"{name} declares TEAM = {key!r} but no RUNNER class with a run() method")
    return runner


def get_model_runner(
    team: str,
    weights_path: str | None = None,
    model_tag: str | None = None,
    package: str = ADAPTER_PACKAGE,
    module: str | None = None,
) -> Runner:
    """The registry's one call: a ready runner for `team` (its weights loaded, on the CPU); `module`: see
    `runner_class`."""
    runner_cls = runner_class(team, package, module)
    try:
        return runner_cls(weights_path=weights_path, model_tag=model_tag)
    except FileNotFoundError as exc:
        raise RegistryError(
            f"team {team!r}: weights not found ({exc}); set WEIGHTS_PATH or mount them under /app/weights"
        ) from exc
