"""The Hetzner Cloud simulator against the official ``hcloud`` SDK, over loopback HTTP.

The SDK is synchronous, so its calls run in a worker thread while the simulator serves on
the test's event loop. Its own retries (blocking sleeps on 429, timeouts and gateway
errors) are turned off, so every fault is seen as the operator would see it.
Time-dependent behaviour is driven by the simulator's clock (advanced through the control
API) or by a high ``time_scale``, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
from hcloud import APIException, Client
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server

from smart_sim.hetzner import HetznerConfig, HetznerSimulator, ServerInfo
from tests.waiting import eventually_async

T = TypeVar("T")

TOKEN = "test-token"

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0Rv5bMZ7o3UqVb8z0h1s3iXoT2c5uYyB1O3zT4d4G "
    "operator@smart-server"
)
USER_DATA = "#cloud-config\nhostname: web-1\n"

Start = Callable[..., Awaitable[HetznerSimulator]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start simulators with a given configuration; all are stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**config: Any) -> HetznerSimulator:
            hooks = config.pop("hooks", None)
            simulator = HetznerSimulator(HetznerConfig(**config), hooks=hooks)
            return await stack.enter_async_context(simulator)

        yield start


@pytest.fixture
async def sim(start: Start) -> HetznerSimulator:
    return await start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP client, for headers and the control API."""
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.contextmanager
def hcloud_client(
    url: str, *, token: str = TOKEN, timeout: float | None = None
) -> Iterator[Client]:
    client = Client(
        token, api_endpoint=url, poll_interval=0.01, poll_max_retries=500, timeout=timeout
    )
    # The SDK retries rate limits, timeouts and gateway errors with blocking sleeps; the
    # tests want to see each fault as it happens.
    client._client._retry_max_retries = 0
    try:
        yield client
    finally:
        client._client._session.close()
        client._client_hetzner._session.close()


@pytest.fixture
def client(sim: HetznerSimulator) -> Iterator[Client]:
    with hcloud_client(sim.url) as hcloud:
        yield hcloud


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """Run a blocking SDK call off the event loop."""
    return asyncio.to_thread(function, *args, **kwargs)


