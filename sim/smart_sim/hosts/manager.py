"""The Hetzner simulator's server hooks that turn each simulated server into a host.

``HetznerSimulator(hooks=HostManager(base_dir))``: every server the API creates boots as a
:class:`~smart_sim.hosts.host.SimulatedHost` in ``<base_dir>/<name>-<id>/``; deleting the
server stops the host and (by default) removes its folder. The hooks return at once (the
boot runs in its own task), as :class:`~smart_sim.hetzner.hooks.ServerHooks` requires.
The manager also answers :class:`~smart_sim.hetzner.hooks.HostStatusSource`, so the
simulator's ``GET /_sim/servers`` shows each host's state and why a boot failed.

It must not touch the simulator's state: hosts only learn about servers through hooks.
Use one ``base_dir`` per simulator (server ids start again in a new simulator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from smart_sim.hetzner.hooks import ServerInfo
from smart_sim.hosts.cloudinit import UserDataValidator
from smart_sim.hosts.host import SimulatedHost

__all__ = ["HostManager"]


class HostManager:
    """Boots simulated servers as hosts; implements the Hetzner simulator's ServerHooks."""

    def __init__(
        self,
        base_dir: Path | str,
        ssh_port: int = 22,
        *,
        keep_folders: bool = False,
        allow_exec: bool = True,
        cloud_init: str = "cloud-init",
        http_port: int | None = None,
    ) -> None:
        """``ssh_port``: where every host's SSH endpoint listens on its own address (22
        needs root; 0 lets each host pick a free port). ``keep_folders`` keeps a deleted
        server's folder for inspection. ``allow_exec`` lets SSH clients run commands.
        ``cloud_init`` is the command that validates user-data."""
        self.base_dir = Path(base_dir)
        self.ssh_port = ssh_port
        self.http_port = http_port
        """Where each host's agent serves HTTP (None: hosts run no agent)."""
        self.keep_folders = keep_folders
        self.allow_exec = allow_exec
        self.validator = UserDataValidator(cloud_init)
        self._hosts: dict[int, SimulatedHost] = {}
        self._closed = False

    @property
    def hosts(self) -> Mapping[int, SimulatedHost]:
        """The hosts of the servers that exist, by server id."""
        return dict(self._hosts)

    def host(self, ref: int | str) -> SimulatedHost:
        """A host by server id or server name (at creation); KeyError if there is none."""
        if isinstance(ref, int):
            if ref in self._hosts:
                return self._hosts[ref]
        else:
            for host in self._hosts.values():
                if host.name == ref:
                    return host
        raise KeyError(f"no simulated host for server {ref!r}")

    async def on_server_created(self, server: ServerInfo) -> None:
        """Start booting the server's host (returns before the boot is done)."""
        if self._closed:
            raise RuntimeError("the host manager is closed")
        if server.id in self._hosts:
            return
        host = SimulatedHost(
            server,
            self.base_dir / f"{server.name}-{server.id}",
            validator=self.validator,
            ssh_port=self.ssh_port,
            allow_exec=self.allow_exec,
            http_port=self.http_port,
        )
        self._hosts[server.id] = host
        host.start()

    async def on_server_deleted(self, server: ServerInfo) -> None:
        """Stop the server's host: its SSH endpoint closes and it is marked stopped."""
        host = self._hosts.pop(server.id, None)
        if host is not None:
            await host.stop(remove=not self.keep_folders)

    def host_status(self, server_id: int) -> Mapping[str, object] | None:
        """The host's state for the simulator's control API; None if it has no host."""
        host = self._hosts.get(server_id)
        return None if host is None else host.status()

    async def close(self) -> None:
        """Stop every host (idempotent); their folders go unless ``keep_folders``."""
        self._closed = True
        hosts, self._hosts = list(self._hosts.values()), {}
        await asyncio.gather(*(h.stop(remove=not self.keep_folders) for h in hosts))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
