"""Waiting for a condition with a deadline, never for a fixed time: the one place the
tests poll from (``eventually`` in synchronous tests, ``eventually_async`` in async
ones). Each returns the first truthy value its check gives, or fails at the deadline
naming what it waited for and the last value it saw."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], timeout: float = 30, what: str = "", every: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s: {what or check}; last value: {last!r}")


async def eventually_async(
    check: Callable[[], Awaitable[T | None] | T | None],
    within: float = 30,
    what: str = "",
    every: float = 0.02,
) -> T:
    """Poll ``check`` (a plain or an async function) from a running event loop until it
    returns something truthy, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not true within {within} s: {what or check}; last value: {last!r}")
