"""The inference service as users run it: a uvicorn process, the real MinIO, the real fruit model.

Every route, every error status of the contract, and dynamic batching seen from the outside (the batch-size
histogram on /metrics).
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib

import httpx
import pytest

from imagery.local.inference_service import InferenceService, InferenceServiceError
from schemas import (
    HEALTHZ_ROUTE,
    INFER_BATCH_ROUTE,
    INFER_JSON_ROUTE,
    METRICS_ROUTE,
    READYZ_ROUTE,
    BatchItemError,
    BatchItemOk,
    BatchResponse,
    InferResponse,
)
from tests.helpers import expect_error, metric_samples, put
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.integration


def png_bomb(side: int = 10_000) -> bytes:
    """A real PNG of side x side black pixels: 100 MB of pixels in ~100 KB, refused from its header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def batch_size_histogram(base_url: str) -> tuple[float, float]:
    """(forward passes, images in them) so far."""
    samples = metric_samples(httpx.get(f"{base_url}{METRICS_ROUTE}").text)
    return samples[("inference_batch_size_count", ())], samples[("inference_batch_size_sum", ())]


@pytest.fixture
def images_bucket(minio, bucket, fruit_images):
    put(minio, bucket, "fruit/clean.jpg", fruit_images.clean)
    put(minio, bucket, "fruit/defect.jpg", fruit_images.defect)
    return bucket


def post(service: InferenceService, route: str, body) -> httpx.Response:
    return httpx.post(f"{service.base_url}{route}", json=body, timeout=30)


# ---------------------------------------------------------------------------- the plain routes


def test_healthz_is_exactly_ok_and_team(fruit_service):
    response = httpx.get(f"{fruit_service.base_url}{HEALTHZ_ROUTE}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "team": "fruit"}


def test_readyz_after_start(fruit_service):
    response = httpx.get(f"{fruit_service.base_url}{READYZ_ROUTE}")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True and body["reasons"] == []
    assert (body["team"], body["model_name"], body["device"]) == ("fruit", "fruit_defect_cnn", "cpu")


def test_docs_and_openapi(fruit_service):
    assert "swagger" in httpx.get(f"{fruit_service.base_url}/docs").text.lower()
    spec = httpx.get(f"{fruit_service.base_url}/openapi.json").json()
    assert {INFER_JSON_ROUTE, INFER_BATCH_ROUTE, HEALTHZ_ROUTE, READYZ_ROUTE, METRICS_ROUTE} <= set(spec["paths"])
    assert "429" in spec["paths"][INFER_JSON_ROUTE]["post"]["responses"]


def test_metrics_has_the_contract_names(fruit_service, images_bucket):
    assert post(fruit_service, INFER_JSON_ROUTE, {"bucket": images_bucket, "key": "fruit/clean.jpg"}).status_code == 200
    text = httpx.get(f"{fruit_service.base_url}{METRICS_ROUTE}").text
    names = {name for name, _ in metric_samples(text)}
    assert {
        "inference_requests_total",
        "inference_request_seconds_bucket",
        "inference_queue_seconds_bucket",
        "inference_batch_size_bucket",
        "inference_queue_depth",
    } <= names
    assert f'inference_requests_total{{route="{INFER_JSON_ROUTE}",status="200"}}' in text


# ---------------------------------------------------------------------------- inference


def test_clean_and_defective_fruit_get_the_right_labels(fruit_service, images_bucket):
    for kind in ("clean", "defect"):
        response = post(fruit_service, INFER_JSON_ROUTE, {"bucket": images_bucket, "key": f"fruit/{kind}.jpg"})
        assert response.status_code == 200, response.text
        result = InferResponse.model_validate(response.json())
        assert result.label == kind
        assert result.score is not None and result.score > 0.9
        assert response.json()["probabilities"][kind] == result.score  # the runner's own field
        assert (result.team, result.bucket, result.key) == ("fruit", images_bucket, f"fruit/{kind}.jpg")
        assert result.model_name == "fruit_defect_cnn" and result.model_tag and result.batch_size >= 1
        t = result.timings
        assert min(t.fetch_ms, t.decode_ms, t.infer_ms, t.queue_ms) >= 0
        assert t.total_ms >= t.fetch_ms + t.decode_ms


def test_many_held_out_images_are_classified_correctly(fruit_service, minio, bucket, fruit_images):
    items = []
    for i in range(12):
        kind = ("clean", "defect")[i % 2]
        items.append({"bucket": bucket, "key": put(minio, bucket, f"{kind}-{i}.jpg", fruit_images.make(kind, i))})
    response = post(fruit_service, INFER_BATCH_ROUTE, {"items": items})
    labels = [item["result"]["label"] for item in BatchResponse.model_validate(response.json()).model_dump()["items"]]
    assert labels == [("clean", "defect")[i % 2] for i in range(12)]


def test_infer_batch_answers_each_item_in_order(fruit_service, minio, images_bucket):
    put(minio, images_bucket, "notes.txt", b"not an image at all")
    items = [
        {"bucket": images_bucket, "key": "fruit/clean.jpg"},
        {"bucket": images_bucket, "key": "fruit/missing.jpg"},
        {"bucket": images_bucket, "key": "fruit/defect.jpg"},
        {"bucket": images_bucket, "key": "notes.txt"},
        {"bucket": "fruit-no-such-bucket-for-sure", "key": "fruit/clean.jpg"},
    ]
    response = post(fruit_service, INFER_BATCH_ROUTE, {"items": items})
    assert response.status_code == 200
    out = BatchResponse.model_validate(response.json()).items
    assert [item.ok for item in out] == [True, False, True, False, False]
    clean, missing, defect, text, no_bucket = out
    assert isinstance(clean, BatchItemOk) and isinstance(defect, BatchItemOk)
    assert clean.result.label == "clean" and defect.result.label == "defect"
    failed = [o for o in (missing, text, no_bucket) if isinstance(o, BatchItemError)]
    assert [(o.status, o.error.type, o.error.stage) for o in failed] == [
        (404, "object_not_found", "fetch"),
        (415, "not_an_image", "decode"),
        (404, "bucket_not_found", "fetch"),
    ]


def test_concurrent_requests_share_forward_passes(fruit_service, images_bucket):
    """32 requests at once against the fixture's MAX_BATCH_SIZE=16 and 20 ms window: fewer than 32 passes."""
    passes_before, images_before = batch_size_histogram(fruit_service.base_url)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fruit_service.base_url, timeout=30) as client:
            keys = ["fruit/clean.jpg", "fruit/defect.jpg"] * 16
            return await asyncio.gather(
                *(client.post(INFER_JSON_ROUTE, json={"bucket": images_bucket, "key": key}) for key in keys)
            )

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 32
    assert [r.json()["label"] for r in responses] == ["clean", "defect"] * 16
    passes_after, images_after = batch_size_histogram(fruit_service.base_url)
    assert images_after - images_before == 32
    assert passes_after - passes_before < 32  # some requests really shared a forward pass
    assert max(r.json()["batch_size"] for r in responses) > 1


