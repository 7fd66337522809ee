"""The dashboard's live updates under 1,000 open pages: one dashboard process holds
1,000 Server-Sent-Events streams (aiohttp clients on loopback, each signed in as the
same customer); a Domain's status is patched on the real API server, and we measure
the delay from the patch request to the moment the *last* stream has the change, and
the dashboard process's resident memory before and with the streams open.

``python -m smart_sim.bench dashboard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

from smart_dashboard.sessions import COOKIE, Session, Signer
from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import DashboardProcess

CLIENTS = 1_000
ROUNDS = 10
CUSTOMER = "bench"
NAMESPACE = f"customer-{CUSTOMER}"
ACCOUNT_UID = "bench-dashboard-account"
MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _setup(plane: ControlPlane) -> None:
    plane.kubectl("create", "namespace", NAMESPACE)
    objects = [
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": CUSTOMER},
            "spec": {"email": "bench@bench.example"},
        },
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {"domain": "shop.bench.example"},
        },
    ]
    for obj in objects:
        plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
    # What the operator would write: the dashboard account the sessions are bound to.
    plane.kubectl(
        "patch",
        "customer",
        CUSTOMER,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"dashboardAccountUid": ACCOUNT_UID}}),
    )


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    connected: asyncio.Queue[None],
    arrivals: list[list[float]],
    everyone: list[asyncio.Event],
) -> None:
    async with session.get(f"{url}/events") as response:
        response.raise_for_status()
        seen_connected = False
        async for line in response.content:
            if not seen_connected and line.startswith(b": connected"):
                seen_connected = True
                connected.put_nowait(None)
            elif line.startswith(b"event: change"):
                arrivals[-1].append(time.monotonic())
                if len(arrivals[-1]) == CLIENTS:
                    everyone[-1].set()


async def _bench(plane: ControlPlane, dashboard: DashboardProcess, signer: Signer) -> None:
    cookie = signer.dump(Session.for_customer(CUSTOMER, ACCOUNT_UID, 3600))
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(plane.kubeconfig), client_configuration=configuration
    )
    assert dashboard.process is not None
    pid = dashboard.process.pid
    idle_rss = rss_mib(pid)
    arrivals: list[list[float]] = [[]]
    everyone: list[asyncio.Event] = [asyncio.Event()]
    connected: asyncio.Queue[None] = asyncio.Queue()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with (
        client.ApiClient(configuration) as api,
        aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookies={COOKIE: cookie}
        ) as session,
    ):
        custom = client.CustomObjectsApi(api)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(_stream(session, dashboard.url, connected, arrivals, everyone))
            for _ in range(CLIENTS)
        ]
        for _ in range(CLIENTS):
            await asyncio.wait_for(connected.get(), 60)
        open_seconds = time.monotonic() - started
        await asyncio.sleep(1)  # let the process settle before measuring memory
        open_rss = rss_mib(pid)
        last_delays: list[float] = []
        median_delays: list[float] = []
        for round_ in range(ROUNDS):
            arrivals.append([])
            everyone.append(asyncio.Event())
            sent = time.monotonic()
            await custom.patch_namespaced_custom_object_status(
                "smartserver.ai",
                "v1alpha1",
                NAMESPACE,
                "domains",
                "shop",
                {"status": {"agent": {"version": f"bench-{round_}"}}},
                **MERGE,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone[-1].wait(), 10)
            got = sorted(arrivals[-1])
            if len(got) < CLIENTS:
                raise RuntimeError(f"only {len(got)} of {CLIENTS} streams got the change")
            last_delays.append(got[-1] - sent)
            median_delays.append(got[len(got) // 2] - sent)
            await asyncio.sleep(0.2)
        busy_rss = rss_mib(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ms = 1000
    print(f"  {CLIENTS:,} SSE streams open in {open_seconds:.2f} s")
    print(
        f"  status change -> last of {CLIENTS:,} streams: "
        f"median {statistics.median(last_delays) * ms:.0f} ms, "
        f"worst {max(last_delays) * ms:.0f} ms over {ROUNDS} changes "
        f"(-> median stream: {statistics.median(median_delays) * ms:.0f} ms)"
    )
    print(
        f"  dashboard RSS: {idle_rss:.0f} MiB idle, {open_rss:.0f} MiB with {CLIENTS:,} streams, "
        f"{busy_rss:.0f} MiB after {ROUNDS} changes"
    )


def run(cold: bool) -> None:
    del cold  # nothing to build
    print(f"dashboard: {CLIENTS:,} live pages on one process, {os.cpu_count()} cores")
    _raise_fd_limit(CLIENTS * 2 + 512)
    with tempfile.TemporaryDirectory(prefix="smartserver-bench-dashboard-") as scratch:
        workdir = Path(scratch)
        plane = ControlPlane(workdir / "plane")
        try:
            plane.start(setup=platform.install)
            _setup(plane)
            kubeconfig = platform.account_kubeconfig(
                plane, workdir / "dashboard.kubeconfig", "smart-dashboard"
            )
            secret = secrets.token_hex(32)
            with DashboardProcess(
                kubeconfig,
                workdir,
                admin_token=secrets.token_hex(16),
                session_secret=secret,
                env={"SMART_DASHBOARD_LOG_LEVEL": "WARNING"},
            ) as dashboard:
                asyncio.run(_bench(plane, dashboard, Signer(secret.encode())))
        finally:
            plane.stop()


if __name__ == "__main__":
    run(cold=False)
