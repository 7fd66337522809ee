"""The Domain reconciler, driven through fakes of its ports: every step's decision,
including lost creates, conflicts, rate limits and permanent refusals, without a
control plane or a provider."""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from smart_operator import domains
from smart_operator.errors import PermanentFailure, RateLimited, TemporaryFailure, Unreachable
from smart_operator.keys import (
    SSHKeyPair,
    derive_server_keys,
    generate_ssh_key,
    hash_intake_key,
    same_key,
)
from smart_operator.models.common import Writer
from smart_operator.models.domain import Domain, DomainStatus
from smart_operator.ports import ObjectRef, RecordView
from smart_operator.reconcile.domain import DnsCheckSchedule, DomainReconciler
from smart_operator.reconcile.status import StatusWriter
from smart_operator.settings import OperatorSettings
from tests.unit.fakes import FakeActions, FakeEvents, FakeInstaller, FakeResources, fake_cloud

NS = "customer-acme"
UID = "d-1"
REF = ObjectRef("domains", "shop", NS)
CUSTOMER = "c-1"
SETTINGS = OperatorSettings(
    ssh_sources=["203.0.113.7/32"],
    drift_seconds=60,
    verify_seconds=30,
    dns_drift_seconds=900,
    intake_url="https://intake.example",
)


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "shop", "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"domain": "shop.example", **spec},
    }


class World:
    """A Domain in a fake cluster, its fake providers, and the passes over it."""

    def __init__(self, **spec: Any) -> None:
        self.cloud, self.servers, self.dns = fake_cloud()
        self.resources = FakeResources()
        self.resources.put(REF, body(**spec))
        self.resources.put(
            ObjectRef("customers", "acme"), {"metadata": {"name": "acme", "uid": CUSTOMER}}
        )
        self.events = FakeEvents()
        self.schedule = DnsCheckSchedule(SETTINGS.dns_drift_seconds)
        self.with_cloud = True
        self.installer = FakeInstaller(self.servers)
        self.now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def reconciler(self, stopping: bool = False) -> DomainReconciler:
        domain = Domain.model_validate(self.resources.objects[REF])
        writer = StatusWriter(
            domain.status or DomainStatus(),
            functools.partial(self.resources.patch_status, REF),
            self.events,
            domains.summarize,
        )
        return DomainReconciler(
            domain,
            cloud=self.cloud if self.with_cloud else None,
            settings=SETTINGS,
            writer=writer,
            events=self.events,
            dns_schedule=self.schedule,
            resources=self.resources,
            installer=self.installer,
            clock=lambda: self.now,
            stopping=lambda: stopping,
        )

    async def run(self) -> float:
        return await self.reconciler().run()

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.resources.objects[REF].get("status") or {})

    def condition(self, type: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type)

    def heartbeat(self) -> None:
        """What the intake writes when the agent reports."""
        now = self.now.isoformat()
        status = self.resources.objects[REF].setdefault("status", {})
        status["agent"] = {"version": "0.2.0", "lastSeen": now, "startedAt": now}

    def claimed_zone(self, name: str, customer: str = CUSTOMER) -> str:
        """A zone in the account that already belongs to ``customer``."""
        zone = self.dns.add_zone(name)
        self.dns.add_record(
            zone.id,
            "TXT",
            domains.owner_record_name(name),
            domains.owner_content("inst-1", customer),
            [],
        )
        return zone.id


def addresses(world: World, zone_id: str) -> list[RecordView]:
    """The zone's A and AAAA records (not its owner record)."""
    return [r for r in world.dns.all_records(zone_id) if r.type in ("A", "AAAA")]


@pytest.fixture
def world() -> World:
    world = World()
    world.claimed_zone("shop.example")
    return world


