"""Certificates from a real ACME server: Pebble (Let's Encrypt's test CA) validates
DNS-01 by asking a real DNS server (``smart_sim.acme.ZoneDns``) that answers from the
Cloudflare simulator's zones, where the operator's Cloudflare client wrote the
challenge records. ``dig`` reads the same server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from smart_operator.certificates import certificate_names
from smart_operator.clients.acme import AcmeIssuer, validity
from smart_operator.clients.cloudflare import Cloudflare
from smart_operator.domains import record_marker
from smart_operator.errors import ExternalError
from smart_operator.reconcile.certificate import ZoneChallenges
from smart_sim.acme import Pebble, ZoneDns
from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator

UID = "0b8f6a52-3c1d-4e7f-9a2b-5c6d7e8f9a0b"
SECRET = b"operator key secret for the acme tests"


@dataclass
class World:
    sim: CloudflareSimulator
    cloudflare: Cloudflare
    dns: ZoneDns
    pebble: Pebble
    issuer: AcmeIssuer

    async def zone(self, name: str, *, active: bool = True) -> str:
        zone = await self.cloudflare.create_zone(name)
        if active:
            state = self.sim.context.state
            state.activate(state.get_zone(zone.id))
        return zone.id

    def challenges(self, zone_id: str) -> ZoneChallenges:
        return ZoneChallenges(
            self.cloudflare, zone_id, UID, record_marker("test", UID) + " acme-challenge"
        )


async def dig(dns: ZoneDns, name: str, kind: str) -> list[str]:
    """``dig +short`` against the zone server (a subprocess: the server answers on this
    event loop, so it must not be blocked)."""
    process = await asyncio.create_subprocess_exec(
        "dig", "+short", "+tries=1", "+time=2", "-p", str(dns.port), f"@{dns.host}", name, kind,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return [line.strip('"') for line in out.decode().split()]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(CloudflareSimulator(CloudflareConfig()))
        cloudflare = Cloudflare("token", sim.url, sim.context.state.account_id)
        stack.push_async_callback(cloudflare.close)
        dns = await stack.enter_async_context(ZoneDns(sim.context.state))
        pebble = stack.enter_context(Pebble(tmp_path / "pebble", dns.address))
        issuer = AcmeIssuer(pebble.directory_url, SECRET, ca_bundle=pebble.api_ca)
        yield World(sim, cloudflare, dns, pebble, issuer)


async def test_the_dns_server_answers_what_the_cloudflare_api_wrote(world: World) -> None:
    zone_id = await world.zone("example.com")
    await world.cloudflare.batch(
        zone_id,
        posts=[
            {"type": "A", "name": "example.com", "content": "198.18.0.7", "ttl": 300},
            {"type": "TXT", "name": "note.example.com", "content": '"hello"', "ttl": 300},
        ],
        patches=[],
        deletes=[],
    )
    assert await dig(world.dns, "example.com", "A") == ["198.18.0.7"]
    assert await dig(world.dns, "note.example.com", "TXT") == ["hello"]
    assert await dig(world.dns, "missing.example.com", "A") == []
    # A proxied record hides the origin behind Cloudflare's edge, as the real service does.
    await world.cloudflare.batch(
        zone_id,
        posts=[{"type": "A", "name": "cdn.example.com", "content": "198.18.0.8", "proxied": True}],
        patches=[],
        deletes=[],
    )
    edge = await dig(world.dns, "cdn.example.com", "A")
    assert edge and "198.18.0.8" not in edge
    pending = await world.zone("pending.test", active=False)
    assert pending
    # A zone that is not yet delegated is not answered for (status REFUSED).
    assert await dig(world.dns, "pending.test", "NS") == []


async def test_a_certificate_for_apex_and_www_is_issued_by_dns01(world: World) -> None:
    zone_id = await world.zone("example.com")
    names = certificate_names("example.com")
    challenges = world.challenges(zone_id)
    seen: dict[str, list[str]] = {}

    class Watching:
        """The real records, and a look at them from outside while they exist."""

        async def present(self, records: list[tuple[str, str]]) -> object:
            handle = await challenges.present(records)
            for name, _ in records:
                seen[name] = await dig(world.dns, name, "TXT")
            assert {v for values in seen.values() for v in values} == {v for _, v in records}
            return handle

        async def clean(self, handle: object) -> None:
            await challenges.clean(handle)

    issued = await world.issuer.issue(names, Watching())

    assert set(seen) == {"_acme-challenge.example.com", "_acme-challenge.www.example.com"}
    # Pebble asked the DNS server for the challenge records: validation was real.
    asked = {name for name, kind in world.dns.queries if kind == "TXT"}
    assert set(seen) <= asked
    leaf = x509.load_pem_x509_certificate(issued.fullchain_pem.encode())
    san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    chain = x509.load_pem_x509_certificates(issued.fullchain_pem.encode())
    assert len(chain) >= 2 and chain[0].issuer == chain[1].subject
    root = x509.load_pem_x509_certificate(world.pebble.root_pem)
    assert chain[-1].issuer == root.subject
    assert (issued.not_before, issued.not_after) == validity(issued.fullchain_pem)
    assert "PRIVATE KEY" not in repr(issued)
    # The challenge records are gone again.
    left = await world.cloudflare.records(zone_id)
    assert not [r for r in left if r.type == "TXT"]
    assert await dig(world.dns, "_acme-challenge.example.com", "TXT") == []


async def test_the_same_account_issues_again_and_reuses_nothing_secret(world: World) -> None:
    zone_id = await world.zone("example.org")
    first = await world.issuer.issue(["example.org"], world.challenges(zone_id))
    # A new issuer (a restarted operator) finds the same account from the same secret.
    again = AcmeIssuer(world.pebble.directory_url, SECRET, ca_bundle=world.pebble.api_ca)
    second = await again.issue(["example.org"], world.challenges(zone_id))
    assert first.key_pem != second.key_pem  # a fresh key for every certificate
    assert first.fullchain_pem != second.fullchain_pem


async def test_a_name_the_world_cannot_resolve_fails_validation(world: World) -> None:
    zone_id = await world.zone("pending.example", active=False)
    with pytest.raises(ExternalError) as failure:
        await world.issuer.issue(["pending.example"], world.challenges(zone_id))
    assert failure.value.system == "acme"
    # Nothing is left behind in the zone.
    assert not [r for r in await world.cloudflare.records(zone_id) if r.type == "TXT"]
