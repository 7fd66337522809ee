"""The agent's time-driven behaviour, run in-process with a shifted clock over real nginx:
the daily salt changes at midnight UTC (and yesterday's is forgotten), and a
performance experiment serves one variant's nginx settings per time window while the
probe measures each."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smart_agent.agent import Agent
from smart_agent.deploy import ExperimentManifest, install_revision
from smart_agent.nginx import Nginx
from smart_agent.settings import AgentSettings
from smart_sim.bench.agent import IntakeRecorder, free_port, landing_experiment, loopback_address
from smart_sim.traffic import BROWSERS


class ShiftedClock:
    """The agent's clock, stopped at a time the test sets (only the day and the time
    window depend on it; timeouts and intervals use the real monotonic clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def set(self, when: float) -> None:
        self.now = when


async def until(check: Callable[[], Awaitable[Any]], within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within} s: {what}; last value: {last!r}")


@pytest.fixture
def settings(tmp_path: Path, intake: IntakeRecorder) -> AgentSettings:
    address = loopback_address()
    return AgentSettings(
        root=tmp_path / "root",
        listen=f"{address}:{free_port(address)}",
        real_ip_from=["127.0.0.0/8"],
        intake_url=intake.url,
        stop_nginx_on_exit=True,
        poll_seconds=0.05,
        report_seconds=0.3,
        deploy_poll_seconds=0.3,
        heartbeat_seconds=1,
    )


@contextlib.asynccontextmanager
async def running(settings: AgentSettings, clock: ShiftedClock) -> AsyncIterator[Agent]:
    try:
        async with Agent.open(settings, clock=clock) as agent:
            assert agent.serving.config is not None, agent.serving.last_apply
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                yield agent
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 20)
    finally:
        Nginx(settings).stop()


async def _async(value: object) -> object:
    return value


async def fetch(
    settings: AgentSettings, address: str, path: str = "/", **headers: str
) -> aiohttp.ClientResponse:
    url = f"http://{settings.listen_host}:{settings.listen_port}{path}"
    sent = {"X-Forwarded-For": address, "User-Agent": BROWSERS[1], **headers}
    async with aiohttp.ClientSession() as session, session.get(url, headers=sent) as response:
        await response.read()
        return response


def visitor_counts(agent: Agent, name: str) -> dict[str, tuple[int, int]]:
    return {v: (c.visitors, c.conversions) for v, c in agent.store.totals(name).items()}


def logged_visits(settings: AgentSettings) -> list[tuple[str, str]]:
    """(salt day, visitor id) of every page view in the log files on disk."""
    visits = []
    for path in sorted(settings.access_log.parent.glob(settings.access_log.name + "*")):
        for line in path.read_text().splitlines():
            if '"u":"/' in line:
                visits.append((line.split('"d":"')[1][:10], line.split('"id":"')[1][:16]))
    return visits


async def test_the_salt_changes_at_midnight_and_yesterdays_ids_are_forgotten(
    settings: AgentSettings,
) -> None:
    settings = settings.model_copy(update={"rotation_grace_seconds": 0.3})
    clock = ShiftedClock()
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    clock.set(midnight.timestamp() - 5)  # 23:59:55 UTC
    manifest, files = landing_experiment()
    install_revision(settings.experiments_dir, manifest, files)
    async with running(settings, clock) as agent:
        assert agent.serving.plan is not None
        yesterday = agent.serving.plan.day
        await fetch(settings, "198.18.7.7")
        await until(
            lambda: _async(sum(v for v, _ in visitor_counts(agent, manifest.name).values()) == 1)
        )
        [(day, yesterdays_id)] = logged_visits(settings)
        assert day == yesterday

        clock.set(midnight.timestamp() + 1)  # 00:00:01: a new day, a new salt
        today = midnight.date().isoformat()
        await until(
            lambda: _async(agent.serving.plan and agent.serving.plan.day == today), what="new salt"
        )
        # The log holding yesterday's visitor ids is rotated at midnight and deleted
        # once read: they are no longer on disk (as the store forgets them a day later).
        await until(
            lambda: _async(
                not logged_visits(settings)
                and [p.name for p in settings.access_log.parent.glob("access.log*")]
                == ["access.log"]
            ),
            what="yesterday's log rotated and removed",
        )

        async def next_day_visit() -> bool:
            # The same visitor, the next day. Asked again until counted: for a moment
            # after the reload, a worker of the old configuration may still answer (with
            # yesterday's salt, so that visit is yesterday's again and changes nothing).
            await fetch(settings, "198.18.7.7")
            return sum(v for v, _ in visitor_counts(agent, manifest.name).values()) == 2

        await until(next_day_visit, what="a visitor-day per day")
        todays_ids = {id for day, id in logged_visits(settings) if day == today}
        assert len(todays_ids) == 1 and yesterdays_id not in todays_ids  # unlinkable
        with sqlite3.connect(settings.db_path) as db:
            salts = [row[0] for row in db.execute("SELECT day FROM salts")]
        assert salts == [today]  # yesterday's salt is gone once today's is live


