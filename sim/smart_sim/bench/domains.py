"""How fast many Domains become Ready against the providers' real rate limits.

Creates N Domains at once (their zones already delegated) on the real control plane
with the operator running, against both simulators with their real limits (Hetzner
3600 requests refilling 1/s; Cloudflare 1200 per 5 minutes) and their clocks sped up
``time_scale`` times; the operator's own intervals are scaled the same way. Prints the
time until every Domain has its server and DNS against the floor the limits allow for
the calls that were made (the ratio is what matters, not the scaled seconds), the calls
per Domain, the calls per (simulated) hour in steady state, the operator's peak
memory, and its memory per Domain once they are Ready and idle (resident now, less
resident before the Domains, over their number). Simulated hosts are not booted here:
only the providers' APIs are measured.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import Clouds, OperatorProcess

HETZNER_BURST, HETZNER_REFILL = 3600, 1.0
CLOUDFLARE_WINDOW_CALLS, CLOUDFLARE_WINDOW = 1200, 300.0
BOOT_SECONDS = 10.0  # the Hetzner simulator's create_server action
_CALLS = re.compile(r"^smartserver_provider_calls_total\{(.*)\} ([0-9.e+]+)$", re.MULTILINE)


def apply_bench_customer(plane: ControlPlane, count: int, timeout: float = 60) -> None:
    """The benchmarks' Customer ``bench`` (plan scale, room for ``count`` Domains), Ready."""
    customer = {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": "bench"},
        "spec": {"email": "bench@example.com", "plan": "scale", "limits": {"domains": count}},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(customer))
    platform.wait_for(plane, ["customer", "bench"], "True", timeout=timeout)


