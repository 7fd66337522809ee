"""Coalescing: a burst becomes few writes, the newest value always lands, a failed
write is retried without losing what arrived meanwhile, and shutdown writes what is
pending."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from smart_operator.coalesce import Coalescer


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` until it is true, failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


class Target:
    """Where values are written: records each write; a write takes ``delay`` seconds
    and the first ``failures`` writes fail."""

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.delay = delay
        self.failures = failures
        self.written: list[tuple[str, int]] = []

    async def write(self, key: str, value: int) -> None:
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the API server is away")
        self.written.append((key, value))


async def test_a_single_value_is_written_at_once() -> None:
    target = Target()
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=60)
    coalescer.offer("a", 1)
    await until(lambda: target.written == [("a", 1)], within=1)
    await coalescer.drain(1)


async def test_a_burst_becomes_two_writes_and_the_newest_wins() -> None:
    target = Target(delay=0.01)
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=0.2)
    for value in range(1, 101):
        coalescer.offer("a", value)
        await asyncio.sleep(0)
    await until(lambda: coalescer.busy == 0)
    assert target.written == [("a", 1), ("a", 100)]


async def test_a_slow_write_spaces_the_next_by_its_duty() -> None:
    """A write that takes 0.1 s with a duty of a quarter: the next starts no sooner
    than 0.4 s after it started, though the interval alone would allow it at once."""
    target = Target(delay=0.1)
    starts: list[float] = []
    write = target.write

    async def timed(key: str, value: int) -> None:
        starts.append(asyncio.get_running_loop().time())
        await write(key, value)

    coalescer: Coalescer[str, int] = Coalescer("t", timed, interval=0.0, duty=0.25)
    coalescer.offer("a", 1)
    await until(lambda: len(starts) == 1)
    coalescer.offer("a", 2)
    coalescer.offer("a", 3)
    await until(lambda: coalescer.busy == 0)
    assert target.written == [("a", 1), ("a", 3)]
    assert starts[1] - starts[0] >= 0.39  # timers may fire a clock tick early


def test_a_duty_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="duty must be above 0 and at most 1, not 0"):
        Coalescer("t", Target().write, interval=1, duty=0)


async def test_keys_are_written_independently_within_the_concurrency() -> None:
    target = Target(delay=0.02)
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=0.0, concurrency=4)
    for key in "abcdefgh":
        coalescer.offer(key, 1)
    await until(lambda: coalescer.busy == 0)
    assert sorted(target.written) == [(key, 1) for key in "abcdefgh"]


async def test_a_failed_write_is_retried_with_the_newest_value() -> None:
    target = Target(delay=0.01, failures=2)
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=0.01, max_backoff=0.05)
    coalescer.offer("a", 1)
    await until(lambda: target.failures == 1)
    coalescer.offer("a", 2)  # arrives while the first value is being retried
    await until(lambda: coalescer.busy == 0)
    assert target.written == [("a", 2)]


async def test_drain_writes_pending_values_without_waiting_for_the_interval() -> None:
    target = Target()
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=3600)
    coalescer.offer("a", 1)
    await until(lambda: target.written == [("a", 1)])
    coalescer.offer("a", 2)  # waits for the hour-long interval...
    async with asyncio.timeout(2):
        left = await coalescer.drain(5)  # ...unless the process stops
    assert left == 0
    assert target.written == [("a", 1), ("a", 2)]


async def test_drain_gives_up_after_its_time_and_says_how_many_were_left() -> None:
    target = Target(failures=1000)
    coalescer: Coalescer[str, int] = Coalescer("t", target.write, interval=0.01, max_backoff=0.01)
    coalescer.offer("a", 1)
    coalescer.offer("b", 1)
    assert await coalescer.drain(0.3) == 2
    assert coalescer.busy == 0
