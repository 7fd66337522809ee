"""A pool of provider accounts end to end: the real control plane and the operator as its
own ServiceAccount, against simulators that hold several Hetzner projects and Cloudflare
accounts (each with its own token, objects, budget and server limit).

Its own control plane, simulators and operator (the session's operator has one
account): the account ``default`` (the operator's own tokens) is drained; ``alpha``
holds one server, ``beta`` two. A Customer pinned to ``alpha`` fills it; the next
Domain of another Customer goes to ``beta``; the pinned Customer's second Domain waits
rather than leave ``alpha``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import CLOUD_TOKEN, Clouds, OperatorProcess
from tests.cluster.conftest import domain
from tests.conftest import Cluster
from tests.waiting import eventually

ACCOUNTS = {"alpha": 1, "beta": 2}
"""Each further account and its server limit (in the simulator and its Secret alike)."""


def token(account: str) -> str:
    return CLOUD_TOKEN if account == "default" else f"{account}-token"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Clouds]]:
    workdir = tmp_path_factory.mktemp("accounts")
    plane = ControlPlane(workdir / "cluster")
    fast = ["--time-scale", "5"]
    hetzner = [*fast, *[a for n, q in ACCOUNTS.items() for a in ("--project", f"{token(n)}:{q}")]]
    cloudflare = [
        *fast,
        "--delegate-new-zones",
        *[a for n in ACCOUNTS for a in ("--account", f"{token(n)}:{n}-id")],
    ]
    try:
        plane.start(setup=platform.install)
        with Clouds(workdir / "clouds", hetzner, cloudflare, booted=False) as clouds:
            platform.add_provider_accounts(
                plane,
                {
                    f"provider-{name}": {
                        "hetzner-token": token(name),
                        "cloudflare-token": token(name),
                        "cloudflare-account-id": f"{name}-id",
                        "server-quota": str(quota),
                    }
                    for name, quota in ACCOUNTS.items()
                },
            )
            # The account names are the Secrets' labels (the Secret names differ).
            for name in ACCOUNTS:
                plane.kubectl(
                    "label", "secret", f"provider-{name}", "-n", platform.OPERATOR_NAMESPACE,
                    f"smartserver.ai/provider-account={name}",
                )  # fmt: skip
            kubeconfig = platform.operator_kubeconfig(plane, workdir / "operator.kubeconfig")
            env = {
                **clouds.operator_env(),
                "SMART_ACCOUNT_SECRETS": json.dumps([f"provider-{n}" for n in ACCOUNTS]),
                "SMART_DEFAULT_ACCOUNT_DRAINED": "true",
                "SMART_DRIFT_SECONDS": "2",
                "SMART_VERIFY_SECONDS": "1",
                "SMART_RESYNC_SECONDS": "2",
                "SMART_UPTIME_CHECKS": "false",
            }
            with OperatorProcess(kubeconfig, workdir / "operator", env=env):
                yield Cluster(plane), clouds
    finally:
        plane.stop()


def hetzner_servers(clouds: Clouds, account: str) -> list[dict[str, Any]]:
    """The servers of one account's project, as its own token lists them."""
    request = urllib.request.Request(f"{clouds.hetzner.url}/servers")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token(account)}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return list(json.loads(response.read())["servers"])


def zones(clouds: Clouds, account: str) -> list[str]:
    request = urllib.request.Request(f"{clouds.cloudflare.url}/zones")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token(account)}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return [z["name"] for z in json.loads(response.read())["result"]]


def customer(cluster: Cluster, name: str, **spec: Any) -> str:
    cluster.apply(
        yaml.safe_dump(
            {
                "apiVersion": "smartserver.ai/v1alpha1",
                "kind": "Customer",
                "metadata": {"name": name},
                "spec": {"email": f"{name}@example.com", "plan": "scale", **spec},
            }
        )
    )
    namespace = f"customer-{name}"
    eventually(lambda: cluster.get("namespace", namespace), 60, f"namespace {namespace}")
    return namespace


def condition(cluster: Cluster, namespace: str, name: str, type: str) -> dict[str, Any] | None:
    obj = cluster.get("domain", name, "-n", namespace) or {}
    found = obj.get("status", {}).get("conditions", [])
    return next((c for c in found if c["type"] == type), None)


def ready_server(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The Domain once its server is running, with its account recorded."""

    def check() -> dict[str, Any] | None:
        c = condition(cluster, namespace, name, "ServerReady")
        return cluster.get("domain", name, "-n", namespace) if c and c["status"] == "True" else None

    return eventually(check, 120, f"{name} ServerReady")


def test_a_full_account_sends_the_next_domain_elsewhere_and_a_pinned_customer_stays(
    pool: tuple[Cluster, Clouds],
) -> None:
    cluster, clouds = pool
    pinned = customer(cluster, "pinned", providerAccount="alpha")
    free = customer(cluster, "free")

    # The pinned Customer's first Domain fills alpha (one server).
    cluster.apply(domain("first", pinned, "first-pinned.example"))
    first = ready_server(cluster, pinned, "first")
    assert first["status"]["account"] == "alpha"
    assert first["metadata"]["labels"]["smartserver.ai/provider-account"] == "alpha"
    (server,) = hetzner_servers(clouds, "alpha")
    assert server["labels"]["smartserver.ai/uid"] == first["metadata"]["uid"]
    assert server["id"] == first["status"]["server"]["id"]
    assert zones(clouds, "alpha") == ["first-pinned.example"]

    # alpha is full: another Customer's Domain goes to beta, never to the drained
    # default account.
    cluster.apply(domain("shop", free, "shop-free.example"))
    shop = ready_server(cluster, free, "shop")
    assert shop["status"]["account"] == "beta"
    assert [s["labels"]["smartserver.ai/uid"] for s in hetzner_servers(clouds, "beta")] == [
        shop["metadata"]["uid"]
    ]
    assert zones(clouds, "beta") == ["shop-free.example"]

    # The pinned Customer's next Domain waits on its full account, though beta has room.
    cluster.apply(domain("second", pinned, "second-pinned.example"))
    waiting = eventually(
        lambda: (
            (c := condition(cluster, pinned, "second", "ServerReady"))
            and c["reason"] == "NoProviderAccount"
            and c
        ),
        60,
        "the pinned Customer's second Domain waits for its account",
    )
    assert "pinned to provider account alpha" in waiting["message"]
    assert "full (1/1 servers)" in waiting["message"]
    second = cluster.get("domain", "second", "-n", pinned) or {}
    assert "account" not in second.get("status", {})
    assert len(hetzner_servers(clouds, "alpha")) == 1
    assert len(hetzner_servers(clouds, "beta")) == 1
    assert hetzner_servers(clouds, "default") == []  # drained: nothing new there
    assert zones(clouds, "default") == []

    # Deleting a Domain removes its server from its own account.
    cluster.kubectl("delete", "domain", "shop", "-n", free, "--timeout=60s")
    assert hetzner_servers(clouds, "beta") == []
    assert zones(clouds, "beta") == []
    assert len(hetzner_servers(clouds, "alpha")) == 1