async def control(
    http: aiohttp.ClientSession, sim: HetznerSimulator, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, f"{sim.root_url}/_sim/{path}", json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


def create(client: Client, name: str, **kwargs: Any) -> Awaitable[Any]:
    kwargs.setdefault("server_type", ServerType(name="cx23"))
    kwargs.setdefault("image", Image(name="debian-12"))
    return call(client.servers.create, name, **kwargs)


# -- servers ---------------------------------------------------------------------------


async def test_create_get_list_and_delete_a_server(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    key = await call(
        client.ssh_keys.create, "operator", ED25519, labels={"smartserver.ai/managed": "true"}
    )
    rule = FirewallRule("in", "tcp", ["0.0.0.0/0", "::/0"], port="443")
    firewall = (await call(client.firewalls.create, "web", rules=[rule])).firewall

    created = await create(
        client,
        "web-1",
        location=Location(name="nbg1"),
        ssh_keys=[key],
        firewalls=[firewall],
        user_data=USER_DATA,
        labels={"smartserver.ai/uid": "abc-123", "tier": "web"},
    )

    server = created.server
    assert server.status == Server.STATUS_INIT
    assert created.action.command == "create_server"
    assert created.action.status == "running"
    assert [a.command for a in created.next_actions] == ["start_server", "apply_firewall"]
    assert created.root_password is None  # an SSH key was given
    assert ipaddress.IPv4Address(server.public_net.ipv4.ip).is_loopback
    assert server.public_net.ipv4.dns_ptr.endswith(".clients.your-server.de")
    assert ipaddress.IPv6Network(server.public_net.ipv6.ip).subnet_of(
        ipaddress.IPv6Network("2001:db8::/32")
    )
    assert server.public_net.primary_ipv4 is not None
    assert server.location.name == "nbg1"
    assert server.server_type.name == "cx23"
    assert server.image.name == "debian-12"
    assert server.image.architecture == "x86"
    assert server.labels == {"smartserver.ai/uid": "abc-123", "tier": "web"}
    assert server.protection == {"delete": False, "rebuild": False}
    assert [f.firewall.id for f in server.public_net.firewalls] == [firewall.id]
    assert server.included_traffic == 20 * 1024**4

    fetched = await call(client.servers.get_by_id, server.id)
    assert fetched.name == "web-1"
    assert fetched.created == server.created

    # user_data and the keys stay on the server for the simulated host to read.
    state_server = sim.context.state.servers[server.id]
    assert state_server.user_data == USER_DATA
    assert state_server.info().ssh_public_keys == (ED25519,)

    selected = await call(client.servers.get_all, label_selector="smartserver.ai/uid=abc-123")
    assert [s.id for s in selected] == [server.id]
    assert await call(client.servers.get_all, label_selector="smartserver.ai/uid=other") == []
    assert (await call(client.servers.get_by_name, "web-1")).id == server.id

    await control(http, sim, "POST", "clock", {"advance": 20})  # created and started
    deleted = await call(client.servers.delete, server)
    assert deleted.command == "delete_server"
    with pytest.raises(APIException) as excinfo:
        await call(client.servers.get_by_id, server.id)
    assert excinfo.value.code == "not_found"
    assert await call(client.servers.get_all) == []
    await control(http, sim, "POST", "clock", {"advance": 3})  # the delete action is done
    firewall_now = await call(client.firewalls.get_by_id, firewall.id)
    assert firewall_now.applied_to in ([], None)


async def test_servers_without_keys_get_a_root_password_and_distinct_addresses(
    client: Client,
) -> None:
    first = await create(client, "a-1")
    second = await create(client, "a-2", server_type=ServerType(name="cax11"))
    assert first.root_password
    assert first.server.public_net.ipv4.ip != second.server.public_net.ipv4.ip
    assert first.server.public_net.ipv6.ip != second.server.public_net.ipv6.ip
    assert second.server.image.architecture == "arm"  # the name resolved for the type
    assert second.server.location.name == "fsn1"  # the default location


async def test_list_filters_and_pagination(client: Client) -> None:
    for index in range(7):
        role = "web" if index % 2 else "db"
        await create(client, f"node-{index}", labels={"role": role, "index": str(index)})

    page, meta = await call(client.servers.get_list, page=2, per_page=3)
    assert [s.name for s in page] == ["node-3", "node-4", "node-5"]
    assert meta.pagination.page == 2
    assert meta.pagination.previous_page == 1
    assert meta.pagination.next_page == 3
    assert meta.pagination.last_page == 3
    assert meta.pagination.total_entries == 7

    client.servers.max_per_page = 2  # get_all now walks four pages
    assert len(await call(client.servers.get_all)) == 7

    async def names(selector: str) -> list[str]:
        return sorted(s.name for s in await call(client.servers.get_all, label_selector=selector))

    assert await names("role=web") == ["node-1", "node-3", "node-5"]
    assert await names("role!=web") == ["node-0", "node-2", "node-4", "node-6"]
    assert await names("role==db,index in (0,6)") == ["node-0", "node-6"]
    assert await names("index notin (0,1,2,3,4,5)") == ["node-6"]
    assert await names("role") == [f"node-{i}" for i in range(7)]
    assert await names("!role") == []
    assert [s.name for s in await call(client.servers.get_all, name="node-4")] == ["node-4"]

    with pytest.raises(APIException) as excinfo:
        await call(client.servers.get_all, label_selector="role in (web")
    assert excinfo.value.code == "invalid_input"

    raw = await call(client.request, "GET", "/servers", params={"sort": "name:desc", "per_page": 2})
    assert [s["name"] for s in raw["servers"]] == ["node-6", "node-5"]


async def test_a_duplicate_name_is_a_uniqueness_error(client: Client) -> None:
    await create(client, "web-1")
    with pytest.raises(APIException) as excinfo:
        await create(client, "web-1")
    assert excinfo.value.code == "uniqueness_error"
    assert excinfo.value.details == {"fields": [{"name": "name"}]}
    assert len(await call(client.servers.get_all)) == 1


async def test_unknown_ids_are_not_found(client: Client) -> None:
    for lookup in (client.servers.get_by_id, client.ssh_keys.get_by_id, client.firewalls.get_by_id):
        with pytest.raises(APIException) as excinfo:
            await call(lookup, 424242)
        assert excinfo.value.code == "not_found"
    with pytest.raises(APIException) as excinfo:
        await call(client.servers.delete, Server(id=424242))
    assert excinfo.value.code == "not_found"


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"server_type": ServerType(name="cx999")}, "server_type", "cax11, cax21, cax31"),
        ({"location": Location(name="mars1")}, "location", "fsn1, nbg1, hel1, ash, hil, sin"),
        ({"location": Location(name="ash")}, "server_type", "available in: fsn1, nbg1, hel1"),
        ({"image": Image(name="windows-11")}, "image", "debian-12, debian-13, ubuntu-24.04"),
    ],
)
async def test_invalid_input_names_the_field_and_the_allowed_values(
    client: Client, kwargs: dict[str, Any], field: str, allowed: str
) -> None:
    with pytest.raises(APIException) as excinfo:
        await create(client, "web-1", **kwargs)
    assert excinfo.value.code == "invalid_input"
    assert allowed in excinfo.value.message
    assert excinfo.value.details["fields"][0]["name"] == field
    assert await call(client.servers.get_all) == []


