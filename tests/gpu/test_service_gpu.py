"""The CUDA path: nvJPEG batched decode, fp16 + channels_last forward passes.

Not part of `make test` (CI machines have no GPU): `make test-gpu` runs it on a machine that has one, and it
fails there, rather than skipping, if CUDA is missing.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import torch
from PIL import Image

from adapters.fruit_defect_runner import FruitRunner
from schemas import INFER_BATCH_ROUTE, READYZ_ROUTE
from services.inference_http import decode
from services.inference_http.app import create_app
from services.inference_http.errors import NotAnImage

pytestmark = pytest.mark.gpu


def test_cuda_is_there():
    assert torch.cuda.is_available(), "tests/gpu needs a CUDA GPU: run it with `make test-gpu` on a GPU machine"


LIMIT = 50_000_000
SIZE = (112, 112)


def png(data_jpeg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data_jpeg)).save(out, format="PNG")
    return out.getvalue()


def test_nvjpeg_batch_decode_matches_the_cpu_decoder(fruit_images):
    blobs = [fruit_images.make(kind, i) for i in range(6) for kind in ("clean", "defect")] + [png(fruit_images.clean)]
    items = [(data, decode.probe(data, LIMIT)) for data in blobs]
    on_gpu = decode.decode_batch_cuda(items, SIZE, torch.device("cuda"))
    for data, gpu_image in zip(blobs, on_gpu, strict=True):
        assert isinstance(gpu_image, torch.Tensor) and gpu_image.is_cuda and gpu_image.dtype == torch.uint8
        cpu_image = decode.decode_cpu(data, SIZE, LIMIT)
        # nvJPEG and libjpeg-turbo round their IDCTs differently: a level or two, never a different picture
        assert (gpu_image.cpu().float() - cpu_image.float()).abs().mean() < 3.0


def test_a_corrupt_jpeg_fails_alone_in_a_gpu_batch(fruit_images):
    good = fruit_images.clean
    broken = bytearray(fruit_images.defect)
    broken[len(broken) // 3 :] = b"\x00" * (len(broken) - len(broken) // 3)
    items = [
        (good, decode.probe(good, LIMIT)),
        (bytes(broken), decode.probe(bytes(broken), LIMIT)),
        (good, decode.probe(good, LIMIT)),
    ]
    out = decode.decode_batch_cuda(items, SIZE, torch.device("cuda"))
    assert isinstance(out[0], torch.Tensor) and isinstance(out[2], torch.Tensor)
    assert isinstance(out[1], (torch.Tensor, NotAnImage))  # libjpeg may still salvage a grey-filled picture


def test_the_runner_runs_fp16_channels_last_on_the_gpu(fruit_weights, fruit_images):
    runner = FruitRunner(str(fruit_weights))
    runner.to_device(torch.device("cuda"))
    assert runner.dtype == torch.float16
    images = torch.stack([decode.decode_cpu(fruit_images[kind], SIZE, LIMIT) for kind in ("clean", "defect")])
    results = runner.run_batch(images.cuda())
    assert [r["label"] for r in results] == ["clean", "defect"]


def test_the_service_on_cuda_labels_and_batches(stack_settings, fruit_weights, minio, bucket, fruit_images):
    import httpx

    from services.inference_http.settings import ServiceSettings

    for i in range(8):
        for kind in ("clean", "defect"):
            data = fruit_images.make(kind, i)
            minio.put_object(bucket, f"{kind}-{i}.jpg", io.BytesIO(data), len(data))
    settings = ServiceSettings(
        team="fruit",
        weights_path=str(fruit_weights),
        device="cuda",
        minio_endpoint=stack_settings.minio_endpoint,
        max_batch_size=16,
        max_batch_delay_ms=50,
    )

    async def main():
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gpu", timeout=60) as client:
                for _ in range(600):
                    if (await client.get(READYZ_ROUTE)).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await client.get(READYZ_ROUTE)).json()["device"].startswith("cuda")
                items = [{"bucket": bucket, "key": f"{kind}-{i}.jpg"} for i in range(8) for kind in ("clean", "defect")]
                response = await client.post(INFER_BATCH_ROUTE, json={"items": items})
                return response.json()["items"]

    results = asyncio.run(main())
    assert [r["result"]["label"] for r in results] == ["clean", "defect"] * 8
    assert max(r["result"]["batch_size"] for r in results) > 1


def test_the_pipelined_path_decodes_on_its_own_stream_and_answers_as_sequential(fruit_weights, fruit_images):
    from services.inference_http.forward import PipelinedBatchPath, in_process_path
    from services.inference_http.metrics import Metrics
    from services.inference_http.settings import ServiceSettings

    settings = ServiceSettings(
        team="fruit", device="cuda", max_batch_size=8, max_batch_delay_ms=1, warmup_batches=1, compile="off"
    )
    blobs = [fruit_images.make(kind, i) for i in range(8) for kind in ("clean", "defect")]

    async def main():
        path = in_process_path(settings, FruitRunner(str(fruit_weights)), Metrics())
        assert isinstance(path, PipelinedBatchPath) and path.decode_stream != path.forward_stream
        await path.warm_up(fruit_images.clean)

        async def infer(data: bytes):
            return await path.run(await path.prepare(data, None, None))

        done = await asyncio.gather(*(infer(data) for data in blobs))
        await path.close()
        return done

    done = asyncio.run(main())
    assert [d.result["label"] for d in done] == ["clean", "defect"] * 8
    assert max(d.batch_size for d in done) > 1


def test_the_compiled_forward_pass_gives_eager_s_top1_on_the_gpu(tmp_path, fruit_images):
    import subprocess
    import sys

    from adapters.resnet50_runner import ResNet50Runner

    weights = tmp_path / "resnet50.pt"
    subprocess.run([sys.executable, "-m", "adapters.resnet50_weights", "--out", str(weights)], check=True)
    runner = ResNet50Runner(str(weights))
    runner.to_device(torch.device("cuda"))
    blobs = [fruit_images.make(kind, i) for i in range(16) for kind in ("clean", "defect")]
    images = torch.stack([decode.decode_cpu(data, (224, 224), LIMIT) for data in blobs]).cuda()
    with torch.inference_mode():
        eager = runner.probabilities(images)
        runner.compile_forward("inductor")
        compiled = runner.forward_scores(images)
    assert float((compiled - eager).abs().max()) < 0.02
    top = eager.topk(2, dim=1).values
    decisive = (top[:, 0] - top[:, 1]) > 0.02
    assert bool(((compiled.argmax(1) == eager.argmax(1)) | ~decisive).all())
