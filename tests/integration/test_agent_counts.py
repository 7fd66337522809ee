"""The agent on one simulated host: real nginx on a loopback address, the real
``smart-agent`` process, the traffic generator's exact truth and a loopback intake.

What a customer relies on: the split follows the weights, a visitor keeps their variant
for the day, and the counts equal what was sent, exactly, through a ``kill -9`` and log
rotations; no address is ever written down.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from scipy.stats import chisquare

import smart_agent
from smart_sim.bench.agent import AgentHost, IntakeRecorder, landing_experiment
from smart_sim.traffic import BROWSERS, CONVERT_LINK, TrafficPlan, send_traffic
from tests.waiting import eventually_async as eventually

GOAL = "https://buy.stripe.com/test_acme"
NAME = "homepage-headline"

pytestmark = pytest.mark.usefixtures("same_day")  # counts are per day


def files_mentioning(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "opt/smart" not in str(path):
            data = path.read_bytes()
            found += [f"{path}: {n.decode()}" for n in needles if n in data]
    return found


async def test_split_follows_weights_and_counts_equal_the_truth(
    host: AgentHost, intake: IntakeRecorder
) -> None:
    weights = {"control": 50, "outcome-headline": 30, "pricing-first": 20}
    manifest, files = landing_experiment(weights=weights, goal_url=GOAL)
    host.deploy(manifest, files)
    intake.fail_next = 3  # the first reports meet an intake that is down
    await host.start()

    plan = TrafficPlan(
        visitors=10_000,
        conversion_rates={"control": 0.05, "outcome-headline": 0.08, "pricing-first": 0.12},
        return_rate=0.2,
        asset_rate=0.2,
        bots=300,
        head_requests=100,
        prefetches=100,
        concurrency=64,
        goal_url=GOAL,
    )
    truth = await send_traffic(host.base_url, plan)

    assert truth.uncertain == 0, truth.errors[:5]
    assert not truth.bad_redirects, truth.bad_redirects[:5]
    assert truth.returns > 1500 and not truth.return_mismatches, truth.return_mismatches[:5]
    expected = truth.counts()
    assert sum(v for v, _ in expected.values()) == plan.visitors
    observed = [expected[name][0] for name in weights]
    shares = [w * plan.visitors / sum(weights.values()) for w in weights.values()]
    assert chisquare(observed, shares).pvalue > 0.001, (observed, shares)

    counted = await host.wait_counts(NAME, expected)
    assert counted == expected

    # The intake ends with the same cumulative counts, under increasing sequences.
    await eventually(
        lambda: _async(intake.latest(NAME) == expected), what="the last report has every count"
    )
    assert intake.failed == 3
    sequences = [r["sequence"] for r in intake.results if r["experiment"] == NAME]
    assert sequences == sorted(sequences)
    by_sequence: dict[int, str] = {}
    for report in intake.results:
        text = json.dumps(report["variants"], sort_keys=True)
        assert by_sequence.setdefault(report["sequence"], text) == text  # a retry is the same
    visitors = [sum(v["visitors"] for v in r["variants"]) for r in intake.results]
    assert visitors == sorted(visitors)  # cumulative: never lower
    assert intake.authorizations == {"Bearer ssk_test"}
    beat = intake.heartbeats[-1]
    assert beat["version"] == smart_agent.__version__
    assert beat["experiments"] == [{"name": NAME, "revision": "r1"}]

    status = await host.status()
    lines = status["log"]["lines"]
    assert lines["bot"] >= plan.bots and lines["method"] >= plan.head_requests
    assert lines["prefetch"] == plan.prefetches
    # Nothing on disk holds a visitor's address or user agent.
    assert files_mentioning(host.root, [b"198.18.", b"198.19.", b"Mozilla", b"Googlebot"]) == []


async def _async(value: object) -> object:
    return value


async def test_kill_and_rotation_lose_nothing_and_count_nothing_twice(
    tmp_path: Path, intake: IntakeRecorder
) -> None:
    # A small size limit makes the agent rotate the log itself, too.
    env = {"SMART_AGENT_LOG_MAX_BYTES": "400000"}
    async with AgentHost(tmp_path, intake_url=intake.url, env=env) as host:
        manifest, files = landing_experiment(goal_url=GOAL)
        host.deploy(manifest, files)
        await host.start()
        plan = TrafficPlan(
            visitors=6000,
            conversion_rates={"control": 0.1, "outcome-headline": 0.2},
            return_rate=0.3,
            concurrency=16,
            goal_url=GOAL,
        )
        traffic = asyncio.create_task(send_traffic(host.base_url, plan))

        async def counted() -> int:
            return sum(v for v, _ in (await host.counts(NAME)).values())

        await eventually(lambda: _gt(counted(), 500), what="the agent counts")
        before_kill = max(r["sequence"] for r in intake.results if r["experiment"] == NAME)
        host.kill()  # kill -9 in the middle of the stream; nginx keeps serving
        size = host.access_log.stat().st_size
        await eventually(
            lambda: _async(host.access_log.stat().st_size > size + 150_000),
            what="traffic goes on while the agent is down",
        )
        host.rotate_log("1")  # logrotate while the agent is down
        await host.start()
        host.rotate_log("2")  # and while it runs (and the agent catches up)
        truth = await traffic
        assert truth.uncertain == 0 and not truth.return_mismatches

        # A second, smaller wave of the same visitors and new ones: still exact.
        again = TrafficPlan(
            visitors=500,
            conversion_rates={"control": 0.1, "outcome-headline": 0.2},
            first_visitor=5700,
            seed=2,
            goal_url=GOAL,
        )
        truth = truth.merge(await send_traffic(host.base_url, again))
        expected = truth.counts()
        got = await host.wait_counts(NAME, expected)
        if got != expected:
            print(json.dumps(await host.status(), indent=1))
            print(truth.requests)
            print(host.log_tail())
        assert got == expected

        status = await host.status()
        assert "lost_files" not in status["log"]["lines"]
        await eventually(lambda: _async(intake.latest(NAME) == expected), what="reported")
        after = [r["sequence"] for r in intake.results if r["experiment"] == NAME]
        assert max(after) > before_kill
        by_sequence: dict[int, str] = {}
        for report in intake.results:
            text = json.dumps(report["variants"], sort_keys=True)
            assert by_sequence.setdefault(report["sequence"], text) == text
        rotated = sorted(p.name for p in host.access_log.parent.glob("access.log.*"))
        assert "access.log.1" in rotated and "access.log.2" in rotated


async def _gt(value: object, than: int) -> bool:
    return await value > than  # type: ignore[no-any-return, operator]


async def test_status_command_shows_what_the_agent_does(host: AgentHost) -> None:
    manifest, files = landing_experiment(goal_url=GOAL)
    host.deploy(manifest, files)
    await host.start()
    truth = await send_traffic(
        host.base_url,
        TrafficPlan(visitors=200, conversion_rates={"control": 0.5, "outcome-headline": 0.5}),
    )
    await host.wait_counts(NAME, truth.counts())

    shown = host.cli("status")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "running" in text and "nginx: pid" in text
    assert (
        f"serving: {NAME} revision r1 (split, counted): control 50%, outcome-headline 50%" in text
    )
    visitors, conversions = truth.counts()["control"]
    assert f"control {visitors} visitors {conversions} conversions" in text
    assert "intake: http://127.0.0.1:" in text and "count lag:" in text

    as_json = json.loads(host.cli("status", "--json").stdout)
    assert as_json["serving"]["shares"] == {"control": 50.0, "outcome-headline": 50.0}

    host.stop()
    offline = host.cli("status")
    assert offline.returncode == 3
    assert "is not running" in offline.stdout
    assert f"control {visitors} visitors {conversions} conversions" in offline.stdout


async def test_reload_serves_a_new_revision_and_a_refused_one_changes_nothing(
    host: AgentHost,
) -> None:
    import aiohttp

    async def page(address: str = "198.18.9.9") -> str:
        headers = {"X-Forwarded-For": address, "User-Agent": BROWSERS[0]}
        async with (
            aiohttp.ClientSession() as session,
            session.get(host.base_url + "/", headers=headers) as response,
        ):
            assert response.status == 200
            return await response.text()

    first, files = landing_experiment(marker="First", goal_url=GOAL)
    host.deploy(first, files)
    await host.start()
    assert "Acme First" in await page()

    second, files = landing_experiment(revision="r2", marker="Second", goal_url=GOAL)
    host.deploy(second, files)
    reloaded = host.cli("reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert "applied: homepage-headline revision r2" in reloaded.stdout
    assert "Acme Second" in await page()  # at once: reload returns once nginx serves it

    # A revision whose nginx settings nginx refuses: the old configuration keeps serving.
    third, files = landing_experiment(
        revision="r3", marker="Third", goal_url=GOAL, serving={"mode": "control"}
    )
    host.deploy(third, files, fragments={"control": "gzip maybe;\n"})
    refused = host.cli("reload")
    assert refused.returncode == 1
    assert "refused" in refused.stdout and "gzip" in refused.stdout
    assert "Acme Second" in await page()
    status = await host.status()
    assert status["serving"]["revision"] == "r2"
    assert status["nginx"]["lastApply"]["ok"] is False
    assert "REFUSED" in host.cli("status").stdout

    # A revision that breaks the layout (no index.html) is not served either.
    fourth, files = landing_experiment(revision="r4", marker="Fourth", goal_url=GOAL)
    del files["control"]["index.html"]
    host.deploy(fourth, files)
    assert host.cli("reload").returncode == 0
    assert "Acme Second" in await page()
    assert "no index.html" in (await host.status())["problems"][NAME]

    # Paused (control only): everyone sees the control and nothing is counted.
    paused, files = landing_experiment(
        revision="r5", marker="Paused", goal_url=GOAL, serving={"mode": "control"}
    )
    host.deploy(paused, files)
    assert host.cli("reload").returncode == 0
    before = await host.counts(NAME)
    truth = await send_traffic(
        host.base_url,
        TrafficPlan(visitors=300, conversion_rates={"control": 0.5}, first_visitor=5000),
    )
    assert set(truth.counts()) == {"control"}
    await eventually(
        lambda: _async_status_lines(host, "not_randomised", 300), what="the lines were read"
    )
    assert await host.counts(NAME) == before


async def _async_status_lines(host: AgentHost, reason: str, at_least: int) -> bool:
    status = await host.status()
    return bool(status["log"]["lines"].get(reason, 0) >= at_least)


async def test_bots_head_and_prefetch_are_served_but_not_counted(host: AgentHost) -> None:
    manifest, files = landing_experiment(goal_url=GOAL)
    host.deploy(manifest, files)
    await host.start()
    truth = await send_traffic(
        host.base_url,
        TrafficPlan(visitors=0, conversion_rates={}, bots=120, head_requests=40, prefetches=40),
    )
    assert truth.uncertain == 0 and truth.total_requests == 120 + 40 + 40 + 40  # 40 bot clicks
    await eventually(
        lambda: _async_status_lines(host, "prefetch", 40), what="the agent read the lines"
    )
    status = await host.status()
    assert status["log"]["lines"]["bot"] == 160
    assert status["log"]["lines"]["method"] == 40
    assert await host.counts(NAME) == {}


async def test_only_a_same_site_post_by_an_exposed_visitor_converts(host: AgentHost) -> None:
    """Conversions cannot be forged: another site's page cannot make its visitors'
    browsers convert (the browser says where a request comes from: Fetch Metadata), a
    plain link, a crawler or a prefetch (GET) reaches the goal uncounted, and a visitor
    counts a conversion only for the variant they were shown that day."""
    manifest, files = landing_experiment(goal_url=GOAL)
    host.deploy(manifest, files)
    await host.start()
    visitor = {"User-Agent": BROWSERS[0], "X-Forwarded-For": "198.18.3.3"}
    stranger = {"User-Agent": BROWSERS[1], "X-Forwarded-For": "198.18.3.4"}
    async with aiohttp.ClientSession() as session:
        async with session.get(host.base_url + "/", headers=visitor) as page:
            variant = CONVERT_LINK.search(await page.read())
        assert variant is not None
        shown = variant.group(1).decode()
        other = "b" if shown == "control" else "control"
        convert = f"{host.base_url}/_smart/convert?via=cta&v="
        answers = []
        for method, who, site, claimed in (
            ("POST", visitor, "cross-site", shown),  # another site's form
            ("GET", visitor, "same-origin", shown),  # a plain link
            ("POST", visitor, "same-origin", other),  # a variant the visitor never saw
            ("POST", stranger, "same-origin", shown),  # never shown a page
            ("POST", visitor, "same-origin", shown),  # the page's own button: counted
        ):
            headers = {**who, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"}
            async with session.request(
                method, convert + claimed, headers=headers, allow_redirects=False
            ) as reply:
                answers.append((reply.status, reply.headers.get("Location")))
    # The visitor reaches the goal every time; only the last answer is a counted one.
    assert answers == [(302, GOAL), (302, GOAL), (303, GOAL), (303, GOAL), (303, GOAL)]
    await eventually(
        lambda: _async_status_lines(host, "cross_site", 1), what="the agent read the lines"
    )
    assert (await host.status())["log"]["lines"]["method"] == 1
    counted = {shown: (1, 1)}
    assert await host.wait_counts(NAME, counted) == counted
