"""Contract rules of the Cloudflare simulator, one test per rule, through ``cloudflare``.

Each test names the rule and its public source (``plans/index.json`` is cloudflare-docs'
``src/content/plans/index.json``, the data of the docs' plan tables; the others are docs
pages and issue threads that quote the real API's answers). The SDK runs with
``max_retries=0``; time is moved with the simulator's clock, never slept.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator

TOKEN = "test-token"
DAY = 86_400

Start = Callable[..., Awaitable[CloudflareSimulator]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(**config: Any) -> CloudflareSimulator:
            return await stack.enter_async_context(CloudflareSimulator(CloudflareConfig(**config)))

        yield start


@pytest.fixture
async def sim(start: Start) -> CloudflareSimulator:
    return await start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
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


async def advance(http: aiohttp.ClientSession, sim: CloudflareSimulator, seconds: float) -> None:
    await control(http, sim, "POST", "clock", {"advance": seconds})


async def new_zone(
    client: AsyncCloudflare, sim: CloudflareSimulator, name: str = "example.com"
) -> str:
    zone = await client.zones.create(account={"id": sim.context.config.account_id}, name=name)
    assert zone is not None
    return zone.id


async def status(client: AsyncCloudflare, zone_id: str) -> str:
    zone = await client.zones.get(zone_id=zone_id)
    assert zone is not None
    return str(zone.status)


def errors(error: cloudflare.APIStatusError) -> list[tuple[int, str]]:
    """(code, message) of each error and of each error's chain, in order."""
    body = error.body
    assert isinstance(body, dict)
    found = []
    for entry in body["errors"]:
        found.append((entry["code"], entry["message"]))
        found += [(c["code"], c["message"]) for c in entry.get("error_chain", [])]
    return found


def codes(error: cloudflare.APIStatusError) -> list[int]:
    return [code for code, _ in errors(error)]


def a_record(index: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": f"h{index}",
        "type": "A",
        "content": f"192.0.2.{index % 250}",
        "ttl": 1,
        **fields,
    }


# -- plans -----------------------------------------------------------------------------


