"""The booted servers' benchmark: ``python -m smart_sim.bench boot [--cold]``.

Prints, on this machine:

- the image: its size on disk and gzip-compressed, and (with ``--cold``) the time of a
  fresh ``mmdebstrap`` build into a temporary folder (the cached image is untouched);
- one server from the operator's real user-data: boot to cloud-init done, then the
  agent's delivery over SSH (``install_agent``: upload, hash check, offline install,
  start) to the agent answering, and the server's memory (its cgroup) with the agent and
  nginx running;
- N servers booted at once and in waves of 4 and of 2 (this machine has 2 cores): the
  time until the last one's cloud-init is done.

Figures only, never assertions; BENCHMARKS.md keeps them with this command.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from smart_operator.clients.agent_install import install_agent
from smart_operator.cloudinit import DEPLOY_USER, UserDataInput, render_user_data
from smart_operator.keys import SSHKeyPair, generate_ssh_key
from smart_operator.ports import AgentEnvironment, Target
from smart_sim.boot.bundle import ensure_bundle
from smart_sim.boot.image import build, ensure_image, image_for
from smart_sim.boot.manager import BootManager
from smart_sim.hetzner.hooks import ServerInfo

PARALLEL = 6


def _du(path: Path) -> int:
    result = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


def _compressed(path: Path) -> int:
    tar = subprocess.Popen(["tar", "-C", str(path), "-cf", "-", "."], stdout=subprocess.PIPE)
    gz = subprocess.run(["gzip", "-6"], stdin=tar.stdout, capture_output=True, check=True)
    tar.wait()
    return len(gz.stdout)


def _info(boot: BootManager, index: int, host: SSHKeyPair, operator: SSHKeyPair) -> ServerInfo:
    pool = ipaddress.IPv4Network(boot.server_pool)
    name = f"bench-{index}"
    user_data = render_user_data(
        UserDataInput(
            hostname=name,
            domain=f"{name}.example.com",
            host_private_key=host.private,
            host_public_key=host.public,
            operator_public_key=operator.public,
            ssh_sources=[f"{boot.gateway}/32"],
        )
    )
    return ServerInfo(
        id=1000 + index,
        name=name,
        ipv4=str(pool.network_address + 1 + index),
        ipv6_network=None,
        user_data=user_data,
        ssh_public_keys=(operator.public,),
        labels={},
        server_type="cx23",
        image="debian-12",
        location="fsn1",
    )


async def _one_server(workdir: Path) -> None:
    bundle = ensure_bundle().describe()
    host, operator = generate_ssh_key("root@bench"), generate_ssh_key("operator")
    async with BootManager(workdir / "one") as boot:
        info = _info(boot, 0, host, operator)
        started = time.monotonic()
        await boot.on_server_created(info)
        server = boot.server(info.id)
        await server.wait_running(within=300)
        booted = time.monotonic()
        target = Target(server.address or "", 22, host.public, operator.private, DEPLOY_USER)
        env = AgentEnvironment(f"http://{boot.gateway}:9", "ssk_bench", "bench.example.com")
        result = await install_agent(target, bundle, env)
        running = time.monotonic()
        await asyncio.sleep(2)  # let the agent and nginx settle before measuring
        memory = server.memory()
        print(f"  boot to cloud-init done:            {booted - started:5.1f} s")
        print(
            f"  agent delivered and answering:      {running - booted:5.1f} s "
            f"(bundle {bundle.path.stat().st_size / 2**20:.1f} MiB, agent {result.version})"
        )
        print(f"  boot to agent running:              {running - started:5.1f} s")
        print(
            f"  memory of the server (cgroup):      {memory.get('rss', 0) / 2**20:5.0f} MiB "
            f"resident, {memory.get('usage', 0) / 2**20:.0f} MiB with page cache"
        )


async def _many(workdir: Path, count: int, waves: int | None) -> tuple[float, list[float]]:
    host, operator = generate_ssh_key("root@bench"), generate_ssh_key("operator")
    label = f"waves-{waves}" if waves else "all"
    async with BootManager(workdir / label, parallel_boots=waves or count) as boot:
        infos = [_info(boot, i, host, operator) for i in range(count)]
        started = time.monotonic()
        for info in infos:
            await boot.on_server_created(info)
        servers = [boot.server(info.id) for info in infos]
        await asyncio.gather(*(s.wait_running(within=600) for s in servers))
        total = time.monotonic() - started
        each = [
            (s.ready_at or 0) - (s.started_at or 0) for s in servers if s.ready_at and s.started_at
        ]
        rss = [s.memory().get("rss", 0) / 2**20 for s in servers]
        print(
            f"  {count} servers, {'all at once' if not waves else f'waves of {waves}'}: "
            f"last cloud-init done after {total:5.1f} s (each boot {min(each):.1f}-"
            f"{max(each):.1f} s; {statistics.mean(rss):.0f} MiB resident each)"
        )
        return total, each


def run(cold: bool = False) -> None:
    if os.geteuid() != 0:
        print("boot: needs root (namespaces, overlay mounts); skipped")
        return
    print("Booted servers (smart_sim.boot), on this machine:")
    root = ensure_image("debian-12")
    print(
        f"  image debian-12: {_du(root) / 2**20:.0f} MiB on disk, "
        f"{_compressed(root) / 2**20:.0f} MiB gzip-compressed ({root})"
    )
    with tempfile.TemporaryDirectory(prefix="smart-bench-boot-") as temporary:
        workdir = Path(temporary)
        if cold:
            seconds = build(image_for("debian-12"), workdir / "image", quiet=True)
            print(f"  image build (mmdebstrap, cold):     {seconds:5.1f} s")
            shutil.rmtree(workdir / "image", ignore_errors=True)
        asyncio.run(_one_server(workdir))
        asyncio.run(_many(workdir, PARALLEL, None))
        asyncio.run(_many(workdir, PARALLEL, 4))
        asyncio.run(_many(workdir, PARALLEL, 2))