async def test_a_new_domain_gets_firewall_server_and_records_then_waits_for_its_agent(
    world: World,
) -> None:
    delay = await world.run()
    [server] = world.servers.servers_by_id.values()
    attempt = world.status["server"]["createAttempt"]
    assert server.labels == domains.cloud_labels(UID, "inst-1", attempt)
    assert len(world.servers.firewalls_by_id) == 1
    records = addresses(world, "z1")
    assert {(r.type, r.name) for r in records} == {("A", "shop.example"), ("A", "www.shop.example")}
    marker = domains.record_marker("inst-1", UID)
    assert all(r.comment and r.comment.startswith(marker) for r in records)
    assert all(r.tags == [] for r in records)  # a Free zone refuses tags
    status = world.status
    assert status["server"]["id"] == server.id and status["server"]["hostPublicKey"]
    assert status["phase"] == "Provisioning"
    assert world.condition("AgentConnected")["reason"] == "WaitingForAgent"
    assert delay == 10.0  # soon, while the agent has not reported
    assert "ServerCreated" in world.events.reasons("Normal")

    world.heartbeat()
    assert await world.run() == SETTINGS.drift_seconds
    assert world.status["phase"] == "Ready"
    assert world.condition("Ready")["status"] == "True"


async def test_keys_and_the_create_marker_are_written_before_the_create_and_the_id_after(
    world: World,
) -> None:
    await world.run()
    patches = [patch for _, patch in world.resources.patches]
    marker = next(i for i, p in enumerate(patches) if p.get("server", {}).get("createRequestedAt"))
    with_id = next(i for i, p in enumerate(patches) if p.get("server", {}).get("id"))
    assert marker < with_id
    assert patches[marker]["server"]["hostPublicKey"]


async def test_a_create_whose_answer_was_lost_is_adopted_by_its_label_never_made_twice(
    world: World,
) -> None:
    world.servers.lose_next_create = True
    delay = await world.run()
    assert world.condition("ServerReady")["reason"] == "ProviderUnavailable"
    assert delay == pytest.approx(5.0)
    await world.run()
    assert len(world.servers.servers_by_id) == 1
    assert world.servers.calls["create_server"] == 1
    assert world.condition("ServerReady")["reason"] == "Running"


async def test_a_second_server_of_the_same_domain_is_removed(world: World) -> None:
    attempt = "a" * 16
    labels = domains.cloud_labels(UID, "inst-1", attempt)
    host_key = derive_server_keys(world.cloud.identity.key_secret, UID, attempt).host.public
    user_data = yaml.safe_dump({"ssh_keys": {"ed25519_public": host_key}})
    first = world.servers.add_server("ss-customer-acme-shop", labels, user_data=user_data)
    world.servers.add_server("ss-customer-acme-shop-2", labels, user_data=user_data)
    await world.run()
    assert list(world.servers.servers_by_id) == [first]
    assert "DuplicateRemoved" in world.events.reasons("Warning")


def keys_sent(world: World, server_id: int) -> str:
    """The host public key in a server's user-data (the intake key is never there)."""
    document = yaml.safe_load(world.servers.user_data[server_id])
    assert "AGENT_KEY" not in world.servers.user_data[server_id]
    return str(document["ssh_keys"]["ed25519_public"])


async def test_a_create_still_in_flight_when_the_next_pass_lists_is_adopted_with_its_keys(
    world: World,
) -> None:
    """The first create is sent and its answer lost; the next pass (another operator
    process) lists before the provider shows the server, creates again, meets the name,
    and adopts: the keys it pins are the ones the server was made with."""
    world.servers.lose_next_create = True
    await world.run()
    world.servers.hide_next_listing = True
    await world.run()
    assert len(world.servers.servers_by_id) == 1
    assert world.servers.calls["create_server"] == 2
    # The install used the pin from the user-data: it would have failed otherwise.
    assert world.installer.calls["install"] == 1
    assert world.condition("AgentInstalled")["status"] == "True"
    assert world.condition("ServerReady")["reason"] == "Running"