async def test_invalid_names_labels_and_keys_are_refused(client: Client) -> None:
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: create(client, "not_a_hostname!"), "name"),
        (lambda: create(client, "web-1", labels={"bad key": "x"}), "labels"),
        (lambda: create(client, "web-1", labels={"hetzner.cloud/x": "y"}), "labels"),
        (lambda: create(client, "web-1", user_data="x" * (32 * 1024 + 1)), "user_data"),
        (lambda: call(client.ssh_keys.create, "k", "ssh-ed25519 !!notbase64"), "public_key"),
    ]
    for attempt, field in cases:
        with pytest.raises(APIException) as excinfo:
            await attempt()
        assert excinfo.value.code == "invalid_input", field
        assert excinfo.value.details["fields"][0]["name"] == field


async def test_actions_progress_with_the_simulated_clock(
    start: Start, http: aiohttp.ClientSession
) -> None:
    sim = await start(action_seconds={"create_server": 60, "start_server": 60})
    with hcloud_client(sim.url) as client:
        created = await create(client, "web-1")
        action = await call(client.actions.get_by_id, created.action.id)
        assert (action.status, action.finished) == ("running", None)
        assert action.progress < 100

        await control(http, sim, "POST", "clock", {"advance": 30})
        action = await call(client.actions.get_by_id, created.action.id)
        assert action.status == "running"
        assert 45 <= action.progress < 100

        with pytest.raises(APIException) as excinfo:
            await call(client.servers.power_off, created.server)
        assert excinfo.value.code == "locked"

        # The create is done; the start that follows it runs on.
        await control(http, sim, "POST", "clock", {"advance": 31})
        server = await call(client.servers.get_by_id, created.server.id)
        assert server.status == Server.STATUS_STARTING

        await control(http, sim, "POST", "clock", {"advance": 60})
        ids = [created.action.id, created.next_actions[0].id]
        listed = await call(client.request, "GET", "/actions", params={"id": ids})
        assert [(a["id"], a["status"], a["progress"]) for a in listed["actions"]] == [
            (ids[0], "success", 100),
            (ids[1], "success", 100),
        ]
        assert all(a["finished"] for a in listed["actions"])
        server = await call(client.servers.get_by_id, created.server.id)
        assert server.status == Server.STATUS_RUNNING

        by_server = await call(client.servers.get_actions, server)
        assert {a.command for a in by_server} == {"create_server", "start_server"}
        running = await call(
            client.request, "GET", "/servers/actions", params={"id": ids, "status": "running"}
        )
        assert running["actions"] == []


async def test_power_actions_with_a_fast_clock(start: Start) -> None:
    sim = await start(time_scale=1000)  # 10 s of create action pass in 10 ms
    with hcloud_client(sim.url) as client:
        created = await create(client, "web-1")
        await call(created.next_actions[0].wait_until_finished)
        server = await call(client.servers.get_by_id, created.server.id)
        assert server.status == Server.STATUS_RUNNING

        await call((await call(client.servers.power_off, server)).wait_until_finished)
        assert (await call(client.servers.get_by_id, server.id)).status == Server.STATUS_OFF
        await call((await call(client.servers.power_on, server)).wait_until_finished)
        assert (await call(client.servers.get_by_id, server.id)).status == Server.STATUS_RUNNING
        for operation in (client.servers.reboot, client.servers.reset, client.servers.shutdown):
            await call((await call(operation, server)).wait_until_finished)
        assert (await call(client.servers.get_by_id, server.id)).status == Server.STATUS_OFF


