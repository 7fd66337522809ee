"""How fast many Domains become Ready across a pool of provider accounts.

The ``domains`` benchmark with N accounts: the operator's own tokens (account
``default``) and N-1 account Secrets, each a Hetzner project and a Cloudflare account of
their own in the simulators, each with its own request budget. Creates ``count``
Domains at once (their zones delegated, as in ``domains``) and prints the time until
every Domain has its server and DNS against the pooled floor (the slowest account's
floor for the requests made in it), how the Domains spread over the accounts, the
requests (and the operator's calls) per Domain, and each account's requests per
simulated hour in steady state.

The limits are the real ones divided by ``limit_divisor`` (and the clocks sped up
``scale`` times, the operator's intervals with them), so that a few hundred Domains
meet the limits as tens of thousands would meet the real ones; the ratio to the floor
is what matters. Simulated hosts are not booted: only the providers' APIs are measured.

``drift_seconds`` keeps the operator's drift interval (how often a Domain that has its
server and DNS is passed again; without booted hosts no agent connects, so that is every
Domain once Ready) at a real-time value instead of scaling it: at thousands of Domains a
scaled one (3 s at x20) asks one process for thousands of passes a second, and the run
would measure the operator's CPU, not the providers' limits. What that interval paces
is the shared server listing, a request per 50 servers of the project, made again no
more often than a tenth of the account's budget allows (``clients.inventory.Fleet``).

    python -c "from smart_sim.bench import accounts; accounts.run(False, count=2000,
        limit_divisor=5, drift_seconds=60)"
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from smart_sim import platform
from smart_sim.bench.domains import BOOT_SECONDS, apply_bench_customer, cpu_seconds, peak_rss_mib
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import Clouds, OperatorProcess

HETZNER_PER_HOUR, CLOUDFLARE_PER_WINDOW, CLOUDFLARE_WINDOW = 3600, 1200, 300.0
_COUNTS = re.compile(
    r"^smartserver_account_(calls|requests)_total"
    r'\{account="([^"]+)",provider="([^"]+)"\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def account_calls(metrics_url: str, kind: str = "requests") -> dict[tuple[str, str], float]:
    """HTTP requests (what the limits count; ``kind="calls"``: the operator's calls, a
    listing of several pages one) so far by (account, provider), from its metrics."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return {(a, p): float(v) for k, a, p, v in _COUNTS.findall(text) if k == kind}


def account_floor(hetzner: float, cloudflare: float, divisor: float, scale: float) -> float:
    """The least real time one account's limits allow for these calls."""
    burst = HETZNER_PER_HOUR / divisor
    refill = burst / 3600
    window_calls = CLOUDFLARE_PER_WINDOW / divisor
    hetzner_wait = max(0.0, hetzner - burst) / refill
    windows = max(0, math.ceil(cloudflare / window_calls) - 1)
    return (max(hetzner_wait, windows * CLOUDFLARE_WINDOW) + BOOT_SECONDS) / scale


def spread(plane: ControlPlane, namespace: str) -> tuple[dict[str, int], int]:
    """Domains by recorded account, and how many are Ready (server and DNS)."""
    listing = json.loads(plane.kubectl("get", "domains", "-n", namespace, "-o", "json"))
    by_account: dict[str, int] = {}
    ready = 0
    for item in listing["items"]:
        status = item.get("status", {})
        account = status.get("account") or "-"
        by_account[account] = by_account.get(account, 0) + 1
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        ready += conditions.get("ServerReady") == "True" and conditions.get("DNSReady") == "True"
    return by_account, ready


