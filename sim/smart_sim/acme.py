"""A real ACME server and a real DNS server for the test world.

- ``ZoneDns``: an authoritative DNS server on a loopback UDP port that answers from the
  Cloudflare simulator's zones (A, AAAA, CNAME, TXT, NS), as Cloudflare's nameservers
  answer for a delegated zone (a proxied A/AAAA record with Cloudflare's edge addresses,
  never the origin's). Only *active* zones answer (a pending zone is not yet
  delegated, so the world cannot see it); a name in no zone is REFUSED, a name in a zone
  without such a record NXDOMAIN/NODATA. Pebble's ``-dnsserver`` points at it, so a
  DNS-01 challenge is validated against what the operator really wrote through the
  Cloudflare API, and a test can ``dig @127.0.0.1 -p PORT`` the same records.
  It runs on the simulator's own event loop, so it reads the state without locks.
- ``Pebble``: Let's Encrypt's test ACME server (Debian's ``/usr/bin/pebble``) as a child
  process on loopback, with its own TLS certificate for the API (Pebble serves ACME over
  HTTPS only), a short certificate lifetime for renewal tests, and its issuing root
  fetched from the management API (Pebble makes a new root at every start).

The wire format is dnslib's (a maintained DNS library); nothing here is product code.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import AAAA, CNAME, NS, QTYPE, RCODE, RR, TXT, A, DNSRecord

from smart_sim.cloudflare.state import CloudflareState

PEBBLE = "/usr/bin/pebble"
# A proxied record is answered with Cloudflare's edge addresses, never the origin's
# (https://developers.cloudflare.com/dns/proxy-status/): addresses from its published
# ranges, standing for the anycast pair a real resolver is given. Nothing is ever sent
# to them; they only tell a test that the origin stays hidden.
EDGE = {"A": ("104.21.0.1", "172.67.0.1"), "AAAA": ("2606:4700:3030::1", "2606:4700:3031::1")}
_TYPES = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT, "NS": NS}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, dns: ZoneDns) -> None:
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return
        assert self.transport is not None
        self.transport.sendto(self.dns.answer(request).pack(), addr)


class ZoneDns:
    """Authoritative answers from a ``CloudflareState``; ``async with`` starts and stops it."""

    def __init__(self, state: CloudflareState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.queries: list[tuple[str, str]] = []  # (name, type) asked, for tests
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> str:
        """``host:port``, as Pebble's ``-dnsserver`` takes it."""
        return f"{self.host}:{self.port}"

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _zone(self, name: str) -> Any:
        self.state.settle()
        best = None
        for zone in self.state.zones.values():
            if zone.status != "active":
                continue  # not delegated: the world's resolvers never ask Cloudflare
            if (name == zone.name or name.endswith("." + zone.name)) and (
                best is None or len(zone.name) > len(best.name)
            ):
                best = zone
        return best

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()  # QR and RD copied; AA set below
        reply.header.aa = 1
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        zone = self._zone(qname)
        if zone is None:
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        if qtype == "NS" and qname == zone.name:
            for server in zone.name_servers:
                reply.add_answer(RR(qname, QTYPE.NS, rdata=NS(server), ttl=86400))
            return reply
        records = [r for r in list(zone.records.values()) if r.name == qname]
        cname = [r for r in records if r.type == "CNAME"]
        wanted = cname if cname and qtype != "CNAME" else [r for r in records if r.type == qtype]
        edge_sent = False
        for record in wanted:
            kind = _TYPES.get(record.type)
            if kind is None:
                continue
            if record.proxied and record.type in EDGE:
                if not edge_sent:
                    for address in EDGE[record.type]:
                        reply.add_answer(
                            RR(qname, getattr(QTYPE, record.type), rdata=kind(address), ttl=300)
                        )
                edge_sent = True
                continue
            # Cloudflare keeps a TXT record's content as given (quoted or not); the
            # answer carries the text without its quotes.
            content = record.content.strip('"') if record.type == "TXT" else record.content
            ttl = 300 if record.ttl == 1 else record.ttl  # 1 means "automatic"
            reply.add_answer(RR(qname, getattr(QTYPE, record.type), rdata=kind(content), ttl=ttl))
        if not records:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@dataclass(frozen=True)
class PebbleTls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _pebble_tls() -> PebbleTls:
    """A throwaway CA and a certificate for 127.0.0.1/localhost: Pebble's API listener."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble api test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return PebbleTls(
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


class Pebble:
    """Pebble as a child process; a context manager that always stops it.

    ``directory_url`` is the ACME directory, ``api_ca`` the file that trusts its HTTPS
    listener, ``root_pem`` the root that signs what it issues. ``validity_seconds``
    shortens the certificates' lifetime (Pebble's ``certificateValidityPeriod``).
    """

    def __init__(
        self,
        workdir: Path,
        dns_server: str,
        *,
        validity_seconds: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.dns_server = dns_server
        self.validity_seconds = validity_seconds
        self.port = _free_port()
        self.management_port = _free_port()
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.root_pem = b""

    @staticmethod
    def available() -> bool:
        return shutil.which(PEBBLE) is not None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def api_ca(self) -> Path:
        return self.workdir / "api-ca.pem"

    @property
    def root_file(self) -> Path:
        """The root that signs what this Pebble issues (new at every start), as a file."""
        return self.workdir / "root.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pebble.log"

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = _pebble_tls()
        self.api_ca.write_bytes(tls.ca_pem)
        (self.workdir / "api-cert.pem").write_bytes(tls.cert_pem)
        (self.workdir / "api-key.pem").write_bytes(tls.key_pem)
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.workdir / "api-cert.pem"),
            "privateKey": str(self.workdir / "api-key.pem"),
            # HTTP-01 and TLS-ALPN-01 are not used (DNS-01 only); they still need ports.
            "httpPort": _free_port(),
            "tlsPort": _free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = self.validity_seconds
        (self.workdir / "pebble.json").write_text(json.dumps({"pebble": config}))
        env = {
            **os.environ,
            # No random 0-15 s pause before each validation (Pebble's README).
            "PEBBLE_VA_NOSLEEP": "1",
            # Pebble refuses 5% of good nonces by default to exercise clients' retries;
            # acme retries a badNonce once only, which would make a test flaky. The
            # operator's own retry of a failed issuance is what heals it in production.
            "PEBBLE_WFE_NONCEREJECT": "0",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [PEBBLE, "-config", str(self.workdir / "pebble.json"), "-dnsserver", self.dns_server],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(30)
        except BaseException:
            self.stop()
            raise
        return self

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.api_ca))

    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=5, context=self._context()) as response:  # noqa: S310
            return bytes(response.read())

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"pebble exited: {self.log_path.read_text()[-2000:]}")
            try:
                self._get(self.directory_url)
                self.root_pem = self._get(f"https://127.0.0.1:{self.management_port}/roots/0")
                self.root_file.write_bytes(self.root_pem)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"pebble did not answer within {seconds:.0f} s: "
                        f"{self.log_path.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def intermediate_pem(self) -> bytes:
        return self._get(f"https://127.0.0.1:{self.management_port}/intermediates/0")

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
