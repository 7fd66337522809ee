"""The operator's provider clients (``clients.hetzner``, ``clients.cloudflare``) against
the simulators, over loopback HTTP through the official SDKs: every HTTP request pays
one unit of the process's budget (the pages a listing fetches too), the budget keeps
the pace the provider allows, and every failure arrives as the error of
``smart_operator.errors`` the reconcilers act on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from smart_operator.clients.budget import BUDGET_WAITS, PRIORITY, RequestBudget
from smart_operator.clients.cloudflare import IN_FLIGHT, Cloudflare
from smart_operator.clients.hetzner import Hetzner
from smart_operator.errors import Conflict, PermanentFailure, RateLimited
from smart_operator.keys import generate_ssh_key
from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator
from smart_sim.hetzner import HetznerConfig, HetznerSimulator
from tests.waiting import eventually_async

TOKEN = "test-token"


class CountingBudget(RequestBudget):
    """The real budget, counting what was taken from it."""

    taken = 0

    async def take(self) -> None:
        await super().take()
        self.taken += 1


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


async def sim_json(method: str, url: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        return await response.json()


# -- Hetzner ----------------------------------------------------------------------------

HetznerStart = Callable[..., Awaitable[tuple[HetznerSimulator, Hetzner, CountingBudget]]]


@pytest.fixture
def hetzner(stack: contextlib.AsyncExitStack) -> HetznerStart:
    async def start(**config: Any) -> tuple[HetznerSimulator, Hetzner, CountingBudget]:
        sim = await stack.enter_async_context(HetznerSimulator(HetznerConfig(**config)))
        budget = CountingBudget("hetzner-test", limit=3600, per_second=1.0)
        client = Hetzner(TOKEN, sim.url, budget=budget)
        stack.callback(client.close)
        return sim, client, budget

    return start


async def used(sim: HetznerSimulator | CloudflareSimulator) -> int:
    """Requests the simulator counted against its limit (no refill during a test);
    asking counts nothing, it is a control call."""
    limit = await sim_json("GET", f"{sim.root_url}/_sim/ratelimit")
    return int(limit["limit"]) - int(limit["remaining"])


async def test_hetzner_every_request_pays_one_unit_pages_included(hetzner: HetznerStart) -> None:
    sim, client, budget = await hetzner(refill_per_second=1e-9)
    labels = {"smartserver.ai/managed": "true"}
    for n in range(60):  # more than one page of 50
        await client.create_firewall(f"fw-{n}", labels, ["203.0.113.7/32"])
    before, taken = await used(sim), budget.taken
    found = await client.firewalls(labels)
    assert len(found) == 60
    requests = await used(sim) - before
    assert requests >= 2  # the listing took more than one page
    assert budget.taken - taken == requests


async def test_hetzner_429_waits_for_the_reset_and_4xx_is_permanent(
    hetzner: HetznerStart,
) -> None:
    sim, client, budget = await hetzner()
    await sim_json("POST", f"{sim.root_url}/_sim/faults", {"kind": "rate_limit", "count": 1})
    with pytest.raises(RateLimited) as refused:
        await client.servers({"smartserver.ai/managed": "true"})
    assert refused.value.delay >= 1.0
    assert budget.wait_time() >= 0.9  # nothing more is sent before the reset
    waited = BUDGET_WAITS.labels("hetzner-test")._value.get()
    await client.servers({"smartserver.ai/managed": "true"})
    assert BUDGET_WAITS.labels("hetzner-test")._value.get() == waited + 1

    with pytest.raises(PermanentFailure) as invalid:
        await client.create_server(
            name="web-1",
            server_type="no-such-type",
            image="debian-12",
            location="fsn1",
            user_data="#cloud-config\n",
            labels={},
            ssh_key_ids=[],
            firewall_ids=[],
        )
    assert "server_type" in str(invalid.value) or "no-such-type" in str(invalid.value)


async def test_hetzner_a_taken_name_is_a_conflict_to_adopt_from(hetzner: HetznerStart) -> None:
    _, client, _ = await hetzner()
    made = await client.create_firewall("fw", {"smartserver.ai/uid": "u-1"}, ["203.0.113.7/32"])
    with pytest.raises(Conflict):
        await client.create_firewall("fw", {"smartserver.ai/uid": "u-1"}, ["203.0.113.7/32"])
    found = await client.firewall_by_name("fw")
    assert found is not None and found.id == made.id and found.labels["smartserver.ai/uid"] == "u-1"


async def test_hetzner_a_rotated_operator_key_is_a_new_key_and_the_old_one_can_go(
    hetzner: HetznerStart,
) -> None:
    """The key is looked up by fingerprint: after a rotation the new key is registered
    beside the old one (a new id), a new server is made with it, and the old key's
    object is removed only when it carries this installation's labels."""
    sim, client, _ = await hetzner()
    ours = {"smartserver.ai/managed": "true", "smartserver.ai/installation": "inst-1"}
    old, new = generate_ssh_key("smart-operator"), generate_ssh_key("smart-operator")
    old_id = await client.ensure_ssh_key(old.public, ours)
    assert await client.ensure_ssh_key(old.public, ours) == old_id
    new_id = await client.ensure_ssh_key(new.public, ours)
    assert new_id != old_id and await client.ensure_ssh_key(new.public, ours) == new_id
    server, _ = await client.create_server(
        name="web-1",
        server_type="cx23",
        image="debian-12",
        location="fsn1",
        user_data="#cloud-config\n",
        labels={},
        ssh_key_ids=[new_id],
        firewall_ids=[],
    )
    keys = sim.context.state.servers[server.id].info().ssh_public_keys
    assert [k.split()[:2] for k in keys] == [new.public.split()[:2]]
    other = {**ours, "smartserver.ai/installation": "inst-2"}
    assert not await client.delete_ssh_key(old.public, other)  # not this installation's
    assert await client.delete_ssh_key(old.public, ours)
    assert not await client.delete_ssh_key(old.public, ours)  # gone already
    listed = await sim_json("GET", f"{sim.url}/ssh_keys")
    assert [k["id"] for k in listed["ssh_keys"]] == [new_id]


