"""Serve a Hetzner Cloud simulator on a loopback port, for test fixtures and launchers."""

from __future__ import annotations

from smart_sim.hetzner.app import CONTEXT, HetznerConfig, HetznerContext, create_app
from smart_sim.hetzner.hooks import ServerHooks
from smart_sim.serving import LoopbackServer

__all__ = ["HetznerSimulator"]


class HetznerSimulator(LoopbackServer):
    """A running Hetzner Cloud simulator; ``async with`` starts and always stops it.

    ``url`` (``http://127.0.0.1:PORT/v1``) is what ``hcloud.Client(api_endpoint=...)``
    takes; ``context`` exposes the clock, state, rate limiter, faults and hooks to
    in-process callers.
    """

    api_path = "/v1"

    def __init__(
        self,
        config: HetznerConfig | None = None,
        *,
        hooks: ServerHooks | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(create_app(config, hooks=hooks), host, port)

    @property
    def context(self) -> HetznerContext:
        return self.app[CONTEXT]
