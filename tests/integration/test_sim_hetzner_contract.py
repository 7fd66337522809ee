"""Contract rules of the Hetzner Cloud simulator, one test per rule, through ``hcloud``.

Each test names the rule and its public source: the current API specification
(docs.hetzner.cloud, read as api-evangelist/hetzner ``openapi/_original/hetzner-openapi.yml``),
hcloud-go's error codes, or the issue threads that show the real behaviour. The operator
is held to these: whatever passes here is what the real API does too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from hcloud import APIException, Client
from hcloud.actions import ActionFailedException
from hcloud.firewalls import FirewallResource, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server

from smart_sim.hetzner import HetznerConfig, HetznerSimulator

T = TypeVar("T")

TOKEN = "test-token"

Start = Callable[..., Awaitable[HetznerSimulator]]


@pytest.fixture
async def sim() -> AsyncIterator[HetznerSimulator]:
    async with HetznerSimulator(HetznerConfig()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


STATUSES: dict[int, list[int]] = {}
"""HTTP statuses each client received, newest last (hcloud's exception lacks them)."""


@contextlib.contextmanager
def hcloud_client(url: str) -> Iterator[Client]:
    client = Client(TOKEN, api_endpoint=url, poll_interval=0.01, poll_max_retries=500)
    client._client._retry_max_retries = 0  # see every error as the operator would
    statuses = STATUSES.setdefault(id(client), [])
    client._client._session.hooks["response"].append(
        lambda response, *args, **kwargs: statuses.append(response.status_code)
    )
    try:
        yield client
    finally:
        client._client._session.close()
        client._client_hetzner._session.close()
        STATUSES.pop(id(client), None)


@pytest.fixture
def client(sim: HetznerSimulator) -> Iterator[Client]:
    with hcloud_client(sim.url) as hcloud:
        yield hcloud


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    return asyncio.to_thread(function, *args, **kwargs)


async def control(
    http: aiohttp.ClientSession, sim: HetznerSimulator, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, f"{sim.root_url}/_sim/{path}", json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def advance(http: aiohttp.ClientSession, sim: HetznerSimulator, seconds: float) -> None:
    await control(http, sim, "POST", "clock", {"advance": seconds})


def create(client: Client, name: str, **kwargs: Any) -> Awaitable[Any]:
    kwargs.setdefault("server_type", ServerType(name="cx23"))
    kwargs.setdefault("image", Image(name="debian-12"))
    return call(client.servers.create, name, **kwargs)


async def refused(attempt: Awaitable[Any]) -> APIException:
    with pytest.raises(APIException) as excinfo:
        await attempt
    return excinfo.value


def last_status(client: Client) -> int:
    """The HTTP status of the client's latest response."""
    return STATUSES[id(client)][-1]


# -- catalogue -------------------------------------------------------------------------


async def test_rule_deprecated_types_carry_their_deprecation_and_cannot_be_ordered(
    sim: HetznerSimulator, client: Client
) -> None:
    """The cx_2 and cpx_1 types were deprecated on 2025-10-16 and are not orderable after
    2025-12-31 (changelog 2025-10-16-server-types-deprecated; hetznercloud/cli#1211;
    hcloud-talos/terraform-hcloud-talos#316). Past ``unavailable_after`` in every location a
    type is no longer listed (DeprecationInfo in the specification); creating it is
    ``invalid_server_type`` (hcloud-go error.go: "... or is deprecated")."""
    listed = {t.name for t in await call(client.server_types.get_all)}
    assert {"cx23", "cx33", "cx43", "cx53", "cpx12", "cpx22", "cax11", "ccx13"} <= listed
    assert not listed & {"cx22", "cx32", "cx42"}
    assert await call(client.server_types.get_by_name, "cx22") is None

    # cpx11 is still sold in the US datacentres only (robhunter/agentdeals#1323).
    cpx11 = await call(client.server_types.get_by_name, "cpx11")
    by_location = {loc.location.name: loc for loc in cpx11.locations}
    assert by_location["fsn1"].deprecation is not None
    assert by_location["fsn1"].deprecation.announced.isoformat() == "2025-10-16T00:00:00+00:00"
    assert by_location["fsn1"].deprecation.unavailable_after.isoformat().startswith("2025-12-31")
    assert by_location["fsn1"].available is False
    assert (by_location["ash"].deprecation, by_location["ash"].available) == (None, True)

    error = await refused(create(client, "old-1", server_type=ServerType(name="cx22")))
    assert (error.code, last_status(client)) == ("invalid_server_type", 422)
    assert "cx23" in error.message  # names the types that replace it
    error = await refused(
        create(
            client, "old-2", server_type=ServerType(name="cpx11"), location=Location(name="nbg1")
        )
    )
    assert error.code == "invalid_server_type"
    # Where it is still sold, it can be ordered; without a location, it goes there.
    assert (
        await create(client, "us-1", server_type=ServerType(name="cpx11"))
    ).server.location.name == "ash"
    assert await call(client.servers.get_all, name="old-1") == []


async def test_rule_the_current_types_have_their_2026_prices(client: Client) -> None:
    """Prices from 15 June 2026 (CanineHQ/canine#652; robhunter/agentdeals#1324, #1286),
    net EUR per month, VAT 19 % on top."""
    pricing = (await call(client.request, "GET", "/pricing"))["pricing"]
    monthly = {
        t["name"]: {p["location"]: p["price_monthly"]["net"] for p in t["prices"]}
        for t in pricing["server_types"]
    }
    assert monthly["cx23"]["fsn1"] == "5.4900000000"
    assert monthly["cx53"]["hel1"] == "29.4900000000"
    assert monthly["cpx22"]["sin"] == "26.4900000000"
    assert monthly["ccx13"]["nbg1"] == "42.9900000000"


async def test_rule_a_sold_out_type_is_resource_unavailable(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """``resource_unavailable`` (412): "The requested resource is currently unavailable (e.g.
    not available for order)" (the specification's Error Codes); packer-plugin-hcloud#198
    shows it on a create. ``locations[].available`` reports the stock."""
    await control(
        http, sim, "POST", "server_types/cx23/stock", {"available": False, "location": "fsn1"}
    )
    error = await refused(create(client, "web-1", location=Location(name="fsn1")))
    assert (error.code, last_status(client)) == ("resource_unavailable", 412)
    cx23 = await call(client.server_types.get_by_name, "cx23")
    assert {loc.location.name: loc.available for loc in cx23.locations} == {
        "fsn1": False,
        "nbg1": True,
        "hel1": True,
    }
    # Without a location the server goes where the type is in stock.
    assert (await create(client, "web-2")).server.location.name == "nbg1"


# -- errors and faults -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("resource_unavailable", 412),
        ("placement_error", 422),
        ("resource_limit_exceeded", 403),
        ("uniqueness_error", 409),
        ("conflict", 409),
        ("locked", 423),
        ("protected", 423),
        ("maintenance", 403),
        ("unavailable", 503),
        ("timeout", 504),
    ],
)
async def test_rule_injected_errors_carry_the_specified_status(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession, code: str, status: int
) -> None:
    """Every documented error can be injected on any route, with the status of the
    specification's "Error Codes" table and the operations' specific errors."""
    await control(http, sim, "POST", "faults", {"kind": "error", "code": code, "method": "POST"})
    error = await refused(create(client, "web-1"))
    assert (error.code, last_status(client)) == (code, status)
    assert await call(client.servers.get_all) == []  # nothing was created


async def test_rule_resource_limit_exceeded_names_the_limit(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """The specification's example: ``{"limits": [{"name": "project_limit"}]}``; a fault may
    name another limit."""
    fault = {
        "kind": "error",
        "code": "resource_limit_exceeded",
        "message": "server limit exceeded",
        "details": {"limits": [{"name": "server_limit"}]},
    }
    await control(http, sim, "POST", "faults", fault)
    error = await refused(create(client, "web-1"))
    assert error.details == {"limits": [{"name": "server_limit"}]}
    assert error.message == "server limit exceeded"


async def test_rule_a_failed_action_ends_in_error(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """ "An action should be waited upon, until it reaches either the success or error
    state" (Actions in the specification; its example error is ``action_failed``)."""
    await control(
        http,
        sim,
        "POST",
        "faults",
        {"kind": "action_error", "code": "action_failed", "path": "/v1/servers"},
    )
    created = await create(client, "web-1")
    await advance(http, sim, 20)
    with pytest.raises(ActionFailedException) as excinfo:
        await call(created.action.wait_until_finished)
    assert excinfo.value.action.error == {"code": "action_failed", "message": "Action failed"}
    server = await call(client.servers.get_by_id, created.server.id)
    assert server.status != Server.STATUS_RUNNING  # the failed create never booted it
    faults = (await control(http, sim, "GET", "faults"))["faults"]
    assert faults == []


async def test_rule_faults_refuse_codes_they_cannot_render(
    sim: HetznerSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{sim.root_url}/_sim/faults", json={"kind": "error", "code": "no_such_code"}
    ) as response:
        assert response.status == 400
        assert "give its HTTP status" in (await response.json())["error"]
    await control(
        http, sim, "POST", "faults", {"kind": "error", "code": "no_such_code", "status": 418}
    )


# -- server lifecycle ------------------------------------------------------------------


async def test_rule_a_new_server_is_starting_before_it_runs(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """Server statuses: initializing, starting, running (the specification's enum); the
    start_server action of ``next_actions`` follows the create."""
    created = await create(client, "web-1")
    assert created.server.status == Server.STATUS_INIT
    seen = []
    for _ in range(4):
        seen.append((await call(client.servers.get_by_id, created.server.id)).status)
        await advance(http, sim, 5)
    assert seen == ["initializing", "initializing", "starting", "running"]


async def test_rule_any_action_on_a_busy_server_is_locked(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """``locked`` (423): "The item you are trying to access is locked (there is already an
    Action running)" — for power actions, deletion and firewall changes alike."""
    created = await create(client, "web-1")
    firewall = (await call(client.firewalls.create, "fw")).firewall
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: call(client.servers.reboot, created.server),
        lambda: call(client.servers.delete, created.server),
        lambda: call(
            client.firewalls.apply_to_resources,
            firewall,
            [FirewallResource(type="server", server=created.server)],
        ),
    ]
    for attempt in attempts:
        error = await refused(attempt())
        assert (error.code, last_status(client)) == ("locked", 423)
    await advance(http, sim, 15)
    await call(client.servers.delete, created.server)


async def test_rule_a_firewall_is_in_use_until_its_server_is_deleted(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """``resource_in_use`` (422, delete_firewall: "Firewall still applied to a resource"),
    also while the server's delete action still runs."""
    rule = FirewallRule("in", "tcp", ["0.0.0.0/0"], port="22")
    firewall = (await call(client.firewalls.create, "fw", rules=[rule])).firewall
    created = await create(client, "web-1", firewalls=[firewall])
    error = await refused(call(client.firewalls.delete, firewall))
    assert (error.code, last_status(client)) == ("resource_in_use", 422)

    await advance(http, sim, 15)
    await call(client.servers.delete, created.server)
    error = await refused(call(client.firewalls.delete, firewall))
    assert error.code == "resource_in_use"  # right after the delete, still applied
    await advance(http, sim, 3)
    assert await call(client.firewalls.delete, firewall) is True


# -- firewalls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ({"source_ips": ["203.0.113.7"]}, "CIDR block notation"),
        ({"source_ips": ["10.0.1.5/24"]}, "not a valid CIDR block"),
        ({"source_ips": [f"10.0.{i // 250}.{i % 250}/32" for i in range(101)]}, "at most 100"),
        ({"port": "0"}, "outside 1-65535"),
        ({"port": "443-80"}, "outside 1-65535"),
        ({"port": "65536"}, "outside 1-65535"),
        ({"port": "any"}, "is not a port"),
        ({"description": "d" * 256}, "longer than 255"),
    ],
)
async def test_rule_firewall_rules_are_cidr_blocks_within_the_documented_limits(
    client: Client, rule: dict[str, Any], reason: str
) -> None:
    """ "IPs must be provided in CIDR block notation ... You can specify 100 CIDR blocks at
    most. The CIDR blocks may refer to networks (with empty host bits) or single hosts";
    description maxLength 255; ports as "80" or "1024-5000" (create_firewall)."""
    body = {"direction": "in", "protocol": "tcp", "port": "22", "source_ips": ["0.0.0.0/0"]}
    body.update(rule)
    error = await refused(
        call(client.request, "POST", "/firewalls", json={"name": "fw", "rules": [body]})
    )
    assert (error.code, last_status(client)) == ("invalid_input", 422)
    assert reason in error.message
    assert await call(client.firewalls.get_all) == []


async def test_rule_a_firewall_has_at_most_50_rules_and_a_short_name(client: Client) -> None:
    """ "Rules are limited to 50 entries per Firewall"; names "Limited to a maximum of 128
    characters" (create_firewall)."""
    rule = FirewallRule("in", "tcp", ["192.0.2.0/24"], port="443")
    await call(client.firewalls.create, "fifty", rules=[rule] * 50)
    error = await refused(call(client.firewalls.create, "fifty-one", rules=[rule] * 51))
    assert error.code == "invalid_input"
    error = await refused(call(client.firewalls.create, "n" * 129))
    assert error.code == "invalid_input"
    # A single host as /32 and IPv6 in canonical form are accepted.
    v6 = FirewallRule("in", "tcp", ["203.0.113.7/32", "2001:0db8::/32"], port="22")
    created = (await call(client.firewalls.create, "hosts", rules=[v6])).firewall
    assert created.rules[0].source_ips == ["203.0.113.7/32", "2001:db8::/32"]


# -- pagination ------------------------------------------------------------------------


async def test_rule_lists_carry_a_link_header(
    sim: HetznerSimulator, client: Client, http: aiohttp.ClientSession
) -> None:
    """ "Responses contain a Link header with pagination information" (Pagination)."""
    for index in range(5):
        await call(client.ssh_keys.create, f"k{index}", _key(index))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{sim.url}/ssh_keys?page=2&per_page=2", headers=headers) as response:
        link = response.headers["Link"]
    parts = {p.split(";")[1].strip(): p.split(";")[0].strip() for p in link.split(",")}
    assert set(parts) == {'rel="prev"', 'rel="next"', 'rel="last"'}
    assert "page=1" in parts['rel="prev"'] and "per_page=2" in parts['rel="prev"']
    assert "page=3" in parts['rel="next"'] and "page=3" in parts['rel="last"']


def _key(index: int) -> str:
    import base64

    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([index]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} k{index}"