async def test_a_server_whose_status_was_lost_is_adopted_with_keys_from_its_attempt(
    world: World,
) -> None:
    await world.run()
    [server_id] = world.servers.servers_by_id
    sent = keys_sent(world, server_id)
    world.resources.objects[REF].pop("status")  # a restore without status, say
    world.installer.host_keys.clear()  # (a server whose key was not rotated yet)
    await world.run()
    assert list(world.servers.servers_by_id) == [server_id]
    # The install took the pin derived from the server's attempt label: the fake
    # refuses any other than the key in its user-data.
    assert world.installer.calls["install"] == 2
    assert world.condition("AgentInstalled")["status"] == "True"
    assert sent == keys_sent(world, server_id)


async def test_a_server_without_known_keys_is_replaced(world: World) -> None:
    unknown = world.servers.add_server("ss-customer-acme-shop", domains.domain_labels(UID))
    await world.run()
    [server_id] = world.servers.servers_by_id
    assert server_id != unknown
    assert world.condition("AgentInstalled")["status"] == "True"


async def test_a_name_taken_by_a_server_that_is_not_ours_fails_the_domain_clearly(
    world: World,
) -> None:
    world.servers.add_server("ss-customer-acme-shop", {"team": "someone-else"})
    delay = await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "ProviderRejected"
    assert "did not make for this Domain" in condition["message"]
    assert world.status["phase"] == "Failed"
    assert delay == SETTINGS.drift_seconds
    assert "ServerReady" not in [type for type, *_ in world.events.posted]
    assert "ProviderRejected" in world.events.reasons("Warning")
    assert len(world.servers.servers_by_id) == 1


async def test_a_rate_limit_waits_for_the_reset_and_says_so(world: World) -> None:
    world.servers.fail("servers", RateLimited("hetzner", "rate limit reached", 42.0))
    delay = await world.run()
    assert delay == 42.0
    condition = world.condition("ServerReady")
    assert (
        condition["reason"] == "ProviderUnavailable" and "retrying in 42 s" in condition["message"]
    )
    assert world.status["phase"] == "Provisioning"
    await world.run()
    assert world.condition("ServerReady")["reason"] == "Running"


async def test_a_permanent_refusal_of_dns_is_a_failed_condition_not_a_retry_loop(
    world: World,
) -> None:
    refusal = PermanentFailure("cloudflare", "batch_records: DNS record has 1 tags")
    world.dns.fail("batch", refusal)
    delay = await world.run()
    condition = world.condition("DNSReady")
    assert condition["reason"] == "ProviderRejected" and "tags" in condition["message"]
    assert delay == SETTINGS.drift_seconds
    assert world.status["phase"] == "Failed"


async def test_a_record_that_is_not_ours_is_a_conflict_reported_once_and_never_touched(
    world: World,
) -> None:
    foreign = world.dns.add_record("z1", "A", "www.shop.example", "192.0.2.1", [])
    await world.run()
    await world.run()
    condition = world.condition("DNSReady")
    assert condition["reason"] == "RecordConflict" and "192.0.2.1" in condition["message"]
    assert world.events.reasons("Warning").count("RecordConflict") == 1
    assert world.dns.records_by_zone["z1"][foreign].content == "192.0.2.1"


async def test_a_missing_zone_is_created_and_the_domain_waits_for_its_delegation() -> None:
    world = World()
    delay = await world.run()
    [zone] = world.dns.zones_by_id.values()
    assert zone.name == "shop.example"
    verified = world.condition("Verified")
    assert verified["reason"] == "ZonePending" and "ada.ns.cloudflare.com" in verified["message"]
    assert delay == SETTINGS.verify_seconds
    assert world.status["dns"]["zoneCreated"] is True
    assert world.servers.servers_by_id == {}
    assert world.status["phase"] == "Verifying"

    assert "check again at 13:00 UTC" in verified["message"]
    await world.run()
    assert world.dns.activation_checks == 1  # once an hour is what a Free zone allows
    world.now += timedelta(hours=1)
    await world.run()
    assert world.dns.activation_checks == 2
    assert "check again at 14:00 UTC" in world.condition("Verified")["message"]

    world.dns.delegated.add("shop.example")
    await world.run()
    assert world.condition("Verified")["status"] == "True"
    assert world.status["verification"]["method"] == "cloudflareZone"
    assert world.dns.activation_checks == 2