async def test_update_renames_and_relabels(client: Client) -> None:
    created = await create(client, "web-1", labels={"a": "1"})
    updated = await call(client.servers.update, created.server, name="web-2", labels={"b": "2"})
    assert (updated.name, updated.labels) == ("web-2", {"b": "2"})


# -- SSH keys and firewalls ------------------------------------------------------------


async def test_ssh_keys(client: Client) -> None:
    key = await call(client.ssh_keys.create, "operator", ED25519, labels={"a": "b"})
    assert key.fingerprint.count(":") == 15
    assert (await call(client.ssh_keys.get_by_fingerprint, key.fingerprint)).id == key.id
    assert (await call(client.ssh_keys.get_by_name, "operator")).id == key.id
    for name in ("operator", "other"):  # same name, or same key under another name
        with pytest.raises(APIException) as excinfo:
            await call(client.ssh_keys.create, name, ED25519)
        assert excinfo.value.code == "uniqueness_error"
    assert (await call(client.ssh_keys.update, key, name="renamed")).name == "renamed"
    assert await call(client.ssh_keys.delete, key) is True
    assert await call(client.ssh_keys.get_all) == []


async def test_firewalls_apply_to_servers_and_delete(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    web = (await create(client, "web-1", labels={"role": "web"})).server
    db = (await create(client, "db-1", labels={"role": "db"})).server
    await control(http, sim, "POST", "clock", {"advance": 20})  # both are running
    rules = [
        FirewallRule("in", "tcp", ["0.0.0.0/0"], port="80-443", description="http"),
        FirewallRule("in", "icmp", ["0.0.0.0/0"]),
    ]
    response = await call(
        client.firewalls.create,
        "web",
        rules=rules,
        labels={"smartserver.ai/uid": "abc"},
        resources=[FirewallResource(type="server", server=web)],
    )
    firewall = response.firewall
    assert [a.command for a in response.actions] == ["apply_firewall"]
    assert firewall.rules[0].port == "80-443"
    assert firewall.rules[1].port is None

    actions = await call(
        client.firewalls.apply_to_resources,
        firewall,
        [
            FirewallResource(
                type="label_selector",
                label_selector=FirewallResourceLabelSelector(selector="role=db"),
            )
        ],
    )
    assert [a.command for a in actions] == ["apply_firewall"]
    fetched = await call(client.firewalls.get_by_id, firewall.id)
    assert [r.type for r in fetched.applied_to] == ["server", "label_selector"]
    assert fetched.applied_to[1].applied_to_resources[0].server.id == db.id
    db_now = await call(client.servers.get_by_id, db.id)
    assert [f.firewall.id for f in db_now.public_net.firewalls] == [firewall.id]

    with pytest.raises(APIException) as excinfo:
        await call(client.firewalls.delete, firewall)
    assert excinfo.value.code == "resource_in_use"

    await call(client.firewalls.remove_from_resources, firewall, fetched.applied_to)
    assert await call(client.firewalls.delete, firewall) is True
    with pytest.raises(APIException) as excinfo:
        await call(client.firewalls.create, "bad", rules=[FirewallRule("in", "tcp", ["0.0.0.0/0"])])
    assert excinfo.value.code == "invalid_input"  # tcp needs a port


# -- catalog and pricing ---------------------------------------------------------------


async def test_catalog_and_pricing(client: Client) -> None:
    locations = [loc.name for loc in await call(client.locations.get_all)]
    assert locations == ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
    cx23 = await call(client.server_types.get_by_name, "cx23")
    assert (cx23.cores, cx23.memory, cx23.disk, cx23.architecture) == (2, 4.0, 40, "x86")
    assert [p["location"] for p in cx23.prices] == ["fsn1", "nbg1", "hel1"]
    assert cx23.prices[0]["price_monthly"] == {"net": "5.4900000000", "gross": "6.5331000000000000"}
    assert [loc.location.name for loc in cx23.locations] == ["fsn1", "nbg1", "hel1"]
    arm = await call(client.images.get_by_name_and_architecture, "debian-12", "arm")
    assert (arm.os_flavor, arm.architecture) == ("debian", "arm")

    pricing = (await call(client.request, "GET", "/pricing"))["pricing"]
    assert (pricing["currency"], pricing["vat_rate"]) == ("EUR", "19.00")
    by_type = {t["name"]: t["prices"] for t in pricing["server_types"]}
    assert set(by_type) >= {"cx23", "cx33", "cx43", "cx53", "cpx12", "cpx22", "cax11", "ccx13"}
    assert not set(by_type) & {"cx22", "cx32", "cx42"}  # no longer sold anywhere
    assert [p["location"] for p in by_type["cpx11"]] == [
        "fsn1",
        "nbg1",
        "hel1",
        "ash",
        "hil",
        "sin",
    ]
    eu, us = by_type["cpx11"][0], by_type["cpx11"][3]
    assert float(us["price_monthly"]["net"]) > float(eu["price_monthly"]["net"])
    assert float(eu["price_hourly"]["net"]) * 600 < float(eu["price_monthly"]["net"])


# -- rate limit ------------------------------------------------------------------------


async def test_rate_limit_headers_429_and_refill(start: Start, http: aiohttp.ClientSession) -> None:
    sim = await start(rate_limit=3, refill_per_second=0.01)  # one request back per 100 s
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{sim.url}/locations", headers=headers) as response:
        assert response.status == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == "2"
        # Reset: when the budget is whole again, one request's refill from now.
        assert time.time() + 90 < int(response.headers["RateLimit-Reset"]) <= time.time() + 101
    with hcloud_client(sim.url) as client:
        await call(client.locations.get_all)
        await call(client.locations.get_all)
        with pytest.raises(APIException) as excinfo:
            await call(client.locations.get_all)
        assert excinfo.value.code == "rate_limit_exceeded"

        async with http.get(f"{sim.url}/locations", headers=headers) as response:
            assert response.status == 429
            body = await response.json()
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert response.headers["RateLimit-Remaining"] == "0"
            assert int(response.headers["RateLimit-Reset"]) >= time.time() + 290

        await control(http, sim, "POST", "clock", {"advance": 100})  # one request earned back
        await call(client.locations.get_all)
        with pytest.raises(APIException):
            await call(client.locations.get_all)
    status = await control(http, sim, "GET", "ratelimit")
    assert (status["limit"], status["remaining"]) == (3, 0)


async def test_the_budget_refills_at_the_scaled_rate(start: Start) -> None:
    sim = await start(rate_limit=2, time_scale=200)  # one request back every 5 ms
    with hcloud_client(sim.url) as client:
        for _ in range(20):
            await eventually_async(
                lambda: _succeeds(call(client.locations.get_by_id, 1)),
                what="the budget refilled",
                within=5,
            )


async def _succeeds(attempt: Awaitable[Any]) -> bool:
    try:
        await attempt
    except APIException as exc:
        if exc.code == "rate_limit_exceeded":
            return False
        raise
    return True


async def test_tokens_are_checked(start: Start) -> None:
    sim = await start(token="secret")
    with hcloud_client(sim.url, token="wrong") as client:
        with pytest.raises(APIException) as excinfo:
            await call(client.locations.get_all)
        assert excinfo.value.code == "unauthorized"
    with hcloud_client(sim.url, token="secret") as client:
        assert len(await call(client.locations.get_all)) == 6


# -- faults ----------------------------------------------------------------------------


async def test_injected_server_errors(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "error", "status": 503, "method": "GET", "path": "/v1/servers"},
    )
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "error", "status": 502, "path": "/v1/servers*", "count": 1},
    )
    with pytest.raises(APIException) as excinfo:
        await call(client.servers.get_all)
    assert excinfo.value.code == "unavailable"  # 503 in the specification's table
    with pytest.raises(APIException) as excinfo:
        await create(client, "web-1")
    assert excinfo.value.code == 502  # the gateway's HTML page, as the SDK reports it
    assert await call(client.servers.get_all) == []  # both faults are used up
    assert (await control(http, sim, "GET", "faults"))["faults"] == []


