"""The Domain scheduler (``schedule``) on a fake clock: passes run when due and at the
time each asked for, a wake-up runs one now, never two of one key at once, failures
back off, forgotten keys stop, and nothing runs while the replica is not the active one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from smart_operator.errors import TemporaryFailure
from smart_operator.schedule import DueQueue, Scheduler


class FakeClock:
    """Time moves only when the test says; a scheduler waiting for its next due time
    wakes when it does."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._tick = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, seconds: float | None) -> None:
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._tick.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        self._tick.set()
        self._tick = asyncio.Event()
        await settle()


async def settle() -> None:
    """Let every ready task run until all wait again (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


class Passes:
    """The pass the scheduler runs: records (key, time), returns each key's delay."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, float]] = []
        self.delay: dict[str, float] = {}
        self.fail: dict[str, BaseException] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.in_progress: set[str] = set()
        self.overlapped = False

    async def __call__(self, key: str) -> float:
        if key in self.in_progress:
            self.overlapped = True
        self.in_progress.add(key)
        try:
            self.runs.append((key, self.clock.now))
            if key in self.gates:
                await self.gates[key].wait()
            if key in self.fail:
                raise self.fail[key]
            return self.delay.get(key, 60.0)
        finally:
            self.in_progress.discard(key)

    def times(self, key: str) -> list[float]:
        return [at - 1000.0 for k, at in self.runs if k == key]


World = tuple[FakeClock, Passes, Scheduler]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    passes = Passes(clock)
    scheduler = Scheduler("Domain", passes, clock=clock, wait=clock.wait, retry_seconds=5.0)
    scheduler.set_active(True)
    task = asyncio.create_task(scheduler.run())
    yield clock, passes, scheduler
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_new_key_runs_at_once_then_when_its_pass_asked(world: World) -> None:
    clock, passes, scheduler = world
    passes.delay = {"a": 30.0, "b": 90.0}
    scheduler.add("a")
    scheduler.add("b")
    await settle()
    assert passes.times("a") == [0.0] and passes.times("b") == [0.0]
    await clock.advance(29.0)
    assert passes.times("a") == [0.0]  # not early
    await clock.advance(1.0)
    assert passes.times("a") == [0.0, 30.0]
    await clock.advance(60.0)  # "a" fell due at 60 while time jumped: one late pass
    assert passes.times("a") == [0.0, 30.0, 90.0]
    assert passes.times("b") == [0.0, 90.0]
    # Adding a known key again (every watch event does) does not move its time.
    scheduler.add("b")
    await settle()
    assert passes.times("b") == [0.0, 90.0]


async def test_a_wake_up_runs_the_pass_now(world: World) -> None:
    clock, passes, scheduler = world
    passes.delay = {"a": 600.0}
    scheduler.add("a")
    await settle()
    await clock.advance(10.0)
    scheduler.wake("a")
    await settle()
    assert passes.times("a") == [0.0, 10.0]
    # The next one is the pass's delay after the woken one, not after the first.
    await clock.advance(595.0)
    assert passes.times("a") == [0.0, 10.0]
    await clock.advance(5.0)
    assert passes.times("a") == [0.0, 10.0, 610.0]


async def test_a_wake_up_during_a_pass_runs_the_next_right_after_it(world: World) -> None:
    _clock, passes, scheduler = world
    passes.delay = {"a": 600.0}
    gate = passes.gates["a"] = asyncio.Event()
    scheduler.add("a")
    await settle()
    scheduler.wake("a")
    scheduler.wake("a")
    await settle()
    assert passes.times("a") == [0.0]  # still in the first
    del passes.gates["a"]
    gate.set()
    await settle()
    assert passes.times("a") == [0.0, 0.0]  # one more, at once, and only one
    assert not passes.overlapped


async def test_a_forgotten_key_stops_and_its_pass_in_progress_knows(world: World) -> None:
    clock, passes, scheduler = world
    passes.delay = {"a": 10.0, "b": 10.0}
    gate = passes.gates["a"] = asyncio.Event()
    scheduler.add("a")
    scheduler.add("b")
    await settle()
    assert scheduler.knows("a")
    scheduler.forget("a")
    assert not scheduler.knows("a")  # what the pass checks to stop early
    gate.set()
    await clock.advance(100.0)
    assert passes.times("a") == [0.0]
    assert len(passes.times("b")) > 1
    assert len(scheduler) == 1


async def test_failures_back_off_and_a_bug_stops_only_its_own_key(world: World) -> None:
    clock, passes, scheduler = world
    passes.fail = {
        "api": TemporaryFailure("kubernetes", "HTTP 503", delay=5.0),
        "bug": KeyError("status"),
    }
    passes.delay = {"ok": 10.0}
    for key in ("api", "bug", "ok"):
        scheduler.add(key)
    await settle()
    for _ in range(40):
        await clock.advance(5.0)
    api = passes.times("api")
    gaps = [later - earlier for earlier, later in itertools.pairwise(api)]
    assert gaps[0] >= 5.0 * 2 * 0.9 and gaps[-1] > gaps[0]  # doubling from the floor
    assert len(passes.times("bug")) >= 2  # tried again, not dropped
    assert passes.times("ok") == [10.0 * i for i in range(21)]  # unaffected
    # A success resets the pause.
    del passes.fail["api"]
    await clock.advance(300.0)
    count = len(passes.times("api"))
    await clock.advance(60.0)
    assert len(passes.times("api")) == count + 1


async def test_nothing_runs_while_the_replica_is_paused(world: World) -> None:
    clock, passes, scheduler = world
    scheduler.set_active(False)
    scheduler.add("a")
    await clock.advance(120.0)
    assert passes.runs == []
    assert not scheduler.knows("a")
    scheduler.set_active(True)
    await settle()
    assert passes.times("a") == [120.0]
    scheduler.clear()  # paused: kopf will list everything again on resume
    await clock.advance(600.0)
    assert passes.times("a") == [120.0]
    assert len(scheduler) == 0


def test_the_queue_orders_keys_and_keeps_only_the_latest_time() -> None:
    queue = DueQueue()
    queue.put("a", 30.0)
    queue.put("b", 10.0)
    queue.put("a", 5.0)  # rescheduled earlier
    assert queue.next_at() == 5.0
    assert queue.pop_due(10.0) == ["a", "b"]
    assert queue.pop_due(1e9) == []  # the old entry of "a" is not a second run
    assert len(queue) == 0 and queue.next_at() is None
    queue.put("c", 1.0)
    queue.remove("c")
    assert queue.pop_due(1e9) == []


def test_rescheduling_does_not_grow_the_heap_without_bound() -> None:
    queue = DueQueue()
    for i in range(1000):
        queue.put(f"k{i}", float(i))
    for round_ in range(50):
        for i in range(1000):
            queue.put(f"k{i}", float(i + round_))
    assert len(queue) == 1000
    assert len(queue._heap) <= 2 * 1000 + 65
    assert queue.pop_due(10.0 + 49) == [f"k{i}" for i in range(11)]
