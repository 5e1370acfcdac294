"""The tooling's one error root (imagery/errors.py), as httpx's test_exceptions.py holds its own: every error class
any module of the `imagery` package defines derives from ToolError, and the CLI ends a ToolError, raised by a real
command on a user's mistake, with one line, `error: <message>`, and status 1, never a traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import imagery
from imagery import cli
from imagery.errors import ToolError
from imagery.teams import TEAMS_FILE
from tests.helpers import run_cli_main


def tooling_exceptions() -> dict[str, type[BaseException]]:
    """module.Class -> class, for every exception class defined (not imported) in a module of the package."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(imagery.__path__, "imagery."):
        module = importlib.import_module(module_info.name)
        for name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_of_the_tooling_derives_from_tool_error():
    found = tooling_exceptions()
    # the walk reaches the package's corners (the local stack, Kubernetes, the process module)
    assert {
        "imagery.process.ProcessError",
        "imagery.local.stack.StackError",
        "imagery.k8s.node.NodeError",
        "imagery.kafka_io.NoSuchTopic",
        "imagery.teams.TeamSpecError",
    } <= set(found)
    assert [name for name, cls in found.items() if not issubclass(cls, ToolError)] == []


def test_builtin_bases_callers_catch_by_are_kept():
    from imagery import kafka_io, teams
    from imagery.dlq import OriginalGone

    assert issubclass(teams.TeamSpecError, ValueError) and issubclass(teams.NoSuchTeam, LookupError)
    assert issubclass(kafka_io.NoSuchTopic, LookupError) and issubclass(kafka_io.ReadStalled, TimeoutError)
    assert issubclass(OriginalGone, LookupError) and issubclass(kafka_io.KafkaCallError, RuntimeError)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("k8s", "values", "no_such_team"), f"error: {TEAMS_FILE} has no team 'no_such_team'\n"),  # teams.NoSuchTeam
        (("provision", "fruit:two:w.pt"), "error: 'fruit:two:w.pt' is not TEAM:PARTITIONS:WEIGHTS_FILE\n"),
        (
            ("new-team", "--no-compose", "Bad-Name"),
            "error: team must be 2-31 characters of lowercase letters, digits "
            "and '_', starting with a letter (it names a module, topics and "
            "compose services)\n",
        ),  # scaffold.ScaffoldError
    ],
)
def test_a_tool_error_of_a_real_command_is_one_line_and_status_1(monkeypatch, capsys, args, shown):
    assert run_cli_main(monkeypatch, *args) == 1
    out = capsys.readouterr()
    assert out.err == shown and out.out == ""


def test_a_file_that_is_not_there_is_one_line_too(monkeypatch, capsys, tmp_path: Path):
    missing = tmp_path / "no-such.properties"
    assert run_cli_main(monkeypatch, "--kafka-config", str(missing), "dlq", "show") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and err.count("\n") == 1 and "Traceback" not in err


def test_typers_runner_gets_the_same_line_and_status(tmp_path: Path):
    """Tests run the app through typer's CliRunner, not `main`: the one place that turns errors into the line is the
    command group's, which both go through."""
    from typer.testing import CliRunner

    done = CliRunner().invoke(cli.app, ["k8s", "values", "no_such_team"])
    assert done.exit_code == 1 and done.output == f"error: {TEAMS_FILE} has no team 'no_such_team'\n"
    assert done.exception is None or isinstance(done.exception, SystemExit)
