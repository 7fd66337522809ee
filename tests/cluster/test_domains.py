"""The Domain lifecycle end to end: the real control plane, the operator, and both
provider simulators reached through the real SDKs."""

from __future__ import annotations

import time

import pytest

from tests.cluster.conftest import World, call, domain, wait_condition
from tests.conftest import Cluster, Operator
from tests.waiting import eventually


def test_domain_goes_ready_and_deleting_it_leaves_nothing(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"shop-{unique}.example"
    cluster.apply(domain("shop", namespace, fqdn))
    pending = wait_condition(cluster, namespace, "shop", "Verified", "False")
    assert pending["reason"] == "ZonePending"
    assert "nameservers" in pending["message"]

    world.activate(fqdn)
    wait_condition(cluster, namespace, "shop", "ServerReady")
    dns = wait_condition(cluster, namespace, "shop", "DNSReady")
    assert dns["reason"] == "RecordsPointAtServer"
    # The server booted Debian from the operator's cloud-init; the agent came over SSH.
    installed = wait_condition(cluster, namespace, "shop", "AgentInstalled", timeout=240)
    assert "installed" in installed["message"]

    obj = cluster.get("domain", "shop", "-n", namespace) or {}
    uid, status = obj["metadata"]["uid"], obj["status"]
    (server,) = world.servers(uid)
    assert server["user_data"].startswith("#cloud-config")
    assert server["host"]["state"] == "running" and server["host"]["cloud_init"] == "done"
    assert status["server"]["id"] == server["id"]
    assert status["server"]["ipv4"] == server["ipv4"]
    assert status["server"]["hostKeyFingerprint"].startswith("SHA256:")
    assert len(status["intakeKeyHash"]) == 64
    # The host key from the user-data (which the metadata service keeps serving) was
    # replaced by one made on the server; and no intake key ever was in the user-data.
    assert status["server"]["hostKeyRotated"] is True
    assert status["server"]["hostPublicKey"].split()[1] not in server["user_data"]
    assert "AGENT_KEY" not in server["user_data"]
    (firewall,) = world.firewalls(uid)
    ports = {r["port"]: r["source_ips"] for r in firewall["rules"]}
    assert ports["22"] == [f"{world.clouds.gateway}/32"]
    assert "0.0.0.0/0" in ports["80"]

    zone = world.zone(fqdn)
    assert zone is not None and zone["plan"]["legacy_id"] == "free"
    # Free zones take no tags: the records are marked as ours in their comments.
    ours = {
        (r["type"], r["name"]): r["content"]
        for r in world.records(zone["id"])
        if (r["comment"] or "").startswith("smartserver:") and uid in r["comment"]
    }
    assert ours[("A", fqdn)] == server["ipv4"]
    assert ours[("A", f"www.{fqdn}")] == server["ipv4"]
    assert ("AAAA", fqdn) in ours

    # Ready comes with the heartbeat of the agent the server's cloud-init started.
    agent = wait_condition(cluster, namespace, "shop", "AgentConnected")
    assert agent["reason"] == "Heartbeat"
    wait_condition(cluster, namespace, "shop", "Ready")
    table = cluster.kubectl("get", "domains", "-n", namespace)
    assert "Ready" in table and server["ipv4"] in table

    # The customer's health and cost follow: one active domain, its server's price
    # (cx23 in fsn1 from the provider's pricing, in dollars) against the plan's $299.
    customer = namespace.removeprefix("customer-")
    status = eventually(
        lambda: (
            (s := (cluster.get("customer", customer) or {}).get("status", {}))
            .get("health", {})
            .get("activeDomains")
            == 1
            and s
        ),
        30,
        "the customer's health counts the Ready domain",
    )
    pricing = call(f"{world.clouds.hetzner.url}/server_types?name=cx23", token=True)
    (fsn1,) = [p for p in pricing["server_types"][0]["prices"] if p["location"] == "fsn1"]
    monthly = float(fsn1["price_monthly"]["gross"]) * 1.08
    assert status["cost"]["infrastructure"] == pytest.approx(monthly, abs=0.01)
    assert status["cost"]["planPrice"] == 299
    assert status["cost"]["margin"] == pytest.approx((299 - monthly) / 299, abs=1e-3)

    cluster.kubectl("delete", "domain", "shop", "-n", namespace, "--timeout=60s")
    assert world.servers(uid) == []
    assert world.firewalls(uid) == []
    assert world.zone(fqdn) is None


def test_a_subdomain_lives_in_its_parents_zone(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    parent = f"parent-{unique}.example"
    zone = world.add_active_zone(parent, namespace)
    cluster.apply(domain("promo", namespace, f"promo.{parent}"))
    wait_condition(cluster, namespace, "promo", "DNSReady")
    names = {r["name"] for r in world.records(zone["id"])}
    assert {f"promo.{parent}", f"www.promo.{parent}"} <= names
    assert world.zone(f"promo.{parent}") is None  # never a zone of its own
    cluster.kubectl("delete", "domain", "promo", "-n", namespace, "--timeout=60s")
    assert world.zone(parent) is not None  # not ours to delete


def test_a_lost_create_response_still_gives_one_server(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"lost-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    world.fault("hetzner", kind="lost_response", method="POST", path="/v1/servers", count=1)
    cluster.apply(domain("lost", namespace, fqdn))
    wait_condition(cluster, namespace, "lost", "DNSReady")
    uid = (cluster.get("domain", "lost", "-n", namespace) or {})["metadata"]["uid"]
    assert len(world.servers(uid)) == 1


def test_killing_the_operator_during_creation_leaves_one_server_each(
    cluster: Cluster, world: World, operator: Operator, namespace: str, unique: str
) -> None:
    names = [f"k{i}" for i in range(4)]
    for name in names:
        world.add_active_zone(f"{name}-{unique}.example", namespace)
        cluster.apply(domain(name, namespace, f"{name}-{unique}.example"))

    def ours() -> int:
        return sum(1 for s in world.servers() if s["name"].startswith(f"ss-{namespace}-k"))

    for kills in range(1, 4):
        # Kill right after the next server appears: each time at a different stage.
        eventually(lambda k=kills: ours() >= min(k, len(names)), 60, f"{kills} servers")
        operator.restart()
    for name in names:
        wait_condition(cluster, namespace, name, "DNSReady", timeout=90)
    for name in names:
        uid = (cluster.get("domain", name, "-n", namespace) or {})["metadata"]["uid"]
        assert len(world.servers(uid)) == 1, name
        assert len(world.firewalls(uid)) == 1, name


def test_a_record_that_is_not_ours_is_left_untouched_and_reported(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"taken-{unique}.example"
    zone = world.add_active_zone(fqdn, namespace)
    foreign = call(
        f"{world.clouds.cloudflare.url}/zones/{zone['id']}/dns_records",
        "POST",
        {"type": "A", "name": f"www.{fqdn}", "content": "198.51.100.7", "ttl": 300},
        token=True,
    )["result"]
    cluster.apply(domain("taken", namespace, fqdn))
    conflict = wait_condition(cluster, namespace, "taken", "DNSReady", "False")
    assert conflict["reason"] == "RecordConflict"
    assert f"www.{fqdn}" in conflict["message"] and "spec.dns.www" in conflict["message"]
    after = [r for r in world.records(zone["id"]) if r["id"] == foreign["id"]]
    assert after and after[0]["content"] == "198.51.100.7" and after[0]["tags"] == []


def test_a_server_deleted_behind_our_back_is_replaced(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"drift-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    cluster.apply(domain("drift", namespace, fqdn))
    wait_condition(cluster, namespace, "drift", "DNSReady")
    wait_condition(cluster, namespace, "drift", "AgentInstalled", timeout=240)
    uid = (cluster.get("domain", "drift", "-n", namespace) or {})["metadata"]["uid"]
    (old,) = world.servers(uid)
    call(f"{world.clouds.hetzner.url}/servers/{old['id']}", "DELETE", token=True)
    new = eventually(
        lambda: [s for s in world.servers(uid) if s["id"] != old["id"]],
        120,
        "a replacement server",
    )
    assert len(new) == 1
    eventually(
        lambda: (
            (cluster.get("domain", "drift", "-n", namespace) or {})["status"]["server"]["id"]
            == new[0]["id"]
        ),
        60,
        "status names the new server",
    )
    zone = world.zone(fqdn)
    assert zone is not None
    eventually(
        lambda: any(
            r["content"] == new[0]["ipv4"] and r["name"] == fqdn for r in world.records(zone["id"])
        ),
        60,
        "the apex record follows the new server",
    )


@pytest.mark.parametrize(
    ("server", "field", "hint"),
    [
        ({"type": "cx999"}, "spec.server.type", "cx23"),
        ({"type": "cx22"}, "spec.server.type", "cannot be ordered"),
        ({"type": "cax11", "location": "ash"}, "spec.server.location", "fsn1"),
    ],
)
def test_an_unknown_server_shape_names_the_field_and_the_choices(
    cluster: Cluster,
    world: World,
    namespace: str,
    unique: str,
    server: dict[str, str],
    field: str,
    hint: str,
) -> None:
    name = f"bad-{server['type']}"
    cluster.apply(domain(name, namespace, f"{name}-{unique}.example", server=server))
    invalid = wait_condition(cluster, namespace, name, "ServerReady", "False")
    assert invalid["reason"] == "InvalidSpec"
    assert field in invalid["message"] and hint in invalid["message"]
    assert (cluster.get("domain", name, "-n", namespace) or {})["status"]["phase"] == "Failed"


def test_cloud_objects_that_no_domain_owns_are_swept(
    cluster: Cluster, world: World, operator: Operator, unique: str
) -> None:
    hetzner = world.clouds.hetzner.url

    def server(name: str, labels: dict[str, str]) -> int:
        body = {
            "name": name,
            "server_type": "cx23",
            "image": "ubuntu-24.04",
            "location": "fsn1",
            "labels": labels,
        }
        return int(call(f"{hetzner}/servers", "POST", body, token=True)["server"]["id"])

    installation = world.installation()
    managed = {"smartserver.ai/managed": "true", "smartserver.ai/uid": f"gone-{unique}"}
    orphan = server(f"orphan-{unique}", {**managed, "smartserver.ai/installation": installation})
    foreign = server(f"foreign-{unique}", {"team": "web"})
    # Another installation sharing the account: its Domains are unknown here, and its
    # servers are not this installation's to sweep.
    neighbour = server(
        f"neighbour-{unique}", {**managed, "smartserver.ai/installation": "someone-else"}
    )
    zone = world.add_active_zone(f"sweep-{unique}.example")  # no Domain: unclaimed
    records = f"{world.clouds.cloudflare.url}/zones/{zone['id']}/dns_records"
    leftover = {"type": "A", "name": f"sweep-{unique}.example", "content": "192.0.2.1", "ttl": 300}
    marker = f"smartserver:{installation}:gone-{unique}"
    call(records, "POST", {**leftover, "comment": marker}, token=True)
    call(records, "POST", {**leftover, "name": f"www.sweep-{unique}.example"}, token=True)

    eventually(lambda: not [s for s in world.servers() if s["id"] == orphan], 30, "orphan swept")
    eventually(
        lambda: [r["name"] for r in world.records(zone["id"])] == [f"www.sweep-{unique}.example"],
        30,
        "only the untagged record is left",
    )
    assert [s for s in world.servers() if s["id"] in (foreign, neighbour)]


def test_under_a_429_storm_the_operator_waits_for_the_reset_and_converges(
    cluster: Cluster, world: World, operator: Operator, namespace: str, unique: str
) -> None:
    storm = 16
    throttled = {"provider": "hetzner", "outcome": "rate_limit_exceeded"}

    def refused() -> float:
        return sum(
            operator.metric("smartserver_provider_calls_total", verb=verb, **throttled)
            for verb in (
                "list_servers",
                "list_firewalls",
                "create_server",
                "create_firewall",
                "list_server_types",
                "get_server",
                "list_actions",
                "get_ssh_key",
            )
        )

    refused_before = refused()
    fqdn = f"storm-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    world.fault("hetzner", kind="rate_limit", path="/v1/*", count=storm)
    started = time.monotonic()
    cluster.apply(domain("storm", namespace, fqdn))
    wait_condition(cluster, namespace, "storm", "DNSReady", timeout=120)
    elapsed = time.monotonic() - started

    # Every injected 429 was seen once: no request was thrown at a closed door.
    assert refused() - refused_before == storm
    # After a 429 nothing that met it asks Hetzner again before the reset (at least a
    # second): the Domain's daemon sleeps, the budget holds back the others, and the
    # background loops back off. With at most four of them meeting the storm at once,
    # 16 refusals take at least 4 s; a hot loop would burn through them in well under
    # one. (A lower bound: a slow machine only makes this longer.)
    assert elapsed >= storm / 4, elapsed


def test_a_paused_domain_gets_nothing_until_resumed(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"paused-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    cluster.apply(domain("paused", namespace, fqdn, paused=True))
    paused = wait_condition(cluster, namespace, "paused", "Paused")
    assert "spec.paused" in paused["message"]
    uid = (cluster.get("domain", "paused", "-n", namespace) or {})["metadata"]["uid"]
    assert world.servers(uid) == []
    cluster.kubectl(
        "patch",
        "domain",
        "paused",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"paused":false}}',
    )
    wait_condition(cluster, namespace, "paused", "DNSReady")
    assert len(world.servers(uid)) == 1


def test_a_changed_record_of_ours_is_put_back(
    cluster: Cluster, world: World, namespace: str, unique: str
) -> None:
    fqdn = f"edited-{unique}.example"
    zone = world.add_active_zone(fqdn, namespace)
    cluster.apply(domain("edited", namespace, fqdn, dns={"www": False}))
    # Records are checked again on a steady Domain: one whose agent is installed (the
    # pass that installs it can take minutes on a busy machine).
    wait_condition(cluster, namespace, "edited", "AgentInstalled", timeout=240)
    uid = (cluster.get("domain", "edited", "-n", namespace) or {})["metadata"]["uid"]
    (server,) = world.servers(uid)
    (apex,) = [r for r in world.records(zone["id"]) if r["type"] == "A"]
    call(
        f"{world.clouds.cloudflare.url}/zones/{zone['id']}/dns_records/{apex['id']}",
        "PATCH",
        {"content": "203.0.113.66"},
        token=True,
    )
    eventually(
        lambda: (
            [r["content"] for r in world.records(zone["id"]) if r["type"] == "A"]
            == [server["ipv4"]]
        ),
        60,
        "the apex record points at the server again",
    )
