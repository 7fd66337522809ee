"""End to end: visitors → nginx on the simulated server → the agent's private counts →
the results intake → the Experiment's status (counts, interval, chance to beat
control, decision) → the Customer's health. Nothing in between is simulated."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from smart_sim.traffic import TrafficPlan, send_traffic
from tests.cluster.conftest import World, call, experiment, wait_condition, wait_exp
from tests.conftest import Cluster
from tests.waiting import eventually


def test_traffic_reaches_the_experiment_status_exactly(
    cluster: Cluster, world: World, site: tuple[str, Path]
) -> None:
    namespace, _root = site
    domain = cluster.get("domain", "site", "-n", namespace) or {}
    # The Domain becomes Ready by the real agent's heartbeat through the intake.
    agent = wait_condition(cluster, namespace, "site", "AgentConnected", timeout=60)
    assert agent["reason"] == "Heartbeat"
    wait_condition(cluster, namespace, "site", "Ready")

    base = _deploy_and_wait_until_served(cluster, domain, experiment("flow", namespace, "site"))
    plan = TrafficPlan(
        visitors=600,
        conversion_rates={"control": 0.05, "bold": 0.15},
        host=domain["spec"]["domain"],
        goal_url="https://buy.stripe.com/test_1",
        bots=20,
        seed=7,
        ca_file=str(world.clouds.pebble.root_file),
        server_name=domain["spec"]["domain"],
    )
    truth = asyncio.run(send_traffic(base, plan))
    assert not truth.errors and not truth.uncertain
    expected = truth.counts()

    def status_counts() -> dict[str, tuple[int, int]] | None:
        status = (cluster.get("experiment", "flow", "-n", namespace) or {}).get("status", {})
        counts = {v["name"]: (v["visitors"], v["conversions"]) for v in status.get("variants", [])}
        return counts if counts == expected else None

    eventually(status_counts, 60, f"the status shows exactly {expected}")
    status = (cluster.get("experiment", "flow", "-n", namespace) or {})["status"]
    bold = next(v for v in status["variants"] if v["name"] == "bold")
    assert bold["rateLow"] < bold["rate"] < bold["rateHigh"]
    assert 0 <= bold["chanceToBeatControl"] <= 1
    assert status["decision"]["outcome"] in ("pending", "winner", "no_difference")
    assert status["decision"]["reason"]
    assert status["lastSequence"] >= 1

    customer = namespace.removeprefix("customer-")
    health = eventually(
        lambda: (
            ((cluster.get("customer", customer) or {}).get("status", {}).get("health") or {}).get(
                "experiments"
            )
            == 1
        ),
        30,
        "the customer's health counts the experiment",
    )
    assert health


def test_with_auto_promote_a_clear_winner_becomes_the_only_variant_served(
    cluster: Cluster, world: World, site: tuple[str, Path]
) -> None:
    namespace, root = site
    domain = cluster.get("domain", "site", "-n", namespace) or {}
    wait_condition(cluster, namespace, "site", "Ready")
    spec = {"autoPromote": True, "stopping": {"minVisitorsPerVariant": 100}}
    promoted = experiment("promoted", namespace, "site", **spec)
    base = _deploy_and_wait_until_served(cluster, domain, promoted)
    plan = TrafficPlan(
        visitors=400,
        conversion_rates={"control": 0.1, "bold": 0.45},
        host=domain["spec"]["domain"],
        goal_url="https://buy.stripe.com/test_1",
        seed=11,
        ca_file=str(world.clouds.pebble.root_file),
        server_name=domain["spec"]["domain"],
    )
    truth = asyncio.run(send_traffic(base, plan))
    assert not truth.errors

    def promoted() -> dict[str, Any] | None:
        status = (cluster.get("experiment", "promoted", "-n", namespace) or {}).get("status", {})
        return status if status.get("serving") == ["bold"] else None

    status = eventually(promoted, 60, "the always-valid rule concludes and bold is promoted")
    assert status["decision"]["outcome"] == "winner" and status["decision"]["winner"] == "bold"
    assert status["phase"] == "Concluded"
    deployed = wait_exp(cluster, namespace, "promoted", "Deployed")
    assert "bold won and is promoted" in deployed["message"]
    current = root / "opt/smart/experiments/promoted/current/experiment.json"
    assert json.loads(current.read_text())["serving"] == {"mode": "winner", "winner": "bold"}
    # Every visitor, new or not, now gets the winner's page.
    pages = eventually(
        lambda: (
            (p := asyncio.run(_pages(base, 20, domain["spec"]["domain"], world)))
            and all("Ship pages that sell" in t for t in p)
        ),
        30,
        "twenty visitors all see the winner",
    )
    assert pages


def test_a_replaced_servers_visitors_add_to_the_counts(
    cluster: Cluster, world: World, site: tuple[str, Path]
) -> None:
    """A server deleted behind our back is replaced; its new agent starts a new counts
    database, at sequence 1 and zero counts, and what it counts adds to what the old
    server counted: the status shows the sum, and says when the counts restarted."""
    namespace, _root = site
    domain = cluster.get("domain", "site", "-n", namespace) or {}
    name = domain["spec"]["domain"]
    wait_condition(cluster, namespace, "site", "Ready")
    base = _deploy_and_wait_until_served(cluster, domain, experiment("carry", namespace, "site"))

    def visit(base: str, visitors: int, seed: int) -> dict[str, tuple[int, int]]:
        plan = TrafficPlan(
            visitors=visitors,
            conversion_rates={"control": 0.1, "bold": 0.2},
            host=name,
            goal_url="https://buy.stripe.com/test_1",
            seed=seed,
            ca_file=str(world.clouds.pebble.root_file),
            server_name=name,
        )
        truth = asyncio.run(send_traffic(base, plan))
        assert not truth.errors and not truth.uncertain
        return truth.counts()

    def shows(expected: dict[str, tuple[int, int]]) -> dict[str, Any] | None:
        status = (cluster.get("experiment", "carry", "-n", namespace) or {}).get("status", {})
        counts = {v["name"]: (v["visitors"], v["conversions"]) for v in status.get("variants", [])}
        return status if counts == expected else None

    before = visit(base, 120, seed=3)
    eventually(lambda: shows(before), 60, f"the status shows the old server's {before}")
    uid = domain["metadata"]["uid"]
    (old,) = world.servers(uid)
    call(f"{world.clouds.hetzner.url}/servers/{old['id']}", "DELETE", token=True)
    (new,) = eventually(
        lambda: [s for s in world.servers(uid) if s["id"] != old["id"]],
        120,
        "a replacement server",
    )
    eventually(
        lambda: (
            (cluster.get("experiment", "carry", "-n", namespace) or {})
            .get("status", {})
            .get("deployedServer")
            == new["id"]
        ),
        240,
        "the experiment deployed on the new server",
    )
    replaced = f"https://{new['ipv4']}"
    eventually(
        lambda: asyncio.run(_served_securely(replaced, name, world)),
        120,
        "the new server serves the experiment over HTTPS",
    )
    after = visit(replaced, 80, seed=5)
    total = {v: (before[v][0] + after[v][0], before[v][1] + after[v][1]) for v in before}
    status = eventually(lambda: shows(total), 60, f"the status shows the sum {total}")
    assert len(status["incarnations"]) == 2
    assert status["countsRestartedAt"]


def _deploy_and_wait_until_served(
    cluster: Cluster, domain: dict[str, Any], body: dict[str, Any]
) -> str:
    """Apply an Experiment, wait until it is deployed and the host serves it over HTTPS
    (the site's names are redirected there once its certificate is in); the base URL."""
    meta = body["metadata"]
    cluster.apply(body)
    wait_exp(cluster, meta["namespace"], meta["name"], "Deployed")
    wait_condition(cluster, meta["namespace"], domain["metadata"]["name"], "CertificateReady")
    server = domain["status"]["server"]
    base = f"http://{server['ipv4']}"
    eventually(lambda: asyncio.run(_served(base)), 30, "the agent serves the new experiment")
    return f"https://{server['ipv4']}"


async def _pages(base: str, visitors: int, name: str, world: World) -> list[str]:
    """Pages over HTTPS, checked against the test CA's root for the site's name."""
    trust = ssl.create_default_context(cafile=str(world.clouds.pebble.root_file))
    async with aiohttp.ClientSession() as session:
        pages = []
        for visitor in range(visitors):
            headers = {
                "X-Forwarded-For": f"198.51.100.{visitor + 1}",
                "User-Agent": "Mozilla/5.0",
                "Host": name,
            }
            async with session.get(
                base + "/", headers=headers, ssl=trust, server_hostname=name
            ) as reply:
                pages.append(await reply.text())
        return pages


async def _served(base: str) -> bool:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(base + "/", timeout=aiohttp.ClientTimeout(total=5)) as reply:
                return reply.status == 200 and "/_smart/convert?v=" in await reply.text()
        except aiohttp.ClientError:
            return False


async def _served_securely(base: str, name: str, world: World) -> bool:
    """Whether ``base`` serves the experiment for ``name`` with a certificate the test CA
    vouches for (the new server has the site's certificate too)."""
    trust = ssl.create_default_context(cafile=str(world.clouds.pebble.root_file))
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(
                base + "/",
                headers={"Host": name},
                ssl=trust,
                server_hostname=name,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as reply:
                return reply.status == 200 and "/_smart/convert?v=" in await reply.text()
        except (aiohttp.ClientError, ssl.SSLError, TimeoutError):
            return False
