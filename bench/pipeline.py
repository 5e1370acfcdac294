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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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
from imagery.local import stack  # noqa: E402
from imagery.local.inference_service import InferenceService  # noqa: E402
from imagery.local.settings import StackSettings  # noqa: E402
from imagery.pipeline_run import REPO_ROOT, DispatcherProcess, collect, produce_messages  # noqa: E402
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


async def open_loop(base_url: str, bucket: str, keys: list[str], rate: float, seconds: float) -> list[float]:
    """Requests sent on a Poisson schedule whatever the answers: latency as a producer of messages sees it."""
    pool = KeepAlivePool(base_url, max_connections=256)
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


def publish_steady(bootstrap: str, topic: str, bucket: str, keys: list[str], rate: float, seconds: float) -> list[str]:
    """Publish on a Poisson schedule, each message stamped with its own publish time."""

    producer = kafka_io.producer(bootstrap, config={"linger.ms": 0})
    ids, started = [], time.perf_counter()
    for i, at in enumerate(arrivals(rate, seconds, seed=11)):
        while (wait := started + at - time.perf_counter()) > 0:
            producer.poll(min(wait, 0.005))
        msg_id = f"s-{i}"
        producer.produce(topic, key=msg_id.encode(), value=json.dumps({
            "id": msg_id, "bucket": bucket, "key": keys[i % len(keys)], "publish_ts_ms": int(time.time() * 1000)}))
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


