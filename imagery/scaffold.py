"""`imagery new-team <team>`: write the team's runner module and add the team to the compose stack.

Templates are text files read as text (adapters/runner_template.py.txt), never imported: this side of the
project does not import the service or torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from imagery import compose
from imagery.errors import ToolError
from imagery.repo import ADAPTERS_DIR

RUNNER_TEMPLATE = ADAPTERS_DIR / "runner_template.py.txt"
TEAM_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


class ScaffoldError(ToolError, ValueError):
    """A team cannot be scaffolded: its name is not one, or its runner or its compose entry exists already."""


def check_team(team: str) -> str:
    if not TEAM_RE.match(team):
        raise ScaffoldError(
            "team must be 2-31 characters of lowercase letters, digits and '_', starting with a "
            "letter (it names a module, topics and compose services)"
        )
    return team


def runner_source(team: str) -> str:
    class_name = "".join(part.capitalize() for part in team.split("_")) + "Runner"
    return RUNNER_TEMPLATE.read_text().replace("__TEAM__", team).replace("__CLASS__", class_name)


def weights_file(team: str) -> str:
    """The weights file the runner template loads by default (/app/weights/<team>_best.pt)."""
    return f"{team}_best.pt"


def new_team(team: str, adapters_dir: Path = ADAPTERS_DIR, compose_files: compose.ComposeFiles | None = None) -> Path:
    """Write adapters/<team>_runner.py; with `compose_files`, add the team to deploy/teams.yaml and regenerate
    compose.yaml from its template (the team's service and dispatcher, its MinIO events target, its topics)."""
    check_team(team)
    path = adapters_dir / f"{team}_runner.py"
    if path.exists():
        raise ScaffoldError(f"{path} already exists")
    if compose_files is not None:
        try:
            compose.add_team(compose_files, team, weights_file(team))
        except compose.ComposeError as exc:
            raise ScaffoldError(str(exc)) from exc
    path.write_text(runner_source(team))
    return path
