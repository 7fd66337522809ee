"""Serving a simulator's aiohttp app on a loopback port, for test fixtures and launchers.

Only loopback addresses are accepted, and the host side of a network namespace the
tests make themselves (``LINK_NETWORKS``: a local node's link, where its pods reach
the simulators): a simulator never listens on a real network.
"""

from __future__ import annotations

import ipaddress
from types import TracebackType
from typing import Self

from aiohttp import web

__all__ = ["LINK_NETWORKS", "LoopbackServer", "listenable"]

# 198.18.0.0/15 is for benchmarking networks (RFC 2544) and never routed on the
# internet; the local node's links (198.19.0.0/24) and simulated servers' network take
# their addresses from it.
LINK_NETWORKS = (ipaddress.ip_network("198.18.0.0/15"),)


def listenable(host: str) -> bool:
    """Whether a simulator may listen on ``host``."""
    address = ipaddress.ip_address(host)
    return address.is_loopback or any(address in network for network in LINK_NETWORKS)


class LoopbackServer:
    """A running app on loopback; ``async with`` starts and always stops it. ``url`` is
    the API endpoint (``root_url`` plus ``api_path``); ``root_url`` is where the
    ``/_sim`` control API lives."""

    api_path = ""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        if not listenable(host):
            raise ValueError(
                f"the simulator listens on loopback or a test link only, not on {host}"
            )
        self.app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.root_url = ""

    @property
    def url(self) -> str:
        if not self.root_url:
            raise RuntimeError("the simulator is not started")
        return f"{self.root_url}{self.api_path}"

    async def start(self) -> str:
        """Start serving; returns the API endpoint."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await self.stop()
            raise
        host, port = runner.addresses[0][:2]
        self.root_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving (idempotent); requests in flight get a second to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
