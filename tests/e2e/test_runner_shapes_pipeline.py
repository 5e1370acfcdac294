"""A detection-style runner behind the whole pipeline (Kafka -> PyFlink dispatcher -> the service -> Kafka): the
message's `extra` reaches the runner, the boxes reach the result topic, and the DLQ tools read what the job wrote."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image
from typer.testing import CliRunner

from imagery.cli import app
from imagery.local.inference_service import InferenceService
from imagery.pipeline_run import DispatcherProcess, collect, produce_messages
from services.inference_http.settings import service_environment
from tests.conftest import remove_bucket, unique
from tests.e2e.test_dispatcher import JOB_TIMEOUT_S, dispatcher_args
from tests.helpers import put

pytestmark = pytest.mark.e2e


def two_spots() -> bytes:
    """A white image with a black cell (row 2, col 5) and a mid-grey one (row 6, col 1) of the 8x8 grid."""
    image = Image.new("L", (64, 64), 255)
    image.paste(0, (40, 16, 48, 24))
    image.paste(102, (8, 48, 16, 56))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_detector_s_answers_and_the_message_s_extra_go_through_the_pipeline(
    stack_settings, bootstrap, new_topic, minio, tmp_path
):
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    bucket, run = unique("spots-e2e"), uuid.uuid4().hex[:8]
    minio.make_bucket(bucket)
    try:
        put(minio, bucket, "two.png", two_spots())
        produce_messages(
            bootstrap,
            inp,
            [
                {"id": f"{run}-default", "bucket": bucket, "key": "two.png"},
                {"id": f"{run}-strict", "bucket": bucket, "key": "two.png", "extra": {"min_score": 0.9}},
                {"id": f"{run}-missing", "bucket": bucket, "key": "nowhere.png"},
            ],
        )
        service = InferenceService(
            stack_settings, team="spots", env=service_environment(runner_module="tests.runners.spots_runner")
        )
        with (
            service,
            DispatcherProcess(
                dispatcher_args(bootstrap, "spots", service, inp, out, dlq, "--items-per-request", "4"),
                tmp_path / "dispatcher.log",
            ) as job,
        ):
            got = collect(
                bootstrap, out, dlq, lambda c: len(c.results) + len(c.dead) >= 3, JOB_TIMEOUT_S, watch=job.check_alive
            )
    finally:
        remove_bucket(minio, bucket)

    default, strict = got.results[f"{run}-default"], got.results[f"{run}-strict"]
    assert [d["box"] for d in default["detections"]] == [[40, 16, 48, 24], [8, 48, 16, 56]]
    assert [d["box"] for d in strict["detections"]] == [[40, 16, 48, 24]], "extra reached the runner"
    assert strict["echo"] == {"extra": {"min_score": 0.9}} and "label" not in strict
    assert strict["model_name"] == "spots_grid_detector" and strict["source"]["topic"] == inp
    (letter,) = got.dead
    assert (letter.team, letter.error.stage, letter.error.http_status) == ("spots", "fetch", 404)

    # the DLQ tools read what the job wrote, and replay only what is asked
    runner = CliRunner()
    shown = runner.invoke(
        app,
        ["dlq", "show", "--bootstrap", bootstrap, "--topic", dlq, "--team", "spots", "--stage", "fetch"],
        env={"COLUMNS": "250"},
    )
    assert shown.exit_code == 0 and "1 dead letters" in shown.output and "object_not_found" in shown.output
    refused = runner.invoke(app, ["dlq", "replay", "--bootstrap", bootstrap, "--topic", dlq])
    assert refused.exit_code == 1 and "--all" in refused.output
    dry = runner.invoke(
        app,
        ["dlq", "replay", "--bootstrap", bootstrap, "--topic", dlq, "--stage", "fetch", "--dry-run"],
        env={"COLUMNS": "250"},
    )
    assert dry.exit_code == 0 and "1 to replay (dry run)" in dry.output
    assert json.loads(letter.original_value())["id"] == f"{run}-missing"
