"""``python -m smart_sim.bench calls``: what the operator's own side of a Domain's set-up
costs its event loop, per piece, without a cluster or the providers' limits.

- **A Cloudflare call** through the operator's client (``clients.cloudflare``), with
  300 callers at once as in a burst of new Domains, at several bounds of calls in
  flight (``IN_FLIGHT``: the client's own, and others for comparison), against a
  loopback server in a process of its own that answers a zone listing after 5 ms:
  this process's CPU time per call, and the calls a second.
- **A server's user-data** (``cloudinit.render_user_data``): the time to render it with
  the emitter the operator uses and, for comparison, PyYAML's pure-Python one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

from smart_operator import cloudinit
from smart_operator.clients import cloudflare
from smart_operator.keys import generate_ssh_key
from smart_sim.bench.agent import free_port
from smart_sim.processes import ManagedProcess, http_ok

CALLERS, ROUNDS = 300, 10
_SERVER = """
import asyncio, sys
from aiohttp import web

async def zones(request):
    await asyncio.sleep(0.005)
    info = {"page": 1, "per_page": 50, "count": 0, "total_count": 0, "total_pages": 1}
    return web.json_response(
        {"success": True, "errors": [], "messages": [], "result": [], "result_info": info}
    )

app = web.Application()
app.router.add_get("/zones", zones)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


async def _calls(endpoint: str, in_flight: int) -> tuple[float, float]:
    """CPU milliseconds per call and calls a second, ``in_flight`` at most at once."""
    with mock.patch.object(cloudflare, "IN_FLIGHT", in_flight):
        client = cloudflare.Cloudflare("t" * 40, endpoint, "account")
    client.budget.limit = 10**9  # the providers' limits are not measured here
    client.budget.remaining = float(client.budget.limit)
    try:
        await asyncio.gather(*(client.zones() for _ in range(CALLERS)))  # connections made
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(ROUNDS):
            await asyncio.gather(*(client.zones() for _ in range(CALLERS)))
        cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    finally:
        await client.close()
    calls = CALLERS * ROUNDS
    return cpu / calls * 1000, calls / elapsed


def _user_data_ms(dumper: type[yaml.SafeDumper], rounds: int = 100) -> float:
    host, operator = generate_ssh_key("root@ss-bench"), generate_ssh_key("smart-operator")
    data = cloudinit.UserDataInput(
        hostname="ss-customer-bench-shop",
        domain="shop.example.com",
        host_private_key=host.private,
        host_public_key=host.public,
        operator_public_key=operator.public,
        ssh_sources=["203.0.113.7/32"],
    )
    with mock.patch.object(cloudinit, "_DUMPER", dumper):
        started = time.perf_counter()
        for _ in range(rounds):
            cloudinit.render_user_data(data)
        return (time.perf_counter() - started) / rounds * 1000


def run(cold: bool) -> None:
    del cold
    port = free_port("127.0.0.1")
    endpoint = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="smartserver-bench-") as logs,
        ManagedProcess("api", [sys.executable, "-c", _SERVER, str(port)], Path(logs)) as api,
    ):
        api.wait_until(lambda: http_ok(f"{endpoint}/zones"), 30, "answered")
        print(f"calls: {CALLERS} callers at once, {CALLERS * ROUNDS} zone listings", flush=True)
        for in_flight in sorted({cloudflare.IN_FLIGHT, 4, 8, 16, 32}):
            cpu_ms, rate = asyncio.run(_calls(endpoint, in_flight))
            used = " (the client's bound)" if in_flight == cloudflare.IN_FLIGHT else ""
            print(
                f"  Cloudflare, at most {in_flight:>2} in flight{used}: {cpu_ms:.2f} ms of CPU "
                f"per call, {rate:.0f} calls a second",
                flush=True,
            )
    python_ms, used_ms = _user_data_ms(yaml.SafeDumper), _user_data_ms(cloudinit._DUMPER)
    print(
        f"  user-data: {used_ms:.2f} ms to render with {cloudinit._DUMPER.__name__} (used), "
        f"{python_ms:.2f} ms with the pure-Python SafeDumper ({python_ms / used_ms:.1f}x)",
        flush=True,
    )