def one_run(
    count: int,
    accounts: int,
    scale: float,
    divisor: float,
    drift_seconds: float,
    steady_seconds: float,
    deadline_seconds: float,
    workdir: Path,
) -> None:
    hetzner_limit = int(HETZNER_PER_HOUR / divisor)
    cloudflare_limit = int(CLOUDFLARE_PER_WINDOW / divisor)
    quota = count  # room everywhere: the spread is placement's choice, not a limit's
    names = [f"pool-{i}" for i in range(1, accounts)]
    hetzner_args = [
        "--time-scale", str(scale),
        "--rate-limit", str(hetzner_limit),
        "--refill", str(hetzner_limit / 3600),
        *[a for n in names for a in ("--project", f"{n}-token:{quota}:{hetzner_limit}")],
    ]  # fmt: skip
    cloudflare_args = [
        "--time-scale", str(scale),
        "--rate-limit", str(cloudflare_limit),
        "--delegate-new-zones",
        *[a for n in names for a in ("--account", f"{n}-token:{n}-id:{cloudflare_limit}")],
    ]  # fmt: skip
    scaled = {
        "SMART_DRIFT_SECONDS": str(drift_seconds),
        "SMART_DNS_DRIFT_SECONDS": str(900 / scale),
        "SMART_DNS_CHECKS_PER_HOUR": str(3600 * scale),
        "SMART_VERIFY_SECONDS": str(60 / scale),
        "SMART_SWEEP_SECONDS": str(600 / scale),
        "SMART_RESYNC_SECONDS": str(60 / scale),
        "SMART_ACCOUNT_REFRESH_SECONDS": str(60 / scale),
        "SMART_DEFAULT_ACCOUNT_SERVER_QUOTA": str(quota),
        "SMART_ACCOUNT_SECRETS": json.dumps(names),
    }
    plane = ControlPlane(workdir / "cluster")
    try:
        plane.start(setup=platform.install)
        with Clouds(workdir / "clouds", hetzner_args, cloudflare_args, booted=False) as clouds:
            platform.add_provider_accounts(
                plane,
                {
                    name: {
                        "hetzner-token": f"{name}-token",
                        "cloudflare-token": f"{name}-token",
                        "cloudflare-account-id": f"{name}-id",
                        "server-quota": str(quota),
                        "hetzner-requests-per-hour": str(hetzner_limit),
                        "cloudflare-requests-per-5-minutes": str(cloudflare_limit),
                    }
                    for name in names
                },
            )
            kubeconfig = platform.operator_kubeconfig(plane, workdir / "operator.kubeconfig")
            env = {**clouds.operator_env(), **scaled}
            with OperatorProcess(kubeconfig, workdir / "logs", env=env) as operator:
                assert operator.process is not None
                namespace = "customer-bench"
                apply_bench_customer(plane, count)
                sites = [f"site{i:05d}.example" for i in range(count)]
                before = account_calls(operator.metrics_url)
                calls_before = account_calls(operator.metrics_url, "calls")
                cpu = cpu_seconds(operator.process.pid)
                started = time.monotonic()
                for chunk in range(0, count, 100):
                    documents = [
                        {
                            "apiVersion": "smartserver.ai/v1alpha1",
                            "kind": "Domain",
                            "metadata": {"name": name.replace(".", "-"), "namespace": namespace},
                            "spec": {"domain": name, "dns": {"www": True}},
                        }
                        for name in sites[chunk : chunk + 100]
                    ]
                    plane.kubectl(
                        "create", "-f", "-", input=yaml.safe_dump_all(documents), timeout=900
                    )
                created = time.monotonic() - started
                deadline = started + deadline_seconds
                ready, by_account = 0, dict[str, int]()
                while time.monotonic() < deadline:
                    by_account, ready = spread(plane, namespace)
                    if ready == count:
                        break
                    # A listing of every Domain is about 1.5 KB each: at 10,000 one a second
                    # would keep the API server (and kubectl) busier than the operator.
                    time.sleep(max(1.0, count / 1000))
                elapsed = time.monotonic() - started
                cpu = cpu_seconds(operator.process.pid) - cpu
                after = account_calls(operator.metrics_url)
                made = {k: v - before.get(k, 0) for k, v in after.items()}
                calls = {
                    k: v - calls_before.get(k, 0)
                    for k, v in account_calls(operator.metrics_url, "calls").items()
                }
                pool = ["default", *names]
                floors = {
                    a: account_floor(
                        made.get((a, "hetzner"), 0), made.get((a, "cloudflare"), 0), divisor, scale
                    )
                    for a in pool
                }
                floor = max(floors.values())
                time.sleep(steady_seconds)
                steady = account_calls(operator.metrics_url)
                hours = steady_seconds * scale / 3600
                per_hour = {
                    a: tuple(
                        (steady.get((a, p), 0) - after.get((a, p), 0)) / hours
                        for p in ("hetzner", "cloudflare")
                    )
                    for a in pool
                }
                hetzner = sum(made.get((a, "hetzner"), 0) for a in pool)
                cloudflare = sum(made.get((a, "cloudflare"), 0) for a in pool)
                hetzner_calls = sum(calls.get((a, "hetzner"), 0) for a in pool)
                cloudflare_calls = sum(calls.get((a, "cloudflare"), 0) for a in pool)
                print(
                    f"  {count:>5} Domains over {accounts} accounts: {ready}/{count} ready in "
                    f"{elapsed:.1f} s (pooled floor {floor:.1f} s, ratio {elapsed / floor:.2f}; "
                    f"all created after {created:.1f} s); "
                    f"requests (calls) per Domain: Hetzner {hetzner / count:.2f} "
                    f"({hetzner_calls / count:.2f}), Cloudflare {cloudflare / count:.2f} "
                    f"({cloudflare_calls / count:.2f}); "
                    f"operator peak RSS {peak_rss_mib(operator.process.pid):.0f} MiB, "
                    f"{cpu:.0f} CPU s in that time ({cpu / elapsed:.0%} of one core)",
                    flush=True,
                )
                for a in pool:
                    print(
                        f"        {a}: {by_account.get(a, 0)} Domains, requests Hetzner "
                        f"{made.get((a, 'hetzner'), 0):.0f}, Cloudflare "
                        f"{made.get((a, 'cloudflare'), 0):.0f} (floor {floors[a]:.1f} s); "
                        f"steady per simulated hour: Hetzner {per_hour[a][0]:.0f}, "
                        f"Cloudflare {per_hour[a][1]:.0f}",
                        flush=True,
                    )
                unplaced = by_account.get("-", 0)
                if unplaced:
                    print(f"        not placed: {unplaced}", flush=True)
    finally:
        plane.stop()


def run(
    cold: bool,
    count: int = 500,
    accounts: int = 5,
    scale: float = 20.0,
    limit_divisor: float = 10.0,
    drift_seconds: float | None = None,
    deadline_seconds: float = 3600.0,
) -> None:
    """``deadline_seconds``: the figures are printed then, Ready or not (how many were is
    part of them)."""
    del cold
    drift = 60 / scale if drift_seconds is None else drift_seconds
    print(
        f"accounts: {count} Domains across {accounts} provider accounts, clocks x{scale:g}, "
        f"each account's limits / {limit_divisor:g} (Hetzner {HETZNER_PER_HOUR / limit_divisor:g} "
        f"an hour, Cloudflare {CLOUDFLARE_PER_WINDOW / limit_divisor:g} per 5 min), "
        f"drift checks every {drift:g} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="smartserver-bench-") as scratch:
        one_run(
            count,
            accounts,
            scale,
            limit_divisor,
            drift,
            steady_seconds=30.0,
            deadline_seconds=deadline_seconds,
            workdir=Path(scratch),
        )
