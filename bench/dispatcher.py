"""The dispatcher's own pace (issue 9): one job against a fast stand-in endpoint (bench/standin.py, canned answers in
the service's real shapes), next to Flink SQL Kafka -> Kafka with no Python, in the same run, on the same Kafka.

    .venv/bin/python bench/dispatcher.py [--messages 20000] [--parallelism 1,2,4] [--items 1,32]
        [--variant "LABEL=--flag value ..." ...]

Each --variant is the job with those extra flags (e.g. the previous defaults beside the current ones), measured in
the same run against the same stand-in and passthrough; without one, the job as it is.

Each job is started, warmed up with --warm-up messages (the JIT compiles as they pass: with 500, the JVM's compiler
threads still took as much CPU as the operator's thread during the burst, bench/RESULTS.md "Issue 28, continued"),
then given a burst of --messages published at once.
rate = burst / (broker timestamp of the last output - time the burst started); CPU = user + system time of the
job's processes (the JVM, with the Python inside it, and the submitting Python) over the burst, per message.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import TopicPartition
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append_results  # noqa: E402
from imagery import kafka_io  # noqa: E402
from imagery.local import install, stack  # noqa: E402
from imagery.local.settings import StackSettings  # noqa: E402
from imagery.pipeline_run import REPO_ROOT, local_job_command  # noqa: E402
from imagery.process import Process, ProcessError, free_port, http_200, process_tree_cpu, spawn  # noqa: E402
from schemas import INFER_JSON_ROUTE, READYZ_ROUTE  # noqa: E402
from streaming.dispatch.config import DispatcherConfig  # noqa: E402

console = Console(width=150)
BENCH = Path(__file__).resolve().parent


def job_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of the job's process tree by kind: the JVM, and the Python processes (the submitting client)."""
    out = {"jvm": 0.0, "python": 0.0}
    for comm, cpu in process_tree_cpu(pid):
        out["jvm" if comm == "java" else "python"] += cpu
    return out


