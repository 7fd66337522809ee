"""HTTPS end to end: a new Domain gets a certificate from a real ACME server (Pebble),
validated by DNS-01 through a real DNS server that answers from the Cloudflare
simulator's zones, delivered to its booted server over the pinned SSH connection, and
its experiment is served over HTTPS while plain HTTP redirects there."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster.conftest import World, domain, experiment, host_root, wait_condition, wait_exp
from tests.conftest import Cluster
from tests.waiting import eventually

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


def dig(world: World, name: str, kind: str) -> list[str]:
    """What the world's resolvers would be told (the zone DNS server of the test world)."""
    out = subprocess.run(
        ["dig", "+short", "+tries=1", "+time=2", "-p", str(world.clouds.dns_port), "@127.0.0.1",
         name, kind],
        capture_output=True, text=True, timeout=10, check=False,
    ).stdout  # fmt: skip
    return [line.strip('"') for line in out.split()]


async def fetch(url: str, name: str, root: Path, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    trust = ssl.create_default_context(cafile=str(root))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(
            url,
            headers={"Host": name, "User-Agent": BROWSER},
            ssl=trust,
            server_hostname=name,
            allow_redirects=False,
            **kwargs,
        ) as reply,
    ):
        return reply.status, dict(reply.headers), await reply.text()


def test_a_new_domain_serves_its_experiment_over_https_with_an_acme_certificate(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"tls-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    cluster.apply(domain("tls", namespace, fqdn))
    ready = wait_condition(cluster, namespace, "tls", "CertificateReady", timeout=300)
    assert ready["reason"] == "CertificateIssued" and "expires" in ready["message"]

    obj = cluster.get("domain", "tls", "-n", namespace) or {}
    status = obj["status"]
    cert = status["certificate"]
    assert cert["names"] == [fqdn, f"www.{fqdn}"]
    assert "Pebble" in cert["issuer"]
    not_after = datetime.fromisoformat(cert["notAfter"])
    assert cert["notAfter"][:10] in ready["message"]
    table = cluster.kubectl("get", "domains", "-n", namespace)
    assert "CERT-EXPIRY" in table
    # The key went to the server only: not on the resource, not in an Event.
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json")
    assert "PRIVATE KEY" not in json.dumps(obj) and "PRIVATE KEY" not in events
    assert "CertificateIssued" in events
    server = status["server"]
    key = host_root(world.clouds, server["name"]) / "opt/smart/tls/privkey.pem"
    assert key.stat().st_mode & 0o777 == 0o640 and "PRIVATE KEY" in key.read_text()

    # The world resolves what the operator wrote; the challenge records are gone.
    assert dig(world, fqdn, "A") == [server["ipv4"]]
    assert dig(world, f"www.{fqdn}", "A") == [server["ipv4"]]
    zone = world.zone(fqdn)
    assert zone is not None
    assert not [r for r in world.records(zone["id"]) if r["name"].startswith("_acme-challenge")]
    assert dig(world, f"_acme-challenge.{fqdn}", "TXT") == []

    cluster.apply(experiment("secure", namespace, "tls"))
    wait_exp(cluster, namespace, "secure", "Deployed")
    root = world.clouds.pebble.root_file
    base = f"https://{server['ipv4']}"

    def page() -> tuple[int, dict[str, str], str] | None:
        try:
            reply = asyncio.run(fetch(base + "/", fqdn, root))
        except (aiohttp.ClientError, OSError):
            return None
        return reply if reply[0] == 200 and "/_smart/convert?v=" in reply[2] else None

    status_code, headers, body = eventually(page, 30, "the experiment served over HTTPS")
    assert "Acme" in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    status_code, headers, _ = asyncio.run(fetch(base + "/_smart/convert?v=control", fqdn, root))
    assert status_code == 302 and headers["Location"] == "https://buy.stripe.com/test_1"
    # Plain HTTP for the site's names redirects to the same URL over HTTPS.
    plain = asyncio.run(fetch(f"http://{server['ipv4']}/pricing?a=1", fqdn, root))
    assert plain[0] == 301 and plain[1]["Location"] == f"https://{fqdn}/pricing?a=1"
    assert not_after > datetime.fromisoformat(cert["notBefore"])
