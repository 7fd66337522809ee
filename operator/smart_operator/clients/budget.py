"""One request budget per provider per process.

Every provider call first takes one request from its budget; the budget follows what
the provider's own headers report (remaining requests, when they refill), so the
operator paces itself at the provider's rate instead of running into 429s, and a
burst of work never turns into a hot retry loop. Two shapes:

- ``bucket`` (Hetzner Cloud): requests refill continuously; the refill rate is derived
  from ``RateLimit-Remaining`` and ``RateLimit-Reset`` (the moment the bucket is full).
- ``window`` (Cloudflare): the whole allowance returns when the window resets.

Calls queue for an account's few calls in flight (``PriorityGate``), in ``PRIORITY``
order: a Domain's calls carry its creation time, so when a burst of new Domains wants
more than the budget gives, the Domains ahead of them go on to their next step (and to
the other provider) instead of waiting behind every newcomer's first one.

Pure asyncio and arithmetic: no SDK here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import Literal

from prometheus_client import Counter, Gauge

BUDGET_REMAINING = Gauge(
    "smartserver_provider_budget_remaining",
    "Requests the provider still allows before its limit, as last reported",
    ["provider"],
)
PROVIDER_CALLS = Counter(
    "smartserver_provider_calls_total",
    "Calls to outside providers by provider, verb and outcome",
    ["provider", "verb", "outcome"],
)
ACCOUNT_BUDGET_REMAINING = Gauge(
    "smartserver_account_budget_remaining",
    "Requests a provider account of the pool still allows before its limit, as last reported",
    ["account", "provider"],
)
ACCOUNT_CALLS = Counter(
    "smartserver_account_calls_total",
    "Calls to outside providers by provider account of the pool and provider",
    ["account", "provider"],
)
ACCOUNT_REQUESTS = Counter(
    "smartserver_account_requests_total",
    "HTTP requests sent to outside providers by provider account of the pool and provider "
    "(what their rate limits count: each page of a listing is one)",
    ["account", "provider"],
)
BUDGET_WAITS = Counter(
    "smartserver_provider_budget_waits_total",
    "Calls that had to wait for the provider's budget (after a 429: until its reset)",
    ["provider"],
)
BUDGET_WAIT_SECONDS = Counter(
    "smartserver_provider_budget_wait_seconds_total",
    "Time calls spent waiting for the provider's budget to refill",
    ["provider"],
)


PRIORITY: ContextVar[float] = ContextVar("provider_call_priority", default=0.0)
"""Which queued provider call goes first (lowest first, then the earliest queued): a
Domain's passes set their Domain's creation time (seconds since the epoch); calls
outside them (deletions) and the shared refreshes every pass waits on
(``shared_call``) are at 0 and go before any Domain's. Older Domains first is what
finishes a burst soonest: each provider's budget stays busy, because the Domains ahead
are the ones that reach the next provider."""


@contextlib.contextmanager
def shared_call() -> Iterator[None]:
    """Calls whose answer other passes wait for (a shared listing under a lock) go first,
    whichever Domain's pass makes them: made at that Domain's priority, a newer
    Domain's refresh would wait behind every older one's calls while they all wait for
    it."""
    token = PRIORITY.set(0.0)
    try:
        yield
    finally:
        PRIORITY.reset(token)


class PriorityGate:
    """At most ``slots`` holders at once; waiters are let in by ``PRIORITY``, then in
    the order they came. A slot is handed straight to the next waiter, so nobody
    overtakes the queue; a waiter cancelled after its turn came passes it on."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def waiting(self) -> int:
        return sum(not future.done() for *_, future in self._waiting)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._free > 0:  # free slots exist only while nobody waits
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (PRIORITY.get(), next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the slot was ours already
                self._release()
            raise

    def _release(self) -> None:
        while self._waiting:
            *_, turn = heapq.heappop(self._waiting)
            if not turn.done():  # (a cancelled waiter's turn is done)
                turn.set_result(None)
                return
        self._free += 1


class RequestBudget:
    """Requests a provider allows now, and when it allows more."""

    def __init__(
        self,
        provider: str,
        limit: int,
        per_second: float,
        shape: Literal["bucket", "window"] = "bucket",
        clock: Callable[[], float] = time.monotonic,
        account: str = "default",
    ) -> None:
        """``account``: the provider account of the pool whose budget this is (each has
        its own)."""
        self.provider = provider
        self.account = account
        self.limit = limit
        self.per_second = per_second
        self.shape = shape
        self._clock = clock
        self.remaining = float(limit)
        self._updated = clock()
        self._window_resets_at: float | None = None
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self._report(limit)

    def _report(self, remaining: float) -> None:
        BUDGET_REMAINING.labels(self.provider).set(remaining)
        ACCOUNT_BUDGET_REMAINING.labels(self.account, self.provider).set(remaining)

    def share(self, spend: float = 0.0) -> float:
        """The share of the budget left now, 0 to 1; with ``spend``, once that many more
        requests are made."""
        self._refill()
        return max(0.0, min(1.0, (self.remaining - spend) / self.limit)) if self.limit else 0.0

    def _refill(self) -> None:
        now = self._clock()
        if self.shape == "bucket":
            self.remaining = min(
                float(self.limit), self.remaining + (now - self._updated) * self.per_second
            )
        elif self._window_resets_at is not None and now >= self._window_resets_at:
            self.remaining = float(self.limit)
            self._window_resets_at = None
        self._updated = now

    def wait_time(self) -> float:
        """Seconds until one request may be made (0 when one may be made now)."""
        self._refill()
        now = self._clock()
        blocked = max(0.0, self._blocked_until - now)
        if self.remaining >= 1:
            return blocked
        if self.shape == "bucket":
            return max(blocked, (1 - self.remaining) / self.per_second)
        resets = self._window_resets_at if self._window_resets_at is not None else now + 1
        return max(blocked, resets - now)

    async def take(self) -> None:
        """Wait until the provider allows one more request, then spend it (the clients
        take one for each HTTP request they send)."""
        async with self._lock:
            waited = 0.0
            while (delay := self.wait_time()) > 0:
                waited += delay
                await asyncio.sleep(delay)
            self.remaining -= 1
            ACCOUNT_REQUESTS.labels(self.account, self.provider).inc()
            if waited:
                BUDGET_WAITS.labels(self.provider).inc()
                BUDGET_WAIT_SECONDS.labels(self.provider).inc(waited)

    def try_take(self) -> bool:
        """Spend one request if one is available now, without waiting."""
        if self.wait_time() > 0:
            return False
        self.remaining -= 1
        return True

    def observe(
        self, remaining: int | None, reset_in: float | None, limit: int | None = None
    ) -> None:
        """Correct the model from a response's headers."""
        if limit:
            self.limit = limit
        if remaining is None:
            return
        self._refill()
        self.remaining = float(remaining)
        if reset_in is not None and reset_in > 0:
            if self.shape == "bucket" and self.limit > remaining:
                self.per_second = (self.limit - remaining) / reset_in
            elif self.shape == "window":
                self._window_resets_at = self._clock() + reset_in
        self._report(remaining)

    def block(self, seconds: float) -> None:
        """The provider refused with 429: spend nothing more for ``seconds``."""
        self._refill()
        self.remaining = 0.0
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        if self.shape == "window":
            self._window_resets_at = self._clock() + seconds
        self._report(0)
