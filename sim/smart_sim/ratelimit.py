"""The simulated clock and the providers' rate limiters, shared by both simulators.

Every time-dependent behaviour of a simulator (budget refill, action progress, lock-out)
reads one :class:`SimClock`. Simulated seconds pass ``time_scale`` times faster than real
ones, so a benchmark can compress an hour of Hetzner budget refill into a minute and
report its results against the scaled floor; tests jump the clock forward with
:meth:`SimClock.advance` instead of sleeping.

Two limiters model the providers' documented limits:

- :class:`TokenBucket` (Hetzner Cloud): a budget of ``limit`` requests that refills
  ``refill_per_second`` per second (3600 per hour, one per second).
- :class:`WindowLimiter` (Cloudflare): ``limit`` requests per window (1200 per five
  minutes); going over blocks *every* request for the lock-out period.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "LimitStatus",
    "Limiter",
    "SimClock",
    "TokenBucket",
    "WindowLimiter",
]


class SimClock:
    """Simulated seconds since the simulator started, running ``time_scale`` times real time.

    Wall-clock timestamps that a simulator reports (``created``, ``RateLimit-Reset``, ...)
    are derived with :meth:`wall`: the moment in real time at which the simulated clock
    reads a given value. Without :meth:`advance`, a client that compares them with its own
    clock waits exactly as long as it has to.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, not {time_scale!r}")
        self.time_scale = time_scale
        self._origin_monotonic = time.monotonic()
        self._origin_wall = time.time()
        self._offset = 0.0

    def now(self) -> float:
        """Simulated seconds elapsed since the clock was made."""
        return (time.monotonic() - self._origin_monotonic) * self.time_scale + self._offset

    def advance(self, seconds: float) -> None:
        """Jump the simulated clock forward (tests use this instead of sleeping)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"the clock only moves forward, not by {seconds!r} seconds")
        self._offset += seconds

    def wall_seconds(self, at: float) -> float:
        """The Unix time at which the simulated clock reads ``at``."""
        return self._origin_wall + at / self.time_scale

    def wall(self, at: float | None = None) -> datetime:
        """:meth:`wall_seconds` as an aware UTC datetime (``at`` defaults to now)."""
        return datetime.fromtimestamp(self.wall_seconds(self.now() if at is None else at), UTC)


@dataclass(frozen=True)
class LimitStatus:
    """A limiter's state, in the units the providers' headers use."""

    limit: int
    remaining: int
    reset_in: float
    """Simulated seconds until the budget is whole again (Hetzner) or the window resets."""
    blocked_for: float
    """Simulated seconds until a lock-out ends; 0 when not locked out."""


class Limiter(Protocol):
    """What the control API needs of a rate limiter."""

    def try_acquire(self) -> bool:
        """Spend one request; False when the request must be refused with a 429."""
        ...

    def status(self) -> LimitStatus:
        """The current budget."""
        ...

    def set_remaining(self, remaining: int) -> None:
        """Force the remaining budget (to test budget-aware clients quickly)."""
        ...


class TokenBucket:
    """Hetzner Cloud's limit: ``limit`` requests, refilling ``refill_per_second`` per second."""

    def __init__(self, clock: SimClock, *, limit: int, refill_per_second: float) -> None:
        if limit < 1 or refill_per_second <= 0:
            raise ValueError("a token bucket needs limit >= 1 and a positive refill rate")
        self.clock = clock
        self.limit = limit
        self.refill_per_second = refill_per_second
        self._tokens = float(limit)
        self._stamp = clock.now()

    def _refill(self) -> None:
        now = self.clock.now()
        refilled = self._tokens + (now - self._stamp) * self.refill_per_second
        self._tokens = min(float(self.limit), refilled)
        self._stamp = now

    def try_acquire(self) -> bool:
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def status(self) -> LimitStatus:
        self._refill()
        missing = self.limit - self._tokens
        return LimitStatus(
            limit=self.limit,
            remaining=math.floor(self._tokens),
            reset_in=missing / self.refill_per_second,
            blocked_for=0.0,
        )

    def set_remaining(self, remaining: int) -> None:
        self._refill()
        self._tokens = float(max(0, min(self.limit, remaining)))


class WindowLimiter:
    """Cloudflare's limit: ``limit`` requests per ``window`` seconds.

    The window opens with the first request. A request beyond the limit starts a lock-out
    of ``lockout`` seconds during which every request is refused; a fresh window opens
    after it.
    """

    def __init__(self, clock: SimClock, *, limit: int, window: float, lockout: float) -> None:
        if limit < 1 or window <= 0 or lockout < 0:
            raise ValueError("a window limiter needs limit >= 1, window > 0 and lockout >= 0")
        self.clock = clock
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self._window_start: float | None = None
        self._count = 0
        self._blocked_until = -math.inf

    def _roll(self, now: float) -> None:
        if self._window_start is not None and now >= self._window_start + self.window:
            self._window_start = None
            self._count = 0

    def try_acquire(self) -> bool:
        now = self.clock.now()
        if now < self._blocked_until:
            return False
        self._roll(now)
        if self._count >= self.limit:
            self._blocked_until = now + self.lockout
            self._window_start = None
            self._count = 0
            return False
        if self._window_start is None:
            self._window_start = now
        self._count += 1
        return True

    def status(self) -> LimitStatus:
        now = self.clock.now()
        blocked_for = max(0.0, self._blocked_until - now)
        if blocked_for > 0:
            return LimitStatus(self.limit, 0, blocked_for, blocked_for)
        self._roll(now)
        start = now if self._window_start is None else self._window_start
        reset_in = start + self.window - now
        return LimitStatus(self.limit, self.limit - self._count, reset_in, 0.0)

    def set_remaining(self, remaining: int) -> None:
        now = self.clock.now()
        self._blocked_until = -math.inf
        self._roll(now)
        if self._window_start is None:
            self._window_start = now
        self._count = self.limit - max(0, min(self.limit, remaining))
