"""What the running agent's loops share: the pause between two rounds, and the clock.

A pause ends early when the agent is asked to stop, so no loop holds shutdown up. The
clock (epoch seconds) decides only the salt day and a performance experiment's time
window, so a test can shift it; intervals and timeouts use the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

Clock = Callable[[], float]


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
