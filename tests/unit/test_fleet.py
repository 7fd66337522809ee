"""The shared listing of an account's servers (``clients.inventory.Fleet``)."""

from __future__ import annotations

import asyncio
from typing import Any

from smart_operator.clients.budget import RequestBudget
from smart_operator.clients.inventory import Fleet
from smart_operator.domains import UID_LABEL
from smart_operator.ports import ServerView


class SlowListing:
    """A Hetzner client whose listing answers only when the test lets it."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()
        self.listings = 0
        self.servers_now = [ServerView(1, "ss-a", "running", None, None, {UID_LABEL: "a"})]
        self.budget = RequestBudget("hetzner", limit=3600, per_second=1.0)

    async def servers(self, labels: dict[str, str]) -> list[ServerView]:
        self.listings += 1
        self.asked.set()
        await self.answer.wait()
        return list(self.servers_now)


async def test_a_fresh_enough_reading_does_not_wait_for_a_listing_in_progress() -> None:
    """Placement reads the listing as it is (``max_age`` infinite) and a drift check
    whose copy is fresh enough too: neither waits for a listing another check started,
    whose pages may queue for the account's budget for minutes in a burst."""
    hetzner = SlowListing()
    fleet = Fleet(hetzner)  # type: ignore[arg-type]
    hetzner.answer.set()
    assert await fleet.uids(0) == {"a"}
    hetzner.answer.clear()
    hetzner.servers_now.append(ServerView(2, "ss-b", "running", None, None, {UID_LABEL: "b"}))
    hetzner.asked.clear()
    stale: Any = asyncio.create_task(fleet.servers("b", 0))  # a listing, held up
    await asyncio.wait_for(hetzner.asked.wait(), 1)
    assert hetzner.listings == 2 and not stale.done()
    assert await asyncio.wait_for(fleet.uids(float("inf")), 1) == {"a"}
    assert await asyncio.wait_for(fleet.servers("a", 3600), 1) != []
    hetzner.answer.set()
    assert [s.name for s in await stale] == ["ss-b"]
    assert await fleet.uids(float("inf")) == {"a", "b"}
    assert hetzner.listings == 2


async def test_a_large_projects_listing_takes_at_most_a_tenth_of_its_budget() -> None:
    """Drift checks ask for a listing at most a minute old; with 2,000 servers (40 pages
    of 50) one a minute would take two thirds of the project's 3,600 requests an hour.
    The listing is then made again no sooner than a tenth of the budget allows: 400 s
    at a refill of one request a second (40 s at ten, when the minute asked for rules)."""
    hetzner = SlowListing()
    hetzner.answer.set()
    hetzner.servers_now = [
        ServerView(n, f"ss-{n}", "running", None, None, {UID_LABEL: f"d{n}"}) for n in range(2000)
    ]
    now = [0.0]
    fleet = Fleet(hetzner, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await fleet.servers("d7", 60) != []
    assert hetzner.listings == 1
    now[0] = 61.0
    await fleet.servers("d7", 60)
    assert hetzner.listings == 1  # not yet: 40 pages a minute is too many
    now[0] = 401.0
    await fleet.servers("d7", 60)
    assert hetzner.listings == 2
    now[0] = 402.0
    assert await fleet.uids(0) and hetzner.listings == 3  # "now" is now, whatever it costs
    hetzner.budget.per_second = 10.0  # 40 s: the minute asked for is the longer
    now[0] = 463.0
    await fleet.servers("d7", 60)
    assert hetzner.listings == 4

    small = SlowListing()
    small.answer.set()
    fleet = Fleet(small, clock=lambda: now[0])  # type: ignore[arg-type]
    await fleet.servers("a", 60)
    now[0] += 61.0
    await fleet.servers("a", 60)
    assert small.listings == 2  # one page: every minute is 60 requests an hour
