"""POST /infer_upload and `imagery infer`: a model tried on a file, no MinIO involved, on the real service
(uvicorn, the fruit model)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imagery.cli import app
from imagery.local.inference_service import InferenceService
from imagery.process import free_port
from schemas import HEALTHZ_ROUTE, INFER_UPLOAD_ROUTE
from services.inference_http.settings import service_environment
from tests.service_fixtures import FRUIT_SERVICE_ENV

pytestmark = pytest.mark.integration

MAX_OBJECT_BYTES = int(FRUIT_SERVICE_ENV["MAX_OBJECT_BYTES"])


def upload(service: InferenceService, data: bytes, name: str = "image.jpg", **fields: str) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}{INFER_UPLOAD_ROUTE}", files={"file": (name, data, "image/jpeg")}, data=fields, timeout=30
    )


def test_an_uploaded_image_gets_the_same_answer_as_the_stored_one(fruit_service, fruit_images):
    for kind in ("clean", "defect"):
        response = upload(fruit_service, fruit_images[kind], name=f"{kind}.jpg")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == kind and body["filename"] == f"{kind}.jpg" and body["team"] == "fruit"
        assert "bucket" not in body and body["timings"]["total_ms"] > 0


@pytest.mark.parametrize(
    "request_kwargs, status, type_",
    [
        ({"files": {"file": ("notes.jpg", b"this is text, not a JPEG")}}, 415, "not_an_image"),
        ({"files": {"file": ("big.jpg", b"\xff" * (MAX_OBJECT_BYTES + 1))}}, 413, "object_too_large"),
        ({"files": {"image": ("a.jpg", b"x")}}, 422, "bad_request"),  # not the `file` field
        ({"data": {"model_tag": "v1"}, "files": {"other": ("a", b"")}}, 422, "bad_request"),
        ({"json": {"bucket": "fruit-x", "key": "a.jpg"}}, 422, "bad_request"),  # not multipart
        ({"files": {"file": ("a.jpg", b"x")}, "data": {"extra": "[1, 2]"}}, 422, "bad_request"),
    ],
)
def test_what_infer_json_refuses_an_upload_refuses_alike(fruit_service, request_kwargs, status, type_):
    response = httpx.post(f"{fruit_service.base_url}{INFER_UPLOAD_ROUTE}", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == type_


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(fruit_service):
    # an upload's body may hold MAX_OBJECT_BYTES plus the form around it, and never less than MAX_REQUEST_BYTES
    too_big = max(MAX_OBJECT_BYTES + 1024 * 1024, 4 * 1024 * 1024 + 1)
    with httpx.Client(timeout=30) as client:
        response = client.post(
            f"{fruit_service.base_url}{INFER_UPLOAD_ROUTE}",
            content=b"\0" * too_big,
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_imagery_infer_prints_the_answer_and_checks_the_team(fruit_service, fruit_images, tmp_path):
    image = tmp_path / "defect.jpg"
    image.write_bytes(fruit_images.defect)
    result = cli("infer", str(image), "--team", "fruit", "--url", fruit_service.base_url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["label"] == "defect"

    wrong = cli("infer", str(image), "--team", "orchard", "--url", fruit_service.base_url)
    assert wrong.exit_code == 1 and "serves team 'fruit', not 'orchard'" in wrong.output
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    refused = cli("infer", str(text), "--team", "fruit", "--url", fruit_service.base_url)
    assert refused.exit_code == 1 and "415 not_an_image" in refused.output


class StorageLessService(InferenceService):
    """The fruit service pointed at a MinIO that is not there: it never reports ready (storage is part of
    readiness), so it counts as started once it answers /healthz."""

    readiness_path = HEALTHZ_ROUTE


def test_imagery_infer_needs_no_minio(stack_settings, fruit_weights, fruit_images, tmp_path: Path):
    image = tmp_path / "clean.jpg"
    image.write_bytes(fruit_images.clean)
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    with StorageLessService(
        stack_settings,
        team="fruit",
        weights_path=str(fruit_weights),
        env=service_environment(minio_endpoint=nowhere, storage_timeout_s=1),
    ) as service:
        # straight after start: the CLI waits out the warm-up (503 not_ready) within --timeout-s
        result = cli("infer", str(image), "--team", "fruit", "--url", service.base_url, "--timeout-s", "120")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["label"] == "clean"
