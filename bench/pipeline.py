"""End-to-end pipeline benchmark: Kafka -> PyFlink dispatcher -> fruit service -> Kafka, against the service
driven directly at the same concurrency, in the same run, on the same machine. The ratios are the figures.

    .venv/bin/python bench/pipeline.py [--messages 400] [--capacity 32] [--items-per-request 1]
        [--variant "LABEL=--flag value ..." ...]

1. Saturation: a burst of --messages through the pipeline vs the service driven directly by --capacity clients.
   Throughput = messages / (last result time - first publish time).
2. Half that load, steady (Poisson arrivals at half the direct rate, for --steady-seconds): the service's own p50
   driven directly in open loop vs the pipeline's p50 from publish_ts_ms to the result's broker timestamp.
   The pipeline's latency is also split into its legs, from each result's own timestamps: publish -> the call
   starts (Kafka, Flink, the Python operator), the call (http_ms), the result built -> its broker timestamp.

Each --variant (the job with extra flags, e.g. the previous defaults) runs both phases against the same service, in
the same run; without one, the job as it is (with any --job-arg).

--security plain,secured runs it all once per mode, in the same run: `plain` on the local stack; `secured` on a
secured stack of its own (imagery up --secure: Kafka over SASL_SSL with SCRAM-SHA-512 and ACLs, MinIO over TLS), the
service over TLS with a token, the job with --kafka-config, --auth-token-file and --http-ca-file: what TLS and SASL
cost, direct and through the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dispatcher import parse_variant  # noqa: E402
from bench.results import append_results  # noqa: E402
from bench.service import closed_loop  # noqa: E402
from imagery import kafka_io  # noqa: E402
from imagery.local import security as local_security  # noqa: E402
from imagery.local import stack  # noqa: E402
from imagery.local.inference_service import InferenceService  # noqa: E402
from imagery.local.settings import StackSettings  # noqa: E402
from imagery.pipeline_run import REPO_ROOT, DispatcherProcess, collect, produce_messages  # noqa: E402
from imagery.process import free_port  # noqa: E402
from schemas import INFER_JSON_ROUTE  # noqa: E402
from streaming.dispatch.http import KeepAlivePool  # noqa: E402

console = Console(width=150)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def arrivals(rate: float, seconds: float, seed: int = 7) -> list[float]:
    """Poisson arrival offsets (s) at `rate` per second."""
    rng, t = random.Random(seed), 0.0
    out: list[float] = []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        out.append(t)


async def open_loop(
    base_url: str,
    bucket: str,
    keys: list[str],
    rate: float,
    seconds: float,
    ca_file: str | None = None,
    token: str | None = None,
) -> list[float]:
    """Requests sent on a Poisson schedule whatever the answers: latency as a producer of messages sees it."""
    pool = KeepAlivePool(
        base_url, max_connections=256, ca_file=ca_file, headers={"authorization": f"Bearer {token}"} if token else None
    )
    latencies: list[float] = []
    started = time.perf_counter()

    async def one(at: float, key: str) -> None:
        await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
        sent = time.perf_counter()
        answer = await pool.request("POST", INFER_JSON_ROUTE, json.dumps({"bucket": bucket, "key": key}).encode())
        if answer.status == 200:
            latencies.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(one(at, keys[i % len(keys)]) for i, at in enumerate(arrivals(rate, seconds))))
    await pool.aclose()
    return latencies


def publish_steady(
    bootstrap: kafka_io.Target, topic: str, bucket: str, keys: list[str], rate: float, seconds: float
) -> list[str]:
    """Publish on a Poisson schedule, each message stamped with its own publish time."""

    producer = kafka_io.producer(bootstrap, config={"linger.ms": 0})
    ids, started = [], time.perf_counter()
    for i, at in enumerate(arrivals(rate, seconds, seed=11)):
        while (wait := started + at - time.perf_counter()) > 0:
            producer.poll(min(wait, 0.005))
        msg_id = f"s-{i}"
        producer.produce(
            topic,
            key=msg_id.encode(),
            value=json.dumps(
                {"id": msg_id, "bucket": bucket, "key": keys[i % len(keys)], "publish_ts_ms": int(time.time() * 1000)}
            ),
        )
        ids.append(msg_id)
    producer.flush(30)
    return ids


@dataclass
class PipelineRun:
    label: str
    burst_rate: float
    burst_lat: list[float]
    steady_lat: list[float]
    legs: list[tuple[float, float, float]]  # per steady result: publish -> call starts, the call, built -> broker
    mean_batch: float
    committed_lat: list[float]  # per steady result: publish -> a read_committed consumer received it


def measure_pipeline(
    label: str,
    job_args: list[str],
    log: Path,
    bootstrap: kafka_io.Target,
    topics: list[str],
    bucket: str,
    keys: list[str],
    messages: int,
    rate: float,
    seconds: float,
) -> PipelineRun:
    """One job: a burst of `messages` (its pace), then Poisson arrivals at `rate` for `seconds` (its latency)."""
    inp, out, dlq = topics
    with DispatcherProcess(job_args, log) as job:
        warm = [{"id": f"warm-{i}", "bucket": bucket, "key": keys[0]} for i in range(16)]
        produce_messages(bootstrap, inp, warm)
        collect(bootstrap, out, dlq, lambda c: len(c.results) >= len(warm), 300, watch=job.check_alive)
        msgs = [{"id": f"m-{i}", "bucket": bucket, "key": keys[i % len(keys)]} for i in range(messages)]
        t_first = int(time.time() * 1000)
        produce_messages(bootstrap, inp, msgs)
        got = collect(
            bootstrap,
            out,
            dlq,
            lambda c: sum(1 for k in c.results if k.startswith("m-")) + len(c.dead) >= len(msgs),
            600,
            keep_result=lambda r: r["id"].startswith("m-"),
            watch=job.check_alive,
        )
        # read while publishing, so that each result's receipt time is when a read_committed consumer could see it
        expected = len(arrivals(rate, seconds, seed=11))
        with concurrent.futures.ThreadPoolExecutor(1) as reader:
            reading = reader.submit(
                collect,
                bootstrap,
                out,
                dlq,
                lambda c: len(c.results) + len(c.dead) >= expected,
                300 + seconds,
                keep_result=lambda r: r["id"].startswith("s-"),
            )
            steady_ids = publish_steady(bootstrap, inp, bucket, keys, rate, seconds)
            steady = reading.result()
    done = [got.results[m["id"]] for m in msgs if m["id"] in got.results]
    name = label or "the job"
    if len(done) != len(msgs) or got.dead:
        raise SystemExit(f"{name}: only {len(done)} of {len(msgs)} results ({len(got.dead)} dead letters)")
    if len(steady.results) != len(steady_ids) or steady.dead:
        raise SystemExit(f"{name}, steady phase: {len(steady.results)} of {len(steady_ids)} results")
    t_last = max(got.result_times_ms[r["id"]] for r in done)
    legs = [
        (
            r["result_ts_ms"] - r["http_ms"] - r["publish_ts_ms"],
            r["http_ms"],
            steady.result_times_ms[i] - r["result_ts_ms"],
        )
        for i, r in steady.results.items()
    ]
    run = PipelineRun(
        label,
        len(done) / ((t_last - t_first) / 1000),
        [got.result_times_ms[r["id"]] - r["publish_ts_ms"] for r in done],
        [steady.result_times_ms[i] - r["publish_ts_ms"] for i, r in steady.results.items()],
        legs,
        statistics.mean(r.get("batch_size", 1) for r in done),
        [steady.seen_ms[i] - r["publish_ts_ms"] for i, r in steady.results.items()],
    )
    console.print(
        f"{label or 'pipeline'}: burst {run.burst_rate:.1f} img/s; steady p50 "
        f"{percentile(run.steady_lat, 50):.0f} ms, p99 {percentile(run.steady_lat, 99):.0f} ms as written; "
        f"p50 {percentile(run.committed_lat, 50):.0f} ms, p99 {percentile(run.committed_lat, 99):.0f} ms "
        "as committed"
    )
    return run


@dataclass
class SecurityMode:
    """One security mode's stack, its Kafka as the bench reaches it, and what the service and the job are given."""

    name: str
    settings: StackSettings
    service_options: dict
    job_flags: list[str]
    ca_file: str | None = None
    token: str | None = None

    @property
    def kafka(self) -> kafka_io.Target:
        return stack.kafka_admin(self.settings)

    @property
    def tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


