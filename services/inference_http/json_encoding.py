"""JSON out of the service, in one place: what the HTTP routes answer and what the scheduler sends its fronts, both
dumped by orjson with the same fallback for the values a runner's result may hold that orjson does not know."""

from __future__ import annotations

from typing import Any

import orjson


def json_default(value: Any) -> Any:
    """What orjson does not serialise itself in a runner's result: numpy and torch scalars, tuples' kin."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """`value` as JSON bytes; TypeError when it holds something that is not JSON (an adapter's bug)."""
    return orjson.dumps(value, default=json_default)
