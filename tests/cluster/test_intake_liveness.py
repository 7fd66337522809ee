"""Agent liveness on the real API server: the intake writes no heartbeat that changes
nothing, marks an agent silent itself (``status.agent.silentSince``) and clears the
mark when it comes back; with two replicas that split an agent's heartbeats, the one
that hears none asks the other (``SMART_INTAKE_PEERS``) and marks nothing.

``SMART_INTAKE_SILENT_SECONDS`` is 3 here (180 by default), so silence shows within
seconds."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from smart_sim.processes import IntakeProcess
from tests.cluster.test_intake import (
    Tenant,
    intake_kubeconfig,  # noqa: F401 (a fixture)
    make_tenant,
    post,
    unique_module,  # noqa: F401 (a fixture)
)
from tests.conftest import Cluster
from tests.waiting import eventually

SILENT = 3.0
ENV = {
    "SMART_INTAKE_SILENT_SECONDS": str(SILENT),
    "SMART_INTAKE_FLUSH_INTERVAL_SECONDS": "0.1",
}
BEAT = {"version": "0.4.1", "startedAt": "2026-03-02T08:00:00Z", "experiments": []}


@pytest.fixture(scope="module")
def tenant(cluster: Cluster, unique_module: str) -> Iterator[Tenant]:  # noqa: F811
    namespace = f"liveness-{unique_module}"
    made = make_tenant(cluster, namespace, {"quiet": [], "split": []})
    try:
        yield made
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@contextmanager
def running(*processes: IntakeProcess) -> Iterator[None]:
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in processes:
            process.stop()


def agent(cluster: Cluster, tenant: Tenant, name: str) -> dict[str, Any]:
    domain = cluster.get("domain", name, "-n", tenant.namespace) or {}
    return dict((domain.get("status") or {}).get("agent") or {})


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_a_silent_agent_is_marked_and_the_mark_cleared_when_it_beats_again(
    cluster: Cluster,
    tenant: Tenant,
    intake_kubeconfig: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    intake = IntakeProcess(intake_kubeconfig, tmp_path, env=ENV)
    key = tenant.keys["quiet"]
    with running(intake):
        assert post(f"{intake.url}/v1/heartbeat", BEAT, key)[0] == 202
        first = eventually(lambda: agent(cluster, tenant, "quiet"), what="the first heartbeat")
        assert "silentSince" not in first and first["renewSeconds"] == 3600
        marked = eventually(
            lambda: (a := agent(cluster, tenant, "quiet")).get("silentSince") and a,
            what="the silence mark",
        )
        # lastSeen stays the last heartbeat; the mark comes SILENT s later plus a sweep.
        assert marked["lastSeen"] == first["lastSeen"]
        assert SILENT <= seconds_between(marked["lastSeen"], marked["silentSince"]) < SILENT + 5
        assert post(f"{intake.url}/v1/heartbeat", BEAT, key)[0] == 202
        back = eventually(
            lambda: "silentSince" not in (a := agent(cluster, tenant, "quiet")) and a,
            what="the mark cleared",
        )
        assert seconds_between(first["lastSeen"], back["lastSeen"]) > SILENT


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name)
    )


def test_two_replicas_ask_each_other_and_mark_no_agent_the_other_hears(
    cluster: Cluster,
    tenant: Tenant,
    intake_kubeconfig: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Replica a hears the agent once, then every heartbeat goes to b (as a balancer
    may send them): a asks b before marking, and nothing is marked while b hears it."""
    hosts = ("127.0.0.2", "127.0.0.3")  # one metrics port, as pods behind a Service
    port = free_port(hosts[0])
    a, b = (
        IntakeProcess(
            intake_kubeconfig,
            tmp_path,
            name=f"intake-{name}",
            env={
                **ENV,
                "SMART_INTAKE_METRICS_HOST": host,
                "SMART_INTAKE_METRICS_PORT": str(port),
                "SMART_INTAKE_PEERS": ",".join(hosts),
            },
        )
        for name, host in zip("ab", hosts, strict=True)
    )
    key = tenant.keys["split"]
    with running(a, b):
        assert post(f"{a.url}/v1/heartbeat", BEAT, key)[0] == 202
        eventually(lambda: agent(cluster, tenant, "split"), what="the first heartbeat")
        until = time.monotonic() + 4 * SILENT
        while time.monotonic() < until:
            assert post(f"{b.url}/v1/heartbeat", BEAT, key)[0] == 202
            assert "silentSince" not in agent(cluster, tenant, "split")
            time.sleep(0.5)
        asked = metric(
            f"http://{hosts[0]}:{port}/metrics",
            'smartserver_intake_peer_questions_total{outcome="answered"}',
        )
        assert asked >= 2  # a asked itself and b
        marked = eventually(
            lambda: (s := agent(cluster, tenant, "split")).get("silentSince") and s,
            what="the mark once b hears nothing either",
        )
        assert seconds_between(marked["lastSeen"], marked["silentSince"]) >= SILENT