# -- Cloudflare -------------------------------------------------------------------------

CloudflareStart = Callable[..., Awaitable[tuple[CloudflareSimulator, Cloudflare, CountingBudget]]]


@pytest.fixture
def cloudflare(stack: contextlib.AsyncExitStack) -> CloudflareStart:
    async def start(
        limit: int = 1200, window: float = 300.0, **config: Any
    ) -> tuple[CloudflareSimulator, Cloudflare, CountingBudget]:
        sim = await stack.enter_async_context(
            CloudflareSimulator(CloudflareConfig(rate_limit=limit, **config))
        )
        budget = CountingBudget(
            "cloudflare-test", limit=limit, per_second=limit / window, shape="window"
        )
        client = Cloudflare(TOKEN, sim.url, CloudflareConfig().account_id, budget=budget)
        stack.push_async_callback(client.close)
        return sim, client, budget

    return start


async def test_cloudflare_every_request_pays_one_unit_pages_included(
    cloudflare: CloudflareStart,
) -> None:
    sim, client, budget = await cloudflare()
    zone = await client.create_zone("shop.example")
    for n in range(120):  # more than one page of 100
        await sim_json(
            "POST",
            f"{sim.url}/zones/{zone.id}/dns_records",
            {"type": "A", "name": f"h{n}.shop.example", "content": "192.0.2.1", "ttl": 300},
        )
    before, taken = await used(sim), budget.taken
    records = await client.records(zone.id)
    assert len(records) == 120
    requests = await used(sim) - before
    assert requests == 2  # a page of 100, then the last (shorter) one
    assert budget.taken - taken == requests


