"""Issue 10's goal 1: the resnet50 service on one GPU, fetch + decode + infer + JSON included, against the same
GPU's hot-path ceiling measured in the same run. On a machine without a CUDA GPU it says so and measures nothing,
unless told `--device cpu`: then the same run, ceiling included, on the CPU (the table where no GPU is at hand, and
a rehearsal of the GPU run: the same code paths but nvJPEG and CUDA streams).

    python bench/gpu_service.py [--configs '[{"WORKERS": "8", "MAX_BATCH_SIZE": "64"}]'] [--secs 8] [--record]
        [--device cuda|cpu] [--ceiling-batches '[64, 128]'] [--ceiling-passes 30]
        [--minio-binary PATH]     start this MinIO server for the run (a lent GPU machine has no stack of its own);
                                  else the one at MINIO_ENDPOINT (default 127.0.0.1:9000, minioadmin) is used

It uploads 64 photo-like 640x480 JPEGs (about 80 KB), starts the service as users do (`python -m
services.inference_http`, TEAM=resnet50, DEVICE=cuda (or cpu), each config's environment), drives it from separate
load-generator processes over raw keep-alive HTTP/1.1 (so the generator is not what is measured): 1-client latency,
/infer_json closed loops, /infer_batch closed loops, then Poisson arrivals at half the best /infer_json rate. For
every closed loop it also reads the service's CPU (the process and its workers, from /proc) and its time in forward
passes (`inference_forward_seconds`), so the table shows the CPU each image costs outside the forward pass (goal 2
on a GPU). Before the services start, the ceiling: batch decode (nvJPEG on a GPU) + resize + ResNet-50
channels_last, and the bare forward pass, no HTTP and no storage. Ported from the harness that measured issue 10's
starting point.
Writes the figures as JSON to $OUT/gpu_service.json (or /tmp) and, with --record, the tables to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make the checkout importable

from bench.results import append_results, markdown_table  # noqa: E402
from imagery.process import NoAnswerYet, Process, ProcessError, http_200, process_tree_cpu_s, spawn  # noqa: E402
from imagery.repo import REPO_ROOT, WEIGHTS_DIR  # noqa: E402
from schemas import INFER_BATCH_ROUTE, INFER_JSON_ROUTE, METRICS_ROUTE, READYZ_ROUTE  # noqa: E402
from services.inference_http.settings import checked_service_environment, service_environment  # noqa: E402

PORT = 8000
BUCKET = "resnet50-bench"  # one of the team's own buckets (ALLOWED_BUCKETS' default: TEAM and TEAM-*)
KEYS = [f"img-{i:03d}.jpg" for i in range(64)]
DEFAULT_CONFIGS = '[{"MAX_BATCH_SIZE": "64", "MAX_BATCH_DELAY_MS": "5"}]'  # WORKERS: the service's default
GOAL_IMG_S = 15000  # issue 19: /infer_batch on an H200, three quarters of the nvJPEG bound


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def cuda_device() -> str | None:
    """The GPU's name, or None when torch sees no CUDA device (or there is no torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def make_jpegs() -> list[bytes]:
    """Photo-like 640x480 JPEGs: smooth random colour fields, about 80 KB at quality 85."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in KEYS:
        base = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def http_get(path: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------- MinIO and the service


def start_minio(binary: str, data_dir: str, log_path: Path) -> Process:
    process = spawn(
        [binary, "server", data_dir, "--address", "127.0.0.1:9000", "--console-address", "127.0.0.1:9001", "--quiet"],
        log_path,
        name="MinIO",
        env={"MINIO_ROOT_USER": "minioadmin", "MINIO_ROOT_PASSWORD": "minioadmin"},
    )
    try:
        process.wait_ready(http_200("http://127.0.0.1:9000/minio/health/ready", timeout_s=1), 60)
    except ProcessError as exc:
        process.stop()
        raise SystemExit(str(exc)) from None
    return process


def upload(endpoint: str, access: str, secret: str) -> int:
    from minio import Minio

    client = Minio(endpoint, access, secret, secure=False)
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    jpegs = make_jpegs()
    for key, data in zip(KEYS, jpegs, strict=True):
        client.put_object(BUCKET, key, io.BytesIO(data), len(data), content_type="image/jpeg")
    return sum(map(len, jpegs)) // len(jpegs)


def start_service(
    config: dict[str, str], device: str, endpoint: str, access: str, secret: str, log_path: Path
) -> Process:
    """The service as users start it. A config's SERVICE_ROOT (not a setting) runs the service's code from another
    checkout, e.g. an older commit's, so before and after are measured in one run on one machine."""
    config = dict(config)
    root = Path(config.pop("SERVICE_ROOT", REPO_ROOT)).resolve()
    python_path = [str(root)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO_ROOT
    ]
    env = {
        "PYTHONPATH": os.pathsep.join(python_path),
        **service_environment(
            team="resnet50",
            weights_path=WEIGHTS_DIR / "resnet50.pt",
            device=device,
            minio_endpoint=endpoint,
            minio_access_key=access,
            minio_secret_key=secret,
            host="127.0.0.1",
            port=PORT,
            max_queue=8192,
            request_timeout_ms=60000,
            max_connections=4096,
            log_level="warning",
        ),
        **checked_service_environment(config),
    }
    process = spawn([sys.executable, "-m", "services.inference_http"], log_path, name="the service", env=env, cwd=root)
    started = time.monotonic()
    answers = http_200(f"http://127.0.0.1:{PORT}{READYZ_ROUTE}")

    def every_worker_ready() -> None:
        answers()
        # every worker warms before it takes connections; wait until all count as ready
        workers = json.loads(http_get(READYZ_ROUTE, timeout=2)[1]).get("workers", 1)
        if metric("inference_ready") < workers:
            raise NoAnswerYet(f"not all {workers} workers ready")

    try:
        process.wait_ready(every_worker_ready, 600, poll_s=0.5)
    except ProcessError as exc:
        process.stop(30)
        raise SystemExit(str(exc)[-3000:]) from None
    log(f"service ready in {time.monotonic() - started:.1f}s: {http_get('/readyz', timeout=2)[1][:600]!r}")
    return process


