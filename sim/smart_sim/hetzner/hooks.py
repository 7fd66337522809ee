"""The hook through which a simulated server can come alive as a host on this machine.

The Hetzner simulator calls :class:`ServerHooks` when a server is created (after the
create has committed, before the response is sent) and when it is deleted. A host
simulator implements the protocol: it binds the server's loopback ``ipv4``, runs the
``user_data`` cloud-init, and authorises ``ssh_public_keys``. A hook is awaited inside
the API request, so it must return quickly and start any slow work in a task of its own;
an exception from it is logged and does not fail the API request.

A hook may also be a :class:`HostStatusSource`: the control API's ``GET /_sim/servers``
then shows each server's host state (for example a boot that failed, and why) under
``host``. The public API never shows it: real Hetzner knows nothing of cloud-init.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["HostStatusSource", "ServerHooks", "ServerInfo"]


@dataclass(frozen=True)
class ServerInfo:
    """What a host needs to know about a simulated server (a snapshot)."""

    id: int
    name: str
    ipv4: str | None
    """A distinct address in 127.0.0.0/8 (by default 127.10.x.y), or on a booted servers'
    provider network in 198.18.0.0/16; None without IPv4."""
    ipv6_network: str | None
    """A /64 from the documentation prefix 2001:db8::/32; not routable here."""
    user_data: str | None
    ssh_public_keys: tuple[str, ...]
    labels: Mapping[str, str]
    server_type: str
    image: str
    location: str


class ServerHooks(Protocol):
    """Receives the lifecycle of simulated servers."""

    async def on_server_created(self, server: ServerInfo) -> None:
        """A server was created; it reports ``running`` once its create action is done."""
        ...

    async def on_server_deleted(self, server: ServerInfo) -> None:
        """A server was deleted; it is no longer listed by the API."""
        ...


@runtime_checkable
class HostStatusSource(Protocol):
    """Hooks that can describe the host a server became (for the control API)."""

    def host_status(self, server_id: int) -> Mapping[str, object] | None:
        """JSON-ready state of the server's host, or None if it has none."""
        ...