async def test_cloudflare_a_listing_asks_for_no_page_past_the_last(
    cloudflare: CloudflareStart,
) -> None:
    """The SDK's pages always report a next one; the client stops at a short page, so a
    zone's few records are one request of the account's budget, not two. A last page
    that happens to be full is followed by one empty page, and nothing is missed."""
    sim, client, _ = await cloudflare()
    zone = await client.create_zone("shop.example")

    async def add(first: int, count: int) -> None:
        for n in range(first, first + count):
            await sim_json(
                "POST",
                f"{sim.url}/zones/{zone.id}/dns_records",
                {"type": "A", "name": f"h{n}.shop.example", "content": "192.0.2.1", "ttl": 300},
            )

    async def listing() -> tuple[int, int]:
        before = await used(sim)
        found = await client.records(zone.id)
        return len(found), await used(sim) - before

    await add(0, 3)
    assert await listing() == (3, 1)
    await add(3, 97)
    assert await listing() == (100, 2)  # a full page: the next one, empty, says it ended
    assert [z.name for z in await client.zones()] == ["shop.example"]


async def test_cloudflare_calls_are_paced_at_the_providers_rate(
    cloudflare: CloudflareStart,
) -> None:
    # Five requests per window; the window lasts 5 real seconds (300 s at 60x).
    _, client, budget = await cloudflare(limit=5, time_scale=60.0)
    waited = BUDGET_WAITS.labels("cloudflare-test")._value.get()
    for _ in range(8):
        assert await client.zones() == []  # never a 429: the budget waited instead
    assert budget.taken == 8
    assert BUDGET_WAITS.labels("cloudflare-test")._value.get() > waited


async def test_cloudflare_429_and_4xx_are_told_apart(cloudflare: CloudflareStart) -> None:
    sim, client, _ = await cloudflare()
    await sim_json("POST", f"{sim.root_url}/_sim/faults", {"kind": "rate_limit", "count": 1})
    with pytest.raises(RateLimited) as refused:
        await client.zones()
    assert refused.value.delay > 0
    zone = await client.create_zone("shop.example")
    with pytest.raises(PermanentFailure):
        await client.batch(
            zone.id,
            posts=[{"type": "A", "name": "shop.example", "content": "not-an-address", "ttl": 300}],
            patches=[],
            deletes=[],
        )


async def test_cloudflare_an_existing_zone_is_adopted(cloudflare: CloudflareStart) -> None:
    _, client, _ = await cloudflare()
    made = await client.create_zone("shop.example")
    again = await client.create_zone("shop.example")
    assert again.id == made.id


