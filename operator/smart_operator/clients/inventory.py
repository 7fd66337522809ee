"""Shared views of Hetzner Cloud that keep API calls flat as Domains grow:

- ``ActionWatcher``: every Domain waiting for a server to boot waits on its action; one
  request asks for up to 50 actions at once, however many Domains are waiting.
- ``Fleet``: all managed servers, listed by label selector in one paginated request and
  shared by every Domain's drift check, as often as a tenth of the project's budget
  allows.
- ``Catalog``: server types with prices and where they can be ordered, listed every 10
  minutes at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable

from smart_operator.background import RETRIES, backoff
from smart_operator.clients.budget import shared_call
from smart_operator.clients.hetzner import Hetzner
from smart_operator.domains import UID_LABEL, managed_labels
from smart_operator.ports import ServerTypeView, ServerView

BATCH = 50
log = logging.getLogger(__name__)


class ActionWatcher:
    """Waits for Hetzner actions to finish, polling all of them together."""

    def __init__(self, hetzner: Hetzner, interval: float = 1.0) -> None:
        self._hetzner = hetzner
        self._interval = interval
        self._waiting: dict[int, list[asyncio.Future[str]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None

    async def wait(self, action_id: int) -> str:
        """The action's final status: ``success`` or ``error``."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[action_id].append(future)
        if self._task is None or self._task.done():
            # A context of its own: it polls for every Domain, not with the priority
            # (``budget.PRIORITY``) of the one whose wait happened to start it.
            self._task = asyncio.create_task(
                self._poll(), name="hetzner action watcher", context=contextvars.Context()
            )
        return await future

    async def _poll(self) -> None:
        failures = 0
        while self._waiting:
            await asyncio.sleep(backoff(failures, self._interval, 60.0))
            ids = sorted(self._waiting)
            for start in range(0, len(ids), BATCH):
                try:
                    statuses = await self._hetzner.actions(ids[start : start + BATCH])
                    failures = 0
                except Exception as error:  # a failed poll is retried, later each time
                    failures += 1
                    RETRIES.labels("hetzner action watcher").inc()
                    log.warning(
                        "polling Hetzner actions failed (%d), retrying: %s", failures, error
                    )
                    continue
                for action_id, status in statuses.items():
                    if status != "running":
                        for future in self._waiting.pop(action_id, []):
                            if not future.done():
                                future.set_result(status)
            for action_id in [a for a, fs in self._waiting.items() if all(f.done() for f in fs)]:
                self._waiting.pop(action_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


LISTING_SHARE = 0.1
"""The most of a project's request budget the shared listing may take. Hetzner pages
hold at most 50 servers (``per_page``), so a listing costs a request per 50 servers:
at 2,000 servers in a project a listing every minute would take 2,400 of its 3,600
requests an hour (docs.hetzner.cloud, "Rate Limiting"). A reading asked ``max_age``
seconds fresh is then as fresh as this share allows: at 2,000 servers, 400 s."""
PAGE = 50


class Fleet:
    """Every managed server by Domain uid, refreshed at most every ``max_age`` seconds,
    and no more often than ``LISTING_SHARE`` of the project's budget allows."""

    def __init__(self, hetzner: Hetzner, clock: Callable[[], float] = time.monotonic) -> None:
        self._hetzner = hetzner
        self._clock = clock
        self._by_uid: dict[str, list[ServerView]] = {}
        self._listed_at = float("-inf")
        self._pages = 1
        self._lock = asyncio.Lock()

    @property
    def listed(self) -> bool:
        """Whether the servers were listed at least once."""
        return self._listed_at > float("-inf")

    def interval(self) -> float:
        """The fewest seconds between two listings that keeps them within
        ``LISTING_SHARE`` of the project's budget, as fast as it refills now."""
        return self._pages / (max(self._hetzner.budget.per_second, 1e-6) * LISTING_SHARE)

    async def _refresh(self, max_age: float) -> None:
        if 0 < max_age < math.inf:
            max_age = max(max_age, self.interval())
        # Fresh enough: no waiting for a listing in progress (its pages pay the account's
        # budget one by one, behind every set-up's calls: minutes in a burst, and
        # placement, which takes turns, reads the listing as it is).
        if self._clock() - self._listed_at <= max_age:
            return
        async with self._lock:
            if self._clock() - self._listed_at > max_age:
                with shared_call():
                    listed = await self._hetzner.servers(managed_labels())
                by_uid: dict[str, list[ServerView]] = defaultdict(list)
                for server in listed:
                    by_uid[server.labels.get(UID_LABEL, "")].append(server)
                self._by_uid = dict(by_uid)
                self._pages = max(1, math.ceil(len(listed) / PAGE))
                self._listed_at = self._clock()

    async def servers(self, uid: str, max_age: float) -> list[ServerView]:
        await self._refresh(max_age)
        return list(self._by_uid.get(uid, []))

    async def uids(self, max_age: float) -> set[str]:
        """The Domains with a server in this project (from the same shared listing)."""
        await self._refresh(max_age)
        return {uid for uid, servers in self._by_uid.items() if uid and servers}

    def remember(self, uid: str, server: ServerView) -> None:
        known = [s for s in self._by_uid.get(uid, []) if s.id != server.id]
        self._by_uid[uid] = [*known, server]

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)


class Catalog:
    """Server types, their monthly prices and where they can be ordered, listed at most
    every ``max_age`` seconds (stock and deprecations change, slowly)."""

    def __init__(self, hetzner: Hetzner, max_age: float = 600.0) -> None:
        self._hetzner = hetzner
        self._max_age = max_age
        self._types: dict[str, ServerTypeView] | None = None
        self._listed_at = float("-inf")
        self._lock = asyncio.Lock()

    async def types(self) -> dict[str, ServerTypeView]:
        async with self._lock:
            if self._types is None or time.monotonic() - self._listed_at > self._max_age:
                with shared_call():
                    self._types = {t.name: t for t in await self._hetzner.server_types()}
                self._listed_at = time.monotonic()
        return self._types
