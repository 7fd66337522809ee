"""Coalescing: the newest value per key, written by one task per key, at most once per
interval.

``offer(key, value)`` keeps ``value`` as the key's pending value (replacing an older
one; the caller decides what "newer" means). If no task is writing that key, one
starts and writes at once; while it writes, and for ``interval`` seconds after each
write, newer values only replace the pending one, and the task writes the newest
when the interval ends. A burst of N reports for one experiment therefore becomes
at most two writes per interval, and a single report is written without delay.

``duty`` (at most 1) bounds the share of time one key's writes may take, for work
whose cost grows with what it reads (a Customer's status counts every Domain of its
namespace): after a write that took ``t`` seconds the next one for that key starts no
sooner than ``t / duty`` seconds after it started, nor sooner than ``interval``.

A write that fails is retried with a growing pause (at most ``max_backoff``) unless
a newer value arrived meanwhile, which is then written instead: a value is dropped
only when something newer replaces it or when ``drain`` runs out of time at
shutdown. ``concurrency`` bounds the writes in flight across keys; the pending value
is taken only once a slot is free, so a write always carries the newest value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(
        self,
        name: str,
        write: Callable[[K, V], Awaitable[None]],
        interval: float,
        *,
        concurrency: int = 16,
        max_backoff: float = 30.0,
        duty: float = 1.0,
    ) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"{name}: duty must be above 0 and at most 1, not {duty}")
        self.name = name
        self._duty = duty
        self._write = write
        self._interval = interval
        self._max_backoff = max_backoff
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: dict[K, V] = {}
        self._writing_now: dict[K, V] = {}
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._draining = asyncio.Event()
        self._writing = 0

    def __len__(self) -> int:
        """How many keys have a value waiting to be written or being written."""
        return len(self._pending) + self._writing

    @property
    def busy(self) -> int:
        """How many keys have a task (writing, waiting for a slot, or in the interval)."""
        return len(self._tasks)

    def pending(self, key: K) -> V | None:
        """The newest value for ``key`` not yet written: waiting, or being written (until
        its write returns, the caller's view of the object may not show it yet)."""
        waiting = self._pending.get(key)
        return waiting if waiting is not None else self._writing_now.get(key)

    def offer(self, key: K, value: V) -> None:
        """Make ``value`` the next one written for ``key``."""
        if self._draining.is_set():
            raise RuntimeError(f"{self.name}: no new values while draining")
        self._pending[key] = value
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"{self.name}:{key}")

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less once ``drain`` asks for everything at once."""
        if seconds > 0 and not self._draining.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draining.wait(), seconds)

    async def _run(self, key: K) -> None:
        failures = 0
        try:
            while key in self._pending:
                async with self._slots:
                    value = self._pending.pop(key, None)
                    if value is None:
                        break
                    started = asyncio.get_running_loop().time()
                    self._writing += 1
                    self._writing_now[key] = value
                    try:
                        await self._write(key, value)
                    except asyncio.CancelledError:
                        self._pending.setdefault(key, value)
                        raise
                    except Exception:
                        failures += 1
                        # Keep it unless something newer has arrived meanwhile.
                        self._pending.setdefault(key, value)
                        log.exception(
                            "%s: writing %s failed (%d in a row)", self.name, key, failures
                        )
                    else:
                        failures = 0
                    finally:
                        self._writing -= 1
                        self._writing_now.pop(key, None)
                if failures:
                    backoff = min(self._max_backoff, max(self._interval, 0.5) * 2 ** (failures - 1))
                    await asyncio.sleep(backoff if not self._draining.is_set() else 0.2)
                else:
                    elapsed = asyncio.get_running_loop().time() - started
                    await self._pause(max(self._interval, elapsed / self._duty) - elapsed)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def drain(self, within: float) -> int:
        """Write everything pending now, waiting at most ``within`` seconds; return
        how many keys were left unwritten (their tasks are cancelled)."""
        self._draining.set()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        left = len(self._pending)
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if left:
            log.warning("%s: %d values were not written before shutdown", self.name, left)
        return left
