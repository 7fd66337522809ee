"""``make dev``: the whole platform on this machine. Starts the local control plane,
the Hetzner Cloud and Cloudflare simulators (servers boot as simulated hosts that run
the real agent and nginx), installs the CRDs and the RBAC, runs the operator, the
results intake and the dashboard each as its own ServiceAccount, applies the sample
Customer, Domain and Experiment, sends demo visitors to the sample server, and prints
how to look around. Ctrl-C stops everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from smart_dashboard.settings import DashboardSettings
from smart_operator.models.customer import DASHBOARD_ACCOUNT
from smart_sim import platform
from smart_sim.controlplane import ControlPlane, kube_version
from smart_sim.processes import (
    Clouds,
    DashboardProcess,
    IntakeProcess,
    OperatorProcess,
)
from smart_sim.traffic import TrafficPlan, send_traffic

DEV_DIR = platform.ROOT / ".dev"


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _demo_traffic(site: str, host: str, stop: threading.Event) -> None:
    """A steady trickle of visitors (the second variant converts a little better), so
    the counts, the statistics and the dashboard move while you watch."""
    batch = 0
    while not stop.wait(3.0) and batch < 2_000:  # 50,000 distinct visitors at most
        plan = TrafficPlan(
            visitors=25,
            conversion_rates={"control": 0.04, "outcome-headline": 0.06},
            host=host,
            first_visitor=batch * 25,
            seed=batch,
            concurrency=8,
        )
        with contextlib.suppress(Exception):  # the demo goes on if one batch fails
            asyncio.run(send_traffic(site, plan))
        batch += 1


def run(dev_dir: Path = DEV_DIR) -> None:
    stop = threading.Event()
    # Explicit handlers: a shell may start us with SIGINT ignored (a background job).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    shutil.rmtree(dev_dir, ignore_errors=True)
    started = time.monotonic()
    _say(f"starting the local control plane (Kubernetes {kube_version()}) with the CRDs")
    with contextlib.ExitStack() as stack:
        plane = ControlPlane(dev_dir / "cluster")
        stack.callback(plane.stop)
        # The CRDs go in before the controllers start, so quotas count them at once.
        plane.start(setup=platform.install)
        _say("starting the Hetzner Cloud and Cloudflare simulators (servers boot Debian)")
        # New zones count as delegated (the customer set the nameservers), and Cloudflare's
        # own checks activate them ten times sooner than for real: in seconds.
        cloudflare = ["--delegate-new-zones", "--time-scale", "10"]
        clouds = stack.enter_context(Clouds(dev_dir / "clouds", cloudflare_args=cloudflare))
        logs = dev_dir / "logs"
        _say("starting the results intake (where the servers reach it) and the dashboard")
        intake = IntakeProcess(
            platform.intake_kubeconfig(plane, dev_dir / "intake.kubeconfig"),
            logs,
            # A chart point every 30 s rather than every 10 minutes: the demo's results
            # chart fills while you watch.
            env={"SMART_INTAKE_HISTORY_SECONDS": "30"},
            host=clouds.gateway,
        )
        stack.enter_context(intake)
        admin_token = secrets.token_urlsafe(24)
        dashboard = DashboardProcess(
            platform.account_kubeconfig(plane, dev_dir / "dashboard.kubeconfig", "smart-dashboard"),
            logs,
            admin_token=admin_token,
            session_secret=secrets.token_urlsafe(32),
        )
        stack.enter_context(dashboard)
        _say("starting the operator as its ServiceAccount")
        kubeconfig = platform.operator_kubeconfig(plane, dev_dir / "operator.kubeconfig")
        # Demo agents report every few seconds, so results move while you watch.
        # The demo visitors come through the host, which names each in X-Forwarded-For.
        agents = {
            "REPORT_SECONDS": "5",
            "HEARTBEAT_SECONDS": "10",
            "REAL_IP_FROM": f"{clouds.gateway}/32",
        }
        operator = OperatorProcess(
            kubeconfig,
            logs,
            env={
                **clouds.operator_env(),
                "SMART_INTAKE_URL": intake.url,
                "SMART_AGENT_SETTINGS": json.dumps(agents),
            },
        )
        stack.enter_context(operator)
        _say("applying the sample Customer")
        plane.kubectl("apply", "-f", str(platform.SAMPLES / "customer.yaml"))
        platform.wait_for(plane, ["customer", "acme"], "True", timeout=60)
        _say("applying the sample Domain: its zone, a booted server, the agent over SSH")
        sample = yaml.safe_load((platform.SAMPLES / "domain.yaml").read_text())
        plane.kubectl("apply", "-f", str(platform.SAMPLES / "domain.yaml"))
        namespace = sample["metadata"]["namespace"]
        platform.wait_for(
            plane, ["domain", sample["metadata"]["name"], "-n", namespace], "Ready", timeout=300
        )
        _say("applying the sample Experiment")
        plane.kubectl("apply", "-f", str(platform.SAMPLES / "experiment.yaml"))
        platform.wait_for(
            plane, ["experiment", "homepage-headline", "-n", namespace], "Running", timeout=120
        )
        domain = json.loads(
            plane.kubectl(
                "get", "domain", sample["metadata"]["name"], "-n", namespace, "-o", "json"
            )
        )
        site = f"http://{domain['status']['server']['ipv4']}"
        # A customer's dashboard token, as staff make one (docs/operations.md).
        token = plane.kubectl(
            "create",
            "token",
            DASHBOARD_ACCOUNT,
            "-n",
            namespace,
            f"--audience={DashboardSettings().token_audience}",
            "--duration=24h",
        ).strip()
        traffic = threading.Thread(
            target=_demo_traffic,
            args=(site, sample["spec"]["domain"], stop),
            name="demo traffic",
            daemon=True,
        )
        traffic.start()
        assert plane.binaries is not None
        env_file = dev_dir / "env"
        env_file.write_text(
            f"export KUBECONFIG={plane.kubeconfig}\n"
            f"export PATH={plane.binaries.kubectl.parent}:$PATH\n"
        )
        print(plane.kubectl("get", "smartserver", "-A"))
        print(
            f"Smart Server is running ({time.monotonic() - started:.0f} s to start).\n"
            f"  Look around, in another shell:\n"
            f"    source {env_file}          # KUBECONFIG and a kubectl {kube_version()}\n"
            f"    kubectl get customers       # or: kubectl get smartserver -A\n"
            f"    kubectl describe customer acme\n"
            f"    kubectl get resourcequota,serviceaccount,secret -n customer-acme\n"
            f"    kubectl describe domain acme-example -n customer-acme\n"
            f"    kubectl get experiment homepage-headline -n customer-acme -o yaml\n"
            f"  Dashboard:    {dashboard.url}/signin?token={token}\n"
            f"                (staff: {dashboard.url}/signin with the token {admin_token})\n"
            f"  Sample site:  {site}/  (demo visitors arrive every few seconds)\n"
            f"  Simulated servers: {clouds.hetzner.root_url}/_sim/servers "
            f"(booted Debian, their roots under {clouds.servers_dir})\n"
            f"  Simulated DNS:     {clouds.cloudflare.root_url}/_sim/zones\n"
            f"  Operator log: {operator.log_path}\n"
            f"  Metrics:      {operator.metrics_url}\n"
            f"  Cluster logs: {plane.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(1.0):
            if operator.process is not None and operator.process.poll() is not None:
                print(f"the operator exited:\n{operator.log_tail()}", file=sys.stderr)
                break
        _say("stopping")
    _say("stopped")


if __name__ == "__main__":
    run()
