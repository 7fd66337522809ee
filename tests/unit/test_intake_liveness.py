"""Agent liveness with few writes: the heartbeat writer keeps it in memory, renews
``lastSeen`` hourly, marks a silent agent itself, and the operator's and dashboard's
readings of ``status.agent`` stay right. Time is a fake clock; the API server is the
unit tests' fake one (``test_intake_app.FakeApiServer``)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from smart_dashboard.present import agent_seen
from smart_operator.domains import agent_verdict
from smart_operator.intake import peers
from smart_operator.intake.experiments import ExperimentCache
from smart_operator.intake.keys import DomainRef, KeyCache
from smart_operator.intake.schema import Heartbeat
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.status import PendingHeartbeat, rfc3339
from smart_operator.intake.writer import HeartbeatWriter
from smart_operator.models.conditions import Reason
from smart_operator.models.domain import AgentStatus
from tests.unit.test_intake_app import KEY, NS, FakeApiServer, until

START = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
REF = DomainRef(NS, "acme-example")
BEAT = Heartbeat(version="0.4.1", started_at=START - timedelta(hours=1))
SETTINGS = IntakeSettings(
    flush_interval_seconds=0, heartbeat_write_seconds=3600, silent_seconds=180
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class Liveness:
    """One intake process's heartbeat writer on the fake API server."""

    def __init__(
        self,
        api: FakeApiServer,
        clock: Clock,
        experiments: ExperimentCache,
        asked: peers.Peers | None = None,
    ) -> None:
        self.api = api
        self.keys = KeyCache()
        self.keys.apply(
            "SYNC", [copy.deepcopy(o) for (p, _, _), o in api.objects.items() if p == "domains"]
        )
        self.writer = HeartbeatWriter(api, self.keys, SETTINGS, experiments, clock, asked)
        self.clock = clock

    def beat(self) -> None:
        self.writer.offer(PendingHeartbeat(BEAT, REF, self.clock(), 0.0))

    async def settle(self) -> None:
        await until(lambda: self.writer.idle)


def agent(api: FakeApiServer) -> dict[str, Any]:
    return dict(api.status("domains", "acme-example").get("agent", {}))


def domain_writes(api: FakeApiServer) -> int:
    return sum(plural == "domains" for plural, _, _ in api.writes)


async def test_an_agent_that_keeps_beating_costs_one_write_an_hour() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    intake = Liveness(api, clock, ExperimentCache())
    for _ in range(2 * 120 + 1):  # two hours of heartbeats every 30 s
        intake.beat()
        await intake.settle()
        assert await intake.writer.sweep() == 0
        clock.advance(30)
    # The first heartbeat, then a renewal after an hour and after two.
    assert domain_writes(api) == 3
    assert agent(api)["lastSeen"] == rfc3339(START + timedelta(hours=2))
    assert agent(api)["renewSeconds"] == 3600
    status = AgentStatus.model_validate(agent(api))
    # Readers count it connected all along, though lastSeen lags up to an hour.
    almost = START + timedelta(hours=2, minutes=59)
    assert status.connected(almost, 300)
    assert agent_verdict(status, almost, 300, "https://intake")[0] == "True"
    assert agent_seen(status, almost) == "live (heartbeats within the last 4 min)"


async def test_a_silent_agent_is_marked_within_the_silent_interval_and_cleared_when_back() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    intake = Liveness(api, clock, ExperimentCache())
    intake.beat()
    await intake.settle()
    last = clock()
    clock.advance(170)
    assert await intake.writer.sweep() == 0  # 170 s without one: not yet
    clock.advance(20)
    assert await intake.writer.sweep() == 1
    await intake.settle()
    marked = agent(api)
    assert marked["lastSeen"] == rfc3339(last)
    assert marked["silentSince"] == rfc3339(clock())
    status = AgentStatus.model_validate(marked)
    # Readers believe the mark once it is 30 s old (time for another replica to clear
    # it): 220 s after the last heartbeat, within the 5 minutes promised.
    assert not status.silent(clock() + timedelta(seconds=10))
    verdict = agent_verdict(status, clock() + timedelta(seconds=30), 300, "https://intake")
    assert verdict[:2] == ("False", Reason.AGENT_SILENT)
    assert agent_seen(status, clock() + timedelta(seconds=30)).startswith("silent, last heartbeat")
    assert await intake.writer.sweep() == 0  # marked once
    writes = domain_writes(api)
    clock.advance(600)
    intake.beat()
    await intake.settle()
    assert domain_writes(api) == writes + 1
    assert "silentSince" not in agent(api) and agent(api)["lastSeen"] == rfc3339(clock())


