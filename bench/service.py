"""Inference service benchmark: dynamic batching on vs off, same images, same machine, one run.

    .venv/bin/python bench/service.py [--concurrency 1,4,16,32] [--duration 6] [--team fruit]

It starts one service process per mode (InferenceService) against the local stack's MinIO ("off" is
MAX_BATCH_SIZE=1), then for each concurrency, alternating the modes, runs a closed loop of that many clients
posting /infer_json for `--duration` seconds (after a short warm-up), and reports images/s, client-side
p50/p99 latency and the mean forward-pass size (from the service's batch-size histogram). The on/off
throughput ratio at each concurrency is the figure. The table is appended to bench/RESULTS.md.

The load generator runs on the same machine as the service; on a small machine it takes a real share of
the CPU, in both modes alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.fruit_defect.samples import KINDS, make_image  # noqa: E402
from bench.results import append_results, markdown_table  # noqa: E402
from streaming.local import stack  # noqa: E402
from streaming.local.inference_service import REPO_ROOT, InferenceService  # noqa: E402
from streaming.local.settings import StackSettings  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI: no wrapping at 80 columns

WEIGHTS = {  # team -> (weights file, the command that makes it)
    "fruit": ("weights/fruit_cls_best.ts", ["-m", "adapters.fruit_defect.train", "--out"]),
    "resnet50": ("weights/resnet50.pt", ["-m", "adapters.resnet50_weights", "--out"]),
}


@dataclass
class Point:
    mode: str
    concurrency: int
    images: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    forward_passes: float  # from the service's inference_batch_size histogram
    images_in_passes: float

    def merge(self, other: Point) -> Point:
        """Two measurements of the same point, pooled: counts and seconds add up, latencies join."""
        return Point(self.mode, self.concurrency, self.images + other.images, self.errors + other.errors,
                     self.seconds + other.seconds, self.latencies_ms + other.latencies_ms,
                     self.forward_passes + other.forward_passes, self.images_in_passes + other.images_in_passes)

    @property
    def mean_batch(self) -> float:
        return self.images_in_passes / self.forward_passes if self.forward_passes else float("nan")

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


def ensure_weights(team: str) -> str:
    path, command = WEIGHTS[team]
    subprocess.run([sys.executable, *command, path], cwd=REPO_ROOT, check=True)
    return str(REPO_ROOT / path)


def batch_histogram(client: httpx.Client) -> tuple[float, float]:
    text = client.get("/metrics").text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values.get("inference_batch_size_count", 0.0), values.get("inference_batch_size_sum", 0.0)


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection that posts JSON: the load generator's whole HTTP client.

    Not httpx: on this 2-core machine httpx's async connection pool spent more CPU per request than the
    service did at 32 clients (and added seconds to the p99), so the generator, not the service, was measured.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self._writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        return status, await self._reader.readexactly(length)  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


async def closed_loop(base_url: str, bucket: str, keys: list[str], concurrency: int,
                      seconds: float) -> tuple[int, int, float, list[float]]:
    """`concurrency` clients, each posting its next request as soon as the last one answered."""
    url = httpx.URL(base_url)
    latencies: list[float] = []
    counter = itertools.count()
    errors = 0
    started = time.monotonic()
    end = started + seconds

    async def client_loop() -> None:
        nonlocal errors
        client = KeepAliveClient(url.host, url.port or 80)
        try:
            while time.monotonic() < end:
                key = keys[next(counter) % len(keys)]
                sent = time.perf_counter()
                status, _ = await client.post_json("/infer_json", {"bucket": bucket, "key": key})
                if status == 200:
                    latencies.append((time.perf_counter() - sent) * 1000)
                else:
                    errors += 1
        finally:
            await client.close()

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return len(latencies), errors, time.monotonic() - started, latencies


def measure(service: InferenceService, mode: str, bucket: str, keys: list[str], concurrency: int,
            seconds: float, warmup_s: float) -> Point:
    asyncio.run(closed_loop(service.base_url, bucket, keys, concurrency, warmup_s))
    with httpx.Client(base_url=service.base_url) as client:
        passes_before, images_before = batch_histogram(client)
        done, errors, elapsed, latencies = asyncio.run(
            closed_loop(service.base_url, bucket, keys, concurrency, seconds))
        passes_after, images_after = batch_histogram(client)
    return Point(mode, concurrency, done, errors, elapsed, latencies, passes_after - passes_before,
                 images_after - images_before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--team", choices=sorted(WEIGHTS), default="fruit")
    parser.add_argument("--concurrency", default="1,4,16,32", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per mode and point (pooled)")
    parser.add_argument("--images", type=int, default=64, help="distinct objects uploaded and cycled through")
    parser.add_argument("--image-size", type=int, default=256, help="width and height of the JPEGs")
    parser.add_argument("--max-batch-size", type=int, default=32, help="MAX_BATCH_SIZE with batching on")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="MAX_BATCH_DELAY_MS with batching on")
    parser.add_argument("--modes", default="on,off", help="which of on,off to run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra service setting for both modes (repeatable), e.g. --env FETCH_CONCURRENCY=8")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in ("on", "off") if m in args.modes.split(",")]

    settings = StackSettings()
    try:
        stack.minio_bucket_call(settings)
    except Exception as exc:  # noqa: BLE001  (any failure means: no MinIO to benchmark against)
        raise SystemExit(f"MinIO at {settings.minio_endpoint} does not answer ({exc}); "
                         "start it: `imagery up`") from None
    weights = ensure_weights(args.team)
    minio = stack.minio_client(settings)
    bucket = f"{args.team}-bench-{uuid.uuid4().hex[:8]}"  # the team's own (ALLOWED_BUCKETS)
    minio.make_bucket(bucket)
    env_common = {"MAX_QUEUE": str(max(256, 2 * max(concurrencies))), "REQUEST_TIMEOUT_MS": "60000",
                  **dict(item.split("=", 1) for item in args.env)}
    env_by_mode = {"on": {"MAX_BATCH_SIZE": str(args.max_batch_size), "MAX_BATCH_DELAY_MS": str(args.delay_ms)},
                   "off": {"MAX_BATCH_SIZE": "1", "MAX_BATCH_DELAY_MS": "0"}}
    points: dict[tuple[str, int], Point] = {}
    try:
        keys = []
        for i in range(args.images):
            kind = KINDS[i % 2]
            data = make_image(kind, 3_000_000 + i, args.image_size)
            keys.append(f"{kind}-{i:04d}.jpg")
            minio.put_object(bucket, keys[-1], io.BytesIO(data), len(data), content_type="image/jpeg")
        console.print(f"uploaded {len(keys)} {args.image_size}px JPEGs to s3://{bucket}")
        # both services run side by side and the modes alternate at each point, so a drift in the machine's
        # load (other work on a shared box) hits both modes alike instead of biasing whichever ran second
        services = {mode: InferenceService(settings, team=args.team, weights_path=weights,
                                           env={**env_common, **env_by_mode[mode]},
                                           log_path=settings.logs_dir / f"bench-service-{args.team}-{mode}.log")
                    for mode in modes}
        with contextlib.ExitStack() as running:
            for service in services.values():
                running.enter_context(service.start())
            for concurrency in concurrencies:
                for repeat in range(args.repeats):
                    for mode in modes if repeat % 2 == 0 else list(reversed(modes)):
                        point = measure(services[mode], mode, bucket, keys, concurrency, args.duration, args.warmup)
                        points[(mode, concurrency)] = points[(mode, concurrency)].merge(point) \
                            if (mode, concurrency) in points else point
                        console.print(f"batching {mode:>3}, {concurrency:>3} clients: {point.rate:7.1f} img/s, "
                                      f"p50 {point.percentile(50):6.1f} ms, p99 {point.percentile(99):6.1f} ms, "
                                      f"mean batch {point.mean_batch:4.1f}, errors {point.errors}")
    finally:
        for obj in minio.list_objects(bucket, recursive=True):
            minio.remove_object(bucket, obj.object_name)
        minio.remove_bucket(bucket)

    headers = ["clients"]
    for mode in modes:
        headers += [f"{mode}: img/s", f"{mode}: p50 ms", f"{mode}: p99 ms", f"{mode}: batch"]
    if modes == ["on", "off"]:
        headers.append("on/off img/s")
    rows = []
    for concurrency in concurrencies:
        row: list[str] = [str(concurrency)]
        for mode in modes:
            p = points[(mode, concurrency)]
            row += [f"{p.rate:.1f}", f"{p.percentile(50):.1f}", f"{p.percentile(99):.1f}", f"{p.mean_batch:.1f}"]
        if modes == ["on", "off"]:
            row.append(f"**{points[('on', concurrency)].rate / points[('off', concurrency)].rate:.2f}**")
        rows.append(row)

    title = (f"{args.team} service, dynamic batching on (max {args.max_batch_size}, {args.delay_ms:g} ms) vs off, "
             f"/infer_json, {args.image_size}px JPEGs")
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*[cell.strip("*") for cell in row])
    console.print(table)
    errors = sum(p.errors for p in points.values())
    if errors:
        console.print(f"[red]{errors} requests failed; see the service logs in {settings.logs_dir}[/red]")
    if not args.no_record:
        command = shlex.join([".venv/bin/python", "bench/service.py", *(argv if argv is not None else sys.argv[1:])])
        notes = (f"Command: `{command}`. Closed loop of N clients (one keep-alive connection each, on the same "
                 f"machine as the service), both modes' services up side by side and measured alternately, "
                 f"{args.duration:g} s measured per point after {args.warmup:g} s of warm-up; latency is the "
                 f"client's; batch = mean images per forward pass from `inference_batch_size`. "
                 f"Failed requests: {errors}.")
        path = append_results(title, markdown_table(headers, rows), notes)
        console.print(f"appended to {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