def metrics() -> dict[str, float]:
    _, body = http_get(METRICS_ROUTE, timeout=10)
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line.split(" ")[0]:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def metric(name: str) -> float:
    return metrics().get(name, 0.0)


# ---------------------------------------------------------------------------- load generator (child processes)


async def _connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", PORT)


async def _post(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = conn
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


def _body(path: str, items: int, rnd: random.Random) -> bytes:
    if path == INFER_JSON_ROUTE:
        return json.dumps({"bucket": BUCKET, "key": rnd.choice(KEYS)}).encode()
    return json.dumps({"items": [{"bucket": BUCKET, "key": rnd.choice(KEYS)} for _ in range(items)]}).encode()


def _closed_worker(path: str, items: int, connections: int, seconds: float, queue: mp.Queue) -> None:
    async def main() -> None:
        rnd = random.Random(os.getpid())
        end = time.monotonic() + seconds
        latencies: list[float] = []
        images = 0
        errors: Counter[str] = Counter()

        async def client() -> None:
            nonlocal images
            conn = await _connect()
            while time.monotonic() < end:
                sent = time.perf_counter()
                status, payload = await _post(conn, path, _body(path, items, rnd))
                if status == 200:
                    ok = payload.count(b'"ok":true') if path == INFER_BATCH_ROUTE else 1
                    images += ok
                    if ok < items:
                        errors["per-item error"] += items - ok
                    latencies.append((time.perf_counter() - sent) * 1000)
                else:
                    errors[error_kind(status, payload)] += items
            conn[1].close()

        await asyncio.gather(*(client() for _ in range(connections)))
        queue.put((images, errors, latencies))

    asyncio.run(main())


STALE = -1  # not a status: a pooled connection the server had closed


def _open_worker(rate: float, seconds: float, queue: mp.Queue) -> None:
    """Poisson arrivals at `rate` /infer_json requests per second, each on a free pooled connection."""

    async def main() -> None:
        rnd = random.Random(os.getpid())
        # last in, first out: the connection used most recently goes next, as a client's pool does, so at a low
        # rate the others idle, and one idle past the server's keep-alive (KEEP_ALIVE_S) is closed by the server
        free: asyncio.LifoQueue = asyncio.LifoQueue()
        for _ in range(64):
            free.put_nowait(await _connect())
        latencies: list[float] = []
        errors: Counter[str] = Counter()

        async def one() -> None:
            sent = time.perf_counter()
            conn = await free.get()
            body = _body(INFER_JSON_ROUTE, 1, rnd)
            try:
                status, payload = await _post(conn, INFER_JSON_ROUTE, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                status, payload = STALE, b""
            if status == STALE or (status == 408 and not payload):
                # the server closed it while it idled, before reading this request (a connection that sent no
                # request within HEADER_TIMEOUT_S gets a bodiless 408 and is closed): once more on a new one, as
                # HTTP clients do
                conn[1].close()
                conn = await _connect()
                status, payload = await _post(conn, INFER_JSON_ROUTE, body)
            free.put_nowait(conn)
            if status == 200:
                latencies.append((time.perf_counter() - sent) * 1000)
            else:
                errors[error_kind(status, payload)] += 1

        tasks = []
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while next_at < end:
            next_at += rnd.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        queue.put((len(latencies), errors, latencies))

    asyncio.run(main())


def error_kind(status: int, payload: bytes) -> str:
    """A failed request's status and the start of its answer (the error's type), to count them by kind."""
    return f"{status} {payload[:160].decode('utf-8', 'replace')}"


def run_load(target, args_list: list[tuple], timeout_s: float) -> tuple[int, Counter[str], list[float]]:
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=target, args=(*args, queue)) for args in args_list]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=timeout_s) for _ in procs]
    for proc in procs:
        proc.join()
    latencies = sorted(x for r in results for x in r[2])
    return sum(r[0] for r in results), sum((r[1] for r in results), Counter()), latencies


