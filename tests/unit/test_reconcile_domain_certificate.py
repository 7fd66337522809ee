"""The Domain's certificate step with fakes: issued by DNS-01 once the agent is
installed, delivered with its key to the server only, renewed at its time, and a
failure retried with backoff and warned about while the old certificate serves."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from smart_operator import certificates
from smart_operator.errors import TemporaryFailure
from tests.unit.fakes import FakeAuthority
from tests.unit.test_reconcile_domain import REF, World


class CertWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.authority = FakeAuthority(self.dns, lambda: self.now)

    def reconciler(self, stopping: bool = False):  # type: ignore[no-untyped-def]
        reconciler = super().reconciler(stopping)
        reconciler.authority = self.authority
        return reconciler


@pytest.fixture
def world() -> CertWorld:
    world = CertWorld()
    world.claimed_zone("shop.example")
    return world


async def test_a_certificate_is_issued_by_dns01_and_delivered_to_the_server_only(
    world: CertWorld,
) -> None:
    await world.run()
    world.heartbeat()
    delay = await world.run()
    assert world.authority.validated == [
        "_acme-challenge.shop.example",
        "_acme-challenge.www.shop.example",
    ]
    # The challenge records are gone again; the A records stay.
    assert not [r for r in world.dns.all_records("z1") if r.name.startswith("_acme")]
    [(address, issued)] = world.installer.certificates.items()
    assert address == world.status["server"]["ipv4"]
    cert = world.status["certificate"]
    assert cert["names"] == ["shop.example", "www.shop.example"]
    assert cert["notAfter"].startswith((world.now + timedelta(days=90)).date().isoformat())
    ready = world.condition("CertificateReady")
    assert ready["status"] == "True" and ready["reason"] == "CertificateIssued"
    assert "expires" in ready["message"]
    assert world.condition("Ready")["status"] == "True"
    assert "CertificateIssued" in world.events.reasons("Normal")
    # The key is nowhere but on the server.
    secret_line = issued.key_pem.splitlines()[1]
    assert secret_line not in json.dumps(list(world.resources.objects.values()), default=str)
    assert all(secret_line not in str(event) for event in world.events.posted)
    # The next look is the drift check, well before the renewal.
    assert delay == 60.0


async def test_it_is_renewed_at_two_thirds_of_its_lifetime_not_before(world: CertWorld) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    first = world.status["certificate"]
    world.now += timedelta(days=40)
    world.heartbeat()
    await world.run()
    assert world.authority.calls["issue"] == 1
    world.now += timedelta(days=21)  # past 60 days: due whatever the jitter
    world.heartbeat()
    await world.run()
    assert world.authority.calls["issue"] == 2
    assert world.status["certificate"]["serial"] != first["serial"]
    assert world.installer.calls["install_certificate"] == 2


async def test_a_failed_renewal_warns_and_backs_off_while_the_old_one_serves(
    world: CertWorld,
) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    world.now += timedelta(days=61)
    world.heartbeat()
    before = certificates.FAILURES._value.get()
    world.authority.fail("issue", TemporaryFailure("acme", "rateLimited: too many", 3600), 2)
    delay = await world.run()
    condition = world.condition("CertificateReady")
    assert condition["status"] == "True" and condition["reason"] == "RenewalFailed"
    assert "serves until" in condition["message"] and "next attempt in 60 s" in condition["message"]
    assert "RenewalFailed" in world.events.reasons("Warning")
    assert certificates.FAILURES._value.get() == before + 1
    assert delay == 60.0
    world.now += timedelta(seconds=30)
    await world.run()
    assert world.authority.calls["issue"] == 2  # the first issuance and one failure: backing off
    world.now += timedelta(seconds=31)
    await world.run()
    assert world.status["certificate"]["failures"] == 2
    assert "next attempt in 120 s" in world.condition("CertificateReady")["message"]
    world.now += timedelta(seconds=121)
    await world.run()
    assert world.condition("CertificateReady")["reason"] == "CertificateIssued"
    assert world.status["certificate"]["failures"] == 0


async def test_without_a_ca_the_domain_says_so_and_stays_ready(world: CertWorld) -> None:
    world.authority = None  # type: ignore[assignment]
    await world.run()
    world.heartbeat()
    await world.run()
    condition = world.condition("CertificateReady")
    assert condition["status"] == "False" and condition["reason"] == "AcmeNotConfigured"
    assert world.condition("Ready")["status"] == "True"


async def test_proxied_mode_and_hsts_reach_the_agent_and_a_change_is_delivered(
    world: CertWorld,
) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    [(address, env)] = world.installer.environments.items()
    assert env.extra["PROXIED"] == "false" and env.extra["HSTS_MAX_AGE"] == "31536000"
    installs = world.installer.calls["install"]
    await world.run()
    assert world.installer.calls["install"] == installs  # nothing changed: nothing sent
    body = world.resources.objects[REF]
    body["spec"]["dns"] = {"proxied": True}
    body["metadata"]["generation"] = 2
    await world.run()
    assert world.installer.environments[address].extra["PROXIED"] == "true"
    assert world.installer.calls["install"] == installs + 1


async def test_a_replaced_server_gets_a_certificate_of_its_own(world: CertWorld) -> None:
    await world.run()
    world.heartbeat()
    await world.run()
    [old] = list(world.servers.servers_by_id)
    del world.servers.servers_by_id[old]
    for _ in range(3):  # the new server, its agent, then its certificate
        world.heartbeat()
        await world.run()
    [new] = list(world.servers.servers_by_id)
    assert world.authority.calls["issue"] == 2
    assert world.servers.servers_by_id[new].ipv4 in world.installer.certificates
    assert world.condition("CertificateReady")["reason"] == "CertificateIssued"
