"""Fixtures for the inference service: the fruit model's weights, a running fruit service, fruit images.

tests/conftest.py registers this module as a plugin (`pytest_plugins`). Only the launcher and the sample
generator are imported here (no torch), so the dispatcher's tests can use the fixtures without torch.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from adapters.fruit_defect import DEFAULT_WEIGHTS
from adapters.fruit_defect.samples import make_image
from imagery.local.inference_service import REPO_ROOT, InferenceService
from imagery.local.settings import StackSettings
from services.inference_http.settings import service_environment

FRUIT_WEIGHTS = DEFAULT_WEIGHTS
# a limit the tests can exceed cheaply, and a batching window wide enough that concurrent requests meet
FRUIT_SERVICE_ENV = service_environment(max_object_bytes=2 * 1024 * 1024, max_batch_size=16, max_batch_delay_ms=20)
HELD_OUT_SEED = 2_000_000  # training uses seeds below 1_000_000 and validation 1_000_000 on


def ensure_fruit_weights(out: Path = FRUIT_WEIGHTS) -> Path:
    """Train (or copy from the cache, or keep) the fruit model: `python -m adapters.fruit_defect.train`."""
    done = subprocess.run(
        [sys.executable, "-m", "adapters.fruit_defect.train", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training the fruit model failed:\n{done.stdout}\n{done.stderr}")
    return out


@pytest.fixture(scope="session")
def fruit_weights() -> Path:
    return ensure_fruit_weights()


@pytest.fixture(scope="session")
def fruit_service(stack_settings: StackSettings, fruit_weights: Path) -> Iterator[InferenceService]:
    """The fruit inference service as a real uvicorn process on a free port, against the stack's MinIO."""
    service = InferenceService(stack_settings, team="fruit", weights_path=str(fruit_weights), env=FRUIT_SERVICE_ENV)
    with service.start():
        yield service


class FruitImages:
    """JPEG bytes of fruit the model never saw in training: `fruit_images.clean`, `["defect"]`, `.make(kind, i)`."""

    @staticmethod
    @cache
    def make(kind: str, index: int = 0) -> bytes:
        return make_image(kind, HELD_OUT_SEED + index)

    @property
    def clean(self) -> bytes:
        return self.make("clean")

    @property
    def defect(self) -> bytes:
        return self.make("defect")

    def __getitem__(self, kind: str) -> bytes:
        return self.make(kind)


@pytest.fixture(scope="session")
def fruit_images() -> FruitImages:
    return FruitImages()
