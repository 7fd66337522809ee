"""The agent's site over HTTPS with a certificate from a real ACME server (Pebble,
validating DNS-01 through the zone DNS server), delivered the way the operator delivers
it: the pair written into ``<root>/opt/smart/tls/``, then ``smart-agent reload``.

What a customer relies on: visitors are assigned, counted and converted over TLS exactly
as before; plain HTTP redirects; a certificate close to expiry is replaced without one
failed request; behind Cloudflare's proxy each visitor keeps their own id, and nobody
outside Cloudflare's ranges can choose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from smart_operator import certificates
from smart_operator.clients.acme import AcmeIssuer
from smart_operator.clients.cloudflare import Cloudflare
from smart_operator.domains import record_marker
from smart_operator.ports import IssuedCertificate
from smart_operator.reconcile.certificate import ZoneChallenges
from smart_sim.acme import Pebble, ZoneDns
from smart_sim.bench.agent import AgentHost, free_port, landing_experiment
from smart_sim.cloudflare import CloudflareConfig, CloudflareSimulator
from smart_sim.traffic import BROWSERS, TrafficPlan, send_traffic
from tests.waiting import eventually_async as eventually

DOMAIN = "shop.example"
GOAL = "https://buy.stripe.com/test_acme"
NAME = "homepage-headline"
UID = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


@dataclass
class Acme:
    pebble: Pebble
    issuer: AcmeIssuer
    challenges: ZoneChallenges

    async def issue(self) -> IssuedCertificate:
        return await self.issuer.issue(certificates.certificate_names(DOMAIN), self.challenges)


async def acme_world(stack: contextlib.AsyncExitStack, workdir: Path, validity: int | None) -> Acme:
    sim = await stack.enter_async_context(CloudflareSimulator(CloudflareConfig()))
    cloudflare = Cloudflare("token", sim.url, sim.context.state.account_id)
    stack.push_async_callback(cloudflare.close)
    zone = await cloudflare.create_zone(DOMAIN)
    sim.context.state.activate(sim.context.state.get_zone(zone.id))
    dns = await stack.enter_async_context(ZoneDns(sim.context.state))
    pebble = stack.enter_context(Pebble(workdir / "pebble", dns.address, validity_seconds=validity))
    issuer = AcmeIssuer(pebble.directory_url, b"tls test secret", ca_bundle=pebble.api_ca)
    comment = record_marker("test", UID)
    return Acme(pebble, issuer, ZoneChallenges(cloudflare, zone.id, UID, comment))


def deliver(host: AgentHost, issued: IssuedCertificate) -> None:
    """What the operator does over SFTP: each file written aside, then renamed."""
    folder = host.root / "opt/smart/tls"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("privkey.pem", issued.key_pem), ("fullchain.pem", issued.fullchain_pem)):
        partial = folder / f".{name}.partial"
        partial.write_text(text)
        partial.chmod(0o640)
        partial.rename(folder / name)


def tls_host(workdir: Path, **env: str) -> AgentHost:
    host = AgentHost(workdir, env={"SMART_AGENT_LOG_BUFFER_KIB": "0", **env})
    tls_port = free_port(host.address)
    host.env["SMART_AGENT_TLS_LISTEN"] = f"{host.address}:{tls_port}"
    return host


def https_url(host: AgentHost) -> str:
    return f"https://{host.env['SMART_AGENT_TLS_LISTEN']}"


def trusting(pebble: Pebble) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pebble.root_pem.decode())


async def served_certificate(host: AgentHost, context: ssl.SSLContext) -> x509.Certificate:
    address, _, port = host.env["SMART_AGENT_TLS_LISTEN"].partition(":")
    _, writer = await asyncio.open_connection(
        address, int(port), ssl=context, server_hostname=DOMAIN
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


async def test_visitors_are_counted_the_same_over_https_and_http_redirects(
    stack: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    acme = await acme_world(stack, tmp_path, validity=None)
    host = await stack.enter_async_context(tls_host(tmp_path / "host"))
    manifest, files = landing_experiment(weights={"control": 50, "b": 50}, goal_url=GOAL)
    host.deploy(manifest, files)
    deliver(host, await acme.issue())
    await host.start()
    status = await host.status()
    assert status["nginx"]["tls"]["certificate"]

    plan = TrafficPlan(
        visitors=1500,
        conversion_rates={"control": 0.1, "b": 0.2},
        return_rate=0.2,
        bots=50,
        head_requests=20,
        prefetches=20,
        concurrency=32,
        goal_url=GOAL,
        host=DOMAIN,
        ca_file=str(acme.pebble.root_file),
        server_name=DOMAIN,
    )
    truth = await send_traffic(https_url(host), plan)
    assert truth.uncertain == 0, truth.errors[:5]
    assert not truth.return_mismatches and not truth.bad_redirects
    expected = truth.counts()
    assert sum(v for v, _ in expected.values()) == plan.visitors
    assert await host.wait_counts(NAME, expected) == expected

    context = trusting(acme.pebble)
    async with aiohttp.ClientSession() as http:
        # Plain HTTP only redirects, to the same path on HTTPS.
        async with http.get(
            f"{host.base_url}/pricing?x=1",
            headers={"Host": DOMAIN, "User-Agent": BROWSER},
            allow_redirects=False,
        ) as plain:
            assert plain.status == 301
            port = host.env["SMART_AGENT_TLS_LISTEN"].rpartition(":")[2]
            assert plain.headers["Location"] == f"https://{DOMAIN}:{port}/pricing?x=1"
        async with http.get(
            https_url(host) + "/",
            headers={"Host": DOMAIN, "User-Agent": BROWSER},
            ssl=context,
            server_hostname=DOMAIN,
        ) as page:
            assert page.status == 200
            assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert page.headers["Cache-Control"] == "private, no-cache"
        async with http.get(
            https_url(host) + "/_smart/convert?v=b",
            headers={"Host": DOMAIN, "User-Agent": BROWSER},
            ssl=context,
            server_hostname=DOMAIN,
            allow_redirects=False,
        ) as convert:
            assert convert.status == 302 and convert.headers["Location"] == GOAL
            assert convert.headers["Strict-Transport-Security"] == "max-age=31536000"

    # A TLS 1.2 client is served too (Mozilla's intermediate profile).
    old = trusting(acme.pebble)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
    cert = await served_certificate(host, old)
    assert DOMAIN in str(cert.extensions)
    # (Which versions nginx refuses is its configuration's business: tests/unit renders
    # it. A client here cannot offer TLS 1.1 any more, so it could not show a refusal.)


async def test_a_certificate_close_to_expiry_is_renewed_without_a_failed_request(
    stack: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    acme = await acme_world(stack, tmp_path, validity=30)  # Pebble's short lifetime
    host = await stack.enter_async_context(tls_host(tmp_path / "host"))
    manifest, files = landing_experiment(weights={"control": 50, "b": 50}, goal_url=GOAL)
    host.deploy(manifest, files)
    first = await acme.issue()
    deliver(host, first)
    await host.start()
    context = trusting(acme.pebble)
    served = await served_certificate(host, context)
    assert served.not_valid_after_utc == first.not_after

    # Renewal comes due at two thirds of the lifetime (with jitter), before expiry.
    state = certificates.CertificateState(
        first.not_before, first.not_after, format(served.serial_number, "x")
    )
    due = certificates.renewal_time(first.not_before, first.not_after, f"{UID}:{state.serial}")
    assert first.not_before < due < first.not_after
    await eventually(
        lambda: certificates.due(state, UID, datetime.now(UTC)), within=40, what="renewal due"
    )
    assert datetime.now(UTC) < first.not_after

    failures: list[str] = []
    served_serials: set[int] = set()
    stop = asyncio.Event()

    async def hammer() -> None:
        """New TLS connections, one after another, all through the switch."""
        while not stop.is_set():
            try:
                cert = await served_certificate(host, context)
                served_serials.add(cert.serial_number)
            except (OSError, ssl.SSLError) as error:
                failures.append(repr(error))

    clients = [asyncio.create_task(hammer()) for _ in range(4)]
    try:
        second = await acme.issue()
        deliver(host, second)
        reload = await asyncio.to_thread(host.cli, "reload", "--json")
        assert reload.returncode == 0, reload.stdout + reload.stderr
        renewed = await eventually(
            lambda: _renewed(host, context, second), within=15, what="the new certificate served"
        )
        assert renewed
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert not failures, failures[:5]
    assert len(served_serials) == 2  # the old one, then the new one, and nothing failed
    assert datetime.now(UTC) < first.not_after  # replaced before it expired
    # The agent's copies of the old pair are gone; the new pair's are there.
    copies = sorted(p.suffix for p in (host.root / "var/lib/smart-agent/tls").iterdir())
    assert copies == [".crt", ".key"]


async def _renewed(host: AgentHost, context: ssl.SSLContext, second: IssuedCertificate) -> bool:
    cert = await served_certificate(host, context)
    return cert.not_valid_after_utc == second.not_after


async def test_a_broken_delivery_leaves_the_certificate_serving(
    stack: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    acme = await acme_world(stack, tmp_path, validity=None)
    host = await stack.enter_async_context(tls_host(tmp_path / "host"))
    manifest, files = landing_experiment(goal_url=GOAL)
    host.deploy(manifest, files)
    first = await acme.issue()
    deliver(host, first)
    await host.start()
    second = await acme.issue()
    # A key that does not belong to the certificate (a half-finished delivery).
    mixed = IssuedCertificate(
        second.names, first.key_pem, second.fullchain_pem, second.not_before, second.not_after
    )
    deliver(host, mixed)
    reload = await asyncio.to_thread(host.cli, "reload", "--json")
    assert reload.returncode == 1, reload.stdout
    served = await served_certificate(host, trusting(acme.pebble))
    assert served.not_valid_after_utc == first.not_after


async def visitor_ids(host: AgentHost, expected_lines: int) -> list[str]:
    async def lines() -> list[str] | None:
        if not host.access_log.exists():
            return None
        found = [json.loads(line) for line in host.access_log.read_text().splitlines()]
        pages = [line["id"] for line in found if line["m"] == "GET" and line["s"] == "200"]
        return pages if len(pages) >= expected_lines else None

    return await eventually(lines, within=15, what=f"{expected_lines} page lines logged")


async def test_proxied_mode_takes_the_address_from_cloudflare_only(
    stack: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    """Behind the proxy every request comes from a Cloudflare address; the visitor's is in
    CF-Connecting-IP. Here loopback stands for Cloudflare's edge (the ranges are
    configuration); a host with the real ranges believes no loopback sender."""
    manifest, files = landing_experiment(goal_url=GOAL)
    edge = await stack.enter_async_context(
        AgentHost(
            tmp_path / "edge",
            env={
                "SMART_AGENT_PROXIED": "true",
                "SMART_AGENT_CLOUDFLARE_IPS": "127.0.0.0/8",
                "SMART_AGENT_LOG_BUFFER_KIB": "0",
            },
        )
    )
    edge.deploy(manifest, files)
    await edge.start()
    plan = TrafficPlan(
        visitors=400,
        conversion_rates={"control": 0.1, "outcome-headline": 0.1},
        return_rate=0.0,
        asset_rate=0.0,
        address_header="CF-Connecting-IP",
        goal_url=GOAL,
    )
    truth = await send_traffic(edge.base_url, plan)
    assert truth.uncertain == 0, truth.errors[:5]
    expected = truth.counts()
    assert await edge.wait_counts(NAME, expected) == expected
    ids = await visitor_ids(edge, 400)
    assert len(set(ids)) == 400  # one id per visitor

    outside = await stack.enter_async_context(
        AgentHost(
            tmp_path / "outside",
            env={"SMART_AGENT_PROXIED": "true", "SMART_AGENT_LOG_BUFFER_KIB": "0"},
        )
    )
    outside.deploy(manifest, files)
    await outside.start()
    spoofed = TrafficPlan(
        visitors=20,
        conversion_rates={},
        return_rate=0.0,
        asset_rate=0.0,
        address_header="CF-Connecting-IP",
    )
    await send_traffic(outside.base_url, spoofed)
    ids = await visitor_ids(outside, 20)
    # Not from Cloudflare: the header is ignored, so the id depends on the sender's own
    # address and user agent only (the generator varies the user agent, hence a few).
    assert len(set(ids)) <= len(BROWSERS) < 20
