"""The Domain reconciler with a pool of provider accounts: a new Domain is placed once,
recorded on its status and labels, and every later call (deletion too) goes to that
account; a full or drained account takes no new Domain; a pinned Customer stays."""

from __future__ import annotations

from typing import Any

import pytest

from smart_operator.accounts import ACCOUNT_LABEL, AccountLoad, Placed, Unplaced, place
from smart_operator.errors import PermanentFailure
from smart_operator.ports import Cloud, ObjectRef
from tests.unit.fakes import FakeDns, FakeInstaller, FakeServers, fake_cloud
from tests.unit.test_reconcile_domain import REF, UID, World


class FakePool:
    """The ``Pool`` port over fake accounts, placing with the real ``accounts.place``."""

    def __init__(self, quotas: dict[str, int], drained: frozenset[str] = frozenset()) -> None:
        self.fakes: dict[str, tuple[Cloud, FakeServers, FakeDns]] = {}
        for name in quotas:
            cloud, servers, dns = fake_cloud()
            cloud.account, cloud.pool = name, self
            dns.delegated.add("shop.example")  # the zone made turns active by the next read
            self.fakes[name] = (cloud, servers, dns)
        self.quotas = quotas
        self.drained = drained
        self.members: dict[str, str] = {}
        self.placed: list[str] = []
        self.exhausted_accounts: list[str] = []

    @property
    def default(self) -> str:
        return sorted(self.fakes)[0]

    def cloud(self, name: str) -> Cloud | None:
        found = self.fakes.get(name)
        return found[0] if found else None

    def clouds(self) -> list[Cloud]:
        return [self.fakes[name][0] for name in sorted(self.fakes)]

    def fill(self, name: str, count: int) -> None:
        for i in range(count):
            self.members[f"other-{name}-{i}"] = name

    async def place(self, uid: str, pin: str | None) -> Placed | Unplaced:
        loads = [
            AccountLoad(
                name,
                sum(1 for where in self.members.values() if where == name),
                quota,
                drained=name in self.drained,
            )
            for name, quota in sorted(self.quotas.items())
        ]
        result = place(loads, pin)
        if isinstance(result, Placed):
            self.placed.append(uid)
            self.note(uid, result.account)
        return result

    def note(self, uid: str, name: str) -> None:
        self.members[uid] = name

    def forget(self, uid: str) -> None:
        self.members.pop(uid, None)

    def exhausted(self, name: str) -> None:
        self.exhausted_accounts.append(name)


class AllServers:
    """Every account's servers, as the installer reaches them (by address)."""

    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    @property
    def servers_by_id(self) -> dict[int, Any]:
        return {k: v for _, s, _ in self.pool.fakes.values() for k, v in s.servers_by_id.items()}

    @property
    def user_data(self) -> dict[int, str]:
        return {k: v for _, s, _ in self.pool.fakes.values() for k, v in s.user_data.items()}


def pooled(pool: FakePool, pin: str | None = None, **spec: Any) -> World:
    world = World(**spec)
    world.cloud = pool.clouds()[0]
    world.installer = FakeInstaller(AllServers(pool))  # type: ignore[arg-type]
    if pin is not None:
        customer = world.resources.objects[ObjectRef("customers", "acme")]
        customer["spec"] = {"email": "a@example.com", "providerAccount": pin}
    return world


async def settle(world: World) -> None:
    """Two passes: the first makes the zone (pending), the second finds it active and
    makes the server."""
    await world.run()
    await world.run()


def made_in(pool: FakePool) -> dict[str, tuple[int, int]]:
    """Servers and zones in each account."""
    return {
        name: (len(s.servers_by_id), len(d.zones_by_id)) for name, (_, s, d) in pool.fakes.items()
    }


async def test_a_new_domain_is_placed_recorded_and_made_in_one_account() -> None:
    pool = FakePool({"a": 10, "b": 10})
    pool.fill("a", 5)  # b has more room
    world = pooled(pool)
    await settle(world)
    assert world.status["account"] == "b"
    assert world.resources.objects[REF]["metadata"]["labels"][ACCOUNT_LABEL] == "b"
    assert made_in(pool) == {"a": (0, 0), "b": (1, 1)}
    assert "AccountChosen" in world.events.reasons("Normal")

    # Later passes use the recorded account, however the load moves meanwhile.
    pool.fill("b", 9)
    world.heartbeat()
    await world.run()
    assert world.status["account"] == "b"
    assert pool.placed == [UID]  # placed once
    assert world.status["phase"] == "Ready"
    assert made_in(pool) == {"a": (0, 0), "b": (1, 1)}


async def test_the_account_is_recorded_before_anything_is_made_in_it() -> None:
    pool = FakePool({"a": 10})
    world = pooled(pool)
    _, _, dns = pool.fakes["a"]
    dns.fail("create_zone", PermanentFailure("cloudflare", "refused"))
    await world.run()
    assert world.status["account"] == "a"
    assert made_in(pool) == {"a": (0, 0)}


