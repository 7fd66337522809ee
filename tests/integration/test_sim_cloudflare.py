"""The Cloudflare simulator against the official ``cloudflare`` SDK, over loopback HTTP.

The SDK runs with ``max_retries=0`` so every fault is seen as the operator would see it.
Time-dependent behaviour (the rate-limit window and lock-out) is driven by the
simulator's clock through the control API, or by a high ``time_scale``; never by sleeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator
from tests.waiting import eventually_async

T = TypeVar("T")

TOKEN = "test-token"

Start = Callable[..., Awaitable[CloudflareSimulator]]

OURS = "managed by smart-server"


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start simulators with a given configuration; all are stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**config: Any) -> CloudflareSimulator:
            return await stack.enter_async_context(CloudflareSimulator(CloudflareConfig(**config)))

        yield start


@pytest.fixture
async def sim(start: Start) -> CloudflareSimulator:
    return await start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP client, for the control API."""
    async with aiohttp.ClientSession() as session:
        yield session


def sdk(sim: CloudflareSimulator, token: str = TOKEN) -> AsyncCloudflare:
    return AsyncCloudflare(api_token=token, base_url=sim.url, max_retries=0)


@pytest.fixture
async def client(sim: CloudflareSimulator) -> AsyncIterator[AsyncCloudflare]:
    async with sdk(sim) as cf:
        yield cf


