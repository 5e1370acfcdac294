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


BOOTSTRAP = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers [default: the local stack's]")


def _bootstrap(value: str | None) -> str:
    return value or StackSettings().bootstrap


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


@app.command()
def demo(count: int = typer.Option(12, help="sample images to generate")) -> None:
    """Run the whole pipeline on sample images (with a few bad messages); print the results and the DLQ."""
    from streaming.demo import run_demo

    try:
        ok = run_demo(count=count, console=console)
    except (stack.StackError, install.InstallError, RuntimeError) as exc:
        _fail(exc)
    raise typer.Exit(0 if ok else 1)


@app.command()
def serve(team: str = typer.Option(..., envvar="TEAM"), host: str = "127.0.0.1",
          port: int = typer.Option(8000, envvar="PORT")) -> None:
    """Run the inference service for TEAM in the foreground (python -m services.inference_http)."""
    import os
    import sys

    os.environ.update(TEAM=team, HOST=host, PORT=str(port))
    os.execv(sys.executable, [sys.executable, "-m", "services.inference_http"])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dispatch(ctx: typer.Context) -> None:
    """Run the dispatcher job on a local MiniCluster; arguments as http_dispatcher.py (--team, --http-url, ...)."""
    import os
    import sys

    from streaming.pipeline_run import local_job_command

    os.execv(sys.executable, local_job_command(ctx.args))


@app.command()
def produce(team: str, bucket: str, keys: list[str], bootstrap: str | None = BOOTSTRAP,
            camera: str | None = None) -> None:
    """Publish one {bucket, key} message per KEY to imagery.new.<team>."""
    from schemas import topics
    from streaming.pipeline_run import produce_messages

    n = produce_messages(_bootstrap(bootstrap), topics.input_topic(team),
                         [{"bucket": bucket, "key": k, **({"camera": camera} if camera else {})} for k in keys])
    console.print(f"produced {n} messages to {topics.input_topic(team)}")


dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("show")
def dlq_show(team: str | None = None, stage: str | None = None, bootstrap: str | None = BOOTSTRAP,
             topic: str = typer.Option(None, help="default dlq.inference.http"), limit: int = 50) -> None:
    """List dead letters (newest last) with their stage, error and original value."""
    from schemas import topics
    from streaming.dlq import read_dlq

    entries = read_dlq(_bootstrap(bootstrap), topic or topics.DLQ_TOPIC, team=team, stage=stage)
    table = Table(title=f"{topic or topics.DLQ_TOPIC}: {len(entries)} dead letters"
                  + (f", last {limit} shown" if len(entries) > limit else ""))
    for col in ("partition:offset", "team", "source", "stage", "type", "http", "tries", "message", "value"):
        table.add_column(col, overflow="fold")
    for e in entries[-limit:]:
        d = e.letter
        table.add_row(f"{e.partition}:{e.offset}", d.team, f"{d.source.topic}@{d.source.offset}", d.error.stage,
                      d.error.type, str(d.error.http_status or "-"), str(d.error.attempts), d.error.message[:100],
                      (d.original_value_text or "<binary>")[:80]
                      + ("" if d.complete else f" ... ({d.original_value_bytes} bytes in all)"))
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(team: str | None = None, stage: str | None = None,
               offsets: list[int] = typer.Option(None, "--offset", help="only these DLQ offsets (repeatable)"),
               bootstrap: str | None = BOOTSTRAP, topic: str = typer.Option(None, help="default dlq.inference.http"),
               to: str = typer.Option(None, help="target topic; default: each letter's source topic"),
               again: bool = typer.Option(False, "--again", help="also entries replayed before"),
               max_replays: int = typer.Option(3, help="skip entries whose record was replayed this often already"),
               dry_run: bool = typer.Option(False, "--dry-run", help="list what would be replayed, replay nothing")
               ) -> None:
    """Re-publish the original bytes, key and headers of matching dead letters, once: what was replayed is
    recorded (dlq.inference.http.replayed) and skipped next time unless --again."""
    from schemas import topics
    from streaming.dlq import OriginalGone, plan, read_dlq, replay, replayed

    dlq_topic = topic or topics.DLQ_TOPIC
    entries = read_dlq(_bootstrap(bootstrap), dlq_topic, team=team, stage=stage)
    if offsets:
        entries = [e for e in entries if e.offset in set(offsets)]
    chosen = plan(entries, replayed(_bootstrap(bootstrap), dlq_topic), again=again, max_replays=max_replays)
    if dry_run or chosen.skipped:
        table = Table(title=f"{len(chosen.go)} to replay" + (" (dry run)" if dry_run else "")
                      + f", {len(chosen.skipped)} skipped")
        for col in ("partition:offset", "team", "stage", "replays", "to", "note"):
            table.add_column(col, overflow="fold")
        for e, why in [*((e, "") for e in chosen.go), *chosen.skipped]:
            table.add_row(f"{e.partition}:{e.offset}", e.letter.team, e.letter.error.stage, str(e.replay_count),
                          to or e.letter.source.topic, why or ("would replay" if dry_run else "replayed"))
        console.print(table)
    if dry_run:
        return
    try:
        console.print(f"replayed {replay(_bootstrap(bootstrap), chosen.go, to, dlq_topic)} dead letters")
    except OriginalGone as exc:
        _fail(exc)


@app.command("new-team")
def new_team(team: str, compose: bool = typer.Option(True, help="also add its services to compose.yaml")) -> None:
    """Scaffold a team: adapters/<team>_runner.py and its <team>-inference-http + flink-dispatcher-<team>."""
    from streaming import scaffold

    try:
        path = scaffold.new_team(team, compose_file=scaffold.REPO_ROOT / "compose.yaml" if compose else None)
    except scaffold.ScaffoldError as exc:
        _fail(exc)
    console.print(f"wrote {path}" + (" and added two services to compose.yaml" if compose else ""))
    if not compose:
        console.print(scaffold.compose_services(team), highlight=False, markup=False)
    console.print(f"next: fill in {path.name}, put weights in weights/{team}_best.pt, "
                  f"then `TEAM={team} .venv/bin/imagery serve` and check /readyz")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
