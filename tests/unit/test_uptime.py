"""Availability from outside: the schedule that spreads the checks, the compact history
and verdict (``uptime``), the probe against real sockets (``clients.probe``), the
checker's writes and wake-ups (``reconcile.uptime``), and the Available condition with
its Events (``reconcile.domain``)."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from aiohttp import web
from dnslib import QTYPE, RR, A, DNSRecord

from smart_operator import uptime
from smart_operator.clients.probe import HttpSiteProbe, StageError, ask, dns_query, parse_answer
from smart_operator.errors import TemporaryFailure
from smart_operator.handlers.domain import check_site
from smart_operator.models.domain import AvailabilityStatus, Domain, DomainPhase, DomainStatus
from smart_operator.ports import ObjectRef, Site
from smart_operator.reconcile.uptime import SITES, UptimeChecker
from smart_operator.settings import OperatorSettings
from smart_operator.uptime import CheckResult
from tests.unit.fakes import FakeResources
from tests.unit.test_reconcile_domain import World
from tests.waiting import eventually_async

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
REF = ObjectRef("domains", "shop", "customer-acme")


def result(ok: bool, at: datetime = T0, latency: float = 20.0) -> CheckResult:
    return CheckResult(
        ok=ok,
        ended_at=at,
        latency_ms=latency if ok else None,
        stage="ok" if ok else "tcp",
        detail="HTTPS 200" if ok else "TCP: connection refused",
        address="192.0.2.10",
        resolved_by="name resolved by the system resolver",
    )


# -- the schedule ------------------------------------------------------------------------


def test_each_domain_has_its_own_turn_and_the_turns_spread_over_the_interval() -> None:
    interval = 60.0
    offsets = [uptime.offset(f"uid-{n}", interval) for n in range(1000)]
    assert all(0 <= o < interval for o in offsets)
    per_second_bucket = [0] * 60
    for o in offsets:
        per_second_bucket[int(o)] += 1
    # 1000 checks over 60 s: about 17 a second, never a burst of them.
    assert max(per_second_bucket) < 40 and min(per_second_bucket) > 3
    due = uptime.next_due("uid-1", interval, 1_000_000.0)
    assert 1_000_000.0 < due <= 1_000_060.0
    assert uptime.next_due("uid-1", interval, due) == pytest.approx(due + interval)
    assert (due - uptime.offset("uid-1", interval)) % interval == pytest.approx(0, abs=1e-6)


# -- history and verdict -----------------------------------------------------------------


def test_a_site_is_down_only_after_the_configured_failures_in_a_row_and_up_at_once() -> None:
    state = uptime.record(None, result(True), failures=3)
    assert state.up and state.latency_ms == 20.0 and state.percent24h == 100.0
    for n in (1, 2):
        state = uptime.record(state, result(False, T0 + timedelta(minutes=n)), failures=3)
        assert state.up and state.consecutive_failures == n and state.latency_ms is None
    went_down = T0 + timedelta(minutes=3)
    down = uptime.record(state, result(False, went_down), failures=3)
    assert not down.up and down.since == went_down and uptime.changed(state, down)
    status, reason, message = uptime.verdict(down, 60)
    assert (status, reason) == ("False", "SiteDown")
    assert "3 checks in a row failed" in message and "connection refused" in message
    assert "every 60 s" in message and "system resolver" in message
    back = uptime.record(down, result(True, went_down + timedelta(minutes=1)), failures=3)
    assert back.up and back.consecutive_failures == 0 and uptime.changed(down, back)
    assert back.percent24h == pytest.approx(100 * 2 / 5)
    assert uptime.verdict(back, 60)[:2] == ("True", "SiteReachable")


def test_history_stays_small_one_bucket_an_hour_for_a_day_and_one_a_day_for_a_month() -> None:
    state: AvailabilityStatus | None = None
    moment = T0
    # 40 days of checks every 10 minutes, down for the last 2 hours.
    end = T0 + timedelta(days=40)
    while moment < end:
        ok = moment < end - timedelta(hours=2)
        state = uptime.record(state, result(ok, moment), failures=3)
        moment += timedelta(minutes=10)
    assert state is not None
    assert len(state.hourly) == 24 and len(state.daily) == 30
    assert state.hourly[-1].start == uptime._hour(moment - timedelta(minutes=10))
    assert state.percent24h == pytest.approx(100 * 132 / 144, abs=0.01)
    assert 99.0 < (state.percent30d or 0) < 100
    # The whole availability is a few kilobytes on the status, whatever the interval.
    size = len(json.dumps(state.model_dump(mode="json", by_alias=True)))
    assert size < 6000
    # Valid against its own model (the CRD bounds the lists the same way).
    assert AvailabilityStatus.model_validate(state.model_dump(by_alias=True)) == state


def test_a_gap_in_the_checks_drops_only_the_buckets_that_left_the_window() -> None:
    state = uptime.record(None, result(True), failures=3)
    later = uptime.record(state, result(False, T0 + timedelta(hours=30)), failures=3)
    assert [b.total for b in later.hourly] == [1]
    assert [b.total for b in later.daily] == [1, 1]
    assert later.percent24h == 0.0 and later.percent30d == 50.0


# -- the probe ---------------------------------------------------------------------------


def dns_reply(query: bytes, *addresses: str, rcode: int = 0) -> bytes:
    request = DNSRecord.parse(query)
    reply = request.reply()
    reply.header.rcode = rcode
    for address in addresses:
        reply.add_answer(RR(str(request.q.qname), QTYPE.A, rdata=A(address), ttl=60))
    return bytes(reply.pack())


def test_the_dns_query_and_answer_round_trip() -> None:
    query = dns_query("shop.example", 4242)
    assert DNSRecord.parse(query).q.qname == "shop.example."
    assert parse_answer(dns_reply(query, "192.0.2.1", "192.0.2.2"), 4242) == [
        "192.0.2.1",
        "192.0.2.2",
    ]
    with pytest.raises(StageError, match="NXDOMAIN"):
        parse_answer(dns_reply(query, rcode=3), 4242)
    with pytest.raises(StageError, match="no A record"):
        parse_answer(dns_reply(query), 4242)
    with pytest.raises(StageError, match="another query"):
        parse_answer(dns_reply(query, "192.0.2.1"), 4243)


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        name = str(DNSRecord.parse(data).q.qname).rstrip(".")
        found = self.answers.get(name)
        assert self.transport is not None
        self.transport.sendto(dns_reply(data, found) if found else dns_reply(data, rcode=5), addr)


async def dns_server(answers: dict[str, str]) -> tuple[asyncio.DatagramTransport, str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DnsServer(answers), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    return transport, f"127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def site_server(status: int) -> tuple[web.AppRunner, int, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=status, text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port, seen


async def test_the_probe_resolves_through_the_configured_server_and_times_each_stage() -> None:
    runner, port, seen = await site_server(200)
    transport, server = await dns_server({"shop.example": "127.0.0.1"})
    try:
        probe = HttpSiteProbe(5, resolver=server, http_port=port)
        checked = await probe.check(Site("shop.example", None, https=False))
        assert checked.ok and checked.stage == "ok" and checked.address == "127.0.0.1"
        assert checked.latency_ms is not None and checked.latency_ms > 0
        assert checked.detail.startswith("HTTP 200 (DNS ") and "first byte" in checked.detail
        assert f"DNS server {server}" in checked.resolved_by
        # As a visitor asks for it, but a monitor: the agents never count it.
        assert seen[0]["Host"] == "shop.example" and "bot" in seen[0]["User-Agent"]
        missing = await probe.check(Site("gone.example", "127.0.0.1", https=False))
        assert not missing.ok and missing.stage == "dns" and "REFUSED" in missing.detail
        assert await ask(server, "shop.example") == ["127.0.0.1"]
    finally:
        transport.close()
        await runner.cleanup()


async def test_the_probe_tells_which_stage_failed() -> None:
    failing, port, _ = await site_server(502)
    missing, other, _ = await site_server(404)
    site = Site("shop.example", "127.0.0.1", https=False)
    try:
        probe = HttpSiteProbe(5, resolver="status", http_port=port, https_port=port)
        bad = await probe.check(site)
        assert not bad.ok and bad.stage == "http" and bad.detail.startswith("HTTP: HTTP 502")
        assert "server address on the status" in bad.resolved_by
        # A 4xx is the site answering (no experiment yet answers 404 at /).
        assert (await HttpSiteProbe(5, resolver="status", http_port=other).check(site)).ok
        closed = await HttpSiteProbe(5, resolver="status", http_port=free_port()).check(site)
        assert not closed.ok and closed.stage == "tcp"
        assert closed.detail.startswith("TCP: 127.0.0.1:") and "Connection refused" in closed.detail
        # TLS to a plain HTTP server: the handshake fails, and the result says so.
        tls = await probe.check(Site("shop.example", "127.0.0.1", https=True))
        assert not tls.ok and tls.stage in ("tls", "timeout")
        nothing = await probe.check(Site("shop.example", None, https=False))
        assert not nothing.ok and nothing.stage == "dns"
    finally:
        await failing.cleanup()
        await missing.cleanup()


async def test_a_silent_server_is_a_timeout_within_the_bound() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # answers nothing, closes nothing: the test does

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        checked = await HttpSiteProbe(0.3, resolver="status", http_port=port).check(
            Site("shop.example", "127.0.0.1", https=False)
        )
        assert not checked.ok and checked.stage == "timeout"
        assert "within 0.3 s during http" in checked.detail
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# -- the checker -------------------------------------------------------------------------


class FakeProbe:
    def __init__(self) -> None:
        self.ok = True
        self.calls: list[Site] = []
        self.gate: asyncio.Event | None = None

    async def check(self, site: Site) -> CheckResult:
        self.calls.append(site)
        if self.gate is not None:
            await self.gate.wait()
        return result(self.ok, datetime.now(UTC))


def checker(
    probe: FakeProbe, resources: FakeResources, woken: list[str], clock: list[float]
) -> UptimeChecker:
    return UptimeChecker(
        probe,
        resources,
        interval=60,
        failures=2,
        concurrency=4,
        write_seconds=300,
        on_change=woken.append,
        clock=lambda: clock[0],
    )


async def test_the_checker_writes_the_first_result_a_change_at_once_and_else_rarely() -> None:
    probe, resources, woken, clock = FakeProbe(), FakeResources(), [], [1000.0]
    resources.put(REF, {"metadata": {"name": "shop", "namespace": REF.namespace}})
    check = checker(probe, resources, woken, clock)
    check.watch("u1", REF, Site("shop.example", "192.0.2.10", True), None)
    watched = check.sites["u1"]
    await check.check("u1", watched)
    assert len(resources.patches) == 1
    assert resources.patches[0][1]["availability"]["up"] is True
    clock[0] += 60
    await check.check("u1", watched)
    assert len(resources.patches) == 1, "nothing changed: written at most every 300 s"
    probe.ok = False
    await check.check("u1", watched)
    assert len(resources.patches) == 1 and woken == []  # one failure is not down
    await check.check("u1", watched)
    assert resources.patches[-1][1]["availability"]["up"] is False and woken == ["u1"]
    assert SITES._sites["u1"][2] is False
    # A daemon woken now reads what was written, even before its watch shows it.
    shown = check.overlay("u1", resources.objects[REF] | {"status": {}})
    assert shown["status"]["availability"]["up"] is False
    probe.ok = True
    await check.check("u1", watched)
    assert resources.patches[-1][1]["availability"]["up"] is True and woken == ["u1", "u1"]
    check.forget("u1")
    assert "u1" not in SITES._sites and check.latest("u1") is None


async def test_the_loop_checks_each_site_at_its_turn_and_never_twice_at_once() -> None:
    probe, resources = FakeProbe(), FakeResources()
    probe.gate = asyncio.Event()
    check = UptimeChecker(
        probe, resources, interval=0.05, failures=2, concurrency=1, write_seconds=300
    )
    recorded = uptime.record(None, result(False), failures=2)
    check.watch("u1", REF, Site("shop.example", "192.0.2.10", True), recorded)
    assert check.latest("u1") == recorded  # a restarted operator continues the history
    loop = asyncio.create_task(check.run())
    await asyncio.sleep(0.3)  # six turns' time: what must not happen in it
    assert len(probe.calls) == 1, "turns that come while a check runs are skipped"
    probe.gate.set()
    await eventually_async(lambda: len(probe.calls) > 3, within=10, what="the next turns")
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    availability = check.latest("u1")
    assert availability is not None and availability.up
    # Every check that ended is counted (the one cancelled in flight is not); the
    # recorded history of two days ago has left the 24-hour window.
    assert len(probe.calls) - 1 <= sum(b.total for b in availability.hourly) <= len(probe.calls)


# -- the condition -----------------------------------------------------------------------


async def test_a_ready_domain_gets_available_and_its_events_from_the_availability() -> None:
    world = World()
    world.claimed_zone("shop.example")
    await world.run()
    world.heartbeat()
    await world.run()
    assert world.status["phase"] == "Ready"
    assert not any(c["type"] == "Available" for c in world.status["conditions"])

    def checked(state: AvailabilityStatus) -> None:
        world.resources.objects[REF_WORLD]["status"]["availability"] = state.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )

    state = uptime.record(None, result(True), failures=1)
    checked(state)
    await world.run()
    available = world.condition("Available")
    assert available["status"] == "True" and available["reason"] == "SiteReachable"
    assert "SiteReachable" not in world.events.reasons()  # the expected start: quiet
    state = uptime.record(state, result(False, T0 + timedelta(minutes=1)), failures=1)
    checked(state)
    await world.run()
    assert world.condition("Available")["reason"] == "SiteDown"
    assert "SiteDown" in world.events.reasons("Warning")
    assert world.status["phase"] == "Ready", "Ready says the platform did its part"
    checked(uptime.record(state, result(True, T0 + timedelta(minutes=2)), failures=1))
    await world.run()
    assert world.condition("Available")["status"] == "True"
    assert "SiteReachable" in world.events.reasons("Normal")
    # The reconciler never writes the checker's field.
    assert all("availability" not in patch for _, patch in world.resources.patches)


REF_WORLD = ObjectRef("domains", "shop", "customer-acme")


def test_the_settings_and_their_bounds() -> None:
    settings = OperatorSettings()
    assert settings.uptime_checks and settings.uptime_seconds == 60
    assert settings.uptime_failures == 3 and settings.uptime_resolver == ""
    for good in ("status", "127.0.0.1:5353", "[::1]:53"):
        assert OperatorSettings(uptime_resolver=good).uptime_resolver == good
    with pytest.raises(ValueError, match="uptime_resolver"):
        OperatorSettings(uptime_resolver="dns.google")


async def test_a_change_whose_write_failed_is_written_and_announced_at_the_next_check() -> None:
    probe, resources, woken, clock = FakeProbe(), FakeResources(), [], [1000.0]
    check = checker(probe, resources, woken, clock)
    check.watch("u1", REF, Site("shop.example", "192.0.2.10", True), None)
    watched = check.sites["u1"]
    await check.check("u1", watched)
    probe.ok = False
    await check.check("u1", watched)
    resources.fail("patch_status", TemporaryFailure("kubernetes", "503", 1))
    await check.check("u1", watched)  # down, but the write fails
    assert woken == [] and check.latest("u1") is not None
    clock[0] += 1
    await check.check("u1", watched)
    assert resources.patches[-1][1]["availability"]["up"] is False and woken == ["u1"]


def test_a_site_is_checked_once_set_up_whatever_its_agents_heartbeat_says() -> None:
    check = checker(FakeProbe(), FakeResources(), [], [1000.0])
    ctx = SimpleNamespace(uptime=check)
    domain = Domain.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "customer-acme", "uid": "u1"},
            "spec": {"domain": "shop.example"},
        }
    )

    def status(**conditions: str) -> DomainStatus:
        return DomainStatus.model_validate(
            {
                "phase": "Provisioning",
                "server": {"ipv4": "192.0.2.10"},
                "certificate": {"notAfter": "2027-01-01T00:00:00Z"},
                "conditions": [
                    {"type": t, "status": s, "reason": "X", "lastTransitionTime": T0}
                    for t, s in conditions.items()
                ],
            }
        )

    check_site("u1", domain, status(AgentInstalled="False"), ctx)  # type: ignore[arg-type]
    assert "u1" not in check.sites
    silent = status(AgentInstalled="True", AgentConnected="False")
    check_site("u1", domain, silent, ctx)  # type: ignore[arg-type]
    assert check.sites["u1"].site == Site("shop.example", "192.0.2.10", https=True)
    gone = silent.model_copy(update={"phase": DomainPhase.DELETING})
    check_site("u1", domain, gone, ctx)  # type: ignore[arg-type]
    assert "u1" not in check.sites