def pct(latencies: list[float], q: float) -> float:
    return round(latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))], 1) if latencies else float("nan")


def closed(pid: int, path: str, items: int, procs: int, conns: int, seconds: float) -> dict:
    run_load(_closed_worker, [(path, items, conns, 2.0)] * procs, 120)  # warm the connections and batch sizes
    before, cpu0 = metrics(), process_tree_cpu_s(pid)
    images, errors, latencies = run_load(_closed_worker, [(path, items, conns, seconds)] * procs, seconds + 120)
    cpu1, after = process_tree_cpu_s(pid), metrics()
    passes = after.get("inference_batch_size_count", 0) - before.get("inference_batch_size_count", 0)
    in_passes = after.get("inference_batch_size_sum", 0) - before.get("inference_batch_size_sum", 0)
    forward_s = after.get("inference_forward_seconds_total", 0) - before.get("inference_forward_seconds_total", 0)
    result = dict(
        path=path,
        items=items,
        concurrency=procs * conns,
        img_s=round(images / seconds, 1),
        errors=errors.total(),
        error_kinds=dict(errors),
        p50_ms=pct(latencies, 50),
        p99_ms=pct(latencies, 99),
        mean_batch=round(in_passes / max(1, passes), 1),
        cpu_ms_per_img=round((cpu1 - cpu0) / max(1, images) * 1000, 3),
        outside_forward_ms_per_img=round((cpu1 - cpu0 - forward_s) / max(1, images) * 1000, 3),
    )
    log(result)
    return result


