"""The records whose calls are running, handed from the event loop that runs them to the task thread that emits.

Flink's task thread calls the job's process function (streaming/flink/operators.py, `InferAndRoute`) once per
group or timer, and the calls to the service run on an event loop in a thread of its own.
A call that completes puts its outputs here (`finish`, on the loop's thread); the task thread takes them (`take`) on
its next group or timer of that key, emits them and forgets the group in Flink state, in one step, so a checkpoint
holds a record either in state (to be sent again after a restore) or in its outputs, never both or neither.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    """Offsets of running calls per key, and the finished ones waiting to be emitted. Thread-safe."""

    def __init__(self) -> None:
        self._running: defaultdict[Hashable, set[int]] = defaultdict(set)
        self._finished: defaultdict[Hashable, list[tuple[int, T]]] = defaultdict(list)
        self._failure: BaseException | None = None
        self._changed = threading.Condition()

    def start(self, key: Hashable, offset: int) -> None:
        with self._changed:
            self._running[key].add(offset)

    def finish(self, key: Hashable, offset: int, outputs: T) -> None:
        with self._changed:
            self._finished[key].append((offset, outputs))
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """A call raised (the dispatcher never does for what a record holds): the next `take` raises it, which fails
        the job; it restarts from its last checkpoint with nothing lost."""
        with self._changed:
            self._failure = error
            self._changed.notify_all()

    def take(self, key: Hashable) -> list[tuple[int, T]]:
        """The finished calls of `key`, oldest first, no longer counted as running."""
        with self._changed:
            if self._failure is not None:
                raise self._failure
            done = self._finished.pop(key, [])
            running = self._running[key]
            for offset, _ in done:
                running.discard(offset)
            return done

    def running(self, key: Hashable) -> int:
        """Calls of `key` started and not yet taken (finished ones included until `take`)."""
        with self._changed:
            return len(self._running[key])

    def wait_for_finished(self, key: Hashable, timeout_s: float) -> bool:
        """Block until a call of `key` has finished (or any has failed), at most `timeout_s`. True if one has."""
        with self._changed:
            return self._changed.wait_for(lambda: bool(self._finished.get(key)) or self._failure is not None, timeout_s)
