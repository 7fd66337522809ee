"""The ``SiteProbe`` port: one check of a site the way a visitor's browser reaches it,
stage by stage, each timed.

1. DNS: the name's IPv4 address, from the system resolver (as visitors resolve it), or
   from a DNS server asked directly (``host:port``: a small RFC 1035 query over UDP,
   A records, following a CNAME in the answer), or not at all (``status``: the server
   address recorded on the Domain; the result says so).
2. TCP to port 443 (with a certificate) or 80.
3. TLS with the name as SNI, verified against the system's trust store (and an extra CA
   file, for test CAs).
4. ``GET /`` with the name as Host and a monitor's user agent (never counted as a visit
   by the agents); the page is read to its end. Any answer below 500 passes: a 4xx is
   the site answering (a Domain without an experiment answers 404 at ``/``); a 5xx,
   or no answer, fails.

The whole check is bounded by one timeout. Pure asyncio and ssl: nothing else needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from smart_operator.ports import Site
from smart_operator.uptime import USER_AGENT, CheckResult

PAGE_LIMIT = 4 * 1024 * 1024
"""Read at most this much of a page (a larger one still counts as served)."""
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _reason(error: OSError) -> str:
    """ "Connection refused", not asyncio's "Connect call failed ('192.0.2.1', 443)"."""
    return os.strerror(error.errno) if error.errno else str(error)


class StageError(Exception):
    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(detail)
        self.stage = stage
        self.detail = detail


def dns_query(name: str, query_id: int) -> bytes:
    """An A query for ``name`` with recursion desired."""
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length


def parse_answer(data: bytes, query_id: int) -> list[str]:
    """The IPv4 addresses in a reply (the A records, whichever name they are for: a
    CNAME's target is answered in the same reply). Raises ``StageError`` on a failure
    code, a mismatched id or a reply without an address."""
    if len(data) < 12:
        raise StageError("dns", "a truncated DNS reply")
    ident, flags, questions, answers = struct.unpack(">HHHH", data[:8])
    if ident != query_id:
        raise StageError("dns", "a DNS reply to another query")
    rcode = flags & 0x000F
    if rcode:
        raise StageError("dns", f"the DNS server answered {RCODES.get(rcode, rcode)}")
    at = 12
    for _ in range(questions):
        at = _skip_name(data, at) + 4
    found: list[str] = []
    for _ in range(answers):
        at = _skip_name(data, at)
        kind, _klass, _ttl, length = struct.unpack(">HHIH", data[at : at + 10])
        at += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(data[at : at + 4]))
        at += length
    if not found:
        raise StageError("dns", "no A record")
    return found


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def ask(server: str, name: str) -> list[str]:
    """The IPv4 addresses ``server`` (``host:port``) gives for ``name``."""
    host, _, port = server.rpartition(":")
    query_id = secrets.randbelow(0x10000)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Reply, remote_addr=(host.strip("[]"), int(port))
    )
    try:
        transport.sendto(dns_query(name, query_id))
        try:
            data = await protocol.reply
        except OSError as error:
            raise StageError("dns", f"the DNS server {server}: {error.strerror or error}") from None
        return parse_answer(data, query_id)
    finally:
        transport.close()


class HttpSiteProbe:
    """Checks sites from this process (the operator's network: the platform side)."""

    def __init__(
        self,
        timeout: float,
        resolver: str = "",
        ca_bundle: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        http_port: int = 80,
        https_port: int = 443,
    ) -> None:
        """``http_port``, ``https_port``: where visitors connect (other ports only in
        tests and benchmarks)."""
        self.timeout = timeout
        self.http_port, self.https_port = http_port, https_port
        self.resolver = resolver
        self.clock = clock
        self.trust = ssl.create_default_context()
        if ca_bundle is not None:
            self.trust.load_verify_locations(cafile=str(ca_bundle))

    @property
    def resolved_by(self) -> str:
        if self.resolver == "status":
            return "DNS not checked: the server address on the status was used"
        if self.resolver:
            return f"name resolved by the DNS server {self.resolver}"
        return "name resolved by the system resolver"

    async def resolve(self, site: Site) -> str:
        if self.resolver == "status":
            if not site.address:
                raise StageError("dns", "no server address on the status")
            return site.address
        if self.resolver:
            return (await ask(self.resolver, site.name))[0]
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                site.name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
        except socket.gaierror as error:
            raise StageError("dns", f"{error.strerror}") from None
        return str(found[0][4][0])

    async def check(self, site: Site) -> CheckResult:
        started = self.clock()
        marks: list[str] = []
        state: dict[str, str | None] = {"stage": "dns", "address": None}

        def mark(what: str, since: float) -> float:
            moment = self.clock()
            marks.append(f"{what} {1000 * (moment - since):.0f} ms")
            return moment

        async def stages() -> str:
            address = await self.resolve(site)
            state["address"] = address
            moment = mark("DNS", started)
            state["stage"] = "tcp"
            port = self.https_port if site.https else self.http_port
            try:
                reader, writer = await asyncio.open_connection(address, port)
            except OSError as error:
                raise StageError("tcp", f"{address}:{port}: {_reason(error)}") from None
            try:
                moment = mark("TCP", moment)
                if site.https:
                    state["stage"] = "tls"
                    try:
                        await writer.start_tls(self.trust, server_hostname=site.name)
                    except (ssl.SSLError, OSError) as error:
                        raise StageError("tls", str(error)) from None
                    moment = mark("TLS", moment)
                state["stage"] = "http"
                writer.write(
                    (
                        f"GET / HTTP/1.1\r\nHost: {site.name}\r\nUser-Agent: {USER_AGENT}\r\n"
                        "Accept: text/html\r\nConnection: close\r\n\r\n"
                    ).encode("ascii")
                )
                await writer.drain()
                line = await reader.readline()
                parts = line.decode("latin-1").split()
                if len(parts) < 2 or not parts[1].isdigit():
                    raise StageError("http", f"not an HTTP reply: {line[:60]!r}")
                code = int(parts[1])
                moment = mark("first byte", moment)
                read = 0
                while read < PAGE_LIMIT:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    read += len(chunk)
                mark("page", moment)
                scheme = "HTTPS" if site.https else "HTTP"
                if code >= 500:
                    raise StageError("http", f"{scheme} {code}")
                return f"{scheme} {code}"
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        try:
            async with asyncio.timeout(self.timeout):
                outcome = await stages()
        except StageError as error:
            return self._result(False, None, error.stage, error.detail, marks, state["address"])
        except TimeoutError:
            detail = f"no answer within {self.timeout:g} s during {state['stage'] or 'dns'}"
            return self._result(False, None, "timeout", detail, marks, state["address"])
        except OSError as error:  # a connection reset while reading, say
            stage = state["stage"] or "http"
            detail = _reason(error)
            return self._result(False, None, stage, detail, marks, state["address"])
        elapsed = 1000 * (self.clock() - started)
        return self._result(True, elapsed, "ok", outcome, marks, state["address"])

    def _result(
        self,
        ok: bool,
        latency_ms: float | None,
        stage: str,
        detail: str,
        marks: list[str],
        address: str | None,
    ) -> CheckResult:
        where = "" if ok or stage == "timeout" else f"{stage.upper()}: "
        timings = f" ({', '.join(marks)})" if marks else ""
        return CheckResult(
            ok=ok,
            ended_at=datetime.now(UTC),
            latency_ms=latency_ms,
            stage=stage,
            detail=f"{where}{detail}{timings}",
            address=address,
            resolved_by=self.resolved_by,
        )