def security_mode(name: str, state: Path) -> SecurityMode:
    if name == "plain":
        return SecurityMode(name, StackSettings(), {}, [])
    settings = StackSettings(
        state_dir=state,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_mtls_port=free_port(),
        minio_port=free_port(),
        minio_console_port=free_port(),
        secure=True,
    )
    files = local_security.ensure(settings)
    token = local_security.read_secret(files.service_token_file)
    # the job as the operator (admin.properties): the same TLS and SASL as a team's principal, with no ACL to check
    return SecurityMode(
        name,
        settings,
        {
            "tls": files.service,
            "auth_token": token,
            "minio_secure": True,
            "minio_ca_file": files.ca,
            "minio_secret_key": stack.minio_secret_key(settings),
        },
        [
            "--kafka-config",
            str(files.admin_sasl),
            "--auth-token-file",
            str(files.service_token_file),
            "--http-ca-file",
            str(files.ca),
        ],
        str(files.ca),
        token,
    )


@dataclass
class ModeRun:
    mode: str
    direct_rate: float
    direct_lat: list[float]
    direct_half: list[float]
    pipelines: list[PipelineRun]
    steady_rate: float


def measure_mode(
    mode: SecurityMode, args: argparse.Namespace, variants: list[tuple[str, list[str]]], run: str
) -> ModeRun:
    """The service alone, then each variant of the job through the pipeline, on MODE's stack."""
    settings, kafka = mode.settings, mode.kafka
    started = stack.up(settings, flink=False, log=console.print)
    bucket, topics_made = f"fruit-bench-{run}", []
    measured: list[PipelineRun] = []
    minio = stack.minio_client(settings)
    try:
        minio.make_bucket(bucket)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "adapters.fruit_defect.samples", "--out", tmp, "--count", str(args.images)],
                check=True,
                cwd=REPO_ROOT,
            )
            keys = []
            for path in sorted(Path(tmp).glob("*.jpg")):
                minio.fput_object(bucket, path.name, str(path))
                keys.append(path.name)
        service_log = settings.logs_dir / f"bench-service-{run}-{mode.name}.log"
        with InferenceService(settings, team="fruit", log_path=service_log, **mode.service_options).start() as svc:
            # the service alone, as bench/service.py drives it (a lean keep-alive client: see KeepAliveClient)
            asyncio.run(closed_loop(svc.base_url, bucket, keys, args.capacity, 3.0, mode.tls, mode.token))  # warm-up
            done_n, errors, seconds, direct_lat = asyncio.run(
                closed_loop(svc.base_url, bucket, keys, args.capacity, args.direct_seconds, mode.tls, mode.token)
            )
            if errors:
                raise SystemExit(f"{errors} errors driving the service directly")
            direct_rate = done_n / seconds
            console.print(f"{mode.name}: direct: {direct_rate:.1f} img/s at concurrency {args.capacity}")
            half = args.steady_rate or direct_rate / 2
            direct_half = asyncio.run(
                open_loop(svc.base_url, bucket, keys, half, args.steady_seconds, mode.ca_file, mode.token)
            )
            console.print(f"{mode.name}: direct, open loop at {half:.1f}/s: p50 {percentile(direct_half, 50):.0f} ms")
            for i, (label, flags) in enumerate(variants):
                topics = [f"bench.{role}.{run}.{mode.name}.{i}" for role in ("in", "out", "dlq")]
                topics_made += topics
                kafka_io.create_topics(kafka, topics, partitions=1)
                job_args = [
                    "--bootstrap",
                    settings.bootstrap,
                    "--team",
                    "fruit",
                    "--http-url",
                    f"{svc.base_url}{INFER_JSON_ROUTE}",
                    "--input-topic",
                    topics[0],
                    "--output-topic",
                    topics[1],
                    "--dlq-topic",
                    topics[2],
                    "--group-id",
                    f"bench-{run}-{mode.name}-{i}",
                    "--capacity",
                    str(args.capacity),
                    "--items-per-request",
                    str(args.items_per_request),
                    "--checkpoint-interval-ms",
                    "5000",
                    *mode.job_flags,
                    *args.job_arg,
                    *flags,
                ]
                log = settings.logs_dir / f"bench-dispatcher-{run}-{mode.name}-{i}.log"
                measured.append(
                    measure_pipeline(
                        label, job_args, log, kafka, topics, bucket, keys, args.messages, half, args.steady_seconds
                    )
                )
    finally:
        kafka_io.delete_topics(kafka, topics_made)
        for obj in minio.list_objects(bucket, recursive=True):
            minio.remove_object(bucket, obj.object_name)
        if minio.bucket_exists(bucket):
            minio.remove_bucket(bucket)
        stack.down(settings, started, log=console.print)
    return ModeRun(mode.name, direct_rate, direct_lat, direct_half, measured, half)


