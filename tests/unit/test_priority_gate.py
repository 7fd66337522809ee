"""The queue for an account's provider calls in flight (``budget.PriorityGate``): when
calls wait, an older Domain's go before a newer one's, whatever order they came in, and
no slot is lost to a waiter that gave up."""

from __future__ import annotations

import asyncio

from smart_operator.clients.budget import PRIORITY, PriorityGate, RequestBudget
from smart_operator.clients.inventory import ActionWatcher, Catalog, Fleet
from smart_operator.handlers.domain import created_at
from smart_operator.ports import ServerTypeView, ServerView
from tests.waiting import eventually_async


async def test_waiting_calls_go_in_by_priority_then_in_the_order_they_came() -> None:
    gate = PriorityGate(1)
    started: list[str] = []
    release = asyncio.Event()

    async def call(name: str, priority: float) -> None:
        PRIORITY.set(priority)
        async with gate.slot():
            started.append(name)
            await release.wait()

    holder = asyncio.create_task(call("first", 50.0))
    await eventually_async(lambda: started, what="the first call in")
    # Queued while the slot is taken: newer Domains first, then an older one, then a
    # call outside any Domain (priority 0), then another of the oldest Domain's.
    waiters = [
        asyncio.create_task(call(name, priority))
        for name, priority in [
            ("newer-a", 30.0),
            ("newer-b", 30.0),
            ("older", 10.0),
            ("shared", 0.0),
            ("older-again", 10.0),
        ]
    ]
    await eventually_async(lambda: gate.waiting() == 5, what="callers queued")
    release.set()
    await asyncio.gather(holder, *waiters)
    assert started == ["first", "shared", "older", "older-again", "newer-a", "newer-b"]


async def test_a_cancelled_waiter_loses_no_slot_and_blocks_nobody() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def call(name: str, priority: float) -> None:
        PRIORITY.set(priority)
        async with gate.slot():
            order.append(name)
            if name == "holder":
                await hold.wait()

    holder = asyncio.create_task(call("holder", 0.0))
    await eventually_async(lambda: order, what="the holder in")
    gone = asyncio.create_task(call("gone", 1.0))
    later = asyncio.create_task(call("later", 2.0))
    await eventually_async(lambda: gate.waiting() == 2, what="callers queued")
    gone.cancel()
    hold.set()
    await asyncio.gather(holder, later)
    assert gone.cancelled()
    assert order == ["holder", "later"]
    # Both slots' worth of turns came back: the gate is free again.
    async with asyncio.timeout(1):
        async with gate.slot():
            pass


async def test_a_waiter_cancelled_after_its_turn_came_passes_the_slot_on() -> None:
    gate = PriorityGate(1)
    order: list[str] = []

    async def call(name: str) -> None:
        async with gate.slot():
            order.append(name)

    async with gate.slot():  # held here while the two queue
        first = asyncio.create_task(call("first"))
        second = asyncio.create_task(call("second"))
        await eventually_async(lambda: gate.waiting() == 2, what="callers queued")
    # The slot is handed to "first" now; it is cancelled before it runs again.
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled()
    assert order == ["second"]
    async with asyncio.timeout(1):
        async with gate.slot():
            pass


def test_a_domain_pass_queues_by_its_domains_creation_time() -> None:
    older = {"metadata": {"creationTimestamp": "2026-12-07T03:55:12Z"}}
    newer = {"metadata": {"creationTimestamp": "2026-12-07T03:55:13Z"}}
    assert created_at(older) == 1796615712.0
    assert 0.0 < created_at(older) < created_at(newer)
    assert created_at({"metadata": {}}) == 0.0


async def test_the_shared_action_poll_goes_ahead_of_every_domain() -> None:
    """One poll serves every Domain waiting for a boot: it queues as the operator's own
    call, not as the Domain whose wait happened to start it."""
    seen: list[float] = []

    class Actions:
        async def actions(self, ids: list[int]) -> dict[int, str]:
            seen.append(PRIORITY.get())
            return dict.fromkeys(ids, "success")

    watcher = ActionWatcher(Actions(), interval=0.01)  # type: ignore[arg-type]

    async def domain_waits() -> str:
        PRIORITY.set(1796615712.0)
        return await watcher.wait(7)

    assert await domain_waits() == "success"
    await watcher.close()
    assert seen == [0.0]


async def test_shared_listings_others_wait_for_go_ahead_of_every_domain() -> None:
    """The project's server listing and the catalogue are refreshed under a lock every
    pass waits on: whichever Domain's pass refreshes them, they queue as the operator's
    own calls, and the pass goes on at its own priority."""
    seen: list[tuple[str, float]] = []

    class Project:
        budget = RequestBudget("hetzner", limit=3600, per_second=1.0)

        async def servers(self, labels: dict[str, str]) -> list[ServerView]:
            seen.append(("servers", PRIORITY.get()))
            return []

        async def server_types(self) -> list[ServerTypeView]:
            seen.append(("server_types", PRIORITY.get()))
            return []

    project = Project()
    fleet = Fleet(project)  # type: ignore[arg-type]
    catalog = Catalog(project)  # type: ignore[arg-type]
    PRIORITY.set(1796615712.0)
    await fleet.servers("d-1", max_age=60)
    await catalog.types()
    assert seen == [("servers", 0.0), ("server_types", 0.0)]
    assert PRIORITY.get() == 1796615712.0