async def test_a_subdomain_uses_its_registrable_parents_zone_and_never_makes_its_own() -> None:
    world = World(domain="promo.shop.example.com")
    await world.run()
    [zone] = world.dns.zones_by_id.values()
    assert zone.name == "example.com"
    world.dns.delegated.add("example.com")
    await world.run()
    names = {r.name for r in addresses(world, zone.id)}
    assert names == {"promo.shop.example.com", "www.promo.shop.example.com"}


async def test_a_public_suffix_is_refused_with_what_to_do() -> None:
    world = World(domain="co.uk")
    await world.run()
    verified = world.condition("Verified")
    assert verified["reason"] == "InvalidSpec" and "public suffix" in verified["message"]
    assert world.dns.zones_by_id == {} and world.status["phase"] == "Failed"


async def test_an_unknown_server_type_names_the_choices() -> None:
    world = World(server={"type": "cx99"})
    world.claimed_zone("shop.example")
    await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "InvalidSpec" and "cpx22, cx23" in condition["message"]
    assert world.status["phase"] == "Failed"
    assert world.servers.servers_by_id == {}


async def test_a_paused_domain_gets_nothing() -> None:
    world = World(paused=True)
    world.claimed_zone("shop.example")
    await world.run()
    assert world.condition("Paused")["status"] == "True"
    assert world.status["phase"] == "Pending"
    assert world.servers.servers_by_id == {} and world.dns.calls == {}


async def test_without_cloud_credentials_the_domain_says_how_to_configure_them() -> None:
    world = World()
    world.with_cloud = False
    await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "OperatorNotConfigured"
    assert "SMART_HETZNER_TOKEN" in condition["message"]


async def test_a_steady_domain_uses_the_shared_listing_and_checks_dns_on_its_schedule(
    world: World,
) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    listed, record_calls = world.servers.calls["servers"], world.dns.calls["records"]
    world.resources.patches.clear()
    await world.run()
    assert world.servers.calls["servers"] == listed  # the shared fleet view answered
    assert world.dns.calls["records"] == record_calls  # not due yet
    assert world.resources.patches == []  # nothing changed, nothing written


async def test_once_verified_the_passes_while_the_server_boots_read_no_zone_again(
    world: World,
) -> None:
    """Each pass until the server runs used to read the zone and list its owner record
    again: two Cloudflare requests a pass, for what the status already says."""
    world.servers.boot_status = "starting"
    await world.run()
    assert world.condition("Verified")["status"] == "True"
    assert world.condition("ServerReady")["status"] == "False"
    zone_reads, record_lists = world.dns.calls["get_zone"], world.dns.calls["records"]
    await world.run()
    await world.run()
    assert world.dns.calls["get_zone"] == zone_reads
    assert world.dns.calls["records"] == record_lists  # no owner record, no DNS step yet
    [server_id] = world.servers.servers_by_id
    server = world.servers.servers_by_id[server_id]
    world.servers.servers_by_id[server_id] = dataclasses.replace(server, status="running")
    await world.run()
    assert world.condition("DNSReady")["status"] == "True"
    assert world.dns.calls["get_zone"] == zone_reads


async def test_the_operator_never_writes_the_agents_part_of_the_status(world: World) -> None:
    await world.run()
    world.heartbeat()
    for _ in range(3):
        await world.run()
    operator_fields = DomainStatus.fields_of(Writer.OPERATOR)
    for _, patch in world.resources.patches:
        assert set(patch) <= operator_fields, set(patch) - operator_fields
    assert "agent" not in operator_fields


async def test_a_server_gone_behind_our_back_is_made_again(world: World) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    [old] = list(world.servers.servers_by_id)
    del world.servers.servers_by_id[old]
    await world.run()
    [new] = list(world.servers.servers_by_id)
    assert new != old
    assert "ServerMissing" in world.events.reasons("Warning")
    records = addresses(world, "z1")
    assert {r.content for r in records} == {world.servers.servers_by_id[new].ipv4}