async def control(
    http: aiohttp.ClientSession, sim: CloudflareSimulator, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, f"{sim.root_url}/_sim/{path}", json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def new_zone(
    client: AsyncCloudflare, sim: CloudflareSimulator, name: str = "example.com"
) -> str:
    zone = await client.zones.create(account={"id": sim.context.config.account_id}, name=name)
    assert zone is not None
    return zone.id


async def paid_zone(
    client: AsyncCloudflare,
    sim: CloudflareSimulator,
    http: aiohttp.ClientSession,
    name: str = "example.com",
    plan: str = "pro",
) -> str:
    """A zone made through the API (so on Free), then moved to a paid plan."""
    zone_id = await new_zone(client, sim, name)
    await control(http, sim, "PUT", f"zones/{zone_id}/plan", {"plan": plan})
    return zone_id


async def names(client: AsyncCloudflare, zone_id: str, **filters: Any) -> list[str]:
    records = client.dns.records.list(zone_id=zone_id, **filters)
    return sorted([f"{r.type} {r.name}" async for r in records])


def codes(error: cloudflare.APIStatusError) -> list[int]:
    body = error.body
    assert isinstance(body, dict)
    return [e["code"] for e in body["errors"]] + [
        c["code"] for e in body["errors"] for c in e.get("error_chain", [])
    ]


# -- zones -----------------------------------------------------------------------------


async def test_a_zone_is_pending_until_delegated_and_checked(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await new_zone(client, sim)
    zone = await client.zones.get(zone_id=zone_id)
    assert zone is not None
    assert (zone.name, zone.status, zone.type, zone.activated_on) == (
        "example.com",
        "pending",
        "full",
        None,
    )
    assert all(ns.endswith(".ns.cloudflare.com") for ns in zone.name_servers)
    assert zone.account.id == sim.context.config.account_id

    listed = [z async for z in client.zones.list(name="example.com")]
    assert [z.id for z in listed] == [zone_id]
    assert [z async for z in client.zones.list(name="other.com")] == []
    assert [
        z.id async for z in client.zones.list(name="ends_with:ample.com", status="pending")
    ] == [zone_id]

    # The owner has not switched name servers yet: the check leaves the zone pending.
    checked = await client.zones.activation_check.trigger(zone_id=zone_id)
    assert checked is not None and checked.id == zone_id
    await control(http, sim, "POST", "clock", {"advance": 30})
    assert (await client.zones.get(zone_id=zone_id)).status == "pending"  # type: ignore[union-attr]

    # Once delegated, Cloudflare's own next check (60 s after creation) activates it.
    await control(http, sim, "POST", "zones/example.com/delegate")
    await control(http, sim, "POST", "clock", {"advance": 31})
    active = await client.zones.get(zone_id=zone_id)
    assert active is not None
    assert active.status == "active"
    assert active.activated_on is not None

    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await new_zone(client, sim)
    assert codes(excinfo.value) == [1061]

    deleted = await client.zones.delete(zone_id=zone_id)
    assert deleted is not None and deleted.id == zone_id
    with pytest.raises(cloudflare.BadRequestError) as not_found:
        await client.zones.get(zone_id=zone_id)
    assert codes(not_found.value) == [7003, 7000]


async def test_zones_can_be_activated_or_seeded_by_the_control_api(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await new_zone(client, sim, "shop.example")
    await control(http, sim, "POST", f"zones/{zone_id}/activate")
    assert (await client.zones.get(zone_id=zone_id)).status == "active"  # type: ignore[union-attr]

    seeded = (await control(http, sim, "POST", "zones", {"name": "agency.example"}))["zone"]
    found = [z async for z in client.zones.list(name="agency.example")]
    assert [(z.id, z.status) for z in found] == [(seeded["id"], "active")]
    assert len([z async for z in client.zones.list()]) == 2


async def test_new_zones_can_count_as_delegated(start: Start, http: aiohttp.ClientSession) -> None:
    sim = await start(delegate_new_zones=True)
    async with sdk(sim) as client:
        zone_id = await new_zone(client, sim)
        await client.zones.activation_check.trigger(zone_id=zone_id)
        assert (await client.zones.get(zone_id=zone_id)).status == "pending"  # type: ignore[union-attr]
        await control(http, sim, "POST", "clock", {"advance": 10})  # the check it queued
        assert (await client.zones.get(zone_id=zone_id)).status == "active"  # type: ignore[union-attr]


async def test_zone_names_and_accounts_are_checked(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await new_zone(client, sim, "localhost")
    assert codes(excinfo.value) == [1049]
    with pytest.raises(cloudflare.PermissionDeniedError):
        await client.zones.create(account={"id": "0" * 32}, name="example.com")
    accounts = [a async for a in client.accounts.list()]
    assert [a.id for a in accounts] == [sim.context.config.account_id]


# -- DNS records -----------------------------------------------------------------------


async def test_record_create_get_update_patch_delete(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await paid_zone(client, sim, http)
    record = await client.dns.records.create(
        zone_id=zone_id,
        name="www",
        type="A",
        content="127.10.0.1",
        ttl=300,
        comment=OURS,
        tags=["smartserver-uid:abc-123", "owner:operator"],
    )
    assert record is not None
    assert (record.name, record.type, record.content, record.ttl) == (
        "www.example.com",
        "A",
        "127.10.0.1",
        300,
    )
    assert record.comment == OURS
    assert record.tags == ["smartserver-uid:abc-123", "owner:operator"]
    assert record.proxiable is True
    assert record.proxied is False
    assert record.comment_modified_on is not None
    assert record.tags_modified_on is not None

    fetched = await client.dns.records.get(dns_record_id=record.id, zone_id=zone_id)
    assert fetched is not None and fetched.created_on == record.created_on

    patched = await client.dns.records.edit(
        dns_record_id=record.id,
        zone_id=zone_id,
        type="A",
        name="www",
        content="127.10.0.2",
        ttl=300,
    )
    assert patched is not None
    assert (patched.content, patched.comment) == ("127.10.0.2", OURS)  # PATCH keeps the rest
    assert patched.comment_modified_on == record.comment_modified_on

    replaced = await client.dns.records.update(
        dns_record_id=record.id,
        zone_id=zone_id,
        type="A",
        name="www",
        content="127.10.0.3",
        ttl=1,
        proxied=True,
    )
    assert replaced is not None
    assert (replaced.content, replaced.comment, replaced.tags, replaced.proxied) == (
        "127.10.0.3",
        None,
        [],
        True,
    )
    assert replaced.comment_modified_on is None

    mx = await client.dns.records.create(
        zone_id=zone_id, name="@", type="MX", content="mail.example.com", ttl=3600, priority=10
    )
    assert mx is not None and (mx.name, mx.priority) == ("example.com", 10)

    deleted = await client.dns.records.delete(dns_record_id=record.id, zone_id=zone_id)
    assert deleted is not None and deleted.id == record.id
    with pytest.raises(cloudflare.NotFoundError) as excinfo:
        await client.dns.records.get(dns_record_id=record.id, zone_id=zone_id)
    assert codes(excinfo.value) == [81044]
    with pytest.raises(cloudflare.NotFoundError):
        await client.dns.records.delete(dns_record_id=record.id, zone_id=zone_id)


async def test_record_list_filters(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await paid_zone(client, sim, http)
    create = client.dns.records.create
    await create(
        zone_id=zone_id, name="www", type="A", content="127.10.0.1", ttl=1, comment=OURS,
        tags=["smartserver-uid:abc", "role:web"],
    )  # fmt: skip
    await create(
        zone_id=zone_id, name="www", type="AAAA", content="2001:db8::1", ttl=1, comment=OURS,
        tags=["smartserver-uid:abc"],
    )  # fmt: skip
    await create(
        zone_id=zone_id, name="api", type="A", content="127.10.0.2", ttl=1, proxied=True,
        tags=["smartserver-uid:def", "role:api"],
    )  # fmt: skip
    await create(
        zone_id=zone_id, name="_verify", type="TXT", content="token=xyz", ttl=1, comment="by hand"
    )
    await create(zone_id=zone_id, name="blog", type="CNAME", content="hosted.example.net", ttl=1)

    assert await names(client, zone_id, type="A") == ["A api.example.com", "A www.example.com"]
    assert await names(client, zone_id, name={"exact": "www.example.com"}) == [
        "A www.example.com",
        "AAAA www.example.com",
    ]
    assert await names(client, zone_id, type="A", name={"exact": "www.example.com"}) == [
        "A www.example.com"
    ]
    assert await names(client, zone_id, name={"startswith": "_"}) == ["TXT _verify.example.com"]
    assert await names(client, zone_id, content={"contains": "example.net"}) == [
        "CNAME blog.example.com"
    ]
    assert await names(client, zone_id, comment={"exact": OURS}) == [
        "A www.example.com",
        "AAAA www.example.com",
    ]
    assert await names(client, zone_id, comment={"present": "x"}) == [
        "A www.example.com",
        "AAAA www.example.com",
        "TXT _verify.example.com",
    ]
    assert await names(client, zone_id, comment={"absent": "x"}) == [
        "A api.example.com",
        "CNAME blog.example.com",
    ]
    assert await names(client, zone_id, tag={"exact": "smartserver-uid:abc"}) == [
        "A www.example.com",
        "AAAA www.example.com",
    ]
    assert await names(client, zone_id, tag={"present": "role"}) == [
        "A api.example.com",
        "A www.example.com",
    ]
    assert await names(client, zone_id, tag={"absent": "smartserver-uid"}) == [
        "CNAME blog.example.com",
        "TXT _verify.example.com",
    ]
    assert await names(client, zone_id, tag={"startswith": "role:w"}) == ["A www.example.com"]
    assert await names(client, zone_id, proxied=True) == ["A api.example.com"]
    assert await names(
        client, zone_id, type="TXT", name={"exact": "blog.example.com"}, match="any"
    ) == [
        "CNAME blog.example.com",
        "TXT _verify.example.com",
    ]

    # Several tag filters: all must hold by default, any one with tag_match=any.
    two_tags = {"exact": "role:api", "present": "smartserver-uid"}
    assert await names(client, zone_id, tag=two_tags) == ["A api.example.com"]
    assert await names(client, zone_id, tag=two_tags, tag_match="any") == [
        "A api.example.com",
        "A www.example.com",
        "AAAA www.example.com",
    ]

    ordered = [
        r.name async for r in client.dns.records.list(zone_id=zone_id, type="A", order="name")
    ]
    assert ordered == ["api.example.com", "www.example.com"]
    first_page = await client.dns.records.list(zone_id=zone_id, per_page=5, page=1)
    assert first_page.result_info is not None and first_page.result_info.per_page == 5


async def test_conflicting_and_invalid_records_are_refused(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await paid_zone(client, sim, http)
    create = client.dns.records.create
    await create(zone_id=zone_id, name="www", type="A", content="127.10.0.1", ttl=1)
    refused: list[tuple[dict[str, Any], list[int]]] = [
        ({"name": "www", "type": "A", "content": "127.10.0.1"}, [81058]),
        ({"name": "www", "type": "CNAME", "content": "elsewhere.example.net"}, [81053]),
        ({"name": "www", "type": "A", "content": "not-an-ip"}, [1004, 9005]),
        ({"name": "www", "type": "AAAA", "content": "127.0.0.1"}, [1004, 9006]),
        ({"name": "txt", "type": "TXT", "content": "x", "proxied": True}, [1004, 9004]),
        ({"name": "www", "type": "A", "content": "127.10.0.9", "ttl": 5}, [1004, 9021]),
        ({"name": "bad name", "type": "A", "content": "127.10.0.9"}, [1004, 9008]),
        ({"name": "@", "type": "MX", "content": "mail.example.com"}, [1004, 9103]),
        ({"name": "x", "type": "SRV", "content": "x"}, [1004, 9000]),
        ({"name": "www", "type": "TXT", "content": "x", "comment": "c" * 501}, [1004, 9101]),
        ({"name": "www", "type": "TXT", "content": "x", "comment": "two\nlines"}, [1004, 9101]),
        (
            {"name": "www", "type": "TXT", "content": "x", "tags": ["smartserver.ai/uid:x"]},
            [1004, 9102],
        ),
    ]
    for fields, expected in refused:
        with pytest.raises(cloudflare.BadRequestError) as excinfo:
            await create(zone_id=zone_id, **{"ttl": 1, **fields})
        assert codes(excinfo.value) == expected, fields
    assert await names(client, zone_id) == ["A www.example.com"]


async def test_batch_applies_everything_or_nothing(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    zone_id = await new_zone(client, sim)
    create = client.dns.records.create
    old = await create(zone_id=zone_id, name="old", type="A", content="127.10.0.1", ttl=1)
    www = await create(
        zone_id=zone_id, name="www", type="A", content="127.10.0.2", ttl=1, comment=OURS
    )
    api = await create(
        zone_id=zone_id, name="api", type="A", content="127.10.0.3", ttl=1, comment=OURS
    )
    assert old is not None and www is not None and api is not None

    failed = {
        "deletes": [{"id": old.id}],
        "posts": [
            {"name": "new", "type": "A", "content": "127.10.0.4", "ttl": 1},
            {"name": "www", "type": "A", "content": "127.10.0.2", "ttl": 1},  # identical to www
        ],
    }
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.batch(zone_id=zone_id, **failed)  # type: ignore[arg-type]
    assert codes(excinfo.value) == [81058]
    assert "posts[1]" in str(excinfo.value)
    assert await names(client, zone_id) == [
        "A api.example.com",
        "A old.example.com",
        "A www.example.com",
    ]

    result = await client.dns.records.batch(
        zone_id=zone_id,
        deletes=[{"id": old.id}],
        patches=[{"id": www.id, "content": "127.10.0.20"}],  # type: ignore[list-item]
        puts=[{"id": api.id, "name": "api", "type": "A", "content": "127.10.0.30", "ttl": 120}],
        posts=[{"name": "new", "type": "A", "content": "127.10.0.4", "ttl": 1, "comment": OURS}],
    )
    assert result is not None
    assert [r.name for r in result.deletes or []] == ["old.example.com"]
    assert [(r.content, r.comment) for r in result.patches or []] == [("127.10.0.20", OURS)]
    assert [(r.content, r.comment, r.ttl) for r in result.puts or []] == [
        ("127.10.0.30", None, 120)
    ]
    assert [r.name for r in result.posts or []] == ["new.example.com"]
    assert await names(client, zone_id) == [
        "A api.example.com",
        "A new.example.com",
        "A www.example.com",
    ]


# -- rate limit and authentication -----------------------------------------------------


def remaining_and_reset(headers: Mapping[str, str]) -> tuple[int, int]:
    """The ``r`` and ``t`` of a ``Ratelimit: "default";r=<n>;t=<seconds>`` header."""
    name, remaining, reset = headers["Ratelimit"].split(";")
    assert name == '"default"'
    return int(remaining.removeprefix("r=")), int(reset.removeprefix("t="))


async def test_rate_limit_headers_and_lockout(start: Start, http: aiohttp.ClientSession) -> None:
    sim = await start(rate_limit=3, window_seconds=300, lockout_seconds=300)
    async with sdk(sim) as client:
        seen = []
        for _ in range(3):
            response = await client.accounts.with_raw_response.list()
            assert response.headers["Ratelimit-Policy"] == '"default";q=3;w=300'
            seen.append(remaining_and_reset(response.headers))
        assert [r for r, _ in seen] == [2, 1, 0]
        assert all(290 <= t <= 300 for _, t in seen)

        with pytest.raises(cloudflare.RateLimitError) as excinfo:
            await client.accounts.list()
        assert codes(excinfo.value) == [971]
        assert 290 <= int(excinfo.value.response.headers["Retry-After"]) <= 300

        # Locked out: even after the window would have reset, until the lock-out ends.
        await control(http, sim, "POST", "clock", {"advance": 200})
        with pytest.raises(cloudflare.RateLimitError) as excinfo:
            await client.accounts.list()
        assert 90 <= int(excinfo.value.response.headers["Retry-After"]) <= 100
        assert (await control(http, sim, "GET", "ratelimit"))["blocked_for"] > 90

        await control(http, sim, "POST", "clock", {"advance": 100})
        response = await client.accounts.with_raw_response.list()
        remaining, reset = remaining_and_reset(response.headers)
        assert remaining == 2 and 290 <= reset <= 300


async def test_lockout_passes_at_the_scaled_rate(start: Start) -> None:
    # 300 s of lock-out pass in 0.1 s; the window is long enough not to roll meanwhile.
    sim = await start(rate_limit=2, window_seconds=30_000, lockout_seconds=300, time_scale=3000)
    async with sdk(sim) as client:
        await client.accounts.list()
        await client.accounts.list()
        with pytest.raises(cloudflare.RateLimitError) as excinfo:
            await client.accounts.list()
        assert excinfo.value.response.headers["Retry-After"] == "1"  # real seconds, rounded up

        async def allowed() -> bool:
            try:
                await client.accounts.list()
            except cloudflare.RateLimitError:
                return False
            return True

        await eventually_async(allowed, what="the lock-out ended")


async def test_tokens_are_checked(start: Start) -> None:
    sim = await start(token="secret")
    async with sdk(sim, token="wrong") as client:
        with pytest.raises(cloudflare.PermissionDeniedError) as excinfo:
            await client.accounts.list()
        assert codes(excinfo.value) == [10000]
    async with sdk(sim, token="secret") as client:
        assert len([a async for a in client.accounts.list()]) == 1


# -- faults ----------------------------------------------------------------------------


async def test_injected_errors_and_rate_limits(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await new_zone(client, sim)
    await control(
        http, sim, "POST", "faults", {"kind": "error", "status": 500, "path": "/client/v4/zones/*"}
    )
    await control(http, sim, "POST", "faults", {"kind": "rate_limit", "method": "GET"})
    with pytest.raises(cloudflare.InternalServerError):
        await client.zones.get(zone_id=zone_id)
    with pytest.raises(cloudflare.RateLimitError) as excinfo:
        await client.zones.get(zone_id=zone_id)
    assert excinfo.value.response.headers["Retry-After"] == "1"
    assert (await client.zones.get(zone_id=zone_id)) is not None


async def test_a_lost_response_still_creates_the_record(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    zone_id = await new_zone(client, sim)
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "lost_response", "method": "POST", "path": "*/dns_records"},
    )
    with pytest.raises(cloudflare.APIConnectionError):
        await client.dns.records.create(
            zone_id=zone_id, name="www", type="A", content="127.10.0.1", ttl=1, comment=OURS
        )
    # The operator's recovery: find its own record by comment instead of creating again.
    assert await names(client, zone_id, comment={"exact": OURS}) == ["A www.example.com"]