def output_times(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """Broker timestamps of every record in `topic`, read once the job is done (so reading costs the job nothing)."""
    ends = kafka_io.end_offsets(bootstrap, topic)
    times: list[int] = []
    want = sum(ends.values())
    with kafka_io.consumer(bootstrap) as reader:
        reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 120
        while len(times) < want and time.monotonic() < deadline:
            for msg in reader.consume(10_000, 1.0):
                if not msg.error():
                    times.append(msg.timestamp()[1])
    return times


@dataclass
class Run:
    name: str
    parallelism: int
    rate: float
    cpu_jvm_ms: float
    cpu_python_ms: float


def publish_burst(bootstrap: str, topic: str, n: int, prefix: str, bucket: str) -> None:
    values = [
        (
            f"{prefix}-{i}".encode(),
            b'{"id": "%s-%d", "bucket": "%s", "key": "img/%d.jpg"}' % (prefix.encode(), i, bucket.encode(), i % 64),
        )
        for i in range(n)
    ]
    kafka_io.produce(bootstrap, topic, values)


def wait_for(bootstrap: str, topic: str, total: int, job: Process, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(kafka_io.end_offsets(bootstrap, topic).values()) < total:
        if job.returncode is not None:
            raise SystemExit(f"the job exited with {job.returncode}; log {job.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{topic}: fewer than {total} records after {timeout_s:.0f} s")
        time.sleep(0.2)


def measure(settings: StackSettings, name: str, parallelism: int, n: int, start_job, warm_up: int) -> Run:
    run = uuid.uuid4().hex[:8]
    inp, out, dlq = f"bench.in.{run}", f"bench.out.{run}", f"bench.dlq.{run}"
    kafka_io.create_topics(settings.bootstrap, [inp, out, dlq], partitions=parallelism)
    log = settings.logs_dir / f"bench-dispatcher-{run}.log"
    job = spawn(start_job(inp, out, dlq, run), log, name=name, cwd=REPO_ROOT)
    try:
        publish_burst(settings.bootstrap, inp, warm_up, "warm", "fruit")
        wait_for(settings.bootstrap, out, warm_up, job)
        cpu_before = job_cpu_s(job.pid)
        started_ms = time.time() * 1000
        publish_burst(settings.bootstrap, inp, n, "m", "fruit")
        wait_for(settings.bootstrap, out, warm_up + n, job)
        cpu_after = job_cpu_s(job.pid)
        times = sorted(output_times(settings.bootstrap, out, parallelism))
        if sum(kafka_io.end_offsets(settings.bootstrap, dlq).values()):
            raise SystemExit(f"{name}: dead letters in a benchmark run; see {log}")
        rate = n / ((times[-1] - started_ms) / 1000)
        cpu = {k: (cpu_after[k] - cpu_before[k]) * 1000 / n for k in cpu_after}
        console.print(
            f"{name} p={parallelism}: {rate:,.0f} msg/s; CPU per message: JVM {cpu['jvm']:.3f} ms, "
            f"Python {cpu['python']:.3f} ms"
        )
        return Run(name, parallelism, rate, cpu["jvm"], cpu["python"])
    finally:
        job.stop()
        kafka_io.delete_topics(settings.bootstrap, [inp, out, dlq])


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`LABEL=--flag value ...` -> (LABEL, [--flag, value, ...])."""
    label, sep, flags = text.partition("=")
    if not sep or not label:
        raise SystemExit(f"--variant {text!r}: expected LABEL=FLAGS")
    return label, shlex.split(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per burst")
    parser.add_argument("--warm-up", type=int, default=500, help="messages through each job before its burst")
    parser.add_argument("--parallelism", default="1,2,4", help="parallelism (= partitions) of the dispatcher runs")
    parser.add_argument("--items", default="1,32", help="items per request of the p=1 runs (1 = /infer_json)")
    parser.add_argument(
        "--capacity",
        type=int,
        default=DispatcherConfig.model_fields["capacity"].default,
        help="images in flight per dispatcher instance [default: the dispatcher's]",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FLAGS",
        help="the job with these extra flags, labelled (repeatable; default: the job as it is)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("", [])]
    parallelisms = [int(p) for p in args.parallelism.split(",")]
    items = [int(i) for i in args.items.split(",")]

    settings = StackSettings()
    started = stack.up(settings, flink=False, log=console.print)
    jars = ",".join(str(p) for p in install.connector_jars(settings))
    port = free_port()
    standin = spawn(
        [sys.executable, str(BENCH / "standin.py"), "--port", str(port)],
        settings.logs_dir / "bench-standin.log",
        name="the stand-in",
        cwd=REPO_ROOT,
    )
    runs: list[Run] = []
    try:
        try:
            standin.wait_ready(http_200(f"http://127.0.0.1:{port}{READYZ_ROUTE}", timeout_s=1), 30, poll_s=0.1)
        except ProcessError as exc:
            raise SystemExit(f"the stand-in did not start: {exc}") from None

        def passthrough(p: int):
            return lambda inp, out, dlq, run: [
                sys.executable,
                str(BENCH / "jobs" / "sql_passthrough.py"),
                settings.bootstrap,
                inp,
                out,
                str(p),
                jars,
            ]

        def dispatcher(p: int, n_items: int, flags: list[str]):
            return lambda inp, out, dlq, run: local_job_command(
                [
                    "--connector-jars",
                    jars,
                    "--bootstrap",
                    settings.bootstrap,
                    "--team",
                    "fruit",
                    "--http-url",
                    f"http://127.0.0.1:{port}{INFER_JSON_ROUTE}",
                    "--input-topic",
                    inp,
                    "--output-topic",
                    out,
                    "--dlq-topic",
                    dlq,
                    "--group-id",
                    f"bench-{run}",
                    "--parallelism",
                    str(p),
                    "--capacity",
                    str(args.capacity),
                    "--items-per-request",
                    str(n_items),
                    "--resume",
                    "none",
                    *flags,
                ]
            )

        def name(label: str, n_items: int) -> str:
            return f"dispatcher{f' ({label})' if label else ''} vs stand-in, {n_items} item(s)/request"

        runs.append(
            measure(settings, "Flink SQL passthrough, no Python", 1, args.messages, passthrough(1), args.warm_up)
        )
        for n_items in items:
            for label, flags in variants:
                runs.append(
                    measure(
                        settings, name(label, n_items), 1, args.messages, dispatcher(1, n_items, flags), args.warm_up
                    )
                )
        for p in (p for p in parallelisms if p != 1):
            runs.append(
                measure(settings, "Flink SQL passthrough, no Python", p, args.messages, passthrough(p), args.warm_up)
            )
            for label, flags in variants:
                runs.append(
                    measure(
                        settings,
                        name(label, max(items)),
                        p,
                        args.messages,
                        dispatcher(p, max(items), flags),
                        args.warm_up,
                    )
                )
    finally:
        standin.stop()
        stack.down(settings, started, log=console.print)

    base = {r.parallelism: r.rate for r in runs if r.name.startswith("Flink SQL")}
    table = Table(title=f"dispatcher pace: bursts of {args.messages:,} messages, capacity {args.capacity}")
    for col in ("job", "parallelism", "msg/s", "of SQL passthrough", "CPU ms/msg JVM", "CPU ms/msg Python"):
        table.add_column(col, justify="right")
    md = [
        "| job | parallelism | msg/s | of SQL passthrough (same p) | CPU ms/msg JVM | CPU ms/msg Python |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        cells = [
            r.name,
            str(r.parallelism),
            f"{r.rate:,.0f}",
            f"{r.rate / base[r.parallelism]:.0%}",
            f"{r.cpu_jvm_ms:.3f}",
            f"{r.cpu_python_ms:.3f}",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    if not args.no_record:
        append_results(
            f"Dispatcher pace vs Flink SQL passthrough (bursts of {args.messages:,})",
            "\n".join(md),
            notes=f"Command: `.venv/bin/python bench/dispatcher.py --messages {args.messages} "
            f"--warm-up {args.warm_up} --parallelism {args.parallelism} --items {args.items}"
            + "".join(f" --variant '{v}'" for v in args.variant)
            + "`. Stand-in: bench/standin.py "
            "(canned answers, uvicorn + httptools, its own process). CPU: the job's processes (its "
            "JVM, with the Python inside it), user + system, over the burst.",
        )


if __name__ == "__main__":
    main()
