"""``python -m smart_sim.bench uptime``: what the operator's outside checks cost. The
real checker (``reconcile.uptime``) and probe (``clients.probe``) check 1,000 sites,
each at its own offset in the interval, over HTTPS (a full TLS handshake each time,
certificate and name verified) against plain nginx on loopback serving the rendered
``saas_landing`` page; DNS is skipped (``status``: a loopback has no resolver worth
timing). The interval is shortened so a short run holds many checks; the figures per
check hold for any interval. Measured: checks done, their spread over the seconds of the
run, their latency, and this process's CPU time per check (nginx's is its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from smart_operator.clients.probe import HttpSiteProbe
from smart_operator.ports import ObjectRef, Site
from smart_operator.reconcile.uptime import UptimeChecker
from smart_operator.uptime import CheckResult
from smart_sim.bench.agent import (
    _quit_nginx,
    _start_plain,
    free_port,
    landing_experiment,
    loopback_address,
)
from smart_sim.bench.tls import _certificate, _plain_tls_nginx

NAME = "bench.example"


class Statuses:
    """The ``Resources`` port, counting status writes (no cluster here)."""

    def __init__(self) -> None:
        self.writes = 0

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        self.writes += 1


class Timed:
    """The probe, recording when each check ended and how it went."""

    def __init__(self, probe: HttpSiteProbe) -> None:
        self.probe = probe
        self.ended: list[tuple[float, CheckResult]] = []

    async def check(self, site: Site) -> CheckResult:
        result = await self.probe.check(site)
        self.ended.append((time.monotonic(), result))
        return result


async def _measure(sites: int, interval: float, seconds: float) -> dict[str, Any]:
    _, files = landing_experiment()
    with tempfile.TemporaryDirectory(prefix="bench-uptime-") as tmp:
        work = Path(tmp)
        docroot = work / "root"
        docroot.mkdir()
        page = files["control"]["index.html"]
        (docroot / "index.html").write_bytes(page)
        cert, key = _certificate(work / "cert", NAME)
        address = loopback_address()
        port = free_port(address)
        folder = work / "nginx"
        conf = _plain_tls_nginx(folder, address, port, docroot, cert, key)
        await asyncio.to_thread(_start_plain, folder, conf)
        try:
            probe = Timed(HttpSiteProbe(10, resolver="status", ca_bundle=cert, https_port=port))
            statuses = Statuses()
            checker = UptimeChecker(
                probe,
                statuses,  # type: ignore[arg-type]
                interval=interval,
                failures=3,
                concurrency=100,
                write_seconds=300,
            )
            for n in range(sites):
                ref = ObjectRef("domains", f"site-{n}", "customer-bench")
                checker.watch(f"uid-{n}", ref, Site(NAME, address, https=True), None)
            started, cpu = time.monotonic(), time.process_time()
            loop = asyncio.create_task(checker.run())
            await asyncio.sleep(seconds)
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            used = time.process_time() - cpu
        finally:
            _quit_nginx(folder)
    results = [r for _, r in probe.ended]
    per_second = [0] * int(seconds)
    for moment, _ in probe.ended:
        index = int(moment - started)
        if 0 <= index < len(per_second):
            per_second[index] += 1
    latencies = sorted(r.latency_ms for r in results if r.ok and r.latency_ms is not None)
    return {
        "checks": len(results),
        "failed": sum(not r.ok for r in results),
        "per_second": per_second,
        "cpu": used,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "writes": statuses.writes,
        "page": len(page),
        "example": results[0].detail if results else "",
    }


def run(cold: bool, sites: int = 1000, interval: float = 10.0, seconds: float = 30.0) -> None:
    del cold  # nothing to build
    load = os.getloadavg()[0]
    print(
        f"uptime: {sites} sites over HTTPS on loopback nginx, every {interval:g} s each, "
        f"for {seconds:g} s; {os.cpu_count()} cores (load average {load:.1f} at start)"
    )
    got = asyncio.run(_measure(sites, interval, seconds))
    steady = got["per_second"][int(interval) :]  # the first interval fills the schedule
    cpu_ms = 1000 * got["cpu"] / max(1, got["checks"])
    per_hour_default = sites * 3600 / 60
    print(
        f"  {got['checks']} checks ({got['failed']} failed), {got['writes']} status writes; "
        f"a {got['page']:,}-byte page; e.g. {got['example']}"
    )
    print(
        f"  checks a second after the first interval: min {min(steady, default=0)}, "
        f"max {max(steady, default=0)} (even spread: {sites / interval:.0f})"
    )
    print(
        f"  latency p50 {got['p50']:.1f} ms, p95 {got['p95']:.1f} ms; checker CPU "
        f"{cpu_ms:.2f} ms per check"
    )
    print(
        f"  at the default interval (60 s): {per_hour_default:,.0f} checks an hour for "
        f"{sites} Domains ({sites / 60:.1f} a second), about "
        f"{cpu_ms * sites / 60 / 10:.1f}% of one core"
    )