def measure_pipeline(label: str, job_args: list[str], log: Path, bootstrap: str, topics: list[str], bucket: str,
                     keys: list[str], messages: int, rate: float, seconds: float) -> PipelineRun:
    """One job: a burst of `messages` (its pace), then Poisson arrivals at `rate` for `seconds` (its latency)."""
    inp, out, dlq = topics
    with DispatcherProcess(job_args, log) as job:
        warm = [{"id": f"warm-{i}", "bucket": bucket, "key": keys[0]} for i in range(16)]
        produce_messages(bootstrap, inp, warm)
        collect(bootstrap, out, dlq, lambda c: len(c.results) >= len(warm), 300, watch=job.check_alive)
        msgs = [{"id": f"m-{i}", "bucket": bucket, "key": keys[i % len(keys)]} for i in range(messages)]
        t_first = int(time.time() * 1000)
        produce_messages(bootstrap, inp, msgs)
        got = collect(bootstrap, out, dlq,
                      lambda c: sum(1 for k in c.results if k.startswith("m-")) + len(c.dead) >= len(msgs),
                      600, keep_result=lambda r: r["id"].startswith("m-"), watch=job.check_alive)
        steady_ids = publish_steady(bootstrap, inp, bucket, keys, rate, seconds)
        steady = collect(bootstrap, out, dlq, lambda c: len(c.results) + len(c.dead) >= len(steady_ids), 300,
                         keep_result=lambda r: r["id"].startswith("s-"), watch=job.check_alive)
    done = [got.results[m["id"]] for m in msgs if m["id"] in got.results]
    name = label or "the job"
    if len(done) != len(msgs) or got.dead:
        raise SystemExit(f"{name}: only {len(done)} of {len(msgs)} results ({len(got.dead)} dead letters)")
    if len(steady.results) != len(steady_ids) or steady.dead:
        raise SystemExit(f"{name}, steady phase: {len(steady.results)} of {len(steady_ids)} results")
    t_last = max(got.result_times_ms[r["id"]] for r in done)
    legs = [(r["result_ts_ms"] - r["http_ms"] - r["publish_ts_ms"], r["http_ms"],
             steady.result_times_ms[i] - r["result_ts_ms"]) for i, r in steady.results.items()]
    run = PipelineRun(
        label, len(done) / ((t_last - t_first) / 1000),
        [got.result_times_ms[r["id"]] - r["publish_ts_ms"] for r in done],
        [steady.result_times_ms[i] - r["publish_ts_ms"] for i, r in steady.results.items()], legs,
        statistics.mean(r.get("batch_size", 1) for r in done))
    console.print(f"{label or 'pipeline'}: burst {run.burst_rate:.1f} img/s; steady p50 "
                  f"{percentile(run.steady_lat, 50):.0f} ms, p99 {percentile(run.steady_lat, 99):.0f} ms")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=32, help="dispatcher in-flight = direct concurrency")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--images", type=int, default=16, help="distinct sample images to cycle through")
    parser.add_argument("--direct-seconds", type=float, default=15.0, help="how long to drive the service alone")
    parser.add_argument("--steady-seconds", type=float, default=20.0, help="how long the half-load phases last")
    parser.add_argument("--job-arg", action="append", default=[], help="extra dispatcher argument (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                        help="the job with these extra flags, labelled (repeatable; default: the job as it is)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("", [])]

    settings = StackSettings()
    started = stack.up(settings, flink=False, log=console.print)
    run = uuid.uuid4().hex[:8]
    bucket, topics_made = f"fruit-bench-{run}", []
    measured: list[PipelineRun] = []
    minio = stack.minio_client(settings)
    try:
        subprocess.run([sys.executable, "-m", "adapters.fruit_defect.train"], check=True, cwd=REPO_ROOT)
        minio.make_bucket(bucket)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "adapters.fruit_defect.samples", "--out", tmp,
                            "--count", str(args.images)], check=True, cwd=REPO_ROOT)
            keys = []
            for path in sorted(Path(tmp).glob("*.jpg")):
                minio.fput_object(bucket, path.name, str(path))
                keys.append(path.name)
        service_log = settings.logs_dir / f"bench-service-{run}.log"
        with InferenceService(settings, team="fruit", log_path=service_log).start() as svc:
            # the service alone, as bench/service.py drives it (a lean keep-alive client: see KeepAliveClient)
            asyncio.run(closed_loop(svc.base_url, bucket, keys, args.capacity, 3.0))  # warm-up
            done_n, errors, seconds, direct_lat = asyncio.run(
                closed_loop(svc.base_url, bucket, keys, args.capacity, args.direct_seconds))
            if errors:
                raise SystemExit(f"{errors} errors driving the service directly")
            direct_rate = done_n / seconds
            console.print(f"direct: {direct_rate:.1f} img/s at concurrency {args.capacity}")
            half = direct_rate / 2
            direct_half = asyncio.run(open_loop(svc.base_url, bucket, keys, half, args.steady_seconds))
            console.print(f"direct, open loop at {half:.1f}/s: p50 {percentile(direct_half, 50):.0f} ms")
            for i, (label, flags) in enumerate(variants):
                topics = [f"bench.{role}.{run}.{i}" for role in ("in", "out", "dlq")]
                topics_made += topics
                kafka_io.create_topics(settings.bootstrap, topics, partitions=1)
                job_args = ["--bootstrap", settings.bootstrap, "--team", "fruit", "--http-url",
                            f"{svc.base_url}{INFER_JSON_ROUTE}", "--input-topic", topics[0], "--output-topic",
                            topics[1], "--dlq-topic", topics[2], "--group-id", f"bench-{run}-{i}", "--capacity",
                            str(args.capacity), "--items-per-request", str(args.items_per_request),
                            "--checkpoint-interval-ms", "5000", *args.job_arg, *flags]
                log = settings.logs_dir / f"bench-dispatcher-{run}-{i}.log"
                measured.append(measure_pipeline(label, job_args, log, settings.bootstrap, topics, bucket, keys,
                                                 args.messages, half, args.steady_seconds))
    finally:
        kafka_io.delete_topics(settings.bootstrap, topics_made)
        for obj in minio.list_objects(bucket, recursive=True):
            minio.remove_object(bucket, obj.object_name)
        if minio.bucket_exists(bucket):
            minio.remove_bucket(bucket)
        stack.down(settings, started, log=console.print)

    half = direct_rate / 2
    svc_p50, svc_p99 = percentile(direct_half, 50), percentile(direct_half, 99)
    headers = ["path", "img/s", "of direct", "p50 ms", "p99 ms", "p50 - service's", "p99 - service's",
               "legs p50 ms: to the call / the call / to the broker"]
    rows = [[f"service direct (HTTP, closed loop, concurrency {args.capacity})", f"{direct_rate:.1f}", "1.00",
             f"{percentile(direct_lat, 50):.0f}", f"{percentile(direct_lat, 99):.0f}", "", "", ""],
            [f"service direct, open loop at {half:.1f}/s (half load)", "", "", f"{svc_p50:.0f}", f"{svc_p99:.0f}",
             "", "", ""]]
    for r in measured:
        name = f"pipeline{f' ({r.label})' if r.label else ''}"
        p50, p99 = percentile(r.steady_lat, 50), percentile(r.steady_lat, 99)
        legs = " / ".join(f"{percentile([leg[i] for leg in r.legs], 50):.0f}" for i in range(3))
        rows.append([f"{name}, burst of {args.messages} (publish -> result)", f"{r.burst_rate:.1f}",
                     f"{r.burst_rate / direct_rate:.2f}", f"{percentile(r.burst_lat, 50):.0f}",
                     f"{percentile(r.burst_lat, 99):.0f}", "", "", ""])
        rows.append([f"{name}, steady at {half:.1f}/s (half load; publish -> result)", "", "", f"{p50:.0f}",
                     f"{p99:.0f}", f"**{p50 - svc_p50:+.0f}**", f"**{p99 - svc_p99:+.0f}**", legs])
    table = Table(title=f"pipeline vs direct, fruit model, capacity {args.capacity}, items/request "
                        f"{args.items_per_request}")
    for col in headers:
        table.add_column(col, justify="right")
    md = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    for cells in rows:
        table.add_row(*(c.replace("**", "") for c in cells))
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    summary = ("Goals: pipeline / direct >= 0.90 (burst); at half load the pipeline's p50 within 50 ms of the "
               "service's own and its p99 within 150 ms. Mean batch size seen by results: "
               + ", ".join(f"{r.label or 'pipeline'} {r.mean_batch:.1f}" for r in measured) + ".")
    console.print(summary)
    if not args.no_record:
        extra = "".join(f" --job-arg={a}" for a in args.job_arg) + "".join(f" --variant '{v}'" for v in args.variant)
        append_results(f"Pipeline vs direct service ({args.messages} messages, items/request "
                       f"{args.items_per_request})", "\n".join(md) + "\n\n" + summary,
                       notes=f"Command: `.venv/bin/python bench/pipeline.py --messages {args.messages} --capacity "
                             f"{args.capacity} --items-per-request {args.items_per_request}{extra}`. Pipeline latency "
                             "is publish_ts_ms to the result's broker timestamp; its legs come from each result's "
                             "result_ts_ms and http_ms.")

if __name__ == "__main__":
    main()
