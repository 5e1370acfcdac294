"""`imagery`: the command line front door (setup, the local stack, and later the pipeline's own commands)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from streaming.local import install, stack
from streaming.local.settings import StackSettings

app = typer.Typer(help="Kafka-driven image inference pipeline: local stack, dispatcher, DLQ tools.",
                  no_args_is_help=True, add_completion=False)
console = Console()


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command()
def setup() -> None:
    """Install Kafka, MinIO and the Flink connector jars into the cache (idempotent)."""
    try:
        install.ensure_all(StackSettings())
    except install.InstallError as exc:
        _fail(exc)


@app.command()
def up(flink: bool = typer.Option(False, "--flink", help="also start a standalone Flink cluster")) -> None:
    """Start the local stack (Kafka, MinIO; with --flink a JobManager and TaskManager) and wait until ready."""
    settings = StackSettings()
    try:
        stack.up(settings, flink=flink, log=console.print)
    except (stack.StackError, install.InstallError) as exc:
        _fail(exc)
    _print_status(settings)


@app.command()
def down() -> None:
    """Stop every part of the local stack this state folder started."""
    stack.down(StackSettings(), log=console.print)


@app.command()
def status() -> None:
    """Show each part of the local stack: pid, address, and the variable that moves it."""
    _print_status(StackSettings())


def _print_status(settings: StackSettings) -> None:
    table = Table(title=f"local stack (state: {settings.state_dir})")
    table.add_column("part", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("address", no_wrap=True)
    table.add_column("notes")
    for row in stack.status(settings):
        state = f"[green]running[/green] pid {row['pid']}" if row["pid"] else "[dim]stopped[/dim]"
        table.add_row(str(row["name"]), state, str(row["address"]), str(row["note"]))
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