async def test_a_zone_deleted_in_cloudflare_is_found_gone_by_the_dns_check_and_made_again(
    world: World,
) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    assert world.status["phase"] == "Ready"
    await world.dns.delete_zone("z1")
    world.schedule.forget(UID)  # the DNS check is due
    assert await world.run() == 0  # verified anew at once
    verified = world.condition("Verified")
    assert (verified["status"], verified["reason"]) == ("False", "ZoneGone")
    assert "ZoneGone" in world.events.reasons("Warning")
    assert "zoneId" not in world.status["dns"]

    await world.run()
    [zone] = world.dns.zones_by_id.values()
    assert zone.name == "shop.example" and zone.id != "z1"
    verified = world.condition("Verified")
    assert verified["reason"] == "ZonePending" and "ada.ns.cloudflare.com" in verified["message"]

    world.dns.delegated.add("shop.example")
    await world.run()
    assert world.condition("Verified")["status"] == "True"
    assert {r.name for r in addresses(world, zone.id)} == {"shop.example", "www.shop.example"}


async def test_deletion_removes_only_what_is_ours(world: World) -> None:
    await world.run()
    foreign = world.dns.add_record("z1", "TXT", "shop.example", "v=spf1 -all", [])
    other_server = world.servers.add_server("not-ours", {"team": "x"})
    await world.reconciler().delete()
    assert world.status["phase"] == "Deleting"
    assert list(world.servers.servers_by_id) == [other_server]
    assert world.servers.firewalls_by_id == {}
    left = [r for r in world.dns.all_records("z1") if domains.parse_owner(r.content) is None]
    assert [r.id for r in left] == [foreign]
    assert "z1" in world.dns.zones_by_id  # not made by us: kept


async def test_a_temporary_failure_of_a_step_keeps_what_earlier_steps_found(
    world: World,
) -> None:
    world.dns.fail("batch", TemporaryFailure("cloudflare", "502 Bad Gateway", 3.0))
    delay = await world.run()
    assert delay == 3.0
    assert world.condition("ServerReady")["status"] == "True"
    assert world.condition("DNSReady")["reason"] == "ProviderUnavailable"
    await world.run()
    assert world.condition("DNSReady")["status"] == "True"


async def test_a_deprecated_server_type_names_the_ones_that_can_be_ordered() -> None:
    world = World(server={"type": "cx22"})
    world.claimed_zone("shop.example")
    await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "InvalidSpec"
    assert "cx22" in condition["message"] and "cpx22, cx23" in condition["message"]
    assert world.servers.servers_by_id == {}


async def test_a_full_project_says_which_limit_and_does_not_hot_loop(world: World) -> None:
    refusal = PermanentFailure(
        "hetzner", "server limit reached (server_limit)", code="resource_limit_exceeded"
    )
    world.servers.fail("create_server", refusal)
    delay = await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "QuotaExceeded"
    assert "server_limit" in condition["message"] and "Limits" in condition["message"]
    assert delay == SETTINGS.drift_seconds
    assert world.status["phase"] == "Provisioning"  # mended without touching the spec
    assert "QuotaExceeded" in world.events.reasons("Warning")


async def test_no_capacity_names_other_locations_and_types(world: World) -> None:
    sold_out = TemporaryFailure(
        "hetzner", "cx23 is not available in fsn1", 300.0, "resource_unavailable"
    )
    world.servers.fail("create_server", sold_out)
    assert await world.run() == 300.0
    condition = world.condition("ServerReady")
    assert condition["reason"] == "CapacityUnavailable"
    assert "hel1, nbg1" in condition["message"] and "cpx22" in condition["message"]