# ---------------------------------------------------------------------------- errors


def test_missing_object_and_missing_bucket_are_404(fruit_service, images_bucket):
    expect_error(
        post(fruit_service, INFER_JSON_ROUTE, {"bucket": images_bucket, "key": "nope.jpg"}),
        404,
        "object_not_found",
        "fetch",
    )
    expect_error(
        post(fruit_service, INFER_JSON_ROUTE, {"bucket": "fruit-no-such-bucket-for-sure", "key": "a.jpg"}),
        404,
        "bucket_not_found",
        "fetch",
    )


@pytest.mark.parametrize(
    "name, data, type_",
    [
        ("text", b"hello, this is text", "not_an_image"),
        ("empty", b"", "not_an_image"),
        ("truncated-jpeg", None, "not_an_image"),
        ("bomb", None, "decompression_bomb"),
    ],
)
def test_undecodable_objects_are_415(fruit_service, minio, bucket, fruit_images, name, data, type_):
    if name == "truncated-jpeg":
        data = fruit_images.clean[:600]
    elif name == "bomb":
        data = png_bomb()
        assert len(data) < 200_000
    put(minio, bucket, name, data)
    expect_error(post(fruit_service, INFER_JSON_ROUTE, {"bucket": bucket, "key": name}), 415, type_, "decode")


def test_an_object_over_the_size_limit_is_413(fruit_service, minio, bucket):
    limit = int(FRUIT_SERVICE_ENV["MAX_OBJECT_BYTES"])
    put(minio, bucket, "huge.jpg", os.urandom(limit + 1))
    error = expect_error(
        post(fruit_service, INFER_JSON_ROUTE, {"bucket": bucket, "key": "huge.jpg"}), 413, "object_too_large", "fetch"
    )
    assert str(limit + 1) in error.message


@pytest.mark.parametrize(
    "route, body",
    [
        (INFER_JSON_ROUTE, b'{"bucket": "imagery-hot", "key": '),  # malformed JSON
        (INFER_JSON_ROUTE, b"[1, 2]"),
        (INFER_JSON_ROUTE, b'{"bucket": "imagery-hot"}'),  # no key
        (INFER_JSON_ROUTE, b'{"bucket": "Not_A_Bucket", "key": "a.jpg"}'),
        (INFER_JSON_ROUTE, b'{"bucket": "imagery-hot", "key": "a.jpg", "surprise": 1}'),
        (INFER_BATCH_ROUTE, b'{"items": []}'),
        (INFER_BATCH_ROUTE, b'{"items": [{"bucket": "imagery-hot"}]}'),
    ],
)
def test_malformed_requests_are_422(fruit_service, route, body):
    response = httpx.post(
        f"{fruit_service.base_url}{route}", content=body, headers={"Content-Type": "application/json"}
    )
    expect_error(response, 422, "bad_request", "validate")


def test_unknown_route_is_a_json_404(fruit_service):
    expect_error(httpx.get(f"{fruit_service.base_url}/predict"), 404, "route_not_found", "validate")


# ---------------------------------------------------------------------------- the process


def test_an_unknown_team_refuses_to_start(stack_settings):
    with pytest.raises(InferenceServiceError) as err:
        InferenceService(stack_settings, team="no-such-team").start(timeout_s=60)
    # membership, not the exact list: `imagery new-team` adds teams and must never break the suite
    known = str(err.value).split("known teams: ", 1)[1]
    assert "fruit" in known and "resnet50" in known


def test_the_service_restarts_on_the_same_port(stack_settings, fruit_weights, images_bucket):
    service = InferenceService(stack_settings, team="fruit", weights_path=str(fruit_weights))
    body = {"bucket": images_bucket, "key": "fruit/defect.jpg"}
    with service.start():
        assert post(service, INFER_JSON_ROUTE, body).json()["label"] == "defect"
        service.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{service.base_url}{HEALTHZ_ROUTE}")
        service.start()
        assert post(service, INFER_JSON_ROUTE, body).json()["label"] == "defect"
    assert not service.running
