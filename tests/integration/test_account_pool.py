"""The operator's pool of provider accounts (``clients.accounts``) against simulators
holding several Hetzner projects and Cloudflare accounts: each account's calls go to
its own project with its own token and budget, and placement counts the servers its
project already holds. (The account Secrets are read from the API server in
``tests/cluster/test_accounts.py``; here the pool is handed their contents.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from smart_operator.accounts import (
    ACCOUNT_LABEL,
    DRAINED_LABEL,
    SETUP_REQUESTS,
    Placed,
    Unplaced,
)
from smart_operator.clients.accounts import AccountPool, AccountSpec
from smart_operator.clients.kube import SecretView
from smart_operator.domains import cloud_labels
from smart_operator.keys import generate_ssh_key
from smart_operator.ports import Identity
from smart_operator.settings import OperatorSettings
from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator
from smart_sim.cloudflare.app import AccountConfig
from smart_sim.hetzner import HetznerConfig, HetznerSimulator
from smart_sim.hetzner.app import ProjectConfig

QUOTAS = {"alpha": 1, "beta": 3}


def secret(name: str, **labels: str) -> SecretView:
    return SecretView(
        f"provider-{name}",
        {ACCOUNT_LABEL: name, **labels},
        {
            "hetzner-token": f"{name}-token",
            "cloudflare-token": f"{name}-token",
            "cloudflare-account-id": f"{name}-id",
            "server-quota": str(QUOTAS[name]),
        },
    )


@pytest.fixture
async def sims() -> AsyncIterator[tuple[HetznerSimulator, CloudflareSimulator]]:
    hetzner = HetznerConfig(
        token="default-token",
        projects=tuple(ProjectConfig(f"{n}-token", server_quota=q) for n, q in QUOTAS.items()),
    )
    cloudflare = CloudflareConfig(
        token="default-token",
        accounts=tuple(AccountConfig(f"{n}-token", f"{n}-id") for n in QUOTAS),
    )
    async with HetznerSimulator(hetzner) as h, CloudflareSimulator(cloudflare) as c:
        yield h, c


@pytest.fixture
async def pool(
    sims: tuple[HetznerSimulator, CloudflareSimulator],
) -> AsyncIterator[tuple[AccountPool, list[SecretView]]]:
    hetzner, cloudflare = sims
    settings = OperatorSettings(
        hetzner_endpoint=hetzner.url,
        cloudflare_endpoint=cloudflare.url,
        hetzner_token=SecretStr("default-token"),
        cloudflare_token=SecretStr("default-token"),
        cloudflare_account_id=cloudflare.context.config.account_id,
    )
    secrets = [secret("alpha"), secret("beta")]

    async def read_secrets() -> list[SecretView]:
        return list(secrets)

    identity = Identity(generate_ssh_key("smart-operator"), b"k" * 32, "inst-1")
    made = AccountPool(settings, identity, read_secrets, refresh_seconds=3600)
    made.add(
        AccountSpec(
            "default",
            "default-token",
            "default-token",
            settings.cloudflare_account_id,
            server_quota=2,
            drained=True,
        )
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(made.close)
        await made.refresh()
        yield made, secrets


async def make_server(made: AccountPool, account: str, uid: str) -> Any:
    cloud = made.cloud(account)
    assert cloud is not None
    return await cloud.servers.create_server(
        name=f"ss-{uid}",
        server_type="cx23",
        image="debian-12",
        location="fsn1",
        user_data="#cloud-config\n",
        labels=cloud_labels(uid, "inst-1"),
        ssh_key_ids=[],
        firewall_ids=[],
    )


async def test_each_account_acts_in_its_own_project(
    pool: tuple[AccountPool, list[SecretView]],
) -> None:
    made, _ = pool
    calls = REGISTRY.get_sample_value
    before = calls("smartserver_account_calls_total", {"account": "beta", "provider": "hetzner"})
    await make_server(made, "beta", "u-1")
    beta, alpha = made.cloud("beta"), made.cloud("alpha")
    assert beta is not None and alpha is not None
    assert [s.name for s in await beta.servers.servers({})] == ["ss-u-1"]
    assert await alpha.servers.servers({}) == []
    zone = await beta.dns.create_zone("shop.example")
    assert [z.name for z in await beta.dns.zones()] == ["shop.example"]
    assert await alpha.dns.zones() == []
    assert zone.name == "shop.example"
    after = calls("smartserver_account_calls_total", {"account": "beta", "provider": "hetzner"})
    assert after - (before or 0) == 2  # the create and the listing, on beta's budget


async def test_a_project_full_of_servers_sends_the_next_domain_elsewhere(
    pool: tuple[AccountPool, list[SecretView]],
) -> None:
    made, _ = pool
    await make_server(made, "alpha", "already-there")  # alpha's one server (quota 1)
    # The listing finds it: alpha is full; beta takes the Domain.
    assert await made.place("new-1", None) == Placed("beta")
    gauge = REGISTRY.get_sample_value("smartserver_account_servers", {"account": "alpha"})
    assert gauge == 1
    # Pinned to the full account: it waits, and says why.
    pinned = await made.place("new-2", "alpha")
    assert isinstance(pinned, Unplaced) and "full (1/1 servers)" in pinned.message
    # The drained default account takes nothing, however empty.
    for uid in ("new-3", "new-4"):
        assert await made.place(uid, None) == Placed("beta")
    everything = await made.place("new-5", None)
    assert isinstance(everything, Unplaced)
    assert "alpha: 1/1 servers; beta: 3/3 servers; default: drained" in everything.message


async def test_draining_an_account_takes_effect_once_its_secret_is_read_again(
    pool: tuple[AccountPool, list[SecretView]],
) -> None:
    made, secrets = pool
    assert await made.place("one", None) == Placed("beta")  # equal shares: more servers free
    made.forget("one")
    secrets[1] = secret("beta", **{DRAINED_LABEL: "true"})
    await made.refresh()  # as the pool does in the background, when it is due
    assert await made.place("two", None) == Placed("alpha")
    assert REGISTRY.get_sample_value("smartserver_account_drained", {"account": "beta"}) == 1


async def test_a_burst_of_new_domains_counts_what_their_set_ups_will_spend(
    pool: tuple[AccountPool, list[SecretView]],
) -> None:
    """The budget headers show a set-up's spending only once it makes its calls, so
    placement counts it from the moment a Domain is placed: in a burst, the account
    with more budget left takes Domains until what they will spend evens the two out,
    and then they take turns; not the whole burst, as when only the headers counted."""
    made, secrets = pool
    roomy = {"server-quota": "10000"}
    secrets[:] = [SecretView(s.name, s.labels, {**s.data, **roomy}) for s in secrets]
    await made.refresh()
    alpha = made.accounts["alpha"].cloudflare.budget
    # alpha's last answer: half of its 1,200 requests in this window are left, i.e. the
    # set-ups of 60 Domains (SETUP_REQUESTS); beta has all of its 1,200.
    alpha.observe(remaining=alpha.limit // 2, reset_in=300.0)
    per_domain = SETUP_REQUESTS["cloudflare"] / alpha.limit
    taken = {"alpha": 0, "beta": 0}
    for i in range(80):
        placed = await made.place(f"burst-{i}", None)
        assert isinstance(placed, Placed)
        taken[placed.account] += 1
    # beta first takes about 60 more (in 5% steps of the budget, 6 Domains each), then
    # they alternate: about 70 and 10.
    lead = round(0.5 / per_domain)
    assert abs(taken["beta"] - taken["alpha"] - lead) <= 0.05 / per_domain + 1, taken
    assert taken["alpha"] > 0