def provider_calls(metrics_url: str, by_verb: bool = False) -> dict[str, float]:
    """Calls so far by provider (or by ``provider/verb``), from the operator's metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    totals: dict[str, float] = {}
    for labels, value in _CALLS.findall(text):
        provider = re.search(r'provider="([^"]+)"', labels)
        verb = re.search(r'verb="([^"]+)"', labels)
        if provider and verb:
            key = f"{provider.group(1)}/{verb.group(1)}" if by_verb else provider.group(1)
            totals[key] = totals.get(key, 0) + float(value)
    return totals


def stale_reads(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    found = re.search(r"^smartserver_stale_reads_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else math.nan


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now (``VmRSS``) or at its peak (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return math.nan


def peak_rss_mib(pid: int) -> float:
    return rss_mib(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floor_seconds(hetzner: float, cloudflare: float, scale: float) -> float:
    """The least real time the limits allow for these calls at this clock speed."""
    hetzner_wait = max(0.0, hetzner - HETZNER_BURST) / HETZNER_REFILL
    windows = max(0, math.ceil(cloudflare / CLOUDFLARE_WINDOW_CALLS) - 1)
    cloudflare_wait = windows * CLOUDFLARE_WINDOW
    return (max(hetzner_wait, cloudflare_wait) + BOOT_SECONDS) / scale


def ready_count(plane: ControlPlane, namespace: str) -> int:
    listing = json.loads(plane.kubectl("get", "domains", "-n", namespace, "-o", "json"))
    ready = 0
    for item in listing["items"]:
        conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
        ready += conditions.get("ServerReady") == "True" and conditions.get("DNSReady") == "True"
    return ready


def one_run(count: int, scale: float, steady_seconds: float, workdir: Path) -> None:
    scaled = {
        "SMART_DRIFT_SECONDS": str(60 / scale),
        "SMART_DNS_DRIFT_SECONDS": str(900 / scale),
        "SMART_DNS_CHECKS_PER_HOUR": str(3600 * scale),
        "SMART_VERIFY_SECONDS": str(60 / scale),
        "SMART_SWEEP_SECONDS": str(600 / scale),
        "SMART_RESYNC_SECONDS": str(60 / scale),
    }
    plane = ControlPlane(workdir / "cluster")
    try:
        plane.start(setup=platform.install)
        args = ["--time-scale", str(scale)]
        # The operator makes each zone (Free, as the API makes them); the customer has
        # delegated it, so Cloudflare's own first check activates it.
        zones = [*args, "--delegate-new-zones"]
        with Clouds(workdir / "clouds", args, zones, booted=False) as clouds:
            kubeconfig = platform.operator_kubeconfig(plane, workdir / "operator.kubeconfig")
            env = {**clouds.operator_env(), **scaled}
            with OperatorProcess(kubeconfig, workdir / "logs", env=env) as operator:
                assert operator.process is not None
                namespace = "customer-bench"
                apply_bench_customer(plane, count)
                baseline = rss_mib(operator.process.pid)
                names = [f"site{i:04d}.example" for i in range(count)]
                before = provider_calls(operator.metrics_url)
                started = time.monotonic()
                for chunk in range(0, count, 100):
                    documents = [
                        {
                            "apiVersion": "smartserver.ai/v1alpha1",
                            "kind": "Domain",
                            "metadata": {"name": name.replace(".", "-"), "namespace": namespace},
                            "spec": {"domain": name, "dns": {"www": True}},
                        }
                        for name in names[chunk : chunk + 100]
                    ]
                    plane.kubectl(
                        "create", "-f", "-", input=yaml.safe_dump_all(documents), timeout=900
                    )
                deadline = started + 3600
                ready = 0
                while time.monotonic() < deadline:
                    ready = ready_count(plane, namespace)
                    if ready == count:
                        break
                    time.sleep(1.0)
                elapsed = time.monotonic() - started
                after = provider_calls(operator.metrics_url)
                hetzner = after.get("hetzner", 0) - before.get("hetzner", 0)
                cloudflare = after.get("cloudflare", 0) - before.get("cloudflare", 0)
                floor = floor_seconds(hetzner, cloudflare, scale)
                verbs_before = provider_calls(operator.metrics_url, by_verb=True)
                time.sleep(steady_seconds)
                steady = provider_calls(operator.metrics_url)
                verbs = provider_calls(operator.metrics_url, by_verb=True)
                steady_verbs = {
                    k: v - verbs_before.get(k, 0)
                    for k, v in verbs.items()
                    if v > verbs_before.get(k, 0)
                }
                per_hour = {
                    provider: (steady.get(provider, 0) - after.get(provider, 0))
                    / (steady_seconds * scale)
                    * 3600
                    for provider in ("hetzner", "cloudflare")
                }
                print(
                    f"  {count:>5} Domains: {ready}/{count} ready in {elapsed:.1f} s "
                    f"(floor {floor:.1f} s, ratio {elapsed / floor:.2f}); "
                    f"calls per Domain: Hetzner {hetzner / count:.2f}, "
                    f"Cloudflare {cloudflare / count:.2f}; steady state per simulated hour: "
                    f"Hetzner {per_hour['hetzner']:.0f}, Cloudflare {per_hour['cloudflare']:.0f}; "
                    f"operator peak RSS {peak_rss_mib(operator.process.pid):.0f} MiB",
                    flush=True,
                )
                settled = rss_mib(operator.process.pid)
                print(
                    f"        operator RSS {baseline:.0f} MiB before the Domains, "
                    f"{settled:.0f} MiB with them Ready and idle: "
                    f"{(settled - baseline) * 1024 / count:.0f} KiB per Domain",
                    flush=True,
                )
                print(
                    f"        steady-state calls in {steady_seconds:.0f} s: {steady_verbs}; "
                    f"passes that read a lagging watch's Domain again: "
                    f"{stale_reads(operator.metrics_url):.0f}",
                    flush=True,
                )
    finally:
        plane.stop()


def run(cold: bool, counts: tuple[int, ...] = (100, 1000), scale: float = 20.0) -> None:
    del cold
    print(
        f"domains: time to Ready against the providers' limits, clocks x{scale:g} "
        "(Hetzner 3600 + 1/s, Cloudflare 1200 per 5 min)",
        flush=True,
    )
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="smartserver-bench-") as scratch:
            one_run(count, scale, steady_seconds=30.0, workdir=Path(scratch))