async def test_agents_alive_on_the_status_when_the_intake_starts_are_watched_too() -> None:
    """A restart loses the memory: an agent that falls silent meanwhile is still marked,
    and a live one, whose next heartbeat comes within 30 s, is not."""
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    seen = rfc3339(START - timedelta(minutes=10))
    for name, mark in (("acme-example", None), ("quiet", None), ("gone", rfc3339(START))):
        if name != "acme-example":
            api.domain(name, f"ssk_{name}")
        obj = api.objects[("domains", NS, name)]
        obj["status"]["agent"] = {"version": "0.4.1", "lastSeen": seen, "renewSeconds": 3600}
        if mark:
            obj["status"]["agent"]["silentSince"] = mark
    api.domain("never", "ssk_never")  # no agent ever
    intake = Liveness(api, clock, ExperimentCache())
    assert await intake.writer.sweep() == 0
    clock.advance(25)
    intake.beat()  # acme-example's agent is alive
    await intake.settle()
    clock.advance(160)
    assert await intake.writer.sweep() == 1
    await intake.settle()
    marked = api.status("domains", "quiet")["agent"]
    assert marked["lastSeen"] == seen and marked["silentSince"] == rfc3339(clock())
    assert "silentSince" not in agent(api)
    assert api.status("domains", "gone")["agent"]["silentSince"] == rfc3339(START)  # untouched
    assert "agent" not in api.status("domains", "never")


async def test_with_two_replicas_a_wrong_mark_is_cleared_by_the_one_that_heard_the_agent() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    a, b = Liveness(api, clock, ExperimentCache()), Liveness(api, clock, ExperimentCache())
    a.beat()
    await a.settle()
    b.keys.put(copy.deepcopy(api.objects[("domains", NS, "acme-example")]))
    # From now on the agent's heartbeats all happen to reach b, which writes none.
    for _ in range(7):
        clock.advance(30)
        b.beat()
        await b.settle()
    assert await a.writer.sweep() == 1  # a heard nothing for 210 s
    await a.settle()
    obj = copy.deepcopy(api.objects[("domains", NS, "acme-example")])
    assert obj["status"]["agent"]["silentSince"]
    b.keys.apply("MODIFIED", [obj])
    b.writer.observe("MODIFIED", [obj])  # b's watch brings a's mark
    await b.settle()
    cleared = AgentStatus.model_validate(agent(api))
    assert cleared.silent_since is None and cleared.last_seen == clock()
    assert cleared.connected(clock() + timedelta(seconds=30), 300)


async def test_a_mark_is_left_when_another_replica_recorded_a_later_heartbeat() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    a = Liveness(api, clock, ExperimentCache())
    a.beat()
    await a.settle()
    clock.advance(100)
    later = {"agent": {"version": "0.5.0", "lastSeen": rfc3339(clock())}}
    obj = api.objects[("domains", NS, "acme-example")]
    obj["status"] = {**obj["status"], **later}
    api.put("domains", obj)  # another replica wrote the agent's upgrade
    a.keys.put(copy.deepcopy(obj))
    writes = domain_writes(api)
    clock.advance(100)
    assert await a.writer.sweep() == 0
    await a.settle()
    assert domain_writes(api) == writes and "silentSince" not in agent(api)


