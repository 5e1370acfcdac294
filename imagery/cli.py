"""`imagery`: the command line front door (setup, the local stack, and later the pipeline's own commands)."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from imagery import kafka_config, kafka_io
from imagery.errors import ToolError
from imagery.local import install, stack
from imagery.local.settings import StackSettings
from schemas.dead_letter import Stage

if TYPE_CHECKING:
    from imagery.teams import Team


def _fail(error: Exception | str) -> NoReturn:
    """End the command with one line on stderr, `error: <message>`, and status 1."""
    # as written: no markup, no :emoji: codes (a spec like "fruit:two:w.pt" holds one)
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True, highlight=False, emoji=False)
    raise typer.Exit(1)


def _known_error_message(exc: Exception) -> str | None:
    """The one line a known error ends a command with: the tooling's own (ToolError), and what the libraries it
    drives raise when a user's setup is wrong (MinIO's, Kafka's, a properties file's, a file that is not there, a
    call that got no answer in time); None for anything else, which is a bug and keeps its traceback."""
    from confluent_kafka import KafkaError, KafkaException
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ToolError | kafka_config.KafkaConfigError):
        return str(exc)
    if isinstance(exc, S3Error):
        return f"MinIO refused a call on {exc.resource or '/'} ({exc.code}): {exc.message}"
    if isinstance(exc, HTTPError):  # MinIO's client (urllib3) could not reach it, or not as it expected (http or https)
        return f"MinIO did not answer: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        message = f"Kafka: {error.str() if isinstance(error, KafkaError) else exc}"
        if isinstance(error, KafkaError) and error.code() == KafkaError._TRANSPORT and _kafka_config_file is None:
            # what a plaintext client sees of a secured broker: it closes the connection before answering anything
            message += (
                "; if this Kafka is secured (TLS, SASL), give its client properties file: `imagery "
                "--kafka-config FILE ...` or IMAGERY_KAFKA_CONFIG"
            )
        return message
    if isinstance(exc, MinioException):
        return str(exc)
    if isinstance(exc, TimeoutError):  # a Kafka admin call's future, bare
        return str(exc) or (
            "no answer in time: check that Kafka and MinIO run where the command looks for them "
            "(--bootstrap, --minio; `imagery status` for the local stack)"
        )
    if isinstance(exc, OSError):  # a file named on the command line (or in a file it names) that cannot be read
        return str(exc)
    return None


class _Commands(TyperGroup):
    """The commands, each run through the one place that turns a known error into `error: <message>` and status 1
    (the installed command, `main`, and typer's test runner both come through here)."""

    def invoke(self, ctx: Any) -> Any:  # a click Context of the click typer ships within itself (a private module)
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if (message := _known_error_message(exc)) is None:
                raise
            _fail(message)


app = typer.Typer(
    help="Kafka-driven image inference pipeline: local stack, dispatcher, DLQ tools.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Commands,
)
console = Console()


BOOTSTRAP = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers [default: the local stack's]")
# provisioning's (provision, new-team): MinIO, and where a secured target's team secrets go
MINIO = typer.Option(None, "--minio", envvar="MINIO_ENDPOINT", help="MinIO host:port [default: the local stack's]")
MINIO_SECURE = typer.Option(False, "--minio-secure", envvar="MINIO_SECURE", help="reach MinIO over TLS")
MINIO_CA_FILE = typer.Option(
    None,
    "--minio-ca-file",
    envvar="MINIO_CA_FILE",
    dir_okay=False,
    help="a PEM CA bundle to trust for MinIO (besides the system's roots)",
)
CREDENTIALS_DIR = typer.Option(
    Path("credentials"),
    "--credentials-dir",
    file_okay=False,
    help="on a secured Kafka (--kafka-config with SASL or TLS): where each team's own secrets are written (mode "
    "0600): its Kafka client file <team>.kafka.properties, and the secret key of its own MinIO user, "
    "<team>.minio.secret",
)
# --kafka-config, given before the command (`imagery --kafka-config FILE dlq show`): every Kafka client of the command
_kafka_config_file: Path | None = None


@app.callback()
def _options(
    kafka_config: Path | None = typer.Option(
        None,
        "--kafka-config",
        envvar="IMAGERY_KAFKA_CONFIG",
        dir_okay=False,
        help="a Kafka client properties file (the Java client's names, as the dispatcher's --kafka-config and "
        "Kafka's --command-config take): security.protocol, sasl.*, ssl.*; for every command that talks to "
        "Kafka",
    ),
) -> None:
    global _kafka_config_file
    _kafka_config_file = kafka_config


def _bootstrap(value: str | None) -> kafka_io.Target:
    """Where the command's Kafka is: --bootstrap (default: the local stack's), with --kafka-config's settings."""
    servers = value or StackSettings().bootstrap
    if _kafka_config_file is None:
        return servers
    return kafka_io.Connection(servers, kafka_config.load(_kafka_config_file))


@app.command()
def setup() -> None:
    """Install Kafka, MinIO and the Flink connector jars into the cache (idempotent)."""
    install.ensure_all(StackSettings())


@app.command()
def up(
    flink: bool = typer.Option(False, "--flink", help="also start a standalone Flink cluster"),
    secure: bool = typer.Option(
        False,
        "--secure",
        envvar="IMAGERY_SECURE",
        help="Kafka over SASL_SSL (SCRAM) and mTLS with ACLs, MinIO over TLS; the CA, "
        "certificates and client files are made at the first start and kept in the state "
        "folder (`imagery status` says where)",
    ),
) -> None:
    """Start the local stack (Kafka, MinIO; with --flink a JobManager and TaskManager) and wait until ready."""
    settings = StackSettings(secure=secure)
    stack.up(settings, flink=flink, log=console.print)
    _print_status(settings)


@app.command()
def down() -> None:
    """Stop every part of the local stack this state folder started."""
    stack.down(StackSettings(), log=console.print)


@app.command()
def status(
    secure: bool = typer.Option(
        False, "--secure", envvar="IMAGERY_SECURE", help="the stack was started with `up --secure`"
    ),
) -> None:
    """Show each part of the local stack: pid, address, and the variable that moves it."""
    _print_status(StackSettings(secure=secure))


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
    from imagery.demo import run_demo

    ok = run_demo(count=count, console=console)
    raise typer.Exit(0 if ok else 1)


@app.command()
def serve(
    team: str = typer.Option(..., envvar="TEAM"), host: str = "127.0.0.1", port: int = typer.Option(8000, envvar="PORT")
) -> None:
    """Run the inference service for TEAM in the foreground (python -m services.inference_http)."""
    import os
    import sys

    from services.inference_http.settings import service_environment

    os.environ.update(service_environment(team=team, host=host, port=port))
    os.execv(sys.executable, [sys.executable, "-m", "services.inference_http"])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dispatch(
    ctx: typer.Context,
    jobmanager: str | None = typer.Option(
        None,
        "--jobmanager",
        help="HOST:PORT of a Flink cluster's REST API: submit the job there "
        "(detached) instead of running it on a local MiniCluster (`imagery up --flink` starts one at "
        "127.0.0.1:8081)",
    ),
) -> None:
    """Run the dispatcher job; arguments as http_dispatcher.py (--team, --http-url, ...)."""
    import sys

    from imagery.local.job_scratch import JobScratch
    from imagery.pipeline_run import cluster_job_command, local_job_command

    if jobmanager:
        argv, env = cluster_job_command(ctx.args, jobmanager)
        os.execvpe(argv[0], argv, {**os.environ, **env})
    # the job's temporary files in a folder of its own, swept by a later local job once this one's group is gone
    scratch = JobScratch.create()
    scratch.claim(os.getpgid(0))
    os.execve(sys.executable, local_job_command(ctx.args), {**os.environ, **scratch.environment()})


@app.command()
def produce(
    team: str, bucket: str, keys: list[str], bootstrap: str | None = BOOTSTRAP, camera: str | None = None
) -> None:
    """Publish one {bucket, key} message per KEY to imagery.new.<team>."""
    from imagery.pipeline_run import produce_messages
    from schemas import topics

    n = produce_messages(
        _bootstrap(bootstrap),
        topics.input_topic(team),
        [{"bucket": bucket, "key": k, **({"camera": camera} if camera else {})} for k in keys],
    )
    console.print(f"produced {n} messages to {topics.input_topic(team)}")


@app.command()
def tail(
    team: str = typer.Option(..., "--team", help="the team whose results and dead letters are shown"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing what lands until Ctrl-C"),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="one JSON object per line: kind (result, dead_letter), "
        "topic, partition, offset, timestamp_ms, key, and the record as on the wire",
    ),
    bootstrap: str | None = BOOTSTRAP,
    output_topic: str = typer.Option(None, help="default inference.results.<team>"),
    dlq_topic: str = typer.Option(None, help="default dlq.inference.http"),
) -> None:
    """Print TEAM's results and its dead letters (those of the DLQ whose team is TEAM), oldest first: what is there
    now, then with --follow what lands next. Only committed records (the dispatcher writes in transactions); no
    consumer group is joined and nothing is committed."""
    import json

    from imagery import tail as tailing
    from imagery.teams import TeamNames
    from schemas import topics

    servers = _bootstrap(bootstrap)
    where = tailing.TailTopics(output_topic or TeamNames(team=team).result_topic, dlq_topic or topics.DLQ_TOPIC)

    def show(item: tailing.Landed) -> None:
        print(json.dumps(item.as_json()) if as_json else item.line(), flush=True)  # a line as soon as it lands

    try:
        now = tailing.read_now(servers, team, where)
        for item in now.landed:
            show(item)
        if follow:
            for item in tailing.follow(servers, team, where, now.positions):
                show(item)
    except KeyboardInterrupt:  # how --follow ends
        if not follow:
            raise


dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

# the dead letters' stages (schemas.dead_letter.Stage) as the choices of --stage
# (mypy reads an Enum's members only from a literal; typer takes no Literal inside a list)
DlqStage = enum.Enum("DlqStage", {stage: stage for stage in get_args(Stage)}, type=str)  # type: ignore[misc]
DLQ_TOPIC_OPTION = typer.Option(None, "--topic", help="the DLQ topic [default: dlq.inference.http]")
DLQ_GROUP_OPTION = typer.Option(
    None,
    "--group-id",
    help="read from this consumer group's committed offsets, and commit what was read once "
    "done (shown, or replayed), so its next run sees only newer dead letters [default: no group, read it all]",
)
DLQ_STAGE_OPTION = typer.Option(None, "--stage", help="only dead letters of this stage (repeatable)")
DLQ_TEAM_OPTION = typer.Option(None, "--team", help="only dead letters of this team (repeatable)")


def _dlq_positions(values: list[str], partitions: int) -> set[tuple[int, int]]:
    """--offset values, `PARTITION:OFFSET` or `OFFSET` (for a DLQ of one partition), as (partition, offset)."""
    positions = set()
    for value in values:
        partition, _, offset = value.rpartition(":")
        if not offset.isdigit() or not (partition.isdigit() or partition == ""):
            _fail(f"--offset {value!r}: give PARTITION:OFFSET or, for a DLQ of one partition, OFFSET")
        if partition == "" and partitions > 1:
            _fail(f"--offset {value}: the DLQ has {partitions} partitions; give PARTITION:OFFSET")
        positions.add((int(partition or 0), int(offset)))
    return positions


@dlq_app.command("show")
def dlq_show(
    team: list[str] = DLQ_TEAM_OPTION,
    stage: list[DlqStage] = DLQ_STAGE_OPTION,
    bootstrap: str | None = BOOTSTRAP,
    topic: str = DLQ_TOPIC_OPTION,
    group_id: str | None = DLQ_GROUP_OPTION,
    limit: int = typer.Option(50, help="show at most the newest LIMIT"),
) -> None:
    """List the dead letters (oldest first): all of the DLQ up to its end when the command starts."""
    from imagery.dlq import read_letters, select
    from schemas import topics

    dlq_topic, servers = topic or topics.DLQ_TOPIC, _bootstrap(bootstrap)
    read = read_letters(servers, dlq_topic, group_id=group_id)
    entries = select(read.entries, teams=team or (), stages=[s.value for s in stage or ()])
    table = Table(
        title=f"{dlq_topic}: {len(entries)} dead letters"
        + (f", the newest {limit} shown" if len(entries) > limit else "")
    )
    for col in ("partition:offset", "team", "source", "stage", "type", "http", "tries", "message", "value"):
        table.add_column(col, overflow="fold")
    for e in entries[len(entries) - limit if len(entries) > limit else 0 :]:
        d = e.letter
        table.add_row(
            f"{e.partition}:{e.offset}",
            d.team,
            f"{d.source.topic}@{d.source.offset}",
            d.error.stage,
            d.error.type,
            str(d.error.http_status or "-"),
            str(d.error.attempts),
            d.error.message[:100],
            (d.original_value_text or "<binary>")[:80]
            + ("" if d.complete else f" ... ({d.original_value_bytes} bytes in all)"),
        )
    console.print(table)
    if group_id:
        kafka_io.commit_offsets(servers, dlq_topic, group_id, read.end_offsets)


@dlq_app.command("replay")
def dlq_replay(
    team: list[str] = DLQ_TEAM_OPTION,
    stage: list[DlqStage] = DLQ_STAGE_OPTION,
    offsets: list[str] = typer.Option(
        None,
        "--offset",
        help="only this dead letter, PARTITION:OFFSET (or OFFSET for a DLQ of one partition; repeatable)",
    ),
    replay_all: bool = typer.Option(False, "--all", help="with no --team/--stage/--offset: the whole DLQ"),
    bootstrap: str | None = BOOTSTRAP,
    topic: str = DLQ_TOPIC_OPTION,
    group_id: str | None = DLQ_GROUP_OPTION,
    to: str = typer.Option(None, help="target topic; default: each letter's source topic"),
    again: bool = typer.Option(False, "--again", help="also entries replayed before"),
    max_replays: int = typer.Option(3, help="skip entries whose record was replayed this often already"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be replayed, replay nothing"),
) -> None:
    """Re-publish the original bytes, key and headers of the chosen dead letters, once: what was replayed is
    recorded (dlq.inference.http.replayed) and skipped next time unless --again. Choose with --team, --stage,
    --offset, or --all for the whole DLQ."""
    from imagery.dlq import plan, read_letters, replay, replayed, select
    from schemas import topics

    if not (team or stage or offsets or replay_all or dry_run):  # a dry run replays nothing: it may list them all
        _fail(
            "say what to replay: --team, --stage or --offset, or --all for the whole DLQ (--dry-run lists what "
            "would go)"
        )
    dlq_topic, servers = topic or topics.DLQ_TOPIC, _bootstrap(bootstrap)
    read = read_letters(servers, dlq_topic, group_id=group_id)
    entries = select(
        read.entries,
        teams=team or (),
        stages=[s.value for s in stage or ()],
        positions=_dlq_positions(offsets or [], len(read.end_offsets)),
    )
    chosen = plan(entries, replayed(servers, dlq_topic), again=again, max_replays=max_replays)
    table = Table(
        title=f"{len(chosen.go)} to replay" + (" (dry run)" if dry_run else "") + f", {len(chosen.skipped)} skipped"
    )
    for col in ("partition:offset", "team", "stage", "type", "replays", "to", "note"):
        table.add_column(col, overflow="fold")
    for e, why in [*((e, "") for e in chosen.go), *chosen.skipped]:
        table.add_row(
            f"{e.partition}:{e.offset}",
            e.letter.team,
            e.letter.error.stage,
            e.letter.error.type,
            str(e.replay_count),
            to or e.letter.source.topic,
            why or ("would replay" if dry_run else "replayed"),
        )
    if dry_run:
        console.print(table)
        return
    count = replay(servers, chosen.go, to, dlq_topic)
    console.print(table)
    console.print(f"replayed {count} dead letters")
    if group_id:
        kafka_io.commit_offsets(servers, dlq_topic, group_id, read.end_offsets)


def _offsets_option(values: list[str] | None, flag: str) -> dict[int, int] | None:
    """--from/--to values, PARTITION:OFFSET, as partition -> offset (None when none was given)."""
    if not values:
        return None
    offsets = {}
    for value in values:
        partition, _, offset = value.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            _fail(f"{flag} {value!r}: give PARTITION:OFFSET")
        offsets[int(partition)] = int(offset)
    return offsets


@app.command()
def audit(
    team: str = typer.Option(..., "--team", help="the team whose dispatcher job is audited"),
    bootstrap: str | None = BOOTSTRAP,
    input_topic: str = typer.Option(None, help="default imagery.new.<team>"),
    output_topic: str = typer.Option(None, help="default inference.results.<team>"),
    dlq_topic: str = typer.Option(None, help="default dlq.inference.http"),
    group_id: str = typer.Option(
        None, help="the job's consumer group, whose committed offsets end the range [default: http-dispatcher-<team>]"
    ),
    start: list[str] = typer.Option(
        None,
        "--from",
        help="PARTITION:OFFSET where the range starts (repeatable) [default: each partition's first record]",
    ),
    end: list[str] = typer.Option(
        None,
        "--to",
        help="PARTITION:OFFSET where the range ends, exclusive (repeatable) [default: the group's committed offsets]",
    ),
    as_json: bool = typer.Option(False, "--json", help="the report as JSON on stdout"),
    repair_missing: bool = typer.Option(
        False,
        "--repair",
        help="re-publish each missing record once, as a replay (a second audit finds it pending, then landed)",
    ),
) -> None:
    """Where every input record of a team's job landed: counts, and the records missing, duplicated or still
    pending. Exits 1 when anything is missing or duplicated."""
    import json
    import sys

    from imagery.audit import audit as run_audit
    from imagery.audit import describe, repair
    from schemas import topics

    def progress(topic: str, done: int, total: int) -> None:
        print(f"audit: {topic}: {done:,} of {total:,} records read", file=sys.stderr, flush=True)

    servers = _bootstrap(bootstrap)
    report = run_audit(
        servers,
        team,
        input_topic=input_topic,
        output_topic=output_topic,
        dlq_topic=dlq_topic or topics.DLQ_TOPIC,
        group_id=group_id,
        start=_offsets_option(start, "--from"),
        end=_offsets_option(end, "--to"),
        progress=progress,
    )
    if repair_missing:
        repair(servers, report)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table(title=f"imagery audit: {team} ({report.input_topic}, group {report.group_id})")
        table.add_column("what", no_wrap=True)
        table.add_column("count", justify="right")
        table.add_column("detail")
        ranges = ", ".join(f"{p}:[{lo},{hi})" for p, (lo, hi) in sorted(report.ranges.items()))
        rows = [
            ("input records", report.records, ranges),
            ("images", report.units, ""),
            ("results", report.results, report.output_topic),
            ("dead letters", report.dead_letters, report.dlq_topic),
            ("through a replay", report.replayed, ""),
            ("missing", len(report.missing), describe(report.missing)),
            ("duplicated", len(report.duplicated), describe(u for u, _ in report.duplicated)),
            ("pending", len(report.pending), describe(report.pending)),
        ]
        if repair_missing:
            rows.append(("repaired", len(report.repaired), describe(report.repaired)))
        for what, count, detail in rows:
            style = "red" if what in ("missing", "duplicated") and count else ""
            table.add_row(what, f"[{style}]{count}[/{style}]" if style else str(count), detail)
        console.print(table)
        console.print(
            "[green]clean: every image landed exactly once[/green]"
            if report.clean
            else "[red]not clean[/red]"
            + (
                ": repaired records are re-published; audit again once the job has handled them"
                if report.repaired
                else ""
            )
        )
    if not report.clean:
        raise typer.Exit(1)


@app.command()
def infer(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="the image"),
    team: str = typer.Option(
        ..., "--team", help="the team whose model should answer (checked: a service of another team is refused)"
    ),
    url: str = typer.Option(
        "http://127.0.0.1:8000", "--url", envvar="IMAGERY_SERVICE_URL", help="the team's inference service"
    ),
    model_tag: str | None = typer.Option(None, "--model-tag"),
    extra: str | None = typer.Option(None, "--extra", help="a JSON object for the runner, e.g. '{\"min_score\": 0.5}'"),
    token: str | None = typer.Option(None, "--token", envvar="AUTH_TOKEN", help="the service's bearer token"),
    timeout_s: float = typer.Option(60.0, "--timeout-s"),
) -> None:
    """Run TEAM's model on FILE, no MinIO needed: POST /infer_upload to its service (`imagery serve`), print the
    answer as JSON."""
    import json
    import time

    import httpx

    from schemas import HEALTHZ_ROUTE, INFER_UPLOAD_ROUTE
    from schemas.inference_api import UPLOAD_FILE_FIELD

    fields: dict[str, str] = {}
    if model_tag:
        fields["model_tag"] = model_tag
    if extra:
        try:
            if not isinstance(json.loads(extra), dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            _fail(f"--extra must be a JSON object: {exc}")
        fields["extra"] = extra
    base = url.rstrip("/")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=base, timeout=timeout_s, headers=headers) as client:
            served = client.get(HEALTHZ_ROUTE).json().get("team")
            if served != team.strip().lower():
                _fail(f"the service at {base} serves team {served!r}, not {team!r}: point --url at {team}'s service")
            data, deadline = file.read_bytes(), time.monotonic() + timeout_s
            while True:  # a service still warming up says so (503 not_ready): wait for it, within --timeout-s
                answer = client.post(
                    INFER_UPLOAD_ROUTE,
                    data=fields,
                    files={UPLOAD_FILE_FIELD: (file.name, data, "application/octet-stream")},
                )
                retry_s = float(answer.headers.get("retry-after", "1") or 1)
                if answer.status_code != 503 or "not_ready" not in answer.text or time.monotonic() + retry_s > deadline:
                    break
                time.sleep(retry_s)
    except httpx.TransportError as exc:
        _fail(
            f"no inference service answers at {base} ({exc}); start one with `TEAM={team} imagery serve` or give --url"
        )
    except ValueError as exc:  # /healthz answered something that is not the service's JSON
        _fail(f"{base}{HEALTHZ_ROUTE} is not the inference service's ({exc})")
    try:
        body = answer.json()
    except ValueError:
        body = {"error": {"type": "not_json", "message": answer.text[:500]}}
    if answer.status_code != 200:
        error = body.get("error") or {}
        _fail(f"{answer.status_code} {error.get('type')}: {error.get('message')}")
    typer.echo(json.dumps(body, indent=2))  # plain JSON, for jq as much as for eyes


@app.command("kafka-user")
def kafka_user(
    name: str = typer.Argument(..., help="the SCRAM user (a principal User:NAME)"),
    password_file: Path = typer.Option(
        ...,
        "--password-file",
        exists=True,
        dir_okay=False,
        help="a file holding the password (never a flag: argv shows)",
    ),
    bootstrap: str | None = BOOTSTRAP,
) -> None:
    """Set NAME's SCRAM-SHA-512 credential on a secured Kafka (made, or replaced: a rotation), as the principal of
    --kafka-config (a super user, or one allowed to alter users)."""
    from imagery import kafka_access

    kafka_access.ensure_scram_user(_bootstrap(bootstrap), name, password_file.read_text().strip())
    console.print(f"SCRAM-SHA-512 credential of User:{name} set")


@app.command("new-team")
def new_team(
    team: str,
    compose: bool = typer.Option(True, help="also add the team to the compose stack"),
    partitions: int = typer.Option(4, help="its input topic's partitions, where it is provisioned"),
    minio: str | None = MINIO,
    minio_secure: bool = MINIO_SECURE,
    minio_ca_file: Path | None = MINIO_CA_FILE,
    credentials_dir: Path = CREDENTIALS_DIR,
) -> None:
    """Scaffold a team: adapters/<team>_runner.py, and the team in deploy/teams.yaml and compose.yaml. Given a
    secured Kafka (`imagery --kafka-config FILE new-team ...`, FILE the operator's), also provision it there: its
    topics, bucket, principal, ACLs and MinIO user, as `imagery provision` does."""
    from imagery import compose as compose_files
    from imagery import scaffold
    from imagery.k8s.render import release_name
    from imagery.teams import Team

    files = compose_files.ComposeFiles.in_repo() if compose else None
    path = scaffold.new_team(team, compose_files=files)
    console.print(f"wrote {path}" + (" and added the team to deploy/teams.yaml and compose.yaml" if compose else ""))
    spec = Team(team=team, weights=scaffold.weights_file(team), partitions=partitions)
    if _kafka_config_file is not None:
        _provision_teams([spec], None, minio, minio_secure, minio_ca_file, None, credentials_dir)
    console.print(
        f"next: fill in {path.name}, put weights in weights/{scaffold.weights_file(team)}, "
        f"then `TEAM={team} .venv/bin/imagery serve` and check /readyz"
        + (
            "; on compose: `docker compose up -d` (the secured variant: `imagery compose-secrets` first, "
            "for the team's secrets)"
            if compose
            else ""
        )
        + f"; on Kubernetes: `imagery k8s values {team} | helm install {release_name(spec)} "
        "deploy/helm/imagery-team -f cluster.yaml -f -` (docs/kubernetes.md)"
    )


@app.command("compose")
def compose_command() -> None:
    """Regenerate compose.yaml, compose.gpu.yaml, compose.secure.yaml and deploy/prometheus*.yml from deploy/
    (templates and teams)."""
    from imagery import compose

    files = compose.ComposeFiles.in_repo()
    compose.write(files)
    console.print(
        f"wrote {files.compose}, {files.gpu}, {files.secure}, {files.prometheus} and "
        f"{files.secure_prometheus} for {len(compose.load_teams(files.teams))} team(s)"
    )


@app.command("compose-secrets")
def compose_secrets_command(
    folder: Path = typer.Option(
        Path("secrets"),
        "--dir",
        file_okay=False,
        help="where to make them: compose.secure.yaml reads ./secrets beside it",
    ),
    hosts: list[str] = typer.Option(
        None,
        "--host",
        help="another name the host's clients reach Kafka and MinIO "
        "by (KAFKA_EXTERNAL_HOST), for their certificates (repeatable)",
    ),
) -> None:
    """Make every secret of the secured compose variant (compose.secure.yaml) for the teams of deploy/teams.yaml: a
    CA and certificates, passwords, tokens and client files (imagery/compose_secrets.py says which, and their
    modes). Made once and kept: run it again after `imagery new-team` for the new team's."""
    from imagery import compose, compose_secrets

    made = compose_secrets.make(folder, compose.load_teams(compose.ComposeFiles.in_repo().teams), hosts or ())
    console.print(f"{folder}: made {', '.join(made.made) or 'nothing (all there)'}; kept {len(made.kept)}")
    console.print(
        "next: docker compose -f compose.yaml -f compose.secure.yaml up -d --build; the host's tooling: "
        f"imagery --kafka-config {folder / compose_secrets.HOST_ADMIN} ...",
        soft_wrap=True,
    )


k8s_app = typer.Typer(
    help="Kubernetes: each team's objects from deploy/helm/ and deploy/teams.yaml (docs/kubernetes.md).",
    no_args_is_help=True,
)
app.add_typer(k8s_app, name="k8s")
K8S_TEAMS = typer.Option(None, "--team", help="a team of deploy/teams.yaml (repeatable) [default: every team]")
K8S_NAMESPACE = typer.Option("imagery", "--namespace", "-n", help="the namespace the releases go in")
K8S_VALUES = typer.Option(
    None,
    "--values",
    "-f",
    exists=True,
    dir_okay=False,
    help="a values file of the cluster's (images, Kafka, MinIO, state; repeatable)",
)
K8S_SECURED = typer.Option(False, "--secured", help="point each team at its Secrets (`imagery k8s secrets`)")


def _k8s_teams(names: list[str] | None) -> list[Team]:
    from imagery.teams import load_teams, team_named

    return [team_named(name) for name in names] if names else load_teams()


@k8s_app.command("render")
def k8s_render(
    teams: list[str] = K8S_TEAMS,
    namespace: str = K8S_NAMESPACE,
    values: list[Path] = K8S_VALUES,
    secured: bool = K8S_SECURED,
    platform: bool = typer.Option(True, help="also the platform release (alert rules, dashboard)"),
    check: bool = typer.Option(False, "--check", help="validate them too (as `imagery k8s check`)"),
) -> None:
    """Print the objects of the platform release and of each team's (`helm template`), for `kubectl apply` or a
    GitOps repository; `helm install` of deploy/helm/imagery-team with `imagery k8s values` makes the same."""
    from imagery.k8s import render, validate

    chosen = _k8s_teams(teams)
    text = render.render(chosen, namespace, values or [], platform=platform, secured=secured)
    if check:
        _report_problems(validate.problems(render.documents(text), chosen))
    print(text, end="")


@k8s_app.command("values")
def k8s_values(team: str, secured: bool = K8S_SECURED) -> None:
    """Print a team's values from deploy/teams.yaml, for `helm install|upgrade ... -f cluster.yaml -f -`."""
    import yaml

    from imagery.k8s import render

    print(yaml.safe_dump(render.release_values(_k8s_teams([team])[0], secured), sort_keys=False), end="")


def _report_problems(problems: list) -> None:
    for problem in problems:
        Console(stderr=True).print(f"[red]✗[/red] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@k8s_app.command("check")
def k8s_check(
    file: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, help="rendered objects [default: `imagery k8s render`'s]"
    ),
    teams: list[str] = K8S_TEAMS,
    namespace: str = K8S_NAMESPACE,
    values: list[Path] = K8S_VALUES,
    secured: bool = K8S_SECURED,
) -> None:
    """Validate objects offline: Kubernetes's schemas (strict), the operators' CRDs of deploy/k8s/crds, and the
    project's rules (GPU in limits, probes, a disruption budget, savepoint upgrades, exactly-once), and that every
    team is there."""
    from imagery.k8s import render, validate

    chosen = _k8s_teams(teams)
    text = file.read_text() if file else render.render(chosen, namespace, values or [], secured=secured)
    objects = render.documents(text)
    _report_problems(validate.problems(objects, chosen))
    console.print(f"[green]✓[/green] {len(objects)} objects of {len(chosen)} team(s) pass")


@k8s_app.command("size")
def k8s_size(
    rates: list[float] = typer.Option(..., "--rate", help="images per second to plan for (repeatable)"),
) -> None:
    """Partitions, parallelism (task slots), --capacity and GPUs (service replicas) for a rate, from the measured
    figures of bench/RESULTS.md (imagery/k8s/sizing.py names each)."""
    from imagery.k8s import sizing

    table = Table(
        "images/s",
        "dispatcher cores",
        "parallelism (slots)",
        "partitions",
        "--capacity",
        "GPUs (replicas)",
        caption=f"one GPU as measured: {sizing.GPU_MEASURED_ON}",
    )
    for rate in rates:
        p = sizing.plan(rate)
        table.add_row(
            f"{rate:,.0f}",
            f"{p.dispatcher_cores:.2f}",
            str(p.parallelism),
            str(p.partitions),
            str(p.capacity),
            str(p.gpus),
        )
    console.print(table)


@k8s_app.command("secrets")
def k8s_secrets(
    out: Path = typer.Option(..., "--out", dir_okay=False, help="the manifest to write (mode 0600)"),
    teams: list[str] = K8S_TEAMS,
    namespace: str = K8S_NAMESPACE,
    credentials_dir: Path = CREDENTIALS_DIR,
) -> None:
    """Write each team's Kafka client file (with its stores) and MinIO secret key, as `imagery provision` left them
    in --credentials-dir, as Secrets for `kubectl apply -f OUT`; render with --secured to use them."""
    from imagery.k8s import secrets

    chosen = _k8s_teams(teams)
    secrets.write_team_secrets(out, chosen, credentials_dir, namespace)
    names = [name for t in chosen for name in (secrets.kafka_secret_name(t), secrets.minio_secret_name(t))]
    console.print(f"wrote {out}: {', '.join(names)}; next: kubectl apply -f {out}, then delete it", soft_wrap=True)


@app.command()
def provision(
    teams: list[str] = typer.Argument(..., help="TEAM:PARTITIONS:WEIGHTS_FILE, one per team"),
    bootstrap: str | None = BOOTSTRAP,
    minio: str | None = MINIO,
    minio_secure: bool = MINIO_SECURE,
    minio_ca_file: Path | None = MINIO_CA_FILE,
    weights_dir: Path | None = typer.Option(None, help="check each team's weights file here"),
    credentials_dir: Path = CREDENTIALS_DIR,
    events_user: str | None = typer.Option(
        None,
        "--events-user",
        help="on a secured Kafka: the Kafka user MinIO's bucket notifications write "
        "as, allowed to write to each team's input topic (compose.secure.yaml: minio-events)",
    ),
) -> None:
    """Make what teams need before they start: topics with their partitions, buckets whose uploads' events go to
    the teams' input topics, and (with --weights-dir) check their weights. On a secured Kafka (`imagery
    --kafka-config FILE provision ...`, FILE the operator's), also each team's principal, its ACLs and its client
    file, and its own MinIO user that reads its buckets alone. MinIO's root key: MINIO_ACCESS_KEY, and
    MINIO_SECRET_KEY_FILE (or MINIO_SECRET_KEY). Idempotent: compose's `init` runs it."""
    from imagery.teams import Team

    specs = [Team.from_spec(text) for text in teams]
    _provision_teams(specs, bootstrap, minio, minio_secure, minio_ca_file, weights_dir, credentials_dir, events_user)


def _provision_teams(
    specs: list[Team],
    bootstrap: str | None,
    minio: str | None,
    minio_secure: bool,
    minio_ca_file: Path | None,
    weights_dir: Path | None,
    credentials_dir: Path,
    events_user: str | None = None,
) -> None:
    """What `provision` makes for SPECS (on a secured Kafka, each team's principal, ACLs and MinIO user too)."""
    from imagery import kafka_access, storage_access
    from imagery import provision as provisioning
    from schemas import topics
    from streaming.dispatch.kafka_properties import read_properties

    local = StackSettings()
    endpoint, access_key = minio or local.minio_endpoint, os.environ.get("MINIO_ACCESS_KEY", local.minio_access_key)
    secret_file = os.environ.get("MINIO_SECRET_KEY_FILE")
    secret_key = (
        Path(secret_file).read_text().strip()
        if secret_file
        else os.environ.get("MINIO_SECRET_KEY", local.minio_secret_key)
    )
    client = storage_access.minio_client(endpoint, access_key, secret_key, secure=minio_secure, ca_file=minio_ca_file)
    kafka = _bootstrap(bootstrap)
    if weights_dir is not None:
        provisioning.check_weights(weights_dir, specs)  # every team's, before anything is made
    for spec in specs:
        try:
            provisioning.provision(kafka, client, weights_dir, [spec], log=console.print)
        except provisioning.EventsTargetMissing as exc:  # the topics and the bucket are made: go on
            console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}", soft_wrap=True)
        if provisioning.secured(kafka):
            assert _kafka_config_file is not None  # (a secured Connection comes from --kafka-config)
            made = provisioning.ensure_team_principal(kafka, spec.team, _kafka_config_file, credentials_dir)
            console.print(
                f"team {spec.team}: principal User:{topics.team_principal(spec.team)} and its ACLs "
                f"exist; its Kafka client file (a secret: hand it to the team's dispatcher as "
                f"--kafka-config) is {escape(str(made))}",
                soft_wrap=True,
            )
            if events_user:
                kafka_access.create_acls(kafka, kafka_access.topic_writer_acls(events_user, [spec.input_topic]))
                console.print(
                    f"team {spec.team}: User:{escape(events_user)} (MinIO's bucket events) may write "
                    f"to {spec.input_topic}",
                    soft_wrap=True,
                )
            admin = storage_access.minio_admin(
                endpoint, access_key, secret_key, secure=minio_secure, ca_file=minio_ca_file
            )
            reader, secret = provisioning.ensure_team_storage_reader(admin, spec.team, credentials_dir)
            console.print(
                f"team {spec.team}: MinIO user {reader} reads its buckets alone; its secret key (give "
                f"it to the team's service as MINIO_SECRET_KEY_FILE) is in {escape(str(secret))}",
                soft_wrap=True,
            )
            if "sasl.jaas.config" not in read_properties(_kafka_config_file):
                keystore = read_properties(made)["ssl.keystore.location"]
                console.print(
                    f"team {spec.team}: mTLS: put its key and certificate (PEM, CN="
                    f"{topics.team_principal(spec.team)}, issued by a CA the brokers trust) in "
                    f"{escape(keystore)}",
                    soft_wrap=True,
                )


# ---------------------------------------------------------------------------- monitoring: health, prometheus


def _per_team(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for text in values or []:
        team, sep, value = text.partition("=")
        if not sep or not team or not value:
            _fail(f"{what} takes TEAM=VALUE, not {text!r}")
        out[team] = value
    return out


@app.command()
def health(
    teams: list[str] = typer.Option(
        None, "--team", help="a team to check (repeatable) [default: every team with an imagery.new.<team> topic]"
    ),
    services: list[str] = typer.Option(
        None, "--service", help="TEAM=URL of its inference service (repeatable; implies --team)"
    ),
    topics_: list[str] = typer.Option(None, "--topic", help="TEAM=TOPIC when not imagery.new.<team>"),
    groups: list[str] = typer.Option(None, "--group", help="TEAM=GROUP when not http-dispatcher-<team>"),
    jobs: list[str] = typer.Option(None, "--job", help="TEAM=JOB NAME when not http-dispatcher-<team>"),
    bootstrap: str | None = BOOTSTRAP,
    flink_url: str | None = typer.Option(
        None,
        help="Flink REST URL [default: the local stack's]; jobs on "
        "local MiniClusters (`imagery dispatch`) are found without it",
    ),
    max_lag: int = typer.Option(10_000, help="lag (records) above which a team's lag is a warning"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of the table"),
) -> None:
    """One table of every part: Kafka, MinIO, Flink, and per team its job (on the cluster, or on a local MiniCluster
    of `imagery dispatch`), /healthz, /readyz and consumer lag. Exit status 1 when any part is down."""
    import json

    from imagery import health as h

    service_urls, topic_of, group_of, job_of = (
        _per_team(services, "--service"),
        _per_team(topics_, "--topic"),
        _per_team(groups, "--group"),
        _per_team(jobs, "--job"),
    )
    names = list(dict.fromkeys([*(teams or []), *service_urls]))
    team_list = [
        h.TeamParts(n, service_urls.get(n), topic_of.get(n, ""), group_of.get(n, ""), job_of.get(n, "")) for n in names
    ] or None
    report = h.check_all(
        StackSettings(), team_list, bootstrap=_bootstrap(bootstrap), flink_url=flink_url, max_lag=max_lag
    )
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        colour = {h.OK: "green", h.WARN: "yellow", h.DOWN: "red", h.UNKNOWN: "dim"}
        table = Table(title="imagery health: " + ("[green]all up[/green]" if report.ok else "[red]DOWN[/red]"))
        for col in ("part", "team", "status", "detail"):
            table.add_column(col, overflow="fold", no_wrap=col != "detail")
        for c in report.checks:
            table.add_row(c.part, c.team or "-", f"[{colour[c.status]}]{c.status}[/{colour[c.status]}]", c.detail)
        console.print(table)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def prometheus(
    services: list[str] = typer.Option(..., "--service", help="TEAM=HOST:PORT of an inference service (repeatable)"),
    port: int = typer.Option(9090, help="Prometheus's own port"),
    interval_s: float = typer.Option(5.0, "--interval", help="scrape and rule evaluation interval"),
) -> None:
    """Run Prometheus (Debian's package) in the foreground, scraping the services and Flink's reporter ports with
    ops/prometheus/alerts.yml; its UI and API on 127.0.0.1:PORT. Ctrl-C stops it and drops its data."""
    from imagery.local import prometheus as prom

    targets: dict[str, list[str]] = {}
    for team, url in _per_team(services, "--service").items():
        targets.setdefault(team, []).append(url.split("://")[-1].rstrip("/"))
    server = prom.PrometheusServer(targets, port=port, interval_s=interval_s)
    server.start()
    console.print(f"Prometheus on {server.url} (alerts: {server.url}/alerts, config {server.storage}/prometheus.yml)")
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a SIGTERM stops it as Ctrl-C does, with the cleanup
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.cleanup()


def main() -> None:
    """`imagery`: the app, each command ending on a known error with one line, `error: <message>`, and status 1
    (`_Commands.invoke`). The command runs without typer's wrapper, which marks an escaping exception (a bug's) for
    its pretty traceback and itself fails on a frozen one (MinIO's S3Error)."""
    typer.main.get_command(app)()


if __name__ == "__main__":
    main()
