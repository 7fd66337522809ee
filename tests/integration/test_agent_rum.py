"""Real-user timings end to end, with a real browser: Chromium loads a performance
experiment's page from the agent's nginx, the page's own script posts its timings, the
agent counts them for the variant and reports them, and the intake's planner turns the
report into the Experiment's status. Then, with a real bandwidth limit (``tc``'s token
bucket on a veth pair) between Chromium and nginx, the variant with compression on is
faster for the browser, however the probe over loopback sees it.

Integration level: the real ``smart-agent`` process, its nginx and Chromium; the
intake is the loopback recorder, and its report goes through the intake's own pure
planning functions (``plan_results``) rather than a cluster. Needs root for the
network namespace (``ip netns``) and ``tc``; skipped, saying so, without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from smart_operator.intake.experiments import experiment_view
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import ResultsReport
from smart_operator.intake.status import PendingReport, Write, plan_results
from smart_operator.stats.latency import bootstrap_quantile_difference
from smart_sim.bench.agent import AgentHost, IntakeRecorder, free_port, performance_experiment
from smart_sim.bench.rum import CHROMIUM, CHROMIUM_ARGS
from smart_sim.traffic import BROWSERS
from tests.waiting import eventually_async

DESKTOP = BROWSERS[0]  # headless Chromium's own user agent says "HeadlessChrome": a bot

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")


def user_agent(index: int) -> str:
    """A desktop Chrome user agent of its own per simulated visitor (the visitor id is
    a keyed hash of the address and the user agent; all of them share one address)."""
    return DESKTOP.replace("Chrome/131.0.0.0", f"Chrome/131.0.{index}.0")


@contextlib.asynccontextmanager
async def chromium(executable: Path = CHROMIUM) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


# Resolves once the browser has a largest-contentful-paint entry for the page.
LCP_RECORDED = """new Promise(resolve => new PerformanceObserver(resolve).observe(
    {type: "largest-contentful-paint", buffered: true}))"""


async def view_page(browser: Browser, url: str, index: int, leave: bool = False) -> bool:
    """One visitor's page view with a cold cache (a new browser context), kept open
    until the page's script has posted its beacon: three seconds after ``load``, or at
    once when the visitor leaves after its largest content painted (``leave``: the
    page's ``pagehide`` handler runs).
    False when no beacon was posted within a minute."""
    context = await browser.new_context(user_agent=user_agent(index))
    try:
        page = await context.new_page()
        async with page.expect_request(
            lambda request: "/_smart/timing?" in request.url, timeout=60_000
        ):
            await page.goto(url, wait_until="load")
            if leave:
                # The visitor saw the page, then left: the browser has recorded its
                # largest contentful paint (the entry comes a frame or more after load).
                await page.evaluate(LCP_RECORDED)
                await page.evaluate("dispatchEvent(new PageTransitionEvent('pagehide'))")
    except PlaywrightTimeoutError:
        return False
    finally:
        await context.close()
    return True


def experiment_status(report: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    """The Experiment status the intake would write for ``report`` (its own planner)."""
    now = datetime.now(UTC)
    view = experiment_view(
        {
            "metadata": {
                "name": report["experiment"],
                "namespace": "customer-acme",
                "uid": "uid-1",
                "resourceVersion": "1",
                "creationTimestamp": now.isoformat(),
            },
            "spec": {
                "domainRef": "acme-example",
                "type": "performance",
                "template": "nginx_optimization",
                "goal": {"metric": "p50_latency"},
                "variants": [{"name": name} for name in variants],
            },
            "status": {},
        }
    )
    assert view is not None
    pending = PendingReport(
        ResultsReport.model_validate_json(json.dumps(report)),  # as the intake reads a body
        DomainRef("customer-acme", "acme-example"),
        "uid-1",
        now,
        0.0,
    )
    plan = plan_results(view, pending, now, 300)
    assert isinstance(plan, Write), plan
    return plan.status


def latest_report(intake: IntakeRecorder, experiment: str) -> dict[str, Any] | None:
    reports = [r for r in intake.results if r["experiment"] == experiment]
    return reports[-1] if reports else None


async def test_a_browsers_timing_reaches_the_agents_counts_and_the_experiment_status(
    tmp_path: Path, intake: IntakeRecorder, same_day: None
) -> None:
    # One long window, no wash-out: whichever variant this week's window serves is timed.
    manifest, files, fragments = performance_experiment(
        windowSeconds=7 * 86400, washoutSeconds=0, probeSeconds=1
    )
    async with AgentHost(tmp_path, intake_url=intake.url) as host:
        host.deploy(manifest, files, fragments)
        await host.start()
        status = await host.status()
        active = status["serving"]["activeVariant"]
        assert status["probe"]["synthetic"] is True

        async with chromium() as browser:
            assert await view_page(browser, host.base_url + "/", 1), "no beacon within a minute"

        async def timed() -> dict[str, Any] | None:
            counts = {
                v: c
                for e in (await host.status())["experiments"]
                if e["name"] == manifest.name
                for v, c in e["variants"].items()
            }
            return counts if counts.get(active, {}).get("timedViews") == 1 else None

        counts = await eventually_async(timed, within=60, what="the beacon counted by the agent")
        assert counts[active]["visitors"] == 1  # the beacon is not a second visitor

        def reported() -> dict[str, Any] | None:
            report = latest_report(intake, manifest.name)
            variants = {v["name"]: v for v in report["variants"]} if report else {}
            real = variants.get(active, {}).get("realUser")
            return report if real and real["views"] == 1 else None

        report = await eventually_async(reported, within=60, what="the timing in a report")
    variant = next(v for v in report["variants"] if v["name"] == active)
    real = variant["realUser"]
    # What Chromium measured: a first byte, a largest contentful paint after it, and
    # the page with its stylesheet and icon (uncompressed or not, tens of kilobytes).
    assert len(real["ttfbMs"]) == 1 and len(real["lcpMs"]) == 1
    assert 0 <= real["ttfbMs"][0] <= real["lcpMs"][0] < 30_000
    assert 10_000 < real["transferBytes"][0] < 200_000

    status = experiment_status(report, list(manifest.variant_names))
    result = next(v for v in status["variants"] if v["name"] == active)
    assert result["realUser"]["views"] == 1
    assert result["p50Ms"] == real["lcpMs"][0]  # the figure a latency goal decides on
    assert result["realUser"]["ttfbMs"]["p50"] == real["ttfbMs"][0]


# -- a real bandwidth limit -------------------------------------------------------------


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def _free_link_net() -> ipaddress.IPv4Network:
    """A /30 in 169.254.0.0/16 (link-local: never routed) no interface here uses."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True
    ).stdout
    while True:
        net = ipaddress.IPv4Network(
            f"169.254.{secrets.randbelow(150) + 100}.{secrets.randbelow(64) * 4}/30"
        )
        if str(net.network_address)[:-1] not in used:
            return net