async def test_a_heartbeat_after_a_deploy_reaches_the_operator_at_once() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    experiments = ExperimentCache()
    intake = Liveness(api, clock, experiments)
    intake.beat()
    await intake.settle()
    deployed = clock.advance(300)
    experiments.put(
        {
            "metadata": {"name": "headline", "namespace": NS, "uid": "u1"},
            "spec": {
                "domainRef": "acme-example",
                "type": "landing_page",
                "template": "saas_landing",
                "variants": [{"name": "control"}, {"name": "bold"}],
            },
            "status": {"deployedAt": rfc3339(deployed)},
        }
    )
    assert experiments.deployed_at(NS, "acme-example") == deployed
    clock.advance(30)
    intake.beat()
    await intake.settle()
    writes = domain_writes(api)
    clock.advance(30)  # 60 s after the deploy
    intake.beat()
    await intake.settle()
    assert domain_writes(api) == writes + 1
    assert agent(api)["lastSeen"] == rfc3339(deployed + timedelta(seconds=60))


def test_an_old_lastseen_without_a_renewal_promise_is_silent_after_the_timeout() -> None:
    """An intake that stopped altogether marks nobody: readers fall back to the age of
    lastSeen, allowing for its renewal interval."""
    now = START + timedelta(hours=2)
    old = AgentStatus(version="0.4.1", last_seen=START)
    assert agent_verdict(old, now, 300, "https://intake")[:2] == ("False", Reason.AGENT_SILENT)
    renewed = old.model_copy(update={"renew_seconds": 3600})
    assert agent_verdict(renewed, START + timedelta(minutes=64), 300, "https://intake")[0] == "True"
    assert (
        agent_verdict(renewed, START + timedelta(minutes=66), 300, "https://intake")[0] == "False"
    )


async def test_a_replica_asks_the_others_before_marking_and_marks_nothing_they_hear() -> None:
    """Replica a receives none of the agent's heartbeats; b, asked over HTTP on loopback
    (``peers``: the name resolves to b's address), received them all."""
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    api.domain("quiet", "ssk_quiet")
    b = Liveness(api, clock, ExperimentCache())
    heard = web.Application()
    heard.router.add_routes([peers.route(b.writer.heard)])
    async with TestServer(heard, host="127.0.0.1") as server:
        assert server.port is not None
        asked = peers.Peers("127.0.0.1", server.port)
        a = Liveness(api, clock, ExperimentCache(), asked)
        for name in ("acme-example", "quiet"):  # a heard each once
            a.writer.offer(PendingHeartbeat(BEAT, DomainRef(NS, name), clock(), 0.0))
        await a.settle()
        for _ in range(7):  # then only b hears acme-example; nobody hears quiet
            clock.advance(30)
            b.beat()
            await b.settle()
        assert await a.writer.sweep() == 1
        await a.settle()
        assert api.status("domains", "quiet")["agent"]["silentSince"] == rfc3339(clock())
        assert "silentSince" not in agent(api)
        clock.advance(60)
        assert await a.writer.sweep() == 0  # b's heartbeat 60 s ago: not due yet
        clock.advance(150)  # b heard nothing for 210 s either: now it is silent
        assert await a.writer.sweep() == 1
        await a.settle()
        assert agent(api)["silentSince"] == rfc3339(clock())
        # lastSeen on the mark: the last heartbeat any replica received (b's).
        assert agent(api)["lastSeen"] == rfc3339(START + timedelta(seconds=210))
        await asked.close()


async def test_a_replica_that_cannot_be_asked_counts_as_having_heard_nothing() -> None:
    api, clock = FakeApiServer(), Clock()
    api.domain("acme-example", KEY)
    nobody = peers.Peers("127.0.0.1", 9)  # the discard port: refused
    a = Liveness(api, clock, ExperimentCache(), nobody)
    a.beat()
    await a.settle()
    clock.advance(190)
    assert await a.writer.sweep() == 1
    await nobody.close()


async def test_a_question_that_is_not_a_list_of_domains_is_a_400_saying_so() -> None:
    app = web.Application()
    app.router.add_routes([peers.route(lambda refs: {})])
    async with TestClient(TestServer(app)) as client:
        response = await client.post(peers.ROUTE, json={"domains": "everything"})
        assert response.status == 400
        assert "[namespace, name]" in (await response.json())["message"]
        response = await client.post(peers.ROUTE, json={"domains": [["ns", "name"]]})
        assert (response.status, await response.json()) == (200, {"heard": []})
