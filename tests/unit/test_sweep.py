"""The sweep: which labelled objects are orphans, and a loop that outlives any error
(an API-server outage once killed it for the life of the process)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from smart_operator import domains
from smart_operator.background import RETRIES, run_forever
from smart_operator.errors import TemporaryFailure
from smart_operator.ports import ObjectRef
from smart_operator.reconcile.sweep import OrphanRule, sweep_once
from tests.unit.fakes import LONG_AGO, FakeResources, fake_cloud
from tests.waiting import eventually_async

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def test_an_orphan_is_labelled_owned_by_no_domain_and_older_than_the_grace() -> None:
    rule = OrphanRule(frozenset({"alive"}), NOW - timedelta(minutes=10))
    old = NOW - timedelta(hours=1)
    assert rule.labelled({domains.UID_LABEL: "gone"}, old)
    assert not rule.labelled({domains.UID_LABEL: "alive"}, old)
    assert not rule.labelled({domains.UID_LABEL: "gone"}, NOW)  # may be being created
    assert not rule.labelled({"team": "x"}, old)  # not ours
    assert rule.record(domains.RecordOwner("inst-1", "gone"), "inst-1")
    assert not rule.record(domains.RecordOwner("inst-1", "alive"), "inst-1")
    assert not rule.record(domains.RecordOwner("inst-2", "gone"), "inst-1")  # not ours
    assert not rule.record(domains.RecordOwner(None, "gone"), "inst-1")  # an old tag
    assert not rule.record(None, "inst-1")


async def test_the_sweep_removes_only_orphans() -> None:
    cloud, servers, dns = fake_cloud()
    resources = FakeResources()
    resources.put(ObjectRef("domains", "shop", "customer-acme"), {"metadata": {"uid": "alive"}})
    orphan = servers.add_server("ss-gone", domains.cloud_labels("gone", "inst-1"), LONG_AGO)
    alive = servers.add_server("ss-alive", domains.cloud_labels("alive", "inst-1"), LONG_AGO)
    foreign = servers.add_server("theirs", {"team": "x"}, LONG_AGO)
    # Another installation's Domain, which this cluster knows nothing of: not ours.
    neighbour = servers.add_server(
        "ss-other", domains.cloud_labels("elsewhere", "inst-2"), LONG_AGO
    )
    zone = dns.add_zone("shop.example")
    leftover = dns.add_record(
        zone.id, "A", "old.shop.example", "192.0.2.1", [], domains.record_marker("inst-1", "gone")
    )
    kept = dns.add_record(
        zone.id, "A", "shop.example", "192.0.2.2", [], domains.record_marker("inst-1", "alive")
    )
    neighbours = dns.add_record(
        zone.id, "A", "n.shop.example", "192.0.2.3", [], domains.record_marker("inst-2", "x")
    )
    removed = await sweep_once(cloud, resources, datetime.now(UTC), 600, records=True)
    assert removed == {"server": 1, "firewall": 0, "record": 1}
    assert set(servers.servers_by_id) == {alive, foreign, neighbour}
    assert orphan not in servers.servers_by_id
    assert [r.id for r in dns.all_records(zone.id)] == [kept, neighbours]
    assert leftover not in dns.records_by_zone[zone.id]


async def test_the_sweep_survives_an_api_server_error_and_any_other() -> None:
    cloud, servers, _ = fake_cloud()
    resources = FakeResources()
    resources.fail("domain_uids", TemporaryFailure("kubernetes", "list domains: HTTP 503"), 2)
    orphan = servers.add_server("ss-gone", domains.cloud_labels("gone", "inst-1"), LONG_AGO)
    crashed = False

    async def one_round() -> None:
        nonlocal crashed
        if not crashed:
            crashed = True
            raise RuntimeError("a bug in a round")
        await sweep_once(cloud, resources, datetime.now(UTC), 600, records=False)

    before = RETRIES.labels("test sweep")._value.get()
    loop = asyncio.create_task(run_forever("test sweep", one_round, 0.001, most=0.01))
    try:
        await eventually_async(
            lambda: orphan not in servers.servers_by_id,
            within=10,
            what="the orphan swept after the failures",
        )
        assert not loop.done()  # still running after three failed rounds
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert RETRIES.labels("test sweep")._value.get() - before == 3


async def test_the_sweep_visits_every_account_of_the_pool() -> None:
    from tests.unit.test_reconcile_domain_accounts import FakePool

    pool = FakePool({"a": 10, "b": 10})
    resources = FakeResources()
    resources.put(ObjectRef("domains", "shop", "customer-acme"), {"metadata": {"uid": "alive"}})
    _, in_a, _ = pool.fakes["a"]
    _, in_b, _ = pool.fakes["b"]
    in_a.add_server("ss-gone-a", domains.cloud_labels("gone-a", "inst-1"), LONG_AGO)
    in_b.add_server("ss-gone-b", domains.cloud_labels("gone-b", "inst-1"), LONG_AGO)
    # A live Domain's server in another account than the default one is its own.
    alive = in_b.add_server("ss-alive", domains.cloud_labels("alive", "inst-1"), LONG_AGO)
    removed = await sweep_once(pool.clouds()[0], resources, datetime.now(UTC), 600, records=False)
    assert removed["server"] == 2
    assert in_a.servers_by_id == {}
    assert set(in_b.servers_by_id) == {alive}
