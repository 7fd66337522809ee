"""Fixtures shared by every tier. The control plane and the operator are started once
per session and always stopped, even when a test fails."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import Clouds, IntakeProcess, OperatorProcess


@dataclass
class Cluster:
    """The session's control plane with small helpers over its kubectl."""

    plane: ControlPlane

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input)

    def try_kubectl(self, *args: str, input: str | None = None) -> str:
        """Run kubectl and return stdout and stderr together, whatever the exit code."""
        return self.plane.kubectl(*args, input=input, check=False)

    def apply(self, obj: dict[str, Any] | str) -> str:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", "-f", "-", input=text)

    def get(self, *args: str) -> dict[str, Any] | None:
        output = self.plane.kubectl("get", *args, "-o", "json", "--ignore-not-found")
        return json.loads(output) if output.strip() else None

    def condition(self, kind: str, name: str, type: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        conditions = obj.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == type), None)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run stopped with SIGTERM (a CI timeout, ``kill``) still tears its fixtures
    down, so no control plane, simulator or server outlives it."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(workdir)
    try:
        plane.start(setup=platform.install)
        yield Cluster(plane)
    finally:
        plane.stop()


@dataclass
class Operator:
    """The session's operator process, which a test may kill and start again."""

    process: OperatorProcess
    kubeconfig: Path
    log_dir: Path

    env: dict[str, str]

    def restart(self) -> None:
        self.process.kill()
        self.process = OperatorProcess(self.kubeconfig, self.log_dir, env=self.env).start()

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one sample on /metrics (0 when absent)."""
        import urllib.request

        with urllib.request.urlopen(self.process.metrics_url, timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(
                part in line for part in wanted.split(",") if part
            ):
                return float(line.rsplit(" ", 1)[1])
            if not labels and line.startswith(f"{name} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="session")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    """The Hetzner Cloud and Cloudflare simulators, as their own processes; every server
    they make boots Debian (``smart_sim.boot``)."""
    # Both clocks run five times faster: the providers' budgets refill five times as
    # fast, and actions end sooner (the operator's intervals are short too).
    fast = ["--time-scale", "5"]
    # With Pebble and the zone DNS server: every Domain gets its certificate by DNS-01.
    with Clouds(tmp_path_factory.mktemp("clouds"), fast, fast, acme=True) as started:
        yield started


@pytest.fixture(scope="session")
def results_intake(
    cluster: Cluster, clouds: Clouds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IntakeProcess]:
    """The results intake the servers' agents report to, as its own account, where the
    servers reach it (the provider network's gateway)."""
    workdir = tmp_path_factory.mktemp("intake")
    kubeconfig = platform.intake_kubeconfig(cluster.plane, workdir / "intake.kubeconfig")
    with IntakeProcess(kubeconfig, workdir, host=clouds.gateway) as process:
        yield process


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    clouds: Clouds,
    results_intake: IntakeProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """The operator, running as its own ServiceAccount so its RBAC is the real one,
    pointed at the simulators, with short intervals so drift repair is quick to see."""
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = platform.operator_kubeconfig(cluster.plane, workdir / "operator.kubeconfig")
    env = {
        **clouds.operator_env(),
        "SMART_INTAKE_URL": results_intake.url,
        "SMART_DRIFT_SECONDS": "2",
        "SMART_RESYNC_SECONDS": "2",
        "SMART_DNS_DRIFT_SECONDS": "5",
        "SMART_VERIFY_SECONDS": "1",
        "SMART_SWEEP_SECONDS": "2",
        "SMART_DNS_SWEEP_SECONDS": "10",
        "SMART_SWEEP_GRACE_SECONDS": "3",
        "SMART_DEPLOY_CHECK_SECONDS": "2",
        # Each site checked from outside every second, down after 3 failures in a row,
        # its figures written every 5 s (a change at once).
        "SMART_UPTIME_SECONDS": "1",
        "SMART_UPTIME_TIMEOUT_SECONDS": "2",
        "SMART_UPTIME_WRITE_SECONDS": "5",
        # The agents report and beat every second instead of every minute; and they
        # take the visitor's address from X-Forwarded-For when the request comes from
        # the host (the traffic generator, standing in for a proxy such as Cloudflare's).
        "SMART_AGENT_SETTINGS": json.dumps(
            {
                "REPORT_SECONDS": "1",
                "HEARTBEAT_SECONDS": "1",
                "DEPLOY_POLL_SECONDS": "0.5",
                "LOG_FLUSH_SECONDS": "0.2",
                "REAL_IP_FROM": f"{clouds.gateway}/32",
            }
        ),
    }
    handle = Operator(
        OperatorProcess(kubeconfig, workdir, env=env).start(), kubeconfig, workdir, env
    )
    try:
        yield handle
    finally:
        handle.process.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names of cluster-scoped objects."""
    return uuid.uuid4().hex[:6]
