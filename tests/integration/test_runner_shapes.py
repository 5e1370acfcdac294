"""Any runner shape: a detector's answer (boxes, no single label) served as it is, and the request's `extra`
reaching the runner, through the real service (in-process, its real lifespan) against the real MinIO."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from PIL import Image

from schemas import INFER_BATCH_ROUTE, INFER_JSON_ROUTE, INFER_UPLOAD_ROUTE, READYZ_ROUTE
from services.inference_http.app import create_app
from services.inference_http.model_registry import RegistryError, get_model_runner
from services.inference_http.settings import ServiceSettings
from tests.conftest import remove_bucket, unique
from tests.runners.spots_runner import SpotsDetector

pytestmark = pytest.mark.integration

SPOTS_MODULE = "tests.runners.spots_runner"


def spots_image(cells: dict[tuple[int, int], int], size: int = 64) -> bytes:
    """A white PNG with the given (row, col) cells of the spots runner's 8x8 grid filled with a grey level."""
    image = Image.new("L", (size, size), 255)
    step = size // 8
    for (row, col), level in cells.items():
        image.paste(level, (col * step, row * step, (col + 1) * step, (row + 1) * step))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def spots_bucket(minio) -> Iterator[str]:
    name = unique("spots-test")  # the spots service reads its own buckets: spots, spots-*
    minio.make_bucket(name)
    # one black cell (row 2, col 5) and one mid-grey cell (row 6, col 1: darkness 0.6)
    data = spots_image({(2, 5): 0, (6, 1): 102})
    minio.put_object(name, "two-spots.png", io.BytesIO(data), len(data))
    yield name
    remove_bucket(minio, name)


class PickyDetector(SpotsDetector):
    """The spots runner with an adapter bug that some inputs trigger: a `label` that is not text."""

    def run(
        self, image_bytes_or_uri: Any, model_tag: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(image_bytes_or_uri, model_tag, extra)
        return {**result, "label": 7} if (extra or {}).get("bad_label") else result


@asynccontextmanager
async def spots_service(stack_settings, runner: Any = None, **settings_: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(
        team="spots",
        runner_module=SPOTS_MODULE,
        minio_endpoint=stack_settings.minio_endpoint,
        minio_access_key=stack_settings.minio_access_key,
        minio_secret_key=stack_settings.minio_secret_key,
        warmup_batches=1,
        **settings_,
    )
    app = create_app(settings, runner=runner)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service", timeout=30
        ) as client:
            deadline = asyncio.get_running_loop().time() + 30
            while (await client.get(READYZ_ROUTE)).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "the spots service never became ready"
                await asyncio.sleep(0.05)
            yield client


BLACK_CELL = {"label": "spot", "score": 1.0, "box": [40, 16, 48, 24]}
GREY_CELL = {"label": "spot", "score": 0.6, "box": [8, 48, 16, 56]}


def test_a_detector_s_boxes_come_back_as_they_are(stack_settings, spots_bucket):
    async def scenario() -> dict:
        async with spots_service(stack_settings) as client:  # the runner from RUNNER_MODULE, via the registry
            response = await client.post(INFER_JSON_ROUTE, json={"bucket": spots_bucket, "key": "two-spots.png"})
            assert response.status_code == 200, response.text
            return response.json()

    body = asyncio.run(scenario())
    assert body["detections"] == [BLACK_CELL, GREY_CELL] and body["count"] == 2
    assert "label" not in body and "score" not in body and "confidence" not in body
    assert (body["team"], body["model_name"], body["bucket"]) == ("spots", "spots_grid_detector", spots_bucket)
    assert body["timings"]["total_ms"] > 0


def test_extra_reaches_the_runner_from_every_route(stack_settings, spots_bucket):
    strict = {"min_score": 0.9}
    item = {"bucket": spots_bucket, "key": "two-spots.png"}

    async def scenario() -> tuple[dict, dict, dict]:
        async with spots_service(stack_settings) as client:
            one = (await client.post(INFER_JSON_ROUTE, json={**item, "extra": strict})).json()
            batch = (await client.post(INFER_BATCH_ROUTE, json={"items": [item, {**item, "extra": strict}]})).json()
            upload = (
                await client.post(
                    INFER_UPLOAD_ROUTE,
                    data={"extra": '{"min_score": 0.9}'},
                    files={"file": ("two.png", spots_image({(2, 5): 0, (6, 1): 102}))},
                )
            ).json()
            return one, batch, upload

    one, batch, upload = asyncio.run(scenario())
    assert one["detections"] == [BLACK_CELL] and one["options"]["min_score"] == 0.9
    default, picky = (entry["result"] for entry in batch["items"])
    assert default["detections"] == [BLACK_CELL, GREY_CELL] and picky["detections"] == [BLACK_CELL]
    assert upload["detections"] == [BLACK_CELL] and upload["filename"] == "two.png" and "bucket" not in upload


def test_a_recommended_key_of_the_wrong_type_fails_only_its_own_item(stack_settings, spots_bucket):
    item = {"bucket": spots_bucket, "key": "two-spots.png"}

    async def scenario() -> dict:
        async with spots_service(stack_settings, runner=PickyDetector()) as client:
            return (
                await client.post(INFER_BATCH_ROUTE, json={"items": [item, {**item, "extra": {"bad_label": True}}]})
            ).json()

    good, bad = asyncio.run(scenario())["items"]
    assert good["ok"] and good["result"]["count"] == 2
    assert (bad["ok"], bad["status"], bad["error"]["type"]) == (False, 500, "runner_error")
    assert "'label' is int" in bad["error"]["message"]


def test_runner_module_serves_a_runner_kept_outside_adapters():
    assert isinstance(get_model_runner("spots", module=SPOTS_MODULE), SpotsDetector)
    with pytest.raises(RegistryError, match="declares TEAM = 'spots', not TEAM 'fruit'"):
        get_model_runner("fruit", module=SPOTS_MODULE)
    with pytest.raises(RegistryError, match="cannot be found"):
        get_model_runner("spots", module="tests.runners.no_such_runner")


def test_an_upload_needs_the_bearer_token_like_the_other_infer_routes(stack_settings):
    image = {"file": ("two.png", spots_image({(2, 5): 0}))}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with spots_service(stack_settings, auth_token="s3cret") as client:
            return (
                await client.post(INFER_UPLOAD_ROUTE, files=image),
                await client.post(INFER_UPLOAD_ROUTE, files=image, headers={"authorization": "Bearer s3cret"}),
            )

    refused, served = asyncio.run(scenario())
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
    assert served.status_code == 200 and served.json()["detections"] == [BLACK_CELL]
