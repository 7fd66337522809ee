"""Several provider accounts in one simulator each: Hetzner projects and Cloudflare
accounts keyed by token, each with its own objects, request budget and (Hetzner) server
limit, through the official SDKs over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import cloudflare
import pytest
from cloudflare import AsyncCloudflare
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.server_types import ServerType

from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator
from smart_sim.cloudflare.app import AccountConfig
from smart_sim.hetzner import HetznerConfig, HetznerSimulator
from smart_sim.hetzner.app import ProjectConfig

T = TypeVar("T")
MAIN, SECOND = "main-token", "second-token"
SECOND_ACCOUNT = "0b9c7e5d3b1f6a8e2c4d7b0e9a1c3f5e"


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


@contextlib.contextmanager
def hcloud(url: str, token: str) -> Iterator[Client]:
    client = Client(token, api_endpoint=url, poll_interval=0.01)
    client._client._retry_max_retries = 0  # every refusal is seen as it happens
    try:
        yield client
    finally:
        client._client._session.close()
        client._client_hetzner._session.close()


@pytest.fixture
async def hetzner() -> AsyncIterator[HetznerSimulator]:
    config = HetznerConfig(
        token=MAIN,
        projects=(ProjectConfig(SECOND, rate_limit=100, refill_per_second=0.01, server_quota=2),),
    )
    async with HetznerSimulator(config) as sim:
        yield sim


@pytest.fixture
async def cf() -> AsyncIterator[CloudflareSimulator]:
    config = CloudflareConfig(token=MAIN, accounts=(AccountConfig(SECOND, SECOND_ACCOUNT, 50),))
    async with CloudflareSimulator(config) as sim:
        yield sim


def create(client: Client, name: str) -> Any:
    return client.servers.create(
        name, server_type=ServerType(name="cx23"), image=Image("debian-12")
    )


async def test_hetzner_projects_hold_their_own_servers(hetzner: HetznerSimulator) -> None:
    with hcloud(hetzner.url, MAIN) as main, hcloud(hetzner.url, SECOND) as second:
        await call(create, second, "in-second")
        await call(create, main, "in-main")
        assert [s.name for s in await call(second.servers.get_all)] == ["in-second"]
        assert [s.name for s in await call(main.servers.get_all)] == ["in-main"]
        # Another project's server is not found, as with a real token of another project.
        other = (await call(main.servers.get_all))[0]
        with pytest.raises(APIException) as missing:
            await call(second.servers.get_by_id, other.id)
        assert missing.value.code == "not_found"


async def test_hetzner_project_server_limit_refuses_with_the_api_error(
    hetzner: HetznerSimulator,
) -> None:
    with hcloud(hetzner.url, SECOND) as second, hcloud(hetzner.url, MAIN) as main:
        await call(create, second, "one")
        await call(create, second, "two")
        with pytest.raises(APIException) as refused:
            await call(create, second, "three")
        assert refused.value.code == "resource_limit_exceeded"
        assert refused.value.message == "server limit exceeded"
        assert refused.value.details == {"limits": [{"name": "server_limit"}]}
        assert [s.name for s in await call(second.servers.get_all)] == ["one", "two"]
        # The main project has no such limit here: its own quota, not the other's.
        await call(create, main, "three")
        # A deleted server frees its place in the limit (once its create action ended).
        hetzner.context.clock.advance(60)
        first = await call(second.servers.get_by_name, "one")
        await call(second.servers.delete, first)
        await call(create, second, "three")


async def test_hetzner_request_budgets_are_per_project(hetzner: HetznerSimulator) -> None:
    async with aiohttp.ClientSession() as http:

        async def spend(token: str) -> tuple[int, str, str]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{hetzner.url}/servers", headers=headers) as response:
                return (
                    response.status,
                    response.headers["RateLimit-Limit"],
                    response.headers["RateLimit-Remaining"],
                )

        assert await spend(SECOND) == (200, "100", "99")
        for _ in range(99):
            await spend(SECOND)
        status, limit, remaining = await spend(SECOND)
        assert (status, limit, remaining) == (429, "100", "0")
        # The main project's budget is untouched by the other's.
        assert await spend(MAIN) == (200, "3600", "3599")
        # A token of neither project is refused.
        async with http.get(
            f"{hetzner.url}/servers", headers={"Authorization": "Bearer nobody"}
        ) as response:
            assert response.status == 401


def cf_client(sim: CloudflareSimulator, token: str) -> AsyncCloudflare:
    return AsyncCloudflare(api_token=token, base_url=sim.url, max_retries=0)


async def test_cloudflare_accounts_hold_their_own_zones_and_budgets(
    cf: CloudflareSimulator,
) -> None:
    main_id = cf.context.config.account_id
    async with cf_client(cf, MAIN) as main, cf_client(cf, SECOND) as second:
        made = await second.zones.create(account={"id": SECOND_ACCOUNT}, name="second.example")
        assert made.account.id == SECOND_ACCOUNT
        await main.zones.create(account={"id": main_id}, name="main.example")
        assert [z.name async for z in second.zones.list()] == ["second.example"]
        assert [z.name async for z in main.zones.list()] == ["main.example"]
        assert [a.id async for a in second.accounts.list()] == [SECOND_ACCOUNT]
        # A token of one account cannot add zones to another.
        with pytest.raises(cloudflare.PermissionDeniedError):
            await second.zones.create(account={"id": main_id}, name="other.example")
        # Each user's window is its own: the second spends its 50, the main keeps its 1200.
        raw = await second.zones.with_raw_response.list()
        left = int(raw.headers["Ratelimit"].split("r=")[1].split(";")[0])
        for _ in range(left):
            await second.zones.list()
        with pytest.raises(cloudflare.RateLimitError):
            await second.zones.list()
        raw = await main.zones.with_raw_response.list()
        assert raw.headers["Ratelimit-Policy"].startswith('"default";q=1200')
        assert int(raw.headers["Ratelimit"].split("r=")[1].split(";")[0]) > 1000
