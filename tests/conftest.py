"""Session fixtures: the real stack comes up once; every test gets its own topics and buckets.

By default the stack is the project's own (Kafka jars, MinIO built from source, Flink from the wheel) started
on loopback, reused if `imagery up` already runs it. With IMAGERY_TEST_STACK=running the tests use what already
runs at the IMAGERY_* addresses and start nothing (a GPU machine without Java runs tests/gpu against a MinIO
started by hand).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from imagery import kafka_io
from imagery.local import stack
from imagery.local.settings import StackSettings

# the inference service's fixtures (fruit_weights, fruit_service, fruit_images), registered as a plugin of this root
# conftest so that every test directory sees them
pytest_plugins = ["tests.service_fixtures"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[StackSettings]:
    settings = StackSettings()
    if os.environ.get("IMAGERY_TEST_STACK") == "running":  # what already runs at the IMAGERY_* addresses, as is
        yield settings
        return
    started = stack.up(settings, flink=False)
    yield settings
    stack.down(settings, started)


@pytest.fixture(scope="session")
def flink_cluster(stack_settings: StackSettings) -> Iterator[StackSettings]:
    """A standalone Flink cluster (JobManager + TaskManager) from the PyFlink wheel."""
    started = stack.up(stack_settings, flink=True, log=lambda _: None)  # Kafka and MinIO run already
    yield stack_settings
    stack.down(stack_settings, started)


@pytest.fixture
def bootstrap(stack_settings: StackSettings) -> str:
    return stack_settings.bootstrap


@pytest.fixture
def new_topic(bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create a uniquely named topic; every topic made through this is deleted after the test."""
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = unique(prefix)
        kafka_io.create_topics(bootstrap, [name], partitions=partitions)
        made.append(name)
        return name

    yield make
    kafka_io.delete_topics(bootstrap, made)


@pytest.fixture
def minio(stack_settings: StackSettings):
    return stack.minio_client(stack_settings)


def remove_bucket(client, name: str) -> None:
    if not client.bucket_exists(name):
        return
    for obj in client.list_objects(name, recursive=True):
        client.remove_object(name, obj.object_name)
    client.remove_bucket(name)


@pytest.fixture
def bucket(minio) -> Iterator[str]:
    """A fresh bucket, emptied and removed after the test."""
    name = unique("fruit-test")  # the fruit service reads its own buckets: fruit, fruit-*
    minio.make_bucket(name)
    yield name
    remove_bucket(minio, name)