@contextlib.contextmanager
def limited_link(rate: str) -> Iterator[tuple[str, str]]:
    """A network namespace joined to this one by a veth pair whose host end sends at
    most ``rate`` (tc's token bucket filter), the way a slow visitor's line does. Yields
    (namespace, the host end's address); removes both, also after a failure."""
    suffix = secrets.token_hex(3)
    namespace, host_end, inner_end = f"rum{suffix}", f"rumh{suffix}", f"rumi{suffix}"
    net = _free_link_net()
    host_address, inner_address = (str(a) for a in list(net.hosts())[:2])
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner_end)
        _run("ip", "link", "set", inner_end, "netns", namespace)
        _run("ip", "addr", "add", f"{host_address}/30", "dev", host_end)
        _run("ip", "link", "set", host_end, "up")
        inside = ("ip", "netns", "exec", namespace)
        _run(*inside, "ip", "addr", "add", f"{inner_address}/30", "dev", inner_end)
        _run(*inside, "ip", "link", "set", inner_end, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        # Server to browser: a token bucket at ``rate`` (netem, for a delay, is not in
        # every kernel; the rate is what compression changes).
        _run("tc", "qdisc", "add", "dev", host_end, "root", "tbf", "rate", rate,
             "burst", "16kb", "latency", "1s")  # fmt: skip
        yield namespace, host_address
    finally:
        with contextlib.suppress(RuntimeError):
            _run("ip", "link", "del", host_end)  # takes its peer along
        with contextlib.suppress(RuntimeError):
            _run("ip", "netns", "del", namespace)


def _can_shape() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns and tc"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "needs ip and tc (iproute2)"
    return None


@pytest.mark.skipif(_can_shape() is not None, reason=str(_can_shape()))
@pytest.mark.timeout(600)
async def test_with_a_bandwidth_limit_the_compressed_variant_is_faster_for_real_users(
    tmp_path: Path, intake: IntakeRecorder, same_day: None
) -> None:
    """Windows of 30 s switch between gzip off (control) and on; Chromium, behind a
    256 kbit/s line, loads the page over and over with a cold cache. The visitors' LCP
    says compression wins, with a bootstrap interval clear of zero."""
    window, washout, wanted = 30, 3, 8
    manifest, files, fragments = performance_experiment(
        windowSeconds=window, washoutSeconds=washout, probeSeconds=1
    )
    with limited_link("256kbit") as (namespace, address):
        port = free_port(address)
        # Chromium runs inside the namespace: its only way to nginx is the slow line.
        wrapper = tmp_path / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        env = {"SMART_AGENT_LISTEN": f"{address}:{port}"}
        async with AgentHost(tmp_path, intake_url=intake.url, env=env) as host:
            host.address, host.port = address, port
            host.deploy(manifest, files, fragments)
            await host.start()

            def samples() -> dict[str, list[float]]:
                report = latest_report(intake, manifest.name) or {"variants": []}
                return {
                    v["name"]: v["realUser"]["lcpMs"] for v in report["variants"] if "realUser" in v
                }

            deadline = time.monotonic() + 420
            index = lost = 0
            async with chromium(wrapper) as browser:
                while time.monotonic() < deadline:
                    lcp = samples()
                    if all(len(lcp.get(v, [])) >= wanted for v in manifest.variant_names):
                        break
                    index += 1
                    # A beacon lost now and then (as real visitors' are) only costs a
                    # sample; most must arrive.
                    lost += not await view_page(browser, host.base_url + "/", index, leave=True)
            assert lost <= max(2, index // 5), f"{lost} of {index} page views sent no beacon"
            lcp = await eventually_async(
                lambda: (
                    s
                    if all(
                        len((s := samples()).get(v, [])) >= wanted for v in manifest.variant_names
                    )
                    else None
                ),
                within=30,
                what=f"{wanted} timed page views of each variant",
            )
            status = await host.status()
            counters = status["log"]["lines"]
            report = latest_report(intake, manifest.name)
            assert report is not None
            probe = {v["name"]: v.get("latenciesMs", []) for v in report["variants"]}
    control, compressed = lcp["control"], lcp["compressed"]
    change = bootstrap_quantile_difference(control, compressed, 0.5)
    print(
        f"real-user LCP p50: control {median(control):.0f} ms, compressed "
        f"{median(compressed):.0f} ms; change {change.value:+.0f} ms "
        f"({change.interval.low:+.0f} to {change.interval.high:+.0f}); washed out: "
        f"{counters.get('washout', 0)}; synthetic probe p50 (loopback): control "
        f"{median(probe['control']):.1f} ms, compressed {median(probe['compressed']):.1f} ms"
    )
    assert change.interval.high < 0, "compression should make the page faster on a slow line"