async def test_a_server_that_fails_to_start_is_removed_and_made_again(world: World) -> None:
    world.cloud.actions = FakeActions("error")
    delay = await world.run()
    condition = world.condition("ServerReady")
    assert condition["reason"] == "CreateFailed" and "removed" in condition["message"]
    assert delay == 30.0 and world.servers.servers_by_id == {}
    first_attempt = world.status["server"].get("createAttempt")
    world.cloud.actions = FakeActions("success")
    await world.run()
    [server] = world.servers.servers_by_id.values()
    assert server.labels[domains.ATTEMPT_LABEL] != first_attempt  # new keys
    assert world.condition("ServerReady")["reason"] == "Running"


async def test_a_zone_made_for_a_domain_goes_with_it_only_when_nothing_else_is_in_it() -> None:
    world = World()
    await world.run()
    world.dns.delegated.add("shop.example")
    await world.run()
    [zone] = world.dns.zones_by_id.values()
    own = world.dns.add_record(zone.id, "MX", "shop.example", "mail.example.net", [])
    await world.reconciler().delete()
    assert [r.id for r in addresses(world, zone.id)] == []
    assert own in world.dns.records_by_zone[zone.id]
    assert zone.id in world.dns.zones_by_id  # the customer's MX record lives there

    again = World()
    await again.run()
    again.dns.delegated.add("shop.example")
    await again.run()
    await again.reconciler().delete()
    assert again.dns.zones_by_id == {}


async def test_a_deletion_retried_after_a_failure_finishes() -> None:
    """The firewall is still held by the server being deleted (``resource_in_use``): the
    retry must not trip over what the first attempt already removed."""
    created = World()
    await created.run()
    created.dns.delegated.add("shop.example")
    await created.run()
    in_use = TemporaryFailure("hetzner", "firewall still applied", 5.0, "resource_in_use")
    created.servers.fail("delete_firewall", in_use)
    with pytest.raises(TemporaryFailure):
        await created.reconciler().delete()
    assert created.dns.zones_by_id == {}
    await created.reconciler().delete()
    assert created.servers.firewalls_by_id == {} and created.servers.servers_by_id == {}


async def test_a_failed_routine_dns_check_of_right_records_leaves_dnsready_alone(
    world: World,
) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    world.schedule = DnsCheckSchedule(0.0)  # the routine check is due at every pass
    world.dns.fail("records", RateLimited("cloudflare", "rate limit reached", 30.0))
    await world.run()
    assert world.condition("DNSReady")["status"] == "True"
    assert world.condition("Ready")["status"] == "True"
    assert "ProviderUnavailable" not in world.events.reasons()


async def test_a_domain_being_deleted_gets_nothing_new(world: World) -> None:
    """kopf stops the daemon when deletion starts; a pass already running finishes
    without creating what the deletion would then miss."""
    await world.reconciler(stopping=True).run()
    assert world.servers.servers_by_id == {}
    assert world.servers.calls["create_server"] == 0
    assert addresses(world, "z1") == []


async def test_a_zone_of_another_customer_is_refused_and_left_alone() -> None:
    world = World(domain="promo.shop.example")
    zone = world.claimed_zone("shop.example", customer="someone-else")
    before = list(world.dns.all_records(zone))
    await world.run()
    verified = world.condition("Verified")
    assert verified["reason"] == "ZoneOfAnotherCustomer"
    assert "another customer" in verified["message"] and "someone-else" not in verified["message"]
    assert world.status["phase"] == "Failed"
    assert world.dns.all_records(zone) == before and world.servers.servers_by_id == {}


async def test_a_zone_nobody_owns_is_granted_by_a_challenge_record_staff_add() -> None:
    world = World()
    zone = world.dns.add_zone("shop.example")
    await world.run()
    verified = world.condition("Verified")
    challenge = world.status["verification"]
    assert verified["reason"] == "OwnershipChallenge" and challenge["method"] == "txt"
    assert challenge["recordName"] == "_smartserver-challenge.shop.example"
    assert challenge["recordValue"] in verified["message"]
    assert world.servers.servers_by_id == {}

    world.dns.add_record(zone.id, "TXT", challenge["recordName"], challenge["recordValue"], [])
    await world.run()
    assert world.condition("Verified")["status"] == "True"
    owners = world.dns.all_records(zone.id)
    assert any(domains.parse_owner(r.content) == ("inst-1", CUSTOMER) for r in owners)
    assert "recordValue" not in world.status["verification"]


