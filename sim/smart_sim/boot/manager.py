"""The Hetzner simulator's server hooks that boot every created server as a Debian system.

``async with BootManager(base_dir) as boot:`` brings up a provider network (see
:mod:`~smart_sim.boot.network`) and builds or finds the image; then
``HetznerSimulator(HetznerConfig(ipv4_network=boot.server_pool), hooks=boot)`` boots each
server the API creates (from the image its ``image`` names, see
:data:`~smart_sim.boot.image.IMAGES`) with the operator's user-data unmodified, and
removes it when the API deletes it. ``boot.gateway`` is the host's address on the
provider network: bind the intake (or a test double) there so agents can reach it, and
allow it as the operator's SSH source.

The manager is also a :class:`~smart_sim.hetzner.hooks.HostStatusSource`: the simulator's
``GET /_sim/servers`` shows each server's boot state (and why a boot failed). Boots are
CPU-bound, so at most ``parallel_boots`` run at once (waves); the rest wait their turn.
``close`` stops every server and removes the network, even after a failure.

It must not touch the simulator's state: servers only learn of servers through hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from smart_sim.boot.image import IMAGES, ImageError, ensure_image, image_for
from smart_sim.boot.network import ProviderNetwork
from smart_sim.boot.server import BootedServer, ServerState
from smart_sim.hetzner.hooks import ServerInfo

__all__ = ["BootManager", "boot_available"]


def boot_available() -> str | None:
    """Why servers cannot boot on this machine, or None if they can."""
    import shutil

    if os.geteuid() != 0:
        return "booted servers need root (namespaces, overlay mounts, cgroups)"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install systemd-container mmdebstrap iproute2)"
    if (
        not Path("/sys/fs/cgroup/unified").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        return "no cgroup v2 hierarchy is mounted"
    return None


class BootManager:
    """Boots simulated servers; implements the Hetzner simulator's ServerHooks."""

    def __init__(
        self,
        base_dir: Path | str,
        *,
        parallel_boots: int | None = None,
        keep_folders: bool = False,
        images: tuple[str, ...] = ("debian-12",),
        debs: Path | None = None,
    ) -> None:
        """``parallel_boots``: how many boots run at once (default 8; see BENCHMARKS.md:
        on 2 cores, all at once finishes a batch sooner than small waves). ``debs``: a
        folder of ``.deb`` files with a ``Packages`` index (``index_debs``) that every
        server's apt may install from, read-only."""
        self.base_dir = Path(base_dir)
        self.keep_folders = keep_folders
        self.network = ProviderNetwork()
        self._slots = asyncio.Semaphore(parallel_boots or 8)
        self.debs = debs
        self._servers: dict[int, BootedServer] = {}
        self._images = images
        self._image_roots: dict[str, Path] = {}
        self._closed = False
        self._started = False

    # -- the run -----------------------------------------------------------------------

    async def start(self) -> BootManager:
        """Build (or find) the images, bring the provider network up."""
        reason = boot_available()
        if reason is not None:
            raise RuntimeError(reason)
        for name in self._images:
            self._image_roots[name] = await asyncio.to_thread(ensure_image, name)
        await asyncio.to_thread(self.network.up)
        self._started = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "network.json").write_text(json.dumps(self.describe()) + "\n")
        return self

    def describe(self) -> dict[str, object]:
        """What a launcher tells host processes: the network, its gateway, the pool."""
        return {
            "cidr": self.network.cidr,
            "gateway": self.network.gateway,
            "server_pool": self.network.server_pool(),
            "bridge": self.network.bridge,
            "images": sorted(self._image_roots),
        }

    @property
    def gateway(self) -> str:
        """The host's address on the provider network, reachable from every server."""
        return self.network.gateway

    @property
    def server_pool(self) -> str:
        """Give this to ``HetznerConfig(ipv4_network=...)``."""
        return self.network.server_pool()

    @property
    def servers(self) -> Mapping[int, BootedServer]:
        return dict(self._servers)

    def server(self, ref: int | str) -> BootedServer:
        """A server by id or by name; KeyError if there is none."""
        if isinstance(ref, int) and ref in self._servers:
            return self._servers[ref]
        for server in self._servers.values():
            if server.name == ref:
                return server
        raise KeyError(f"no booted server {ref!r}")

    # -- hooks -------------------------------------------------------------------------

    async def on_server_created(self, server: ServerInfo) -> None:
        """Start booting the server (returns at once; the boot runs in its own task)."""
        if self._closed or not self._started:
            raise RuntimeError("the boot manager is not running")
        if server.id in self._servers:
            return
        booted = BootedServer(
            server,
            self.base_dir / f"{server.name}-{server.id}",
            image_root=Path("/nonexistent"),
            network=self.network,
            boot_slots=self._slots,
            debs=self.debs,
        )
        self._servers[server.id] = booted
        try:
            spec = image_for(server.image, _architecture(server))
            root = self._image_roots.get(spec.name)
            if root is None:
                raise ImageError(f"the image {spec.name} was not prepared by this manager")
        except ImageError as exc:
            booted._set_state(ServerState.FAILED, str(exc))  # visible in /_sim/servers
            return
        booted.image_root = root
        booted.start()

    async def on_server_deleted(self, server: ServerInfo) -> None:
        """Power the server off and remove everything it had."""
        booted = self._servers.pop(server.id, None)
        if booted is not None:
            await booted.stop(remove=not self.keep_folders)

    def host_status(self, server_id: int) -> Mapping[str, object] | None:
        booted = self._servers.get(server_id)
        return None if booted is None else booted.status()

    # -- end ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every server and remove the provider network (idempotent)."""
        self._closed = True
        servers, self._servers = list(self._servers.values()), {}
        results = await asyncio.gather(
            *(s.stop(remove=not self.keep_folders) for s in servers), return_exceptions=True
        )
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.network.close)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _architecture(server: ServerInfo) -> str:
    # Hetzner's Arm types are the CAX family; everything else is x86.
    return "arm" if server.server_type.lower().startswith("cax") else "x86"


SUPPORTED_IMAGES = tuple(sorted(IMAGES))
