"""One task that runs every Domain's passes when they fall due, instead of a kopf
daemon (an asyncio task, its stopper, its logger and a copy of the body) per Domain.

``DueQueue`` is a heap of next-due times with lazy deletion; ``Scheduler`` pops what is
due, runs each key's pass in a task of its own (only while the pass runs: an idle key
costs an entry in the heap and a set), and puts the key back at the time the pass asked
for. A key never has two passes at once: a wake-up during a pass runs the next one as
soon as it ends. A pass that fails on an outside system is tried again after a growing
pause (``background.backoff``), as the daemons did.

Pure asyncio; the clock and the wait are parameters, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from smart_operator.background import backoff
from smart_operator.errors import ExternalError, TemporaryFailure

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Wait = Callable[[asyncio.Event, float | None], Awaitable[None]]
Pass = Callable[[str], Awaitable[float]]


async def wait_event(event: asyncio.Event, seconds: float | None) -> None:
    """Until ``event`` is set or ``seconds`` pass (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


class DueQueue:
    """When each key is next due. Rescheduling a key leaves its old heap entry behind
    (skipped when it surfaces); the heap is rebuilt when those outnumber the keys."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def put(self, key: str, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(at, next(self._order), key) for key, at in self._due.items()]
            heapq.heapify(self._heap)

    def remove(self, key: str) -> None:
        self._due.pop(key, None)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def next_at(self) -> float | None:
        """When the earliest key is due; None when there is none."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """The keys due at ``now``, earliest first, taken off the queue."""
        due: list[str] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._due[key]
            due.append(key)


class Scheduler:
    """Runs ``one_pass(key)`` for every known key when it is due; the pass returns the
    seconds until the next one. Runs only while ``active`` is set (the peering says this
    replica is the one that acts); ``clear`` forgets every key."""

    def __init__(
        self,
        kind: str,
        one_pass: Pass,
        *,
        clock: Clock = time.monotonic,
        wait: Wait = wait_event,
        retry_seconds: float = 5.0,
        most_seconds: float = 300.0,
    ) -> None:
        self.kind = kind
        self._one_pass = one_pass
        self._clock = clock
        self._wait = wait
        self._retry = retry_seconds
        self._most = most_seconds
        self._queue = DueQueue()
        self._known: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.active = asyncio.Event()

    def __len__(self) -> int:
        return len(self._known)

    def knows(self, key: str) -> bool:
        """Whether ``key`` is still to be reconciled (a pass checks it to stop early)."""
        return key in self._known and self.active.is_set()

    def running(self) -> int:
        return len(self._running)

    def add(self, key: str) -> None:
        """A key to reconcile: due at once when new; a known key keeps its time."""
        if key in self._known:
            return
        self._known.add(key)
        self._queue.put(key, self._clock())
        self._changed.set()

    def wake(self, key: str) -> None:
        """Run the key's next pass now (after the one in progress, if any)."""
        if key not in self._known:
            return
        if key in self._running:
            self._again.add(key)
        else:
            self._queue.put(key, self._clock())
            self._changed.set()

    def forget(self, key: str) -> None:
        """No more passes of ``key``; one in progress finishes (``knows`` turns False)."""
        self._known.discard(key)
        self._queue.remove(key)
        self._again.discard(key)
        self._failures.pop(key, None)

    def clear(self) -> None:
        """Forget every key (this replica stopped being the active one)."""
        self._known.clear()
        self._queue.clear()
        self._again.clear()
        self._failures.clear()

    def set_active(self, active: bool) -> None:
        if active:
            self.active.set()
        else:
            self.active.clear()
        self._changed.set()

    async def run(self) -> None:
        """Until cancelled: start the passes that are due, then wait for the next one or
        for a change (a new key, a wake-up, a pass that ended)."""
        try:
            while True:
                if not self.active.is_set():
                    await self.active.wait()
                for key in self._queue.pop_due(self._clock()):
                    self._running[key] = asyncio.create_task(
                        self._pass(key), name=f"{self.kind} {key}"
                    )
                due = self._queue.next_at()
                self._changed.clear()
                timeout = None if due is None else max(0.0, due - self._clock())
                await self._wait(self._changed, timeout)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the passes in progress and wait for them."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pass(self, key: str) -> None:
        try:
            delay = await self._one_pass(key)
            self._failures.pop(key, None)
        except ExternalError as error:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            floor = error.delay if isinstance(error, TemporaryFailure) else self._retry
            delay = backoff(failures, floor, self._most)
            log.warning("%s %s: %s; trying again in %.0f s", self.kind, key, error, delay)
        except Exception:  # a bug in one pass must not stop every other key's
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = backoff(failures, self._retry, self._most)
            log.exception("%s %s: pass failed; trying again in %.0f s", self.kind, key, delay)
        finally:
            self._running.pop(key, None)
        if key in self._known:
            if key in self._again:
                self._again.discard(key)
                delay = 0.0
            self._queue.put(key, self._clock() + delay)
        self._changed.set()
