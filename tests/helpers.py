"""What several test modules do the same way: put an object into MinIO, check an error answer of the service, wait
for a condition with a deadline (in a thread or on an event loop), read a /metrics page, read a record's JSON."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from minio import Minio
from prometheus_client.parser import text_string_to_metric_families

from imagery import cli, kafka_io
from imagery.repo import REPO_ROOT
from schemas import ErrorBody, ErrorDetail
from services.inference_http.errors import ServiceError

T = TypeVar("T")
E = TypeVar("E", bound=ServiceError)
MetricKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, its labels sorted by name)


def put(client: Minio, bucket: str, key: str, data: bytes) -> str:
    """Write `data` as `bucket`/`key`; the key."""
    client.put_object(bucket, key, io.BytesIO(data), len(data))
    return key


def expect_error(response: httpx.Response, status: int, type_: str, stage: str | None = None) -> ErrorDetail:
    """Assert that `response` is the service's error answer with this status, type and (when given) stage, and that
    it says something; its error."""
    assert response.status_code == status, response.text
    error = ErrorBody.model_validate(response.json()).error
    assert error.type == type_, error
    if stage is not None:
        assert error.stage == stage, error
    assert error.message, error
    return error


def _done(seen: object) -> bool:
    return bool(seen[0]) if isinstance(seen, tuple) else bool(seen)


def wait_for(
    check: Callable[[], T],
    what: str,
    timeout_s: float = 60.0,
    every_s: float = 0.2,
    watch: Callable[[], None] = lambda: None,
) -> T:
    """Call `check` every `every_s` until what it returns is truthy, and return that. A check may return a
    `(done, seen)` pair: it is done by its first item, and `seen` tells in the failure what it saw last. At the
    deadline, fail naming `what` was awaited. `watch` runs before every look (say, a job's `check_alive`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        watch()
        seen = check()
        if _done(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last seen: {seen!r})"[:3000])
        time.sleep(every_s)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 10.0, every_s: float = 0.01
) -> None:
    """`wait_for` on an event loop: await `check` (a function, or a coroutine function) every `every_s` until it
    holds, leaving the loop free in between; at the deadline, fail naming `what` was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        holds = check()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)


def metric_samples(text: str) -> dict[MetricKey, float]:
    """A Prometheus text page as {(sample name, labels): value}; a sample without labels is `(name, ())`."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def record_json(record: kafka_io.Record) -> Any:
    """A Kafka record's value, parsed as JSON (a record without a value fails the test)."""
    assert record.value is not None, f"no value: {record}"
    return json.loads(record.value)


def example_error(cls: type[E]) -> E:
    """An instance of the service's error class `cls`, whatever else its constructor requires beside the message (a
    Retry-After)."""
    required = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[2:]
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    ]
    extra: dict[str, Any] = dict.fromkeys(required, 3)
    return cls(f"an example of {cls.__name__}", **extra)


def imagery_command(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`imagery ARGS` in a process of its own, as a user runs it; what it printed, and its status."""
    return subprocess.run(
        [sys.executable, "-m", "imagery.cli", *args], capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT
    )


def run_cli_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`imagery ARGS` through the installed command's entry point (`cli.main`), in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["imagery", *args])
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else 0 if code is None else 1
    raise AssertionError("imagery's main returned instead of exiting")
