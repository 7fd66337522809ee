"""The operator's memory per idle Domain, at 1,000 and 10,000 Domains.

Creates N Domains in one customer namespace on the real control plane, with the
operator running without cloud credentials: each Domain's first pass writes its
``OperatorNotConfigured`` condition and the next is an hour away (``SMART_DRIFT_SECONDS``),
so every Domain is idle, as a Ready one is between its checks, without the providers'
rate limits deciding how long the set-up takes (``bench domains`` measures Ready
Domains against those, at 1,000). Prints the operator's resident memory before the
Domains and once all of them are idle, the difference per Domain, the CPU time the
operator took to make them idle, and the size of one of these Domains as JSON (a
Ready Domain's status is larger; ``bench domains`` prints the memory per Ready Domain
at 1,000).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import yaml

from smart_sim import platform
from smart_sim.bench.domains import apply_bench_customer, cpu_seconds, peak_rss_mib, rss_mib
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import OperatorProcess

NAMESPACE = "customer-bench"
CHUNK = 500


def idle_count(plane: ControlPlane) -> int:
    """Domains whose first pass has written its status."""
    reasons = plane.kubectl(
        "get",
        "domains",
        "-n",
        NAMESPACE,
        "--no-headers",
        "-o",
        "custom-columns=R:.status.conditions[*].reason",
        timeout=300,
    )
    return sum("OperatorNotConfigured" in line for line in reasons.splitlines())


def one_run(count: int, workdir: Path, settle_seconds: float) -> None:
    plane = ControlPlane(workdir / "cluster")
    try:
        plane.start(setup=platform.install)
        kubeconfig = platform.operator_kubeconfig(plane, workdir / "operator.kubeconfig")
        env = {
            "SMART_DRIFT_SECONDS": "3600",
            "SMART_RESYNC_SECONDS": "3600",
            "SMART_UPTIME_CHECKS": "false",
        }
        with OperatorProcess(kubeconfig, workdir / "logs", env=env) as operator:
            assert operator.process is not None
            pid = operator.process.pid
            apply_bench_customer(plane, count, timeout=120)
            time.sleep(settle_seconds)
            baseline = rss_mib(pid)
            cpu = cpu_seconds(pid)
            started = time.monotonic()
            for chunk in range(0, count, CHUNK):
                documents = [
                    {
                        "apiVersion": "smartserver.ai/v1alpha1",
                        "kind": "Domain",
                        "metadata": {"name": f"site{i:05d}-example", "namespace": NAMESPACE},
                        "spec": {"domain": f"site{i:05d}.example", "dns": {"www": True}},
                    }
                    for i in range(chunk, min(count, chunk + CHUNK))
                ]
                plane.kubectl("create", "-f", "-", input=yaml.safe_dump_all(documents), timeout=900)
            idle = 0
            deadline = started + 1800
            while time.monotonic() < deadline:
                idle = idle_count(plane)
                if idle == count:
                    break
                time.sleep(5.0)
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu
            time.sleep(settle_seconds)
            settled = rss_mib(pid)
            one = json.loads(
                plane.kubectl("get", "domain", "site00000-example", "-n", NAMESPACE, "-o", "json")
            )
            one["metadata"].pop("managedFields", None)
            size = len(json.dumps(one, separators=(",", ":")))
            print(
                f"  {count:>6} Domains: {idle}/{count} idle after {elapsed:.0f} s, the operator "
                f"using {cpu:.0f} CPU seconds meanwhile; operator RSS "
                f"{baseline:.0f} MiB before, {settled:.0f} MiB with them idle "
                f"(peak {peak_rss_mib(pid):.0f} MiB): "
                f"{(settled - baseline) * 1024 / count:.0f} KiB per Domain "
                f"(a Domain is {size} bytes of JSON)",
                flush=True,
            )
    finally:
        plane.stop()


def run(cold: bool, counts: tuple[int, ...] = (1000, 10000)) -> None:
    del cold
    print("memory: the operator's resident memory per idle Domain", flush=True)
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="smartserver-bench-") as scratch:
            one_run(count, Path(scratch), settle_seconds=15.0)
