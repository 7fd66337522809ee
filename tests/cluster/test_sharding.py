"""Sharding on a real API server: two operator processes, one per shard, each
reconciling only the Customers and Domains of its shard, each through its own peering
object and finalizer; and a change of the shard count (one shard, then two) leaving no
finalizer that nobody removes, so deletions complete.

On a control plane of its own: an operator of another shard count on the session's
control plane would take the other tests' objects (every replica watches the whole
cluster and picks its shard's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smart_operator import shards
from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import OperatorProcess, ProcessError
from tests.conftest import Cluster
from tests.waiting import eventually

SHARDS = 2
FINALIZER = "smartserver.ai/finalizer"


def customers_of(shard: int, count: int) -> list[str]:
    """Customer names whose namespaces fall in ``shard`` of ``SHARDS``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"shard-test-{i}"
        if shards.shard_of(f"customer-{name}", SHARDS) == shard:
            found.append(name)
        i += 1
    return found


OWN = {shard: customers_of(shard, 2) for shard in range(SHARDS)}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("sharding")
    control = ControlPlane(workdir / "cluster")
    try:
        control.start(setup=platform.install)
        yield Cluster(control)
    finally:
        control.stop()


def operator(plane: Cluster, workdir: Path, shard: int, count: int) -> OperatorProcess:
    """An operator of ``shard`` out of ``count``, without cloud credentials: each
    Domain it reconciles says ``OperatorNotConfigured``."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = platform.operator_kubeconfig(plane.plane, workdir / "operator.kubeconfig")
    return OperatorProcess(
        kubeconfig,
        workdir,
        name=f"operator-{shard}-of-{count}",
        env={
            "SMART_SHARDS": str(count),
            "SMART_SHARD": str(shard),
            "SMART_DRIFT_SECONDS": "2",
            "SMART_RESYNC_SECONDS": "2",
            "SMART_UPTIME_CHECKS": "false",
        },
    )


def domain(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "site", "namespace": f"customer-{name}"},
        "spec": {"domain": f"{name}.example"},
    }


def metric_sum(process: OperatorProcess, name: str, **labels: str) -> float:
    import urllib.request

    with urllib.request.urlopen(process.metrics_url, timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def finalizers(plane: Cluster, *args: str) -> list[str] | None:
    found = plane.get(*args)
    return None if found is None else list(found["metadata"].get("finalizers") or [])


def not_configured(plane: Cluster, namespace: str) -> bool:
    found = plane.get("domain", "site", "-n", namespace)
    conditions = (found or {}).get("status", {}).get("conditions", [])
    return any(c.get("reason") == "OperatorNotConfigured" for c in conditions)


def test_each_shard_reconciles_only_its_own_and_a_new_count_orphans_nothing(
    plane: Cluster, tmp_path: Path
) -> None:
    everyone = [name for names in OWN.values() for name in names]
    # First one shard (as before sharding): its finalizer on everything.
    with operator(plane, tmp_path / "single", 0, 1):
        for name in everyone:
            plane.apply(
                {
                    "apiVersion": "smartserver.ai/v1alpha1",
                    "kind": "Customer",
                    "metadata": {"name": name},
                    "spec": {"email": f"{name}@example.com", "plan": "starter"},
                }
            )
        for name in everyone:
            eventually(
                lambda name=name: plane.get("namespace", f"customer-{name}"),
                timeout=60,
                what=f"namespace customer-{name}",
            )
            plane.apply(domain(name))
        for name in everyone:
            eventually(
                lambda name=name: (
                    finalizers(plane, "domain", "site", "-n", f"customer-{name}") == [FINALIZER]
                ),
                timeout=60,
                what=f"the single shard's finalizer on customer-{name}/site",
            )

    # Then two shards: each takes its own Customers' and Domains' over.
    with (
        operator(plane, tmp_path / "shard-0", 0, SHARDS) as first,
        operator(plane, tmp_path / "shard-1", 1, SHARDS) as second,
    ):
        processes = {0: first, 1: second}
        for shard, names in OWN.items():
            own = shards.finalizer(shard, SHARDS)
            for name in names:
                for kind, args in (
                    ("Customer", ("customer", name)),
                    ("Domain", ("domain", "site", "-n", f"customer-{name}")),
                ):
                    eventually(
                        lambda args=args, own=own: finalizers(plane, *args) == [own],
                        timeout=60,
                        what=f"{kind} {name}: only shard {shard}'s finalizer {own}",
                    )
        # Each process reconciles the Domains of its shard, and only those.
        for name in everyone:
            plane.kubectl(
                "patch",
                "domain",
                "site",
                "-n",
                f"customer-{name}",
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"conditions": []}}),
            )
        for name in everyone:
            eventually(
                lambda name=name: not_configured(plane, f"customer-{name}"),
                timeout=60,
                what=f"customer-{name}/site reconciled again",
            )
        for shard, process in processes.items():
            census = eventually(
                lambda process=process: metric_sum(process, "smartserver_domains") or None,
                timeout=30,
                what=f"shard {shard}'s census of its Domains",
            )
            assert census == len(OWN[shard]), f"shard {shard} reconciles {census} Domains"
            peering = eventually(
                lambda shard=shard: (
                    plane.get(
                        "clusterkopfpeering", shards.peering_name("smart-operator", shard, SHARDS)
                    )
                    or {}
                ).get("status"),
                timeout=30,
                what=f"shard {shard}'s peering object",
            )
            assert list(peering) == [f"operator-{shard}-of-{SHARDS}@localhost"]

        # Deletions complete: no finalizer of the old count is left behind.
        for name in everyone:
            plane.kubectl("delete", "domain", "site", "-n", f"customer-{name}", "--wait=false")
        for name in everyone:
            eventually(
                lambda name=name: plane.get("domain", "site", "-n", f"customer-{name}") is None,
                timeout=60,
                what=f"customer-{name}/site deleted",
            )


def test_a_shard_outside_the_count_stops_the_operator_with_the_fix(
    plane: Cluster, tmp_path: Path
) -> None:
    process = operator(plane, tmp_path, 2, SHARDS)
    try:
        with pytest.raises(ProcessError, match="set SMART_SHARD below SMART_SHARDS"):
            process.start()
        assert process.process is not None and process.process.wait(timeout=10) == 2
    finally:
        process.stop()