async def test_a_zone_made_for_a_customer_is_its_own() -> None:
    world = World()
    await world.run()
    [zone] = world.dns.zones_by_id.values()
    owners = [domains.parse_owner(r.content) for r in world.dns.all_records(zone.id)]
    assert owners == [("inst-1", CUSTOMER)]


async def test_the_agent_comes_over_ssh_with_its_key_and_the_host_key_is_rotated(
    world: World,
) -> None:
    await world.run()
    [server] = world.servers.servers_by_id.values()
    env = world.installer.environments[server.ipv4 or ""]
    assert env.intake_url == "https://intake.example" and env.domain == "shop.example"
    assert hash_intake_key(env.intake_key) == world.status["intakeKeyHash"]
    assert env.intake_key not in world.servers.user_data[server.id]
    rotated = world.installer.host_keys[server.ipv4 or ""]
    assert world.status["server"]["hostPublicKey"] == rotated != keys_sent(world, server.id)
    assert world.status["server"]["hostKeyRotated"] is True
    assert world.status["server"]["agentSha256"] == FakeInstaller.bundle_sha256
    assert "HostKeyRotated" in world.events.reasons("Normal")
    installs = world.installer.calls["install"]
    await world.run()
    assert world.installer.calls["install"] == installs  # nothing more to do


async def test_an_annotation_rotates_the_intake_key(world: World) -> None:
    await world.run()
    before = world.status["intakeKeyHash"]
    world.resources.objects[REF]["metadata"]["annotations"] = {
        "smartserver.ai/intake-key-generation": "2"
    }
    await world.run()
    [server] = world.servers.servers_by_id.values()
    key = world.installer.environments[server.ipv4 or ""].intake_key
    assert world.status["intakeKeyHash"] == hash_intake_key(key) != before


async def test_a_rotation_whose_end_was_lost_is_finished_first(world: World) -> None:
    world.installer.fail("commit", Unreachable("ssh", "connection lost", 5.0))
    await world.run()
    pending = world.status["server"]["nextHostPublicKey"]
    assert world.condition("AgentInstalled")["reason"] == "ProviderUnavailable"
    await world.run()
    assert world.status["server"]["hostPublicKey"] == pending
    assert "nextHostPublicKey" not in world.status["server"]
    assert world.condition("AgentInstalled")["status"] == "True"


async def test_without_a_bundle_the_domain_says_how_to_give_it_one(world: World) -> None:
    world.installer = None  # type: ignore[assignment]
    await world.run()
    condition = world.condition("AgentInstalled")
    assert condition["reason"] == "NoAgentBundle" and "SMART_AGENT_BUNDLE" in condition["message"]


# -- the operator's SSH key, rotated --------------------------------------------------


def rotate_operator_key(world: World, previous: SSHKeyPair | None = None) -> SSHKeyPair:
    """What a restart after staff rotated the Secret gives the reconcilers: a new key,
    and the old one (or ``previous``) as the previous key. Returns the old key."""
    old = world.cloud.identity.ssh_key
    world.cloud.identity = dataclasses.replace(
        world.cloud.identity,
        ssh_key=generate_ssh_key("smart-operator"),
        previous_ssh_key=previous or old,
    )
    world.cloud.ssh_key_id = None  # a new process knows no provider key yet
    return old


