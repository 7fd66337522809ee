"""The shared listing of an account's servers (``clients.inventory.Fleet``)."""

from __future__ import annotations

import asyncio
from typing import Any

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
