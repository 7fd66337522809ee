"""Chaos on one server during steady traffic: the agent is killed with SIGKILL at random
moments and started again, nginx's access log is rotated as logrotate does it (rename,
then reopen; also while the agent is down, and twice in a row), the agent rotates the
log itself past a small size, and the intake goes down, answers 503 or stores a report
and drops the answer, so reports fail and are retried.

What a customer relies on is that the counts the intake ends with are exactly what the
visitors did: the suite prints lost and double-counted visitors and conversions, per
variant summed, all of which must be 0. Real processes throughout: the real agent and
nginx on a loopback address, the traffic generator's exact truth, the loopback intake.

``make test`` runs it small (``SMART_CHAOS_TRAFFIC_KILLS``, default 3); ``make chaos``
runs it with more kills (so more rotations and intake outages, and longer traffic). The
seed is printed, so the choices (not the timing) can be replayed with
``SMART_CHAOS_SEED``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smart_sim.bench.agent import AgentHost, IntakeRecorder, landing_experiment
from smart_sim.traffic import TrafficPlan, Truth, send_traffic
from tests.integration.conftest import clear_of_midnight

KILLS = int(os.environ.get("SMART_CHAOS_TRAFFIC_KILLS", "3"))
SEED = int(os.environ.get("SMART_CHAOS_SEED", str(random.randrange(1_000_000))))  # noqa: S311
OUTAGES = max(3, KILLS)  # at least one of each kind
ROTATIONS = KILLS  # single ones while the agent runs, besides those below
DOUBLE_ROTATIONS = max(1, KILLS // 2)  # twice in a row while the agent runs

GOAL = "https://buy.stripe.com/test_acme"
NAME = "homepage-headline"
WEIGHTS = {"control": 40, "outcome-headline": 30, "pricing-first": 30}
RATES = {"control": 0.1, "outcome-headline": 0.15, "pricing-first": 0.2}
WAVE = 300  # visitors per wave of traffic
POOL = 9000  # waves cycle through these visitors, so later waves meet earlier ones again
MAX_WAVES = 2000
CHAOS_SECONDS = 10 + 8 * KILLS  # about what the chaos takes; for the midnight margin
SETTLE_SECONDS = 60.0

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120 + 20 * KILLS)]


class Chaos:
    """Kills, rotations and intake outages, each drawn from a seeded generator."""

    def __init__(self, host: AgentHost, intake: IntakeRecorder, seed: int) -> None:
        self.host = host
        self.intake = intake
        self.agent_rng = random.Random(seed)  # noqa: S311 (replayable, not secret)
        self.intake_rng = random.Random(seed + 1)  # noqa: S311
        self.kills = 0
        self.kills_while_starting = 0
        self.rotations = 0
        self.rotations_while_down = 0
        self.double_rotations = 0
        self.outages: Counter[str] = Counter()

    def check_alive(self) -> None:
        """The agent is only ever down because this test killed it."""
        process = self.host.process
        if process is None or process.poll() is not None:
            raise AssertionError(f"the agent exited on its own:\n{self.host.log_tail()}")

    async def rotate(self) -> None:
        await self.host.logrotate()
        self.rotations += 1

    async def agent_and_log(self) -> None:
        """SIGKILL and restart the agent, and rotate the log, in a shuffled order."""
        rng = self.agent_rng
        actions = ["kill"] * KILLS + ["rotate"] * ROTATIONS + ["rotate twice"] * DOUBLE_ROTATIONS
        rng.shuffle(actions)
        for action in actions:
            await asyncio.sleep(rng.uniform(0.05, 1.0))  # a random moment, bounded
            self.check_alive()
            if action == "kill":
                self.host.kill()
                self.kills += 1
                await asyncio.sleep(rng.uniform(0.1, 1.0))  # traffic goes on meanwhile
                # The first time twice in a row, then none, once or twice.
                for _ in range(2 if self.kills == 1 else rng.randint(0, 2)):
                    await self.rotate()
                    self.rotations_while_down += 1
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                if rng.random() < 0.3:  # and again while it starts (restores its files)
                    self.host.spawn()
                    await asyncio.sleep(rng.uniform(0.0, 0.5))
                    self.host.kill()
                    self.kills_while_starting += 1
                await self.host.start()
            elif action == "rotate":
                await self.rotate()
            else:
                await self.rotate()
                await self.rotate()
                self.double_rotations += 1
        self.check_alive()

    async def intake_outages(self) -> None:
        """Each outage lasts longer than the report interval, so reports fail."""
        rng = self.intake_rng
        kinds = [IntakeRecorder.OUTAGES[i % 3] for i in range(OUTAGES)]
        rng.shuffle(kinds)
        for kind in kinds:
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await self.outage(kind, rng.uniform(1.0, 2.5))

    async def outage(self, kind: str, seconds: float) -> None:
        await self.intake.outage(kind)
        self.outages[kind] += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.intake.recover()


@pytest.fixture
async def chaos_host(tmp_path: Path, intake: IntakeRecorder) -> AsyncIterator[AgentHost]:
    # The truth is per day: finish before midnight UTC changes every visitor id.
    await clear_of_midnight(CHAOS_SECONDS + SETTLE_SECONDS + 60)
    # A small size limit makes the agent rotate the log itself too, between ours.
    env = {"SMART_AGENT_LOG_MAX_BYTES": "150000"}
    async with AgentHost(tmp_path, intake_url=intake.url, env=env) as host:
        yield host


async def steady_traffic(host: AgentHost, done: asyncio.Event) -> tuple[Truth, int]:
    """Waves of visitors (exposures, returns, conversions, and requests that must not
    count) until ``done``; the exact truth of them all, and how many waves ran."""
    truth = Truth()
    wave = 0
    while not done.is_set() and wave < MAX_WAVES:
        plan = TrafficPlan(
            visitors=WAVE,
            conversion_rates=RATES,
            return_rate=0.3,
            bots=10,
            head_requests=5,
            prefetches=5,
            concurrency=8,
            seed=SEED * 1000 + wave,
            first_visitor=(wave * WAVE) % POOL,
            goal_url=GOAL,
        )
        truth = truth.merge(await send_traffic(host.base_url, plan))
        wave += 1
    return truth, wave


def differences(
    expected: dict[str, tuple[int, int]], got: dict[str, tuple[int, int]]
) -> dict[str, int]:
    """Lost and double visitors and conversions, summed over the variants."""
    found = Counter[str]()
    for variant in set(expected) | set(got):
        want = expected.get(variant, (0, 0))
        have = got.get(variant, (0, 0))
        for index, what in enumerate(("visitors", "conversions")):
            found[f"lost {what}"] += max(0, want[index] - have[index])
            found[f"double {what}"] += max(0, have[index] - want[index])
    keys = ("lost visitors", "double visitors", "lost conversions", "double conversions")
    return {key: found[key] for key in keys}


def report_problems(intake: IntakeRecorder) -> list[str]:
    """A retried sequence carries the same counts; counts never go down with sequences."""
    problems = []
    by_sequence: dict[int, str] = {}
    for _, report in intake.attempts:
        text = json.dumps(report["variants"], sort_keys=True)
        if by_sequence.setdefault(report["sequence"], text) != text:
            problems.append(f"sequence {report['sequence']} sent with other counts: {text}")
    previous: dict[str, tuple[int, int]] = {}
    for sequence in sorted(by_sequence):
        counts = {
            v["name"]: (v["visitors"], v["conversions"]) for v in json.loads(by_sequence[sequence])
        }
        for variant, (visitors, conversions) in previous.items():
            now = counts.get(variant, (0, 0))
            if now[0] < visitors or now[1] < conversions:
                problems.append(f"sequence {sequence}: {variant} went down to {now}")
        previous = counts
    return problems


async def test_agent_and_intake_kills_with_rotations_during_traffic_lose_nothing(
    chaos_host: AgentHost, intake: IntakeRecorder
) -> None:
    host = chaos_host
    started = time.monotonic()
    print(f"\ntraffic chaos seed {SEED} ({KILLS} agent kills)")
    manifest, files = landing_experiment(weights=WEIGHTS, goal_url=GOAL)
    host.deploy(manifest, files)
    await host.start()
    chaos = Chaos(host, intake, SEED)

    done = asyncio.Event()
    traffic = asyncio.create_task(steady_traffic(host, done))
    storm = [
        asyncio.create_task(chaos.agent_and_log()),
        asyncio.create_task(chaos.intake_outages()),
    ]
    try:
        await asyncio.gather(*storm)
    finally:
        done.set()
        for task in storm:
            task.cancel()
        await asyncio.gather(*storm, return_exceptions=True)
        truth, waves = await traffic  # the wave under way ends; then no more requests

    expected = truth.counts()
    assert truth.uncertain == 0, truth.errors[:5]  # nginx never went away
    assert not truth.bad_redirects and not truth.return_mismatches, (
        truth.bad_redirects[:5],
        truth.return_mismatches[:5],
    )

    # One last outage as the counts stop changing: the last report fails, and is sent
    # again under the same sequence once the intake is back.
    final = chaos.intake_rng.choice(("error", "drop"))
    await intake.outage(final)
    chaos.outages[final] += 1
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(
                outcome in ("503", "dropped") and _counts(report) == _nonzero(expected)
                for outcome, report in intake.attempts
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        await intake.recover()

    # Until the agent has reported everything: the intake holds the visitors' counts and
    # the agent has nothing left to send (or the deadline, for the failure message).
    got: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        got = _nonzero(intake.latest(NAME))
        if got == _nonzero(expected) and await _nothing_pending(host):
            break
        await asyncio.sleep(0.1)
    chaos.check_alive()

    found = differences(expected, got)
    retried = sum(1 for n in Counter(r["sequence"] for _, r in intake.attempts).values() if n > 1)
    visitors = sum(v for v, _ in expected.values())
    conversions = sum(c for _, c in expected.values())
    self_rotations = host.log_tail(10_000_000).count("rotated the access log to")
    outages = ", ".join(f"{k} {n}" for k, n in sorted(chaos.outages.items()))
    print(
        f"traffic chaos (seed {SEED}): {chaos.kills} agent kills (and "
        f"{chaos.kills_while_starting} while it started), {chaos.rotations} rotations "
        f"({chaos.rotations_while_down} while the agent was down, "
        f"{chaos.double_rotations} twice in a row while it ran; the agent rotated "
        f"{self_rotations} itself), {sum(chaos.outages.values())} intake outages ({outages}; "
        f"{intake.failed} posts answered 503, {intake.dropped} answers dropped, "
        f"{retried} sequences sent more than once); {visitors} visitors, {conversions} "
        f"conversions in {waves} waves; "
        + ", ".join(f"{key} {value}" for key, value in found.items())
        + f"; {time.monotonic() - started:.0f} s"
    )
    if any(found.values()):
        print(json.dumps(await host.status(), indent=1))
        print(sorted(p.name for p in host.access_log.parent.iterdir()))
        print(host.log_tail())
    assert not any(found.values()), (
        f"the intake holds {got}, the visitors did {_nonzero(expected)}: {found}"
    )
    assert report_problems(intake) == []
    assert retried >= 1, "no report was sent again under its sequence"
    assert chaos.kills == KILLS and chaos.rotations_while_down >= 2
    assert chaos.double_rotations >= 1 and set(chaos.outages) == set(IntakeRecorder.OUTAGES)


def _counts(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return _nonzero({v["name"]: (v["visitors"], v["conversions"]) for v in report["variants"]})


def _nonzero(counts: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: v for k, v in counts.items() if v != (0, 0)}


async def _nothing_pending(host: AgentHost) -> bool:
    status = await host.status()
    entry = next(e for e in status["experiments"] if e["name"] == NAME)
    return bool(entry["pendingSequence"] is None and entry["ackedSequence"] == entry["sequence"])
