"""Helpers and fixtures of the cluster tier: the provider simulators as a test sees them,
a customer namespace per test, and Domain conditions."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from smart_sim.processes import CLOUD_TOKEN, Clouds
from tests.conftest import Cluster, Operator
from tests.waiting import eventually


def call(url: str, method: str = "GET", body: Any = None, token: bool = False) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {CLOUD_TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read()
    return json.loads(text) if text else None


class World:
    """What the simulators hold, as a test sees it."""

    def __init__(self, clouds: Clouds, cluster: Cluster) -> None:
        self.clouds = clouds
        self.cluster = cluster

    def servers(self, uid: str | None = None) -> list[dict[str, Any]]:
        servers = call(f"{self.clouds.hetzner.root_url}/_sim/servers")["servers"]
        return [s for s in servers if uid is None or s["labels"].get("smartserver.ai/uid") == uid]

    def firewalls(self, uid: str) -> list[dict[str, Any]]:
        url = f"{self.clouds.hetzner.url}/firewalls?label_selector=smartserver.ai/uid={uid}"
        return list(call(url, token=True)["firewalls"])

    def zone(self, name: str) -> dict[str, Any] | None:
        zones = call(f"{self.clouds.cloudflare.url}/zones?name={name}", token=True)["result"]
        return zones[0] if zones else None

    def records(self, zone_id: str) -> list[dict[str, Any]]:
        url = f"{self.clouds.cloudflare.url}/zones/{zone_id}/dns_records?per_page=100"
        return list(call(url, token=True)["result"])

    def add_active_zone(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """A zone already in the platform's account (staff added it); with ``namespace``,
        it belongs to that namespace's customer (its owner record says so)."""
        call(f"{self.clouds.cloudflare.root_url}/_sim/zones", "POST", {"name": name})
        zone = self.zone(name)
        assert zone is not None
        if namespace is not None:
            customer = self.cluster.get("customer", namespace.removeprefix("customer-")) or {}
            owner = f"smartserver-owner={self.installation()}/{customer['metadata']['uid']}"
            record = {
                "type": "TXT",
                "name": f"_smartserver-owner.{name}",
                "content": owner,
                "ttl": 3600,
            }
            call(
                f"{self.clouds.cloudflare.url}/zones/{zone['id']}/dns_records", "POST", record, True
            )
        return zone

    def installation(self) -> str:
        """The operator's installation id (on its cloud objects and records)."""
        secret = self.cluster.get("secret", "smart-operator-keys", "-n", "smartserver-system")
        return base64.b64decode((secret or {})["data"]["installation"]).decode()

    def activate(self, name: str) -> None:
        call(f"{self.clouds.cloudflare.root_url}/_sim/zones/{name}/activate", "POST", {})

    def fault(self, simulator: str, **fault: Any) -> None:
        root = getattr(self.clouds, simulator).root_url
        call(f"{root}/_sim/faults", "POST", fault)


@pytest.fixture
def world(clouds: Clouds, cluster: Cluster) -> World:
    return World(clouds, cluster)


@pytest.fixture
def namespace(cluster: Cluster, operator: Operator, unique: str) -> Iterator[str]:
    """A customer on the scale plan; its namespace holds the test's Domains. It is
    deleted after the test (without waiting), so its booted servers go away while the
    next test runs: each holds inotify instances, of which a machine has 128 by default."""
    name = f"dom-{unique}"
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": name},
            "spec": {"email": f"x@{name}.example", "plan": "scale"},
        }
    )
    eventually(
        lambda: (c := cluster.condition("customer", name, "Ready")) and c["status"] == "True",
        what="customer Ready",
    )
    try:
        yield f"customer-{name}"
    finally:
        cluster.try_kubectl("delete", "customer", name, "--wait=false")


def domain(name: str, namespace: str, fqdn: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"domain": fqdn, **spec},
    }


def _condition(cluster: Cluster, namespace: str, name: str, type: str) -> dict[str, Any] | None:
    obj = cluster.get("domain", name, "-n", namespace) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type), None)


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    type: str,
    status: str = "True",
    timeout: float = 60,
) -> dict[str, Any]:
    return _wait(
        lambda: _condition(cluster, namespace, name, type), status, "", timeout, f"{name} {type}"
    )


def experiment(name: str, namespace: str, domain_ref: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "domainRef": domain_ref,
        "type": "landing_page",
        "template": "saas_landing",
        "templateConfig": {"brand": "Acme", "stripeLink": "https://buy.stripe.com/test_1"},
        "variants": [
            {"name": "control", "weight": 50},
            {"name": "bold", "weight": 50, "values": {"headline": "Ship pages that sell"}},
        ],
    }
    spec.update(changes)
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def exp_condition(cluster: Cluster, namespace: str, name: str, type: str) -> dict[str, Any] | None:
    obj = cluster.get("experiment", name, "-n", namespace) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type), None)


def wait_exp(
    cluster: Cluster, namespace: str, name: str, type: str, status: str = "True", reason: str = ""
) -> dict[str, Any]:
    return _wait(
        lambda: exp_condition(cluster, namespace, name, type),
        status,
        reason,
        60,
        f"Experiment {name} {type}={status} {reason}",
    )


def _wait(read: Any, status: str, reason: str, timeout: float, what: str) -> dict[str, Any]:
    """Wait for a condition; a failure shows the condition as it last was."""
    seen: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        condition = seen[0] = read()
        if (
            condition
            and condition["status"] == status
            and (not reason or condition["reason"] == reason)
        ):
            return dict(condition)
        return None

    try:
        return eventually(check, timeout, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; the condition was: {seen[0]}") from None


def host_root(clouds: Clouds, server_name: str) -> Path:
    """The booted server's root file system, as the host sees its overlay."""
    return clouds.server_root(server_name)


@pytest.fixture
def site(cluster: Cluster, world: World, namespace: str, unique: str) -> tuple[str, Path]:
    """A Domain with a running server and its agent; returns its namespace and the
    server's root file system."""
    fqdn = f"exp-{unique}.example"
    world.add_active_zone(fqdn, namespace)
    cluster.apply(domain("site", namespace, fqdn))
    wait_condition(cluster, namespace, "site", "DNSReady")
    wait_condition(cluster, namespace, "site", "AgentInstalled", timeout=240)
    server = (cluster.get("domain", "site", "-n", namespace) or {})["status"]["server"]["name"]
    return namespace, host_root(world.clouds, server)


def heartbeat(cluster: Cluster, namespace: str, name: str) -> None:
    """What the intake writes when a server's agent reports in (for Domains whose
    server runs no agent the test controls)."""
    status = {"agent": {"version": "test", "lastSeen": datetime.now(UTC).isoformat()}}
    cluster.kubectl(
        "patch",
        "domain",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
