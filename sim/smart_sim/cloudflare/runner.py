"""Serve a Cloudflare simulator on a loopback port, for test fixtures and launchers."""

from __future__ import annotations

from smart_sim.cloudflare.app import CONTEXT, CloudflareConfig, CloudflareContext, create_app
from smart_sim.serving import LoopbackServer

__all__ = ["CloudflareSimulator"]


class CloudflareSimulator(LoopbackServer):
    """A running Cloudflare simulator; ``async with`` starts and always stops it.

    ``url`` (``http://127.0.0.1:PORT/client/v4``) is what ``AsyncCloudflare(base_url=...)``
    takes; ``context`` exposes the clock, state, rate limiter and faults to in-process
    callers.
    """

    api_path = "/client/v4"

    def __init__(
        self, config: CloudflareConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(create_app(config), host, port)

    @property
    def context(self) -> CloudflareContext:
        return self.app[CONTEXT]