async def loopback_api(
    stack: contextlib.AsyncExitStack,
    path: str,
    answer: Callable[[web.Request], Any],
    turns: asyncio.Queue[None] | None = None,
) -> str:
    """A loopback server answering ``GET path`` with ``answer(request)`` as JSON after
    50 ms (the API's round trip), or, given ``turns``, each once the test puts one
    there; its base URL."""

    async def handle(request: web.Request) -> web.Response:
        body = answer(request)
        await (asyncio.sleep(0.05) if turns is None else turns.get())
        return web.json_response(body)

    app = web.Application()
    app.router.add_get(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def no_zones(request: web.Request) -> dict[str, Any]:
    info = {"page": 1, "per_page": 50, "count": 0, "total_count": 0, "total_pages": 1}
    return {"success": True, "errors": [], "messages": [], "result": [], "result_info": info}


async def test_cloudflare_calls_of_an_account_wait_their_turn_on_few_kept_connections(
    stack: contextlib.AsyncExitStack,
) -> None:
    """Sixty calls at once: at most ``IN_FLIGHT`` reach the API at a time, over at most
    as many connections, kept alive and reused; the rest wait in the client, not in
    httpcore's pool (whose every pass rescans what is queued there), and all are
    answered."""
    state = {"now": 0, "peak": 0}
    connections: set[tuple[str, int]] = set()

    def zones(request: web.Request) -> dict[str, Any]:
        connections.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return no_zones(request)

    url = await loopback_api(stack, "/zones", zones)
    client = Cloudflare(TOKEN, url, "account")
    stack.push_async_callback(client.close)
    client._http.event_hooks["request"].append(lambda _: counting(state, +1))
    client._http.event_hooks["response"].append(lambda _: counting(state, -1))
    answers = await asyncio.gather(*(client.zones() for _ in range(60)))
    assert answers == [[]] * 60
    assert 1 < state["peak"] <= IN_FLIGHT
    assert len(connections) <= IN_FLIGHT


async def counting(state: dict[str, int], change: int) -> None:
    state["now"] += change
    state["peak"] = max(state["peak"], state["now"])


async def as_domain_created_at(priority: float, call: Awaitable[Any]) -> Any:
    """``call`` made from a pass of a Domain created at ``priority`` (its own task, as
    every Domain pass is)."""
    PRIORITY.set(priority)
    return await call


async def queued_in_order(
    calls: list[Awaitable[Any]], asked: list[str], turns: asyncio.Queue[None], slots: int
) -> list[str]:
    """Start ``calls`` in this order; once ``slots`` reached the API, end them one at a
    time, so each ended call lets exactly one waiting call through. What reached the
    API, in order."""
    tasks = [asyncio.create_task(call) for call in calls]
    for reached in range(slots, len(calls)):
        await eventually_async(lambda n=reached: len(asked) >= n, what=f"{reached} calls sent")
        assert len(asked) == reached, f"more than {slots} calls in flight: {asked}"
        turns.put_nowait(None)
    for _ in range(slots):
        turns.put_nowait(None)
    await asyncio.gather(*tasks)
    return asked


async def test_waiting_calls_of_an_older_domain_go_before_those_of_a_burst_of_newer_ones(
    stack: contextlib.AsyncExitStack,
) -> None:
    """Thirty calls of new Domains come first and fill the account's calls in flight;
    five of an older Domain's, queued after them, are sent as soon as calls end."""
    asked: list[str] = []
    turns: asyncio.Queue[None] = asyncio.Queue()

    def zones(request: web.Request) -> dict[str, Any]:
        asked.append(request.query["name"].removesuffix(".example"))
        return no_zones(request)

    client = Cloudflare(TOKEN, await loopback_api(stack, "/zones", zones, turns), "account")
    stack.push_async_callback(client.close)
    newer = [as_domain_created_at(2000.0, client.zone(f"new-{n}.example")) for n in range(30)]
    older = [as_domain_created_at(1000.0, client.zone(f"old-{n}.example")) for n in range(5)]
    order = await queued_in_order([*newer, *older], asked, turns, IN_FLIGHT)
    assert sorted(order[:IN_FLIGHT]) == sorted(f"new-{n}" for n in range(IN_FLIGHT))
    assert order[IN_FLIGHT:] == (
        [f"old-{n}" for n in range(5)] + [f"new-{n}" for n in range(IN_FLIGHT, 30)]
    )


async def test_hetzner_calls_of_an_older_domain_go_before_those_of_a_burst_of_newer_ones(
    stack: contextlib.AsyncExitStack,
) -> None:
    """The same for Hetzner, whose SDK calls run on a few threads: the older Domain's
    calls wait for a thread ahead of the newer ones, not behind them in the pool."""
    asked: list[str] = []
    turns: asyncio.Queue[None] = asyncio.Queue()

    def servers(request: web.Request) -> dict[str, Any]:
        asked.append(request.query["name"])
        pagination = {"page": 1, "per_page": 25, "previous_page": None, "next_page": None}
        return {"servers": [], "meta": {"pagination": {**pagination, "last_page": 1}}}

    threads = 4
    url = await loopback_api(stack, "/servers", servers, turns)
    client = Hetzner(TOKEN, url, threads=threads)
    stack.callback(client.close)
    newer = [as_domain_created_at(2000.0, client.server_by_name(f"new-{n}")) for n in range(12)]
    older = [as_domain_created_at(1000.0, client.server_by_name(f"old-{n}")) for n in range(3)]
    order = await queued_in_order([*newer, *older], asked, turns, threads)
    assert sorted(order[:threads]) == sorted(f"new-{n}" for n in range(threads))
    assert order[threads:] == (
        [f"old-{n}" for n in range(3)] + [f"new-{n}" for n in range(threads, 12)]
    )
