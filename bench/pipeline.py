"""End-to-end pipeline benchmark: Kafka -> PyFlink dispatcher -> fruit service -> Kafka, against the service
driven directly at the same concurrency, in the same run, on the same machine. The ratios are the figures.

    .venv/bin/python bench/pipeline.py [--messages 400] [--capacity 32] [--items-per-request 1]

1. Saturation: a burst of --messages through the pipeline vs the service driven directly by --capacity clients.
   Throughput = messages / (last result time - first publish time).
2. Half that load, steady (Poisson arrivals at half the direct rate, for --steady-seconds): the service's own p50
   driven directly in open loop vs the pipeline's p50 from publish_ts_ms to the result's broker timestamp.
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
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=32, help="dispatcher in-flight = direct concurrency")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--images", type=int, default=16, help="distinct sample images to cycle through")
    parser.add_argument("--direct-seconds", type=float, default=15.0, help="how long to drive the service alone")
    parser.add_argument("--steady-seconds", type=float, default=20.0, help="how long the half-load phases last")
    parser.add_argument("--job-arg", action="append", default=[], help="extra dispatcher argument (repeatable)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    settings = StackSettings()
    started = stack.up(settings, flink=False, log=console.print)
    run = uuid.uuid4().hex[:8]
    bucket, topics_made = f"fruit-bench-{run}", []
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
        inp, out, dlq = (f"bench.in.{run}", f"bench.out.{run}", f"bench.dlq.{run}")
        topics_made = [inp, out, dlq]
        kafka_io.create_topics(settings.bootstrap, topics_made, partitions=1)

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

            job_args = ["--bootstrap", settings.bootstrap, "--team", "fruit", "--http-url",
                        f"{svc.base_url}{INFER_JSON_ROUTE}", "--input-topic", inp, "--output-topic", out,
                        "--dlq-topic", dlq, "--group-id", f"bench-{run}", "--capacity", str(args.capacity),
                        "--items-per-request", str(args.items_per_request), "--checkpoint-interval-ms", "5000",
                        *args.job_arg]
            with DispatcherProcess(job_args, settings.logs_dir / f"bench-dispatcher-{run}.log") as job:
                warm = [{"id": f"warm-{i}", "bucket": bucket, "key": keys[0]} for i in range(16)]
                produce_messages(settings.bootstrap, inp, warm)
                collect(settings.bootstrap, out, dlq, lambda c: len(c.results) >= len(warm), 300,
                        watch=job.check_alive)
                msgs = [{"id": f"m-{i}", "bucket": bucket, "key": keys[i % len(keys)]} for i in range(args.messages)]
                t_first = int(time.time() * 1000)
                produce_messages(settings.bootstrap, inp, msgs)
                got = collect(settings.bootstrap, out, dlq,
                              lambda c: sum(1 for k in c.results if k.startswith("m-")) + len(c.dead) >= len(msgs),
                              600, keep_result=lambda r: r["id"].startswith("m-"), watch=job.check_alive)
                steady_ids = publish_steady(settings.bootstrap, inp, bucket, keys, half, args.steady_seconds)
                steady = collect(settings.bootstrap, out, dlq,
                                 lambda c: len(c.results) + len(c.dead) >= len(steady_ids), 300,
                                 keep_result=lambda r: r["id"].startswith("s-"), watch=job.check_alive)
        done = [got.results[m["id"]] for m in msgs if m["id"] in got.results]
        if len(done) != len(msgs) or got.dead:
            raise SystemExit(f"only {len(done)} of {len(msgs)} results ({len(got.dead)} dead letters)")
        t_last = max(got.result_times_ms[r["id"]] for r in done)
        pipe_rate = len(done) / ((t_last - t_first) / 1000)
        e2e = [got.result_times_ms[r["id"]] - r["publish_ts_ms"] for r in done]
        if len(steady.results) != len(steady_ids) or steady.dead:
            raise SystemExit(f"steady phase: {len(steady.results)} of {len(steady_ids)} results")
        e2e_half = [steady.result_times_ms[i] - r["publish_ts_ms"] for i, r in steady.results.items()]
    finally:
        kafka_io.delete_topics(settings.bootstrap, topics_made)
        for obj in minio.list_objects(bucket, recursive=True):
            minio.remove_object(bucket, obj.object_name)
        if minio.bucket_exists(bucket):
            minio.remove_bucket(bucket)
        stack.down(settings, started, log=console.print)

    half = direct_rate / 2
    rows = [
        (f"service direct (HTTP, closed loop, concurrency {args.capacity})", direct_rate, direct_lat),
        (f"pipeline, burst of {args.messages} (publish -> result; capacity {args.capacity})", pipe_rate, e2e),
        (f"service direct, open loop at {half:.1f}/s (half load)", None, direct_half),
        (f"pipeline, steady at {half:.1f}/s (half load; publish -> result)", None, e2e_half),
    ]
    table = Table(title=f"pipeline vs direct, fruit model, capacity {args.capacity}, items/request "
                        f"{args.items_per_request}")
    md = ["| path | img/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for col in ("path", "img/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for name, rate, lat in rows:
        cells = [name, "" if rate is None else f"{rate:.1f}", f"{percentile(lat, 50):.0f}",
                 f"{percentile(lat, 99):.0f}"]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    ratio = pipe_rate / direct_rate
    p50_gap = percentile(e2e_half, 50) - percentile(direct_half, 50)
    summary = (f"**pipeline / direct = {ratio:.2f}** (goal >= 0.90); at half load the pipeline's p50 is "
               f"**{p50_gap:+.0f} ms** from the service's own (goal within 50 ms); mean batch size seen by results: "
               f"{statistics.mean(r.get('batch_size', 1) for r in done):.1f}")
    console.print(summary)
    if not args.no_record:
        extra = f" {' '.join('--job-arg=' + a for a in args.job_arg)}" if args.job_arg else ""
        append_results(f"Pipeline vs direct service ({args.messages} messages, items/request "
                       f"{args.items_per_request})", "\n".join(md) + "\n\n" + summary,
                       notes=f"Command: `.venv/bin/python bench/pipeline.py --messages {args.messages} --capacity "
                             f"{args.capacity} --items-per-request {args.items_per_request}{extra}`. Pipeline latency "
                             "is publish_ts_ms to the result's broker timestamp.")


if __name__ == "__main__":
    main()