async def test_a_full_account_sends_the_next_domain_elsewhere() -> None:
    pool = FakePool({"a": 3, "b": 3})
    pool.fill("a", 3)
    world = pooled(pool)
    await world.run()
    assert world.status["account"] == "b"


async def test_a_drained_account_takes_no_new_domain_but_keeps_its_own() -> None:
    pool = FakePool({"a": 10, "b": 10}, drained=frozenset({"a"}))
    world = pooled(pool)
    await settle(world)
    assert world.status["account"] == "b"

    # A Domain already on a drained account stays there.
    pool.drained = frozenset({"b"})
    world.heartbeat()
    await world.run()
    assert world.status["account"] == "b"
    assert world.status["phase"] == "Ready"


async def test_every_account_full_or_drained_is_a_condition_and_nothing_is_made() -> None:
    pool = FakePool({"a": 1, "b": 5}, drained=frozenset({"b"}))
    pool.fill("a", 1)
    world = pooled(pool)
    delay = await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "NoProviderAccount"
    assert "a: 1/1 servers; b: drained" in condition["message"]
    assert "account" not in world.status
    assert made_in(pool) == {"a": (0, 0), "b": (0, 0)}
    assert delay == 60

    pool.quotas["a"] = 2  # room again: the next pass places it
    await world.run()
    assert world.status["account"] == "a"


async def test_a_pinned_customer_stays_on_its_account() -> None:
    pool = FakePool({"a": 10, "b": 10})
    pool.fill("b", 8)
    world = pooled(pool, pin="b")
    await settle(world)
    assert world.status["account"] == "b"
    assert made_in(pool)["b"] == (1, 1)


async def test_a_pinned_customer_whose_account_is_full_waits_and_is_not_moved() -> None:
    pool = FakePool({"a": 10, "b": 2})
    pool.fill("b", 2)
    world = pooled(pool, pin="b")
    await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "NoProviderAccount"
    assert "pinned to provider account b" in condition["message"]
    assert "full (2/2 servers)" in condition["message"]
    assert made_in(pool) == {"a": (0, 0), "b": (0, 0)}


async def test_a_domain_made_before_the_pool_stays_on_the_default_account() -> None:
    cloud, servers, dns = fake_cloud()
    world = World()
    world.cloud, world.servers, world.dns = cloud, servers, dns
    world.installer = FakeInstaller(servers)
    world.claimed_zone("shop.example")
    await world.run()  # made without a pool: nothing recorded
    assert "account" not in world.status
    assert len(servers.servers_by_id) == 1
    pool = FakePool({"a": 10, "b": 10})
    # The pool's default account is the one its objects are in.
    pool.fakes["a"] = (cloud, servers, dns)
    cloud.account, cloud.pool = "a", pool
    pool.fill("a", 9)  # even when another account has more room
    world.cloud = cloud
    await world.run()
    assert world.status["account"] == "a"
    assert pool.placed == []
    assert len(servers.servers_by_id) == 1


async def test_a_recorded_account_gone_from_the_pool_is_a_condition() -> None:
    pool = FakePool({"a": 10})
    world = pooled(pool)
    await world.run()
    del pool.fakes["a"]
    pool.fakes["c"] = fake_cloud()
    world.cloud = pool.fakes["c"][0]
    world.cloud.pool = pool
    await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "NoProviderAccount"
    assert "provider account a (status.account)" in condition["message"]
    assert "restore its Secret" in condition["message"]


async def test_deletion_removes_what_was_made_in_the_recorded_account() -> None:
    pool = FakePool({"a": 10, "b": 10})
    pool.fill("a", 5)
    world = pooled(pool)
    await settle(world)
    assert made_in(pool)["b"] == (1, 1)
    await world.reconciler().delete()
    _, servers, _ = pool.fakes["b"]
    assert servers.servers_by_id == {}
    assert servers.firewalls_by_id == {}
    assert UID not in pool.members


async def test_a_server_limit_refusal_counts_the_account_full() -> None:
    pool = FakePool({"a": 10})
    world = pooled(pool)
    _, servers, _ = pool.fakes["a"]
    servers.fail(
        "create_server",
        PermanentFailure("hetzner", "server limit exceeded", code="resource_limit_exceeded"),
    )
    await settle(world)
    assert pool.exhausted_accounts == ["a"]
    assert world.condition("ServerReady")["reason"] == "QuotaExceeded"


@pytest.mark.parametrize("pin", [None, "b"])
async def test_without_a_pool_nothing_is_placed(pin: str | None) -> None:
    world = World()
    await world.run()
    assert "account" not in world.status
    assert ACCOUNT_LABEL not in world.resources.objects[REF]["metadata"].get("labels", {})
