"""The service against inputs and clients meant to hurt it, as users run it (a real process, MinIO, the fruit model).

The rule: whatever a caller's input causes is a 4xx with its stage, answered at once; 503 means the service or
storage is truly down; no client holds a connection or a CPU for longer than the limits say.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import time

import httpx
import pytest

from imagery.local.inference_service import InferenceService
from schemas import INFER_JSON_ROUTE, InferRequest
from services.inference_http.errors import ServiceError
from services.inference_http.settings import ServiceSettings, service_environment
from services.inference_http.storage import ObjectStore
from streaming.dispatch.client import InferenceClient, Success
from tests.conftest import remove_bucket, unique
from tests.helpers import expect_error, put
from tests.hostile_inputs import progressive_jpeg_with_scans
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
GUARDED_ENV = {
    **FRUIT_SERVICE_ENV,
    **service_environment(
        auth_token=TOKEN, header_timeout_s=1, body_timeout_s=1, max_request_bytes=65536, max_batch_items=2
    ),
}


@pytest.fixture(scope="module")
def guarded_service(stack_settings, fruit_weights):
    """A fruit service with a token, one-second head and body deadlines and small request limits."""
    service = InferenceService(stack_settings, team="fruit", weights_path=str(fruit_weights), env=GUARDED_ENV)
    with service.start():
        yield service


def raw_connection(service: InferenceService) -> socket.socket:
    sock = socket.create_connection((service.host, service.port), timeout=10)
    sock.settimeout(10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection or `seconds` pass: (closed, what it sent)."""
    deadline = time.monotonic() + seconds
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


# ---------------------------------------------------------------------------- names storage refuses


# Each of these passed validation before and made the service answer 503 (which the dispatcher waits out as an
# outage, so the message never finished and stalled its neighbours) or 500.
STORAGE_REFUSES = [
    "a\x00b.jpg",
    "a//b.jpg",
    "./a.jpg",
    "a/./b.jpg",
    "a\\..\\b.jpg",
    "a/ .. /b.jpg",
    "x" * 256 + ".jpg",
    "   ",
    "\t",
]


@pytest.mark.parametrize("key", STORAGE_REFUSES)
def test_names_storage_refuses_are_a_4xx_of_the_fetch_never_an_outage(stack_settings, bucket, key):
    store = ObjectStore(
        ServiceSettings(
            team="fruit",
            minio_endpoint=stack_settings.minio_endpoint,
            minio_access_key=stack_settings.minio_access_key,
            minio_secret_key=stack_settings.minio_secret_key,
        )
    )
    with pytest.raises(ServiceError) as err:
        asyncio.run(store.fetch(bucket, key))  # below the request's validation: what storage itself says
    assert 400 <= err.value.status < 500 and err.value.stage == "fetch", (err.value.status, err.value.message)


def test_the_reserved_bucket_is_a_4xx_too(stack_settings):
    store = ObjectStore(ServiceSettings(team="fruit", minio_endpoint=stack_settings.minio_endpoint))
    with pytest.raises(ServiceError) as err:
        asyncio.run(store.fetch("minio", "a.jpg"))
    assert 400 <= err.value.status < 500


def test_a_content_encoded_object_comes_as_stored_never_inflated(stack_settings, minio, bucket):
    """A gzip 'Content-Encoding' is not undone on the way in: the size limit holds for the bytes that arrive."""
    inflated = bytes(range(256)) * 4096  # 1 MiB that gzip shrinks to a few KB
    stored = gzip.compress(inflated)
    minio.put_object(bucket, "bomb.bin", io.BytesIO(stored), len(stored), metadata={"Content-Encoding": "gzip"})
    store = ObjectStore(
        ServiceSettings(
            team="fruit",
            minio_endpoint=stack_settings.minio_endpoint,
            minio_access_key=stack_settings.minio_access_key,
            minio_secret_key=stack_settings.minio_secret_key,
            max_object_bytes=64 * 1024,
        )
    )
    assert asyncio.run(store.fetch(bucket, "bomb.bin")) == stored


@pytest.mark.parametrize("key", STORAGE_REFUSES)
def test_the_service_refuses_those_names_before_asking_storage(fruit_service, bucket, key):
    response = httpx.post(
        f"{fruit_service.base_url}{INFER_JSON_ROUTE}", json={"bucket": bucket, "key": key}, timeout=30
    )
    expect_error(response, 422, "bad_request", "validate")


# ---------------------------------------------------------------------------- whose buckets