def profile(pid: int, procs: int, out_dir: Path) -> None:
    """py-spy the service's first worker under /infer_json and then /infer_batch load: raw collapsed stacks of the
    threads holding the GIL and of all threads, idle included (`py-spy record --gil | --idle --format raw`)."""
    workers = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    target = next((w for w in workers if b"resource_tracker" not in Path(f"/proc/{w}/cmdline").read_bytes()), pid)
    for path, items, conns in ((INFER_JSON_ROUTE, 1, 40), (INFER_BATCH_ROUTE, 32, 4)):
        queue: mp.Queue = mp.Queue()
        load = [mp.Process(target=_closed_worker, args=(path, items, conns, 24.0, queue)) for _ in range(procs)]
        for proc in load:
            proc.start()
        time.sleep(4)
        for flag, tag in (("--gil", "gil"), ("--idle", "all")):
            subprocess.run(
                [
                    "py-spy",
                    "record",
                    "-d",
                    "8",
                    "-r",
                    "200",
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    flag,
                    "-o",
                    str(out_dir / f"prof_{path.strip('/')}_{tag}.txt"),
                    "--pid",
                    str(target),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        images = sum(queue.get(timeout=120)[0] for _ in load)
        for proc in load:
            proc.join()
        log("profiled", path, "images", images)


def open_loop(rate: float, procs: int, seconds: float) -> dict:
    images, errors, latencies = run_load(_open_worker, [(rate / procs, seconds)] * procs, seconds + 120)
    result = dict(
        path="open",
        offered_img_s=rate,
        done_img_s=round(images / seconds, 1),
        errors=errors.total(),
        error_kinds=dict(errors),
        p50_ms=pct(latencies, 50),
        p99_ms=pct(latencies, 99),
        p999_ms=pct(latencies, 99.9),
    )
    log(result)
    return result


# ---------------------------------------------------------------------------- the device's own ceiling


@dataclass(frozen=True)
class CeilingPlan:
    """Where and how big the ceiling is measured. On a GPU, the issue's batches (64 and 128) and 30 timed passes
    each; on the CPU the same steps at batches a 2-core machine finishes in seconds."""

    device: str  # "cuda" or "cpu"
    batches: tuple[int, ...]
    passes: int

    @property
    def largest(self) -> int:
        return max(self.batches)

    @property
    def decoder(self) -> str:
        return "nvJPEG" if self.device == "cuda" else "libjpeg-turbo"

    def sync(self) -> None:
        """Wait for the device (a GPU runs asynchronously; the CPU has nothing to wait for)."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def hot_path_key(batch: int) -> str:
    return f"hot path, batch {batch}"


def overlapped_key(batch: int) -> str:
    return f"hot path compiled, decode overlapping forward, batch {batch}"


def ceiling(plan: CeilingPlan, compiled: bool = True) -> dict[str, float]:
    """The same device without HTTP or storage, on the same JPEGs: batch decode (nvJPEG on a GPU) + resize +
    ResNet-50 channels_last (fp16 on a GPU, fp32 on the CPU; eager, as issue 10 measured it), the bare forward pass,
    the decoder alone, and (`compiled`) the new code's own hot path: the runner's forward pass compiled as the
    service compiles it (ResNet50Runner.compile_forward), its top-1 against eager on the 64 images, run after the
    decode and overlapped with it (services/inference_http/forward.PipelinedBatchPath's stages, one thread each, on
    two CUDA streams on a GPU)."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision.io import decode_jpeg

    torch.backends.cudnn.benchmark = True
    device = plan.device
    dtype = torch.float16 if device == "cuda" else torch.float32
    raw = make_jpegs()
    jpegs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in raw]
    model = torchvision.models.resnet50(weights=None).eval().to(device, dtype).to(memory_format=torch.channels_last)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device, dtype=dtype).view(1, 3, 1, 1)
    out: dict[str, float] = {}

    def rate(fn, batch: int) -> float:
        for _ in range(min(5, plan.passes)):
            fn()
        plan.sync()
        started = time.perf_counter()
        for _ in range(plan.passes):
            fn()
        plan.sync()
        return round(plan.passes * batch / (time.perf_counter() - started), 1)

    for batch in plan.batches:

        def step(batch: int = batch) -> None:
            images = decode_jpeg([jpegs[i % len(jpegs)] for i in range(batch)], device=device)
            assert isinstance(images, list)  # a list in, a list out
            x = torch.stack(images).to(dtype).div_(255)
            x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=False)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                model(x).float().softmax(1).max(1)

        x0 = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        out[hot_path_key(batch)] = rate(step, batch)
        with torch.inference_mode():
            out[f"bare forward, batch {batch}"] = rate(lambda x0=x0: model(x0), batch)
    out[f"{plan.decoder} decode alone, batch {plan.largest}"] = rate(
        lambda: decode_jpeg([jpegs[i % len(jpegs)] for i in range(plan.largest)], device=device), plan.largest
    )
    log("ceiling (eager)", out)
    if compiled:
        try:
            out.update(compiled_ceiling(raw, plan))
        except Exception as exc:  # noqa: BLE001  (the eager figures above still count)
            log(f"compiled ceiling failed: {type(exc).__name__}: {exc}")
            out["compiled ceiling failed"] = float("nan")
    log("ceiling", out)
    return out


