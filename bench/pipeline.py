"""End-to-end pipeline benchmark: Kafka -> PyFlink dispatcher -> fruit service -> Kafka, against the service
driven directly at the same concurrency, in the same run, on the same machine. The ratio is the figure.

    .venv/bin/python bench/pipeline.py [--messages 400] [--capacity 32] [--items-per-request 1]

Throughput = messages / (last result time - first publish time); latency = result broker timestamp - publish_ts_ms.
"""

from __future__ import annotations

import argparse
import asyncio
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
from streaming import kafka_io  # noqa: E402
from streaming.local import stack  # noqa: E402
from streaming.local.inference_service import InferenceService  # noqa: E402
from streaming.local.settings import StackSettings  # noqa: E402
from streaming.pipeline_run import REPO_ROOT, DispatcherProcess, collect, produce_messages  # noqa: E402

console = Console()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--capacity", type=int, default=32, help="dispatcher in-flight = direct concurrency")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--images", type=int, default=16, help="distinct sample images to cycle through")
    parser.add_argument("--direct-seconds", type=float, default=15.0, help="how long to drive the service alone")
    args = parser.parse_args()

    settings = StackSettings()
    started = stack.up(settings, flink=False, log=console.print)
    run = uuid.uuid4().hex[:8]
    bucket, topics_made = f"fruit-bench-{run}", []
    minio = stack.minio_client(settings)
    try:
        subprocess.run([sys.executable, "-m", "adapters.fruit_defect.train", "--out",
                        str(REPO_ROOT / "weights" / "fruit_cls_best.ts")], check=True, cwd=REPO_ROOT)
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

            job_args = ["--bootstrap", settings.bootstrap, "--team", "fruit", "--http-url",
                        f"{svc.base_url}/infer_json", "--input-topic", inp, "--output-topic", out,
                        "--dlq-topic", dlq, "--group-id", f"bench-{run}", "--capacity", str(args.capacity),
                        "--items-per-request", str(args.items_per_request), "--checkpoint-interval-ms", "5000"]
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
        done = [got.results[m["id"]] for m in msgs if m["id"] in got.results]
        if len(done) != len(msgs) or got.dead:
            raise SystemExit(f"only {len(done)} of {len(msgs)} results ({len(got.dead)} dead letters)")
        t_last = max(got.result_times_ms[r["id"]] for r in done)
        pipe_rate = len(done) / ((t_last - t_first) / 1000)
        e2e = [got.result_times_ms[r["id"]] - r["publish_ts_ms"] for r in done]
    finally:
        kafka_io.delete_topics(settings.bootstrap, topics_made)
        for obj in minio.list_objects(bucket, recursive=True):
            minio.remove_object(bucket, obj.object_name)
        if minio.bucket_exists(bucket):
            minio.remove_bucket(bucket)
        stack.down(settings, started, log=console.print)

    table = Table(title=f"pipeline vs direct, fruit model, {args.messages} messages, "
                        f"concurrency/capacity {args.capacity}, items/request {args.items_per_request}")
    for col in ("path", "img/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_row("service direct (/infer_json, closed loop)", f"{direct_rate:.1f}",
                  f"{percentile(direct_lat, 50):.0f}",
                  f"{percentile(direct_lat, 99):.0f}")
    table.add_row("pipeline (Kafka -> Flink -> HTTP -> Kafka)", f"{pipe_rate:.1f}", f"{percentile(e2e, 50):.0f}",
                  f"{percentile(e2e, 99):.0f}")
    console.print(table)
    ratio = pipe_rate / direct_rate
    console.print(f"pipeline / direct = {ratio:.2f}; mean batch size seen by results: "
                  f"{statistics.mean(r.get('batch_size', 1) for r in done):.1f}")
    md = ("| path | img/s | p50 ms | p99 ms |\n|---|---:|---:|---:|\n"
          f"| service direct (HTTP, closed loop, concurrency {args.capacity}) | {direct_rate:.1f} | "
          f"{percentile(direct_lat, 50):.0f} | {percentile(direct_lat, 99):.0f} |\n"
          f"| pipeline end to end (publish -> result; capacity {args.capacity}) | {pipe_rate:.1f} | "
          f"{percentile(e2e, 50):.0f} | {percentile(e2e, 99):.0f} |\n\n"
          f"**pipeline / direct = {ratio:.2f}**")
    append_results(f"Pipeline vs direct service ({args.messages} messages, items/request "
                   f"{args.items_per_request})", md,
                   notes=f"Command: `.venv/bin/python bench/pipeline.py --messages {args.messages} --capacity "
                         f"{args.capacity} --items-per-request {args.items_per_request}`. Latency in the pipeline "
                         "row is publish_ts_ms to the result's broker timestamp; all messages published at once.")


if __name__ == "__main__":
    main()