async def test_rule_zones_made_through_the_api_are_on_the_free_plan(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    """The Free plan object as the API returns it (quoted in Cortex XSOAR's Cloudflare WAF
    integration docs): id 0feeee..., "Free Website", legacy_id "free", price 0."""
    zone = await client.zones.get(zone_id=await new_zone(client, sim))
    assert zone is not None and zone.plan is not None
    assert (zone.plan.id, zone.plan.name, zone.plan.legacy_id, zone.plan.price) == (
        "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        "Free Website",
        "free",
        0,
    )
    assert zone.meta is not None and zone.meta.page_rule_quota == 3


async def test_rule_free_zones_refuse_record_tags(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    """Record tags are not available on Free (plans/index.json): 1004 with 9300 "DNS record
    has 1 tags, exceeding the quota of 0." (kubernetes-sigs/external-dns#3706,
    cloudflare/terraform-provider-cloudflare#3217) — in a batch too."""
    zone_id = await new_zone(client, sim)
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.create(
            zone_id=zone_id, **a_record(1, tags=["smartserver-uid:abc"])
        )
    assert errors(excinfo.value) == [
        (1004, "DNS Validation Error"),
        (9300, "DNS record has 1 tags, exceeding the quota of 0."),
    ]
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.batch(zone_id=zone_id, posts=[a_record(2, tags=["a:b"])])  # type: ignore[list-item]
    assert codes(excinfo.value) == [1004, 9300]
    # A record without tags, marked by its comment, is fine.
    record = await client.dns.records.create(
        zone_id=zone_id, **a_record(3, comment="smartserver:abc")
    )
    assert record is not None and record.tags == []


async def test_rule_paid_zones_take_20_tags_of_limited_length(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """Paid plans: 20 tags per record, names of at most 32 and values of at most 100
    characters (plans/index.json)."""
    zone_id = await new_zone(client, sim)
    await control(http, sim, "PUT", f"zones/{zone_id}/plan", {"plan": "pro"})
    twenty = [f"t{i}:v" for i in range(20)]
    record = await client.dns.records.create(zone_id=zone_id, **a_record(1, tags=twenty))
    assert record is not None and len(record.tags) == 20
    refused = [
        ([f"t{i}:v" for i in range(21)], 9300),
        (["n" * 33 + ":v"], 9102),
        (["n:" + "v" * 101], 9102),
    ]
    for tags, code in refused:
        with pytest.raises(cloudflare.BadRequestError) as excinfo:
            await client.dns.records.create(zone_id=zone_id, **a_record(2, tags=tags))
        assert codes(excinfo.value) == [1004, code]
    await client.dns.records.create(
        zone_id=zone_id, **a_record(3, tags=["n" * 32 + ":" + "v" * 100])
    )


async def test_rule_comments_are_100_characters_on_free_and_500_on_paid(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """Comment character limit: 100 on Free, 500 on Pro, Business and Enterprise
    (plans/index.json)."""
    zone_id = await new_zone(client, sim)
    await client.dns.records.create(zone_id=zone_id, **a_record(1, comment="c" * 100))
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.create(zone_id=zone_id, **a_record(2, comment="c" * 101))
    assert codes(excinfo.value) == [1004, 9101]
    await control(http, sim, "PUT", f"zones/{zone_id}/plan", {"plan": "business"})
    await client.dns.records.create(zone_id=zone_id, **a_record(2, comment="c" * 500))
    with pytest.raises(cloudflare.BadRequestError):
        await client.dns.records.create(zone_id=zone_id, **a_record(3, comment="c" * 501))


async def test_rule_a_free_zone_holds_200_records_and_batches_of_200(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """200 records per Free zone (created after 2024-09-01), 3,500 on paid plans
    (plans/index.json); 81045 "Record quota exceeded." (js-org/js.org#2873). Batches: 200
    changes on Free, 3,500 on paid plans (batch-record-changes.mdx)."""
    zone_id = await new_zone(client, sim)
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.batch(zone_id=zone_id, posts=[a_record(i) for i in range(201)])  # type: ignore[misc]
    assert codes(excinfo.value) == [1004]
    await client.dns.records.batch(zone_id=zone_id, posts=[a_record(i) for i in range(200)])  # type: ignore[misc]
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.create(zone_id=zone_id, **a_record(500))
    assert errors(excinfo.value) == [(81045, "Record quota exceeded.")]

    await control(http, sim, "PUT", f"zones/{zone_id}/plan", {"plan": "pro"})
    await client.dns.records.create(zone_id=zone_id, **a_record(500))
    await client.dns.records.batch(zone_id=zone_id, posts=[a_record(1000 + i) for i in range(201)])  # type: ignore[misc]


# -- registrable domains ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("co.uk", 1099),
        ("github.io", 1099),
        ("shop.example.com", 1116),
        ("a.b.example", 1116),
        ("localhost", 1049),
    ],
)
async def test_rule_zones_are_registrable_domains_by_the_public_suffix_list(
    sim: CloudflareSimulator, client: AsyncCloudflare, name: str, code: int
) -> None:
    """A public suffix is 1099 ("We were unable to identify ... as a registered domain"),
    a subdomain 1116 ("... providing the root domain and not any subdomains"): dns/zone-
    setups/troubleshooting/cannot-add-domain; subdomain zones are Enterprise-only
    (plans/index.json). The Public Suffix List decides (stackryze/FreeDomains#304)."""
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await new_zone(client, sim, name)
    assert codes(excinfo.value) == [code]
    assert [z async for z in client.zones.list()] == []


async def test_rule_names_under_a_public_suffix_are_registrable(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    for name in ("foo.co.uk", "someone.github.io", "shop-1.example"):
        await new_zone(client, sim, name)
    # An Enterprise account may hold a subdomain zone (seeded through the control API).
    await control(http, sim, "POST", "zones", {"name": "blog.foo.co.uk", "plan": "enterprise"})
    async with http.post(f"{sim.root_url}/_sim/zones", json={"name": "shop.foo.co.uk"}) as response:
        assert response.status == 400


# -- activation ------------------------------------------------------------------------


async def test_rule_activation_happens_on_cloudflares_schedule(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """ "The first check occurs after 60 seconds and the following attempts happen at
    gradually increased intervals" (domain-status.mdx): no API call is needed."""
    zone_id = await new_zone(client, sim)
    await advance(http, sim, 3600)  # not delegated: every check so far found nothing
    assert await status(client, zone_id) == "pending"
    await control(http, sim, "POST", f"zones/{zone_id}/delegate")
    assert await status(client, zone_id) == "pending"  # until Cloudflare looks again
    await advance(http, sim, 6 * 3600)
    assert await status(client, zone_id) == "active"


async def test_rule_activation_checks_are_paced_by_plan(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """ "This can be triggered every 5 min for paygo/ent customers, every hour for FREE
    Zones" (Rerun the Activation Check). The answer to an early one is the simulator's own:
    429 with Retry-After (no public source shows the real one)."""
    zone_id = await new_zone(client, sim)
    await client.zones.activation_check.trigger(zone_id=zone_id)
    await advance(http, sim, 1800)
    with pytest.raises(cloudflare.RateLimitError) as excinfo:
        await client.zones.activation_check.trigger(zone_id=zone_id)
    assert 1795 <= int(excinfo.value.response.headers["Retry-After"]) <= 1800
    await advance(http, sim, 1800)
    await client.zones.activation_check.trigger(zone_id=zone_id)

    await control(http, sim, "PUT", f"zones/{zone_id}/plan", {"plan": "pro"})
    await advance(http, sim, 300)
    await client.zones.activation_check.trigger(zone_id=zone_id)
    with pytest.raises(cloudflare.RateLimitError):
        await client.zones.activation_check.trigger(zone_id=zone_id)


async def test_rule_a_requested_check_is_queued_not_immediate(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """The check "isn't immediate; it just puts the zone in" a queue
    (cloudflare/cloudflare-docs#32157)."""
    zone_id = await new_zone(client, sim)
    await control(http, sim, "POST", f"zones/{zone_id}/delegate")
    await client.zones.activation_check.trigger(zone_id=zone_id)
    assert await status(client, zone_id) == "pending"
    await advance(http, sim, 10)
    assert await status(client, zone_id) == "active"


async def test_rule_free_zones_expire_when_pending_28_days_or_moved_7_days(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """Free: deleted when not activated within 28 days, and 7 days after entering
    ``moved``; paid pending zones stay (domain-status.mdx)."""
    pending = await new_zone(client, sim, "pending.example")
    paid = await new_zone(client, sim, "paid.example")
    await control(http, sim, "PUT", f"zones/{paid}/plan", {"plan": "pro"})
    moved = (await control(http, sim, "POST", "zones", {"name": "moved.example"}))["zone"]["id"]
    await control(http, sim, "POST", f"zones/{moved}/move")
    assert await status(client, moved) == "moved"

    await advance(http, sim, 7 * DAY)
    remaining = {z.name async for z in client.zones.list()}
    assert remaining == {"pending.example", "paid.example"}
    await advance(http, sim, 21 * DAY)
    assert {z.name async for z in client.zones.list()} == {"paid.example"}
    with pytest.raises(cloudflare.BadRequestError):
        await client.zones.get(zone_id=pending)


async def test_rule_a_readded_zone_gets_a_new_name_server_pair(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    """ "When you re-add a previously deleted domain, Cloudflare assigns a new nameserver
    pair" (domain-status.mdx)."""
    first = await client.zones.get(zone_id=await new_zone(client, sim))
    assert first is not None
    await client.zones.delete(zone_id=first.id)
    second = await client.zones.get(zone_id=await new_zone(client, sim))
    assert second is not None
    assert second.name_servers != first.name_servers


# -- error codes -----------------------------------------------------------------------


async def test_rule_cname_conflicts_are_81053_or_81054(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    """A CNAME where an A/AAAA/CNAME exists: 81053 (terraform-provider-cloudflare#1247); an
    A/AAAA where a CNAME exists: 81054 (jeessy2/ddns-go#1557, favonia/cloudflare-ddns#990)."""
    zone_id = await new_zone(client, sim)
    create = client.dns.records.create
    await create(zone_id=zone_id, name="www", type="A", content="192.0.2.1", ttl=1)
    await create(zone_id=zone_id, name="blog", type="CNAME", content="host.example.net", ttl=1)
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await create(zone_id=zone_id, name="www", type="CNAME", content="host.example.net", ttl=1)
    assert codes(excinfo.value) == [81053]
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await create(zone_id=zone_id, name="blog", type="A", content="192.0.2.2", ttl=1)
    assert codes(excinfo.value) == [81054]
    assert "A CNAME record with that host already exists." in errors(excinfo.value)[0][1]


async def test_rule_an_unknown_zone_id_is_7003_with_400(
    sim: CloudflareSimulator, client: AsyncCloudflare
) -> None:
    """[7003 "Could not route to /zones/..., perhaps your object identifier is invalid?",
    7000 "No route for that URI"] (as quoted in rocket-cloudflare's tests), HTTP 400."""
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.zones.get(zone_id="0" * 32),
        lambda: client.dns.records.list(zone_id="0" * 32),
        lambda: client.zones.delete(zone_id="not-an-id"),
    ]
    for attempt in attempts:
        with pytest.raises(cloudflare.BadRequestError) as excinfo:
            await attempt()
        assert codes(excinfo.value) == [7003, 7000]


async def test_rule_authentication_errors(start: Start, http: aiohttp.ClientSession) -> None:
    """No Authorization header: 9106, 400 (cloudflare/cloudflare-python#2678); a malformed
    one: 6003 with 6111 "Invalid format for Authorization header", 400 (jeessy2/ddns-go
    #916); a wrong token: 10000 "Authentication error", 403 (hieunc229/mailflare#1)."""
    sim = await start(token="secret")
    cases = [({}, 400, [9106]), ({"Authorization": "Bearer bad token!"}, 400, [6003, 6111])]
    cases.append(({"Authorization": "Basic c2VjcmV0"}, 400, [6003, 6111]))
    for headers, expected_status, expected in cases:
        async with http.get(f"{sim.url}/zones", headers=headers) as response:
            body = await response.json()
        assert response.status == expected_status
        found = [e["code"] for e in body["errors"]]
        found += [c["code"] for e in body["errors"] for c in e.get("error_chain", [])]
        assert found == expected
    async with sdk(sim, token="wrong") as client:
        with pytest.raises(cloudflare.PermissionDeniedError) as excinfo:
            await client.zones.list()
        assert errors(excinfo.value) == [(10000, "Authentication error")]


# -- faults ----------------------------------------------------------------------------


async def test_rule_any_documented_error_can_be_injected(
    sim: CloudflareSimulator, client: AsyncCloudflare, http: aiohttp.ClientSession
) -> None:
    """Faults take Cloudflare's codes and answer with their documented status and message,
    on any route."""
    zone_id = await new_zone(client, sim)
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "error", "code": 81045, "method": "POST", "path": "*/dns_records"},
    )
    with pytest.raises(cloudflare.BadRequestError) as excinfo:
        await client.dns.records.create(zone_id=zone_id, **a_record(1))
    assert errors(excinfo.value) == [(81045, "Record quota exceeded.")]

    await control(http, sim, "POST", "faults", {"kind": "error", "code": 10000, "method": "GET"})
    with pytest.raises(cloudflare.PermissionDeniedError):
        await client.zones.get(zone_id=zone_id)

    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "error", "code": 1234, "status": 409, "message": "Conflict"},
    )
    with pytest.raises(cloudflare.ConflictError) as conflict:
        await client.zones.get(zone_id=zone_id)
    assert errors(conflict.value) == [(1234, "Conflict")]

    async with http.post(
        f"{sim.root_url}/_sim/faults", json={"kind": "error", "code": 4321}
    ) as response:
        assert response.status == 400  # an unknown code needs its status
    async with http.post(
        f"{sim.root_url}/_sim/faults", json={"kind": "action_error", "code": 1}
    ) as response:
        assert response.status == 400  # Cloudflare has no asynchronous actions