async def test_a_rotated_operator_key_replaces_the_previous_one_on_a_running_server(
    world: World,
) -> None:
    await world.run()
    [server] = world.servers.servers_by_id.values()
    address = server.ipv4 or ""
    old = world.cloud.identity.ssh_key
    assert world.status["server"]["operatorKeyFingerprint"] == old.fingerprint
    assert world.installer.calls["ensure_operator_key"] == 0  # a new server: its user-data's key
    assert world.condition("AgentInstalled")["status"] == "True"

    rotate_operator_key(world)
    new = world.cloud.identity.ssh_key
    await world.run()
    authorized = world.installer.authorized[address]
    assert any(same_key(k, new.public) for k in authorized)
    assert not any(same_key(k, old.public) for k in authorized)
    assert world.status["server"]["operatorKeyFingerprint"] == new.fingerprint
    [message] = [m for t, r, m in world.events.posted if r == "OperatorKeyRotated"]
    assert new.fingerprint in message and old.fingerprint in message
    assert world.condition("AgentInstalled")["status"] == "True"
    assert world.installer.calls["install"] == 1  # nothing else was redone
    # Recorded: the next passes do not look again.
    await world.run()
    assert world.installer.calls["ensure_operator_key"] == 1


async def test_after_a_rotation_a_new_server_gets_the_new_key_at_hetzner_and_in_its_user_data(
    world: World,
) -> None:
    await world.run()
    [first] = world.servers.servers_by_id.values()
    assert set(world.servers.ssh_keys) == {world.cloud.identity.ssh_key.public}
    rotate_operator_key(world)
    new = world.cloud.identity.ssh_key
    del world.servers.servers_by_id[first.id]  # gone: the next pass makes another
    await world.run()
    [second] = world.servers.servers_by_id.values()
    # Registered by its key; the previous key's object is gone (only creates use it).
    assert set(world.servers.ssh_keys) == {new.public}
    assert world.servers.calls["delete_ssh_key"] == 1
    user = yaml.safe_load(world.servers.user_data[second.id])["users"][0]
    assert user["ssh_authorized_keys"] == [new.public]
    assert world.status["server"]["operatorKeyFingerprint"] == new.fingerprint
    assert world.installer.calls["ensure_operator_key"] == 0
    assert world.condition("AgentInstalled")["status"] == "True"


async def test_a_server_that_refuses_both_keys_says_which_were_tried_then_heals(
    world: World,
) -> None:
    await world.run()
    old = world.cloud.identity.ssh_key
    stranger = generate_ssh_key("someone-else")
    rotate_operator_key(world, previous=stranger)  # staff kept the wrong previous key
    new = world.cloud.identity.ssh_key
    delay = await world.run()
    condition = world.condition("AgentInstalled")
    assert condition["status"] == "False" and condition["reason"] == "OperatorKeyRefused"
    assert new.fingerprint in condition["message"] and stranger.fingerprint in condition["message"]
    assert delay >= 60  # not a hot loop: staff must act
    await world.run()
    warnings = [m for t, r, m in world.events.posted if (t, r) == ("Warning", "OperatorKeyRefused")]
    assert len(warnings) == 1 and new.fingerprint in warnings[0]  # once, not every pass
    assert world.status["server"]["operatorKeyFingerprint"] == old.fingerprint

    rotate_operator_key(world, previous=old)  # fixed in the Secret, operator restarted
    world.cloud.identity = dataclasses.replace(world.cloud.identity, ssh_key=new)
    await world.run()
    assert world.status["server"]["operatorKeyFingerprint"] == new.fingerprint
    assert world.condition("AgentInstalled")["status"] == "True"
    assert "OperatorKeyRotated" in world.events.reasons("Normal")


async def test_a_server_of_an_unrecorded_attempt_has_its_operator_key_looked_at(
    world: World,
) -> None:
    """A server found by its label whose status was lost: nobody knows which key its
    user-data authorized, so it is looked at once (and moved if it needs to be)."""
    await world.run()
    [server] = world.servers.servers_by_id.values()
    old = rotate_operator_key(world)
    world.resources.objects[REF]["status"] = {}
    world.installer.host_keys.clear()  # (a server whose host key was not rotated yet)
    await world.run()
    assert world.installer.calls["ensure_operator_key"] == 1
    assert world.status["server"]["operatorKeyFingerprint"] != old.fingerprint
    assert not any(same_key(k, old.public) for k in world.installer.authorized[server.ipv4 or ""])