async def test_performance_windows_alternate_settings_and_the_probe_measures_each(
    settings: AgentSettings, intake: IntakeRecorder
) -> None:
    from smart_operator.models.experiment import ExperimentSpec
    from smart_operator.templates.catalog import TemplateName, builtin
    from smart_operator.templates.render import goal_for, render_experiment

    spec = ExperimentSpec.model_validate(
        {
            "domainRef": "acme-example",
            "type": "performance",
            "template": "nginx_optimization",
            "goal": {"metric": "p95_latency"},
            "variants": [
                {"name": "control", "weight": 50, "values": {"gzip": "off"}},
                {"name": "compressed", "weight": 50, "values": {"gzip": "on"}},
            ],
        }
    )
    rendered = render_experiment(spec, builtin(TemplateName.NGINX_OPTIMIZATION))
    window = 3600
    manifest = ExperimentManifest.model_validate(
        {
            "name": "nginx-tuning",
            "type": "performance",
            "revision": "p1",
            "variants": [{"name": v.name, "weight": v.weight} for v in spec.variants],
            "performance": {
                "windowSeconds": window,
                "probePaths": list(
                    goal_for(spec, builtin(TemplateName.NGINX_OPTIMIZATION)).probe_paths
                ),
                "probeSeconds": 0.1,
            },
        }
    )
    fragments = {name: r.nginx_conf or "" for name, r in rendered.items()}
    install_revision(
        settings.experiments_dir,
        manifest,
        {name: dict(r.files) for name, r in rendered.items()},
        fragments,
    )
    clock = ShiftedClock()
    start = (time.time() // (2 * window) + 10) * 2 * window  # a window of the control
    clock.set(start + 1)
    async with running(settings, clock) as agent:
        assert agent.serving.plan is not None and agent.serving.plan.active_variant == "control"
        response = await fetch(settings, "198.18.1.1", **{"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in response.headers

        await until(
            lambda: _async(len(agent.store.latencies("nginx-tuning").get("control", [])) >= 3),
            what="the probe measures the control",
        )
        clock.set(start + window + 1)  # the next window serves the other variant
        await until(
            lambda: _async(
                agent.serving.plan and agent.serving.plan.active_variant == "compressed"
            ),
            what="the window switch",
        )
        response = await fetch(settings, "198.18.1.1", **{"Accept-Encoding": "gzip"})
        assert response.headers.get("Content-Encoding") == "gzip"
        await until(
            lambda: _async(len(agent.store.latencies("nginx-tuning").get("compressed", [])) >= 3),
            what="the probe measures the variant",
        )

        # Visitors count for the window's variant; the probe (a bot) never counts.
        assert visitor_counts(agent, "nginx-tuning") in (
            {"control": (1, 0), "compressed": (1, 0)},
            {"control": (1, 0)},
        )

        def reported() -> dict[str, Any]:
            reports = [r for r in intake.results if r["experiment"] == "nginx-tuning"]
            return reports[-1] if reports else {}

        async def both_sampled() -> bool:
            variants = reported().get("variants", [])
            return all(len(v.get("latenciesMs", [])) >= 3 for v in variants) and len(variants) == 2

        await until(both_sampled, what="reports carry latency samples for both variants")