async def test_injected_rate_limits_answer_429_and_count_as_requests(
    start: Start, http: aiohttp.ClientSession
) -> None:
    sim = await start(refill_per_second=0.001)
    await control(http, sim, "PUT", "ratelimit", {"remaining": 10})
    await control(http, sim, "POST", "faults", {"kind": "rate_limit", "count": 2})
    with hcloud_client(sim.url) as client:
        for _ in range(2):
            with pytest.raises(APIException) as excinfo:
                await call(client.locations.get_all)
            assert excinfo.value.code == "rate_limit_exceeded"
        assert len(await call(client.locations.get_all)) == 6
    assert (await control(http, sim, "GET", "ratelimit"))["remaining"] == 7


async def test_a_lost_response_still_creates_the_server(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "lost_response", "method": "POST", "path": "/v1/servers"},
    )
    with pytest.raises(requests.ConnectionError):
        await create(client, "web-1", labels={"smartserver.ai/uid": "abc"})
    # The operator's recovery: look the server up by its labels and adopt it.
    adopted = await call(client.servers.get_all, label_selector="smartserver.ai/uid=abc")
    assert [s.name for s in adopted] == ["web-1"]
    with pytest.raises(APIException) as excinfo:
        await create(client, "web-1")
    assert excinfo.value.code == "uniqueness_error"