def compiled_ceiling(raw: list[bytes], plan: CeilingPlan) -> dict[str, float]:
    import queue
    import threading

    import torch

    from adapters.resnet50_runner import ResNet50Runner
    from services.inference_http import decode

    torch.backends.cudnn.benchmark = False  # as the service runs (and so the same compiled graphs, cached for it)
    device = torch.device(plan.device)
    on_gpu = device.type == "cuda"
    batch = plan.largest
    weights = str(WEIGHTS_DIR / "resnet50.pt")
    runner = ResNet50Runner(weights)
    runner.to_device(device)
    out: dict[str, float] = {}
    items = [(data, decode.probe(data, 50_000_000)) for data in raw]
    batch_items = [items[i % len(items)] for i in range(batch)]
    images = torch.stack(
        [
            image
            for image in decode.decode_batch_cuda(batch_items, (224, 224), device)
            if isinstance(image, torch.Tensor)
        ]
    )
    checked = min(64, batch)
    with torch.inference_mode():
        eager = runner.probabilities(images[:checked]).float()
    started = time.perf_counter()
    runner.compile_forward("inductor")
    with torch.inference_mode():
        runner.forward_scores(images[:1])
        runner.forward_scores(images)
    plan.sync()
    out[f"compile + first calls (batch 1, {batch}), s"] = round(time.perf_counter() - started, 1)
    with torch.inference_mode():
        compiled = runner.forward_scores(images[:checked]).float()
    out["compiled vs eager: largest probability difference"] = round(float((compiled - eager).abs().max()), 5)
    out[f"compiled vs eager: same top-1 of {checked}"] = float((compiled.argmax(1) == eager.argmax(1)).sum())

    def timed(fn, n: int = plan.passes) -> float:
        for _ in range(min(3, n)):
            fn()
        plan.sync()
        begun = time.perf_counter()
        for _ in range(n):
            fn()
        plan.sync()
        return round(n * batch / (time.perf_counter() - begun), 1)

    with torch.inference_mode():
        out[f"bare forward compiled, batch {batch}"] = timed(lambda: runner.forward_scores(images))
        out[f"bare forward eager (runner, with normalise + softmax), batch {batch}"] = timed(
            lambda: runner.probabilities(images)
        )

    def decode_step() -> torch.Tensor:
        decoded = decode.decode_batch_cuda(batch_items, (224, 224), device)
        return torch.stack([image for image in decoded if isinstance(image, torch.Tensor)])

    def sequential() -> None:
        with torch.inference_mode():
            runner.forward_scores(decode_step()).cpu()

    out[f"hot path compiled, decode then forward, batch {batch}"] = timed(sequential)

    def on_stream(stream: Any) -> Any:
        return torch.cuda.stream(stream) if on_gpu else contextlib.nullcontext()

    def overlapped(n: int) -> float:
        decode_stream, forward_stream = (torch.cuda.Stream(), torch.cuda.Stream()) if on_gpu else (None, None)
        handoff: queue.Queue = queue.Queue(maxsize=1)

        def decoder() -> None:
            with on_stream(decode_stream):
                for _ in range(n):
                    decoded = decode_step()
                    ready = None
                    if on_gpu:
                        ready = torch.cuda.Event()
                        ready.record(decode_stream)
                        ready.synchronize()
                    handoff.put((decoded, ready))
            handoff.put(None)

        begun = time.perf_counter()
        thread = threading.Thread(target=decoder)
        thread.start()
        done = 0
        with on_stream(forward_stream), torch.inference_mode():
            while (got := handoff.get()) is not None:
                decoded, ready = got
                if ready is not None and forward_stream is not None:  # on a GPU: after the decode's stream
                    forward_stream.wait_event(ready)
                runner.forward_scores(decoded).cpu()
                done += batch
        thread.join()
        return round(done / (time.perf_counter() - begun), 1)

    overlapped(min(8, plan.passes))
    out[overlapped_key(batch)] = overlapped(plan.passes + plan.passes // 3)
    log("ceiling (compiled)", out)
    return out


# ---------------------------------------------------------------------------- main


def tables(results: dict) -> list[tuple[str, str]]:
    """(title, markdown) for the service table and the ceiling. `of eager ceiling`: against issue 10's hot path
    (batch decode + resize + eager forward at the ceiling's largest batch); `of compiled ceiling`: against the new
    code's own hot path (compiled forward, decode overlapped), both measured in the same run."""
    measured = results["ceiling"]
    batch = results["ceiling_batch"]
    eager = measured.get(hot_path_key(batch), float("nan"))
    compiled = measured.get(overlapped_key(batch), float("nan"))

    def share(img_s: float, of: float) -> str:
        return f"{img_s / of:.2f}" if of == of and of > 0 else ""

    headers = [
        "config",
        "run",
        "clients x items",
        "img/s",
        "of eager ceiling",
        "of compiled ceiling",
        "p50 ms",
        "p99 ms",
        "mean batch",
        "CPU ms/img",
        "outside forward ms/img",
        "errors",
    ]
    rows = []
    for config in results["configs"]:
        name = " ".join(f"{k}={v}" for k, v in config["env"].items()) or "defaults"
        if config.get("error"):
            rows.append([name, "did not start (see gpu_service.log)", "", "", "", "", "", "", "", "", "", ""])
        for run in config["runs"]:
            if run["path"] == "open":
                rows.append(
                    [
                        name,
                        f"open loop, Poisson {run['offered_img_s']:g}/s",
                        "1",
                        run["done_img_s"],
                        "",
                        "",
                        run["p50_ms"],
                        f"**{run['p99_ms']}**",
                        "",
                        "",
                        "",
                        run["errors"],
                    ]
                )
                continue
            rows.append(
                [
                    name,
                    run["path"],
                    f"{run['concurrency']} x {run['items']}",
                    f"**{run['img_s']}**",
                    share(run["img_s"], eager),
                    share(run["img_s"], compiled),
                    run["p50_ms"],
                    run["p99_ms"],
                    run["mean_batch"],
                    run["cpu_ms_per_img"],
                    run["outside_forward_ms_per_img"],
                    run["errors"],
                ]
            )
    ceiling_rows = [[k, v] for k, v in measured.items()]
    where = results["machine"]
    return [
        (
            f"Issue 19: resnet50 service on {where}, fetch + decode + infer + JSON, before and after",
            markdown_table(headers, rows),
        ),
        (
            f"the same {'GPU' if results['device'] == 'cuda' else 'CPU'}'s ceiling in the same run (no HTTP, no "
            "storage)",
            markdown_table(["what", "img/s (or as named)"], ceiling_rows),
        ),
    ]


def cpu_name() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "CPU",
    )
    return f"{model}, {os.cpu_count()} cores, no GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default=os.environ.get("CONFIGS", DEFAULT_CONFIGS),
        help="JSON list of service environments, one service run each; a config with "
        '"IF_FAILED": true runs only if the one before it could not start',
    )
    parser.add_argument("--secs", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--gen-procs", type=int, default=6, help="load-generator processes")
    parser.add_argument("--json-conc", default="[256]", help="JSON list of /infer_json client counts")
    parser.add_argument("--batch-runs", default="[[32, 24]]", help="JSON list of [items, clients] for /infer_batch")
    parser.add_argument("--minio-binary", default=None, help="start this MinIO server for the run")
    parser.add_argument("--record", action="store_true", help="append the tables to bench/RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="only profile each config's service with py-spy")
    parser.add_argument("--no-compiled-ceiling", action="store_true", help="measure the eager ceiling only")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: the whole run (ceiling and services) on the CPU, at the CPU's batch sizes: the "
        "table where no GPU is at hand, and a rehearsal of the GPU run",
    )
    parser.add_argument(
        "--ceiling-batches",
        default=None,
        help="JSON list of the ceiling's batch sizes (default [64, 128] on a GPU, [16, 32] on the CPU)",
    )
    parser.add_argument(
        "--ceiling-passes",
        type=int,
        default=None,
        help="timed passes per ceiling figure (default 30 on a GPU, 4 on the CPU)",
    )
    args = parser.parse_args(argv)
    configs = json.loads(args.configs)
    for config in configs:  # a misspelt variable fails here, not after minutes of the GPU's time
        checked_service_environment({k: v for k, v in config.items() if k not in ("SERVICE_ROOT", "IF_FAILED")})

    on_gpu = args.device == "cuda"
    machine = cuda_device() if on_gpu else cpu_name()
    if machine is None:
        print(
            "Goal 1 (issue 10) needs a CUDA GPU: torch sees none on this machine, so nothing was measured. "
            "Run `python bench/gpu_service.py` where one is (bench/gpu_run.sh runs it on a bare GPU machine), or "
            "add `--device cpu` for the same run on the CPU."
        )
        return 0
    plan = CeilingPlan(
        args.device,
        tuple(json.loads(args.ceiling_batches or ("[64, 128]" if on_gpu else "[16, 32]"))),
        args.ceiling_passes or (30 if on_gpu else 4),
    )
    endpoint = os.environ.get("MINIO_ENDPOINT", "127.0.0.1:9000")
    access = os.environ.get("MINIO_ACCESS_KEY", "minioadmin")
    secret = os.environ.get("MINIO_SECRET_KEY", "minioadmin")
    out_dir = Path(os.environ.get("OUT", "/tmp"))
    subprocess.run(
        [sys.executable, "-m", "adapters.resnet50_weights", "--out", "weights/resnet50.pt"], cwd=REPO_ROOT, check=True
    )
    results: dict = {
        "machine": machine,
        "device": args.device,
        "cpus": os.cpu_count(),
        "configs": [],
        "ceiling": {},
        "ceiling_batch": plan.largest,
    }
    if not args.profile:
        # first, in a process of its own (its CUDA context and caches gone before the services start): if the run
        # is cut short, the ceiling is there to compare with, and its compilation fills torch's cache for the
        # service's (the same graphs)
        try:
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                results["ceiling"] = pool.submit(ceiling, plan, not args.no_compiled_ceiling).result(timeout=900)
        except Exception as exc:  # noqa: BLE001  (the services are still worth measuring)
            log(f"the ceiling failed: {type(exc).__name__}: {exc}")
            results["ceiling"] = {f"ceiling failed: {type(exc).__name__}": float("nan")}
        (out_dir / "gpu_service.json").write_text(json.dumps(results, indent=1))
    minio_dir: str | None = None
    minio: Process | None = None
    if args.minio_binary:  # a data folder of its own, removed after the run
        minio_dir = tempfile.mkdtemp(prefix="bench-minio-")
        minio = start_minio(args.minio_binary, minio_dir, out_dir / "minio.log")
    try:
        log("uploaded 64 JPEGs, mean bytes", upload(endpoint, access, secret))
        failed = False
        for config in configs:
            if config.pop("IF_FAILED", False) and not failed:
                continue  # a fallback, for when the config before it could not start
            try:
                service = start_service(config, args.device, endpoint, access, secret, out_dir / "gpu_service.log")
            except SystemExit as exc:
                log(f"config {config} did not start: {str(exc)[-2000:]}")
                results["configs"].append({"env": config, "runs": [], "error": str(exc)[-2000:]})
                failed = True
                continue
            failed = False
            entry: dict = {"env": config, "runs": []}
            try:
                procs = args.gen_procs
                if args.profile:
                    profile(service.pid, procs, out_dir)
                    continue
                entry["runs"].append(closed(service.pid, INFER_JSON_ROUTE, 1, 1, 1, args.secs))
                for concurrency in json.loads(args.json_conc):
                    entry["runs"].append(
                        closed(service.pid, INFER_JSON_ROUTE, 1, procs, max(1, concurrency // procs), args.secs)
                    )
                for items, clients in json.loads(args.batch_runs):
                    generators = min(procs, clients)
                    entry["runs"].append(
                        closed(
                            service.pid, INFER_BATCH_ROUTE, items, generators, max(1, clients // generators), args.secs
                        )
                    )
                best_json = max(r["img_s"] for r in entry["runs"] if r["path"] == INFER_JSON_ROUTE)
                entry["runs"].append(open_loop(round(best_json / 2), procs, args.secs))
            finally:
                service.stop(30)
            results["configs"].append(entry)
            (out_dir / "gpu_service.json").write_text(json.dumps(results, indent=1))
    finally:
        if minio is not None:
            minio.stop()
        if minio_dir is not None:
            shutil.rmtree(minio_dir, ignore_errors=True)
    if args.profile:
        return 0
    (out_dir / "gpu_service.json").write_text(json.dumps(results, indent=1))
    for title, table in tables(results):
        print(f"\n## {title}\n\n{table}")
    if args.record:
        for title, table in tables(results):
            append_results(
                title,
                table,
                f"Command: `python bench/gpu_service.py {' '.join(argv or sys.argv[1:])}`; "
                f"{results['cpus']} cores. Goals (issue 19): /infer_batch >= 0.9 and /infer_json >= 0.8 "
                f"of the ceiling, {GOAL_IMG_S} img/s on /infer_batch, p99 <= 50 ms and p50 <= 20 ms at "
                f"half the best /infer_json rate, one client p50 <= 8 ms.",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