def test_another_team_s_bucket_is_403_before_storage_is_asked(fruit_service, minio, fruit_images):
    other = unique("orchard")  # an existing bucket of another team, holding a real image
    minio.make_bucket(other)
    try:
        put(minio, other, "a.jpg", fruit_images.clean)
        response = httpx.post(f"{fruit_service.base_url}{INFER_JSON_ROUTE}", json={"bucket": other, "key": "a.jpg"})
        message = expect_error(response, 403, "bucket_not_allowed", "fetch").message
        assert "fruit-*" in message and "ALLOWED_BUCKETS" in message
    finally:
        remove_bucket(minio, other)


# ---------------------------------------------------------------------------- the token, first


def test_the_token_is_checked_before_the_body_is_read(guarded_service):
    url = f"{guarded_service.base_url}{INFER_JSON_ROUTE}"
    expect_error(
        httpx.post(url, content=b'{"bucket": ', headers={"content-type": "application/json"}), 401, "unauthorized"
    )
    expect_error(
        httpx.post(url, content=b'{"bucket": ', headers={"authorization": "Bearer wrong"}), 401, "unauthorized"
    )
    expect_error(
        httpx.post(
            url,
            content=b'{"bucket": ',
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        ),
        422,
        "bad_request",
        "validate",
    )


# ---------------------------------------------------------------------------- slow and idle clients


def test_a_connection_that_sends_nothing_is_closed(guarded_service):
    with raw_connection(guarded_service) as sock:
        closed, sent = closed_within(sock, 5)
    assert closed and sent.startswith(b"HTTP/1.1 408")


def test_a_request_head_sent_byte_by_byte_is_cut_off(guarded_service):
    head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {'a' * 50}\r\n\r\n".encode()
    started = time.monotonic()
    with raw_connection(guarded_service) as sock:
        for byte in head:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)  # the slow sender under test, not a wait: at this pace the whole head would take 7 s
        closed, _ = closed_within(sock, 5)
    assert closed and time.monotonic() - started < 6


def test_a_body_sent_slowly_is_408(guarded_service, bucket):
    body = b'{"bucket": "' + bucket.encode() + b'", "key": "a.jpg"}'
    head = (
        f"POST /infer_json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with raw_connection(guarded_service) as sock:
        sock.sendall(head + body[:5])  # then nothing more
        closed, sent = closed_within(sock, 5)
    assert sent.startswith(b"HTTP/1.1 408"), sent[:200]
    assert b"request_timeout" in sent


def test_an_idle_keep_alive_connection_is_closed(guarded_service):
    with raw_connection(guarded_service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, sent = closed_within(sock, 12)  # the keep-alive timeout is 5 s
    assert sent.startswith(b"HTTP/1.1 200") and closed


def test_a_request_body_over_the_limit_is_413(guarded_service):
    response = httpx.post(
        f"{guarded_service.base_url}{INFER_JSON_ROUTE}",
        content=b" " * 70_000,
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    expect_error(response, 413, "request_too_large")


# ---------------------------------------------------------------------------- costly images


def test_a_jpeg_costing_minutes_is_415_at_once_and_holds_up_no_one(fruit_service, minio, bucket, fruit_images):
    put(minio, bucket, "bomb.jpg", progressive_jpeg_with_scans(3000))  # ~70 KB; ~9 s of CPU each if decoded
    put(minio, bucket, "clean.jpg", fruit_images.clean)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fruit_service.base_url, timeout=30) as client:
            keys = ["bomb.jpg", "bomb.jpg", "bomb.jpg", "clean.jpg"]
            return await asyncio.gather(
                *(client.post(INFER_JSON_ROUTE, json={"bucket": bucket, "key": key}) for key in keys)
            )

    started = time.monotonic()
    *bombs, clean = asyncio.run(fire())
    for response in bombs:
        assert "3000 scans" in expect_error(response, 415, "too_costly_to_decode", "decode").message
    assert clean.status_code == 200 and clean.json()["label"] == "clean"
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------- the dispatcher's client


def test_the_dispatcher_adapts_to_the_service_s_batch_limit(guarded_service, minio, bucket, fruit_images):
    put(minio, bucket, "clean.jpg", fruit_images.clean)

    async def go() -> tuple[list, int]:
        client = InferenceClient(
            f"{guarded_service.base_url}{INFER_JSON_ROUTE}", items_per_request=8, max_batch_wait_ms=50, auth_token=TOKEN
        )
        try:
            results = await asyncio.gather(
                *(client.infer(InferRequest(bucket=bucket, key="clean.jpg")) for _ in range(8))
            )
            return results, client.items_per_request
        finally:
            await client.aclose()

    results, items_per_request = asyncio.run(go())
    assert all(isinstance(r, Success) and r.response["label"] == "clean" for r in results), results
    assert items_per_request <= 2  # the service's MAX_BATCH_ITEMS, learned from its 422 too_many_items