async def test_a_timed_out_request_still_takes_effect(
    sim: HetznerSimulator, http: aiohttp.ClientSession
) -> None:
    await control(
        http, sim, "POST", "faults", {"kind": "latency", "seconds": 0.5, "path": "/v1/ssh_keys"}
    )
    with hcloud_client(sim.url, timeout=0.05) as client:
        with pytest.raises(requests.Timeout):
            await call(client.ssh_keys.create, "operator", ED25519)

        async def registered() -> bool:
            return bool(await call(client.ssh_keys.get_all))

        await eventually_async(registered, what="the delayed create committed")


async def test_faults_are_listed_and_removed(
    sim: HetznerSimulator, http: aiohttp.ClientSession
) -> None:
    fault = (await control(http, sim, "POST", "faults", {"kind": "error", "count": None}))["fault"]
    assert fault["count"] is None
    async with http.post(f"{sim.root_url}/_sim/faults", json={"kind": "explode"}) as response:
        assert response.status == 400
        assert (
            "allowed: error, latency, rate_limit, lost_response, action_error"
            in (await response.json())["error"]
        )
    await control(http, sim, "DELETE", f"faults/{fault['id']}")
    assert (await control(http, sim, "GET", "faults"))["faults"] == []


# -- host hooks ------------------------------------------------------------------------


class RecordingHooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, ServerInfo]] = []

    async def on_server_created(self, server: ServerInfo) -> None:
        self.events.append(("created", server))

    async def on_server_deleted(self, server: ServerInfo) -> None:
        self.events.append(("deleted", server))


async def test_hooks_see_servers_come_and_go(start: Start, http: aiohttp.ClientSession) -> None:
    hooks = RecordingHooks()
    sim = await start(hooks=hooks)
    with hcloud_client(sim.url) as client:
        key = await call(client.ssh_keys.create, "operator", ED25519)
        created = await create(client, "web-1", ssh_keys=[key], user_data=USER_DATA)
        assert [e for e, _ in hooks.events] == ["created"]
        info = hooks.events[0][1]
        assert (info.id, info.name, info.user_data) == (created.server.id, "web-1", USER_DATA)
        assert info.ipv4 == created.server.public_net.ipv4.ip
        assert info.ssh_public_keys == (ED25519,)
        listed = (await control(http, sim, "GET", "servers"))["servers"]
        assert [(s["id"], s["ipv4"], s["user_data"]) for s in listed] == [
            (info.id, info.ipv4, USER_DATA)
        ]
        await control(http, sim, "POST", "clock", {"advance": 20})
        await call(client.servers.delete, created.server)
    assert [(e, s.id) for e, s in hooks.events] == [("created", info.id), ("deleted", info.id)]