def mode_rows(r_mode: ModeRun, args: argparse.Namespace, named: bool) -> list[list[str]]:
    """The table's rows of one mode's run: the service alone, then each pipeline variant against it."""
    tag = f"{r_mode.mode}: " if named else ""
    half = r_mode.steady_rate
    load = "" if args.steady_rate else " (half load)"
    svc_p50, svc_p99 = percentile(r_mode.direct_half, 50), percentile(r_mode.direct_half, 99)
    rows = [
        [
            f"{tag}service direct (HTTP, closed loop, concurrency {args.capacity})",
            f"{r_mode.direct_rate:.1f}",
            "1.00",
            f"{percentile(r_mode.direct_lat, 50):.0f}",
            f"{percentile(r_mode.direct_lat, 99):.0f}",
            "",
            "",
            "",
        ],
        [
            f"{tag}service direct, open loop at {half:.1f}/s{load}",
            "",
            "",
            f"{svc_p50:.0f}",
            f"{svc_p99:.0f}",
            "",
            "",
            "",
        ],
    ]
    for r in r_mode.pipelines:
        name = f"{tag}pipeline{f' ({r.label})' if r.label else ''}"
        p50, p99 = percentile(r.steady_lat, 50), percentile(r.steady_lat, 99)
        legs = " / ".join(f"{percentile([leg[i] for leg in r.legs], 50):.0f}" for i in range(3))
        rows.append(
            [
                f"{name}, burst of {args.messages} (publish -> result)",
                f"{r.burst_rate:.1f}",
                f"{r.burst_rate / r_mode.direct_rate:.2f}",
                f"{percentile(r.burst_lat, 50):.0f}",
                f"{percentile(r.burst_lat, 99):.0f}",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"{name}, steady at {half:.1f}/s{load} (publish -> result)",
                "",
                "",
                f"{p50:.0f}",
                f"{p99:.0f}",
                f"**{p50 - svc_p50:+.0f}**",
                f"**{p99 - svc_p99:+.0f}**",
                legs,
            ]
        )
        c50, c99 = percentile(r.committed_lat, 50), percentile(r.committed_lat, 99)
        rows.append(
            [
                f"{name}, steady, as committed (publish -> a read_committed consumer has it)",
                "",
                "",
                f"{c50:.0f}",
                f"{c99:.0f}",
                f"{c50 - svc_p50:+.0f}",
                f"{c99 - svc_p99:+.0f}",
                "",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=32, help="dispatcher in-flight = direct concurrency")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--images", type=int, default=16, help="distinct sample images to cycle through")
    parser.add_argument("--direct-seconds", type=float, default=15.0, help="how long to drive the service alone")
    parser.add_argument("--steady-seconds", type=float, default=20.0, help="how long the half-load phases last")
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=0.0,
        help="the steady phases' rate, msg/s, the same in "
        "every mode (to compare modes at one load); default 0: half of each mode's direct rate",
    )
    parser.add_argument("--job-arg", action="append", default=[], help="extra dispatcher argument (repeatable)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FLAGS",
        help="the job with these extra flags, labelled (repeatable; default: the job as it is)",
    )
    parser.add_argument(
        "--security",
        default="plain",
        help="comma-separated modes, each on its own stack: plain "
        "(the local stack) | secured (SASL_SSL, ACLs, TLS everywhere, a token)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("", [])]
    modes = [m.strip() for m in args.security.split(",") if m.strip()]
    if not modes or set(modes) - {"plain", "secured"}:
        parser.error("--security takes plain, secured or both")

    run = uuid.uuid4().hex[:8]
    subprocess.run([sys.executable, "-m", "adapters.fruit_defect.train"], check=True, cwd=REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="imagery-bench-secured-") as state:
        runs = [measure_mode(security_mode(m, Path(state)), args, variants, run) for m in modes]

    headers = [
        "path",
        "img/s",
        "of direct",
        "p50 ms",
        "p99 ms",
        "p50 - service's",
        "p99 - service's",
        "legs p50 ms: to the call / the call / to the broker",
    ]
    rows = []
    for mode_run in runs:
        rows += mode_rows(mode_run, args, len(runs) > 1)
    table = Table(
        title=f"pipeline vs direct, fruit model, capacity {args.capacity}, items/request {args.items_per_request}"
    )
    for col in headers:
        table.add_column(col, justify="right")
    md = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    for cells in rows:
        table.add_row(*(c.replace("**", "") for c in cells))
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    summary = (
        "Goals: pipeline / direct >= 0.90 (burst); at half load the pipeline's p50 within 50 ms of the "
        "service's own and its p99 within 150 ms. Mean batch size seen by results: "
        + ", ".join(
            f"{m.mode + ' ' if len(runs) > 1 else ''}{r.label or 'pipeline'} {r.mean_batch:.1f}"
            for m in runs
            for r in m.pipelines
        )
        + "."
    )
    console.print(summary)
    if not args.no_record:
        extra = (
            "".join(f" --job-arg={a}" for a in args.job_arg)
            + "".join(f" --variant '{v}'" for v in args.variant)
            + (f" --security {args.security}" if args.security != "plain" else "")
            + (f" --steady-rate {args.steady_rate:g}" if args.steady_rate else "")
        )
        append_results(
            f"Pipeline vs direct service ({args.messages} messages, items/request {args.items_per_request})",
            "\n".join(md) + "\n\n" + summary,
            notes=f"Command: `.venv/bin/python bench/pipeline.py --messages {args.messages} --capacity "
            f"{args.capacity} --items-per-request {args.items_per_request}{extra}`. Pipeline latency "
            "is publish_ts_ms to the result's broker timestamp; its legs come from each result's "
            "result_ts_ms and http_ms.",
        )


if __name__ == "__main__":
    main()
