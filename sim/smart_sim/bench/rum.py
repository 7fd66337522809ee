"""``python -m smart_sim.bench rum``: what real-user timings cost, per 1,000 page views.

On the page (measured with Chromium against the real agent's nginx serving the
``nginx_optimization`` page): the timing script's bytes on the wire (fetched once an
hour per browser, ``Cache-Control: max-age=3600``) and the beacon's request and answer
(Playwright's ``Request.sizes``, the bytes Chromium's network stack counted).

On the agent (in process, the real ``LogFollower`` and ``Store`` over a log written in
nginx's format): CPU time to read and count page views alone against page views each
followed by its beacon, the access log's extra bytes, and what the store keeps.

Figures only, never timed assertions (BENCHMARKS.md has the numbers and the command).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright._impl._api_structures import RequestSizes
from playwright.async_api import Request

from smart_agent import timing
from smart_agent.logreader import LogFollower
from smart_agent.store import Store
from smart_sim.bench.agent import AgentHost, performance_experiment
from smart_sim.traffic import BROWSERS

CHROMIUM = Path("/usr/bin/chromium")
# How Chromium runs here, headless (NOTES); the browser tests launch it the same way.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WINDOW, WASHOUT = 3600, 300


def _line(at: float, visitor: str, path: str, rum: str = "") -> str:
    beacon = path == timing.TIMING_PATH
    entry = {
        "e": "perf",
        "r": "p1",
        "d": time.strftime("%Y-%m-%d", time.gmtime(at)),
        "mode": "split",
        "t": f"{at:.3f}",
        "id": visitor,
        "v": "control",
        "cv": "",
        "m": "POST" if beacon else "GET",
        "u": path,
        "s": "204" if beacon else "200",
        "ct": "" if beacon else "text/html; charset=utf-8",
        "b": "0",
        "p": "0",
        "rum": rum,
    }
    return json.dumps(entry, separators=(",", ":")) + "\n"


def _write_log(path: Path, views: int, beacons: bool) -> None:
    start = (time.time() // WINDOW) * WINDOW + WASHOUT + 60  # past the wash-out
    with path.open("w") as log:
        for index in range(views):
            at = start + index * 0.01
            visitor = secrets.token_hex(8)
            log.write(_line(at, visitor, "/index.html"))
            if beacons:
                rum = f"{secrets.token_hex(4)}.{80 + index % 50}.{600 + index % 400}.48213.3100"
                log.write(_line(at + 3.1, visitor, timing.TIMING_PATH, rum))


def _count(folder: Path, views: int, beacons: bool) -> dict[str, float]:
    """Read and count a log of ``views`` page views (each with its beacon if ``beacons``)."""
    log = folder / "access.log"
    _write_log(log, views, beacons)
    store = Store(folder / "agent.db")
    follower = LogFollower(
        log,
        store,
        lambda e, r: ("control", "compressed"),
        grace_seconds=1.0,
        windows=lambda e, r: (WINDOW, WASHOUT),
    )
    follower.restore()
    cpu = time.process_time()
    while follower.poll().more_to_read:
        pass
    used = time.process_time() - cpu
    timed = store.timed_views("perf").get("control", 0)
    follower.close()
    store.close()
    db_bytes = sum(p.stat().st_size for p in folder.glob("agent.db*"))
    return {"cpu": used, "log_bytes": log.stat().st_size, "db_bytes": db_bytes, "timed": timed}


async def _page_costs(views: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    manifest, files, fragments = performance_experiment(windowSeconds=WINDOW, washoutSeconds=0)
    with tempfile.TemporaryDirectory(prefix="bench-rum-") as workdir:
        async with AgentHost(Path(workdir)) as host:
            host.deploy(manifest, files, fragments)
            await host.start()
            beacons: list[int] = []
            scripts: list[int] = []
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                try:
                    for index in range(views):
                        context = await browser.new_context(user_agent=BROWSERS[0])
                        page = await context.new_page()
                        finished: list[Request] = []

                        def done(request: Request, into: list[Request] = finished) -> None:
                            into.append(request)

                        page.on("requestfinished", done)
                        async with page.expect_request(
                            lambda r: timing.TIMING_PATH + "?" in r.url, timeout=30_000
                        ) as sent:
                            await page.goto(host.base_url + f"/?view={index}", wait_until="load")
                        request = await sent.value
                        await request.response()
                        beacons.append(_wire(await request.sizes()))
                        for request in finished:
                            if request.url.endswith(timing.SCRIPT_PATH):
                                scripts.append(_wire(await request.sizes()))
                        await context.close()
                finally:
                    await browser.close()
    return {"beacon": statistics.median(beacons), "script": statistics.median(scripts)}


def _wire(sizes: RequestSizes) -> int:
    return sum(
        max(0, size)
        for size in (
            sizes["requestHeadersSize"],
            sizes["requestBodySize"],
            sizes["responseHeadersSize"],
            sizes["responseBodySize"],
        )
    )


def run(cold: bool, views: int = 20_000, browser_views: int = 5) -> None:
    del cold  # nothing to build
    load = os.getloadavg()[0]
    print(f"rum: real-user timings; {os.cpu_count()} cores (load average {load:.1f} at start)")
    script = timing.SCRIPT.encode()
    print(
        f"  script: {len(script):,} bytes ({len(gzip.compress(script)):,} if gzipped), "
        f"fetched at most once an hour per browser"
    )
    if CHROMIUM.exists():
        page = asyncio.run(_page_costs(browser_views))
        print(
            f"  Chromium, median of {browser_views} cold page views: the script "
            f"{page['script']:,.0f} bytes on the wire (headers included), the beacon "
            f"{page['beacon']:,.0f} bytes (request and 204 answer)"
        )
        print(
            f"  per 1,000 page views: {page['beacon'] * 1000 / 1e6:.2f} MB of beacons, and "
            f"at most {page['script'] * 1000 / 1e6:.2f} MB of script (every view a new browser)"
        )
    else:
        print("  (no /usr/bin/chromium: page costs not measured)")
    figures = {}
    for beacons in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-rum-") as folder:
            figures[beacons] = _count(Path(folder), views, beacons)
    plain, timed = figures[False], figures[True]
    per = 1000 / views
    print(
        f"  agent, {views:,} page views read and counted: {plain['cpu'] * per * 1000:.1f} ms "
        f"CPU per 1,000 without beacons, {timed['cpu'] * per * 1000:.1f} ms with one beacon "
        f"each ({timed['timed']:,} timed): +{(timed['cpu'] - plain['cpu']) * per * 1000:.1f} ms "
        f"(x{timed['cpu'] / max(plain['cpu'], 1e-9):.2f})"
    )
    print(
        f"  access log +{(timed['log_bytes'] - plain['log_bytes']) * per / 1000:.0f} kB per "
        f"1,000 beacons (deleted with the log within a day or two); store "
        f"+{(timed['db_bytes'] - plain['db_bytes']) * per / 1000:.0f} kB per 1,000 timed views "
        f"(page-view ids, forgotten with the day; the sample stays at 1,000 per variant)"
    )
