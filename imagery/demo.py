"""`imagery demo`: the whole pipeline on this machine, on generated fruit images, including a few bad messages.

Stack up -> sample images to MinIO -> fruit service -> dispatcher (MiniCluster) -> messages -> tables -> stop.
The service and the sample generator are started as processes (by module path), never imported: this side of
the project talks to the service over HTTP only.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from imagery import kafka_io
from imagery.local import stack
from imagery.local.inference_service import InferenceService
from imagery.local.settings import StackSettings
from imagery.pipeline_run import REPO_ROOT, Collected, DispatcherProcess, collect, produce_messages
from imagery.repo import WEIGHTS_DIR
from imagery.teams import team_named
from schemas import INFER_JSON_ROUTE, topics

TEAM = "fruit"
DEMO_BUCKET = "fruit-demo"  # a team reads its own buckets (ALLOWED_BUCKETS: fruit, fruit-*)
WEIGHTS = WEIGHTS_DIR / team_named(TEAM).weights  # deploy/teams.yaml: the file compose mounts for the team


def _sample_images(count: int, out_dir: Path) -> list[Path]:
    subprocess.run(
        [sys.executable, "-m", "adapters.fruit_defect.samples", "--out", str(out_dir), "--count", str(count)],
        check=True,
        cwd=REPO_ROOT,
    )
    return sorted(out_dir.glob("*.jpg"))


def run_demo(count: int = 12, console: Console | None = None, timeout_s: float = 300) -> bool:
    console = console or Console()
    settings = StackSettings()
    run = uuid.uuid4().hex[:6]
    started = stack.up(settings, flink=False, log=console.print)
    logs = settings.logs_dir
    try:
        subprocess.run(
            [sys.executable, "-m", "adapters.fruit_defect.train", "--out", str(WEIGHTS)], check=True, cwd=REPO_ROOT
        )
        minio = stack.minio_client(settings)
        if not minio.bucket_exists(DEMO_BUCKET):
            minio.make_bucket(DEMO_BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            images = _sample_images(count, Path(tmp))
            for path in images:
                minio.fput_object(DEMO_BUCKET, f"{run}/{path.name}", str(path), content_type="image/jpeg")
        minio.put_object(DEMO_BUCKET, f"{run}/notes.jpg", io.BytesIO(b"not an image"), 12)
        console.print(f"uploaded {len(images)} sample images + 1 non-image to s3://{DEMO_BUCKET}/{run}/")

        inp, out = topics.input_topic(TEAM), topics.result_topic(TEAM)
        kafka_io.create_topics(settings.bootstrap, [inp, out, topics.DLQ_TOPIC])
        messages: list[dict | bytes] = [
            {"id": f"{run}-{p.stem}", "bucket": DEMO_BUCKET, "key": f"{run}/{p.name}", "camera": "demo-cam"}
            for p in images
        ]
        messages += [
            f"this is not JSON ({run})".encode(),
            {"id": f"{run}-no-bucket", "key": f"{run}/x.jpg"},
            {"id": f"{run}-missing", "bucket": DEMO_BUCKET, "key": f"{run}/does-not-exist.jpg"},
            {"id": f"{run}-not-image", "bucket": DEMO_BUCKET, "key": f"{run}/notes.jpg"},
        ]
        console.print("starting the fruit inference service (loads and warms the model) ...")
        with InferenceService(settings, team=TEAM, log_path=logs / f"demo-service-{run}.log").start() as service:
            console.print(f"service ready at {service.base_url}; starting the dispatcher (Flink MiniCluster) ...")
            args = [
                "--bootstrap",
                settings.bootstrap,
                "--team",
                TEAM,
                "--http-url",
                f"{service.base_url}{INFER_JSON_ROUTE}",
                "--checkpoint-interval-ms",
                "2000",
            ]
            with DispatcherProcess(args, logs / f"demo-dispatcher-{run}.log") as job:
                # the first message waits for the job to start (tens of seconds on a MiniCluster), then the rest
                # are published, so their end-to-end times show the pipeline, not the JVM starting
                t0 = time.monotonic()
                first = messages[0]
                assert isinstance(first, dict)  # the images' messages come first
                produce_messages(settings.bootstrap, inp, messages[:1])
                collect(
                    settings.bootstrap,
                    out,
                    topics.DLQ_TOPIC,
                    done=lambda c: bool(c.results or c.dead),
                    timeout_s=timeout_s,
                    keep_result=lambda r: r.get("id") == first["id"],
                    keep_dead=lambda d: run in (d.original_value_text or ""),
                    watch=job.check_alive,
                )
                console.print(f"dispatcher running after {time.monotonic() - t0:.0f}s")
                t0 = time.monotonic()
                produce_messages(settings.bootstrap, inp, messages[1:])
                console.print(f"produced {len(messages)} messages to {inp}; waiting for every one to land ...")
                got = collect(
                    settings.bootstrap,
                    out,
                    topics.DLQ_TOPIC,
                    done=lambda c: len(c.results) + len(c.dead) >= len(messages),
                    timeout_s=timeout_s,
                    keep_result=lambda r: str(r.get("id", "")).startswith(run),
                    keep_dead=lambda d: run in (d.original_value_text or ""),
                    watch=job.check_alive,
                )
        _print_tables(console, got, time.monotonic() - t0)
        ok = len(got.results) + len(got.dead) == len(messages)
        if not ok:
            console.print(f"[red]only {len(got.results) + len(got.dead)} of {len(messages)} messages landed[/red]")
        return ok
    finally:
        stack.down(settings, started, log=console.print)


def _print_tables(console: Console, got: Collected, seconds: float) -> None:
    results = Table(title=f"inference.results.{TEAM} ({len(got.results)} results)")
    for col in ("key", "label", "score", "batch", "service ms", "end-to-end ms"):
        results.add_column(col, no_wrap=col == "key")
    for _, r in sorted(got.results.items()):
        results.add_row(
            r["key"],
            r["label"],
            f"{r['score']:.3f}",
            str(r.get("batch_size", "")),
            f"{r['timings']['total_ms']:.1f}",
            f"{r.get('e2e_ms') or 0:.0f}",
        )
    console.print(results)
    dead = Table(title=f"{topics.DLQ_TOPIC} ({len(got.dead)} dead letters)")
    for col in ("offset", "stage", "http", "tries", "error", "original value"):
        dead.add_column(col, overflow="fold")
    for d in got.dead:
        dead.add_row(
            str(d.source.offset),
            d.error.stage,
            str(d.error.http_status or "-"),
            str(d.error.attempts),
            f"{d.error.type}: {d.error.message[:70]}",
            (d.original_value_text or "<binary>")[:50],
        )
    console.print(dead)
    console.print(f"all {len(got.results) + len(got.dead)} messages landed in {seconds:.1f}s")
