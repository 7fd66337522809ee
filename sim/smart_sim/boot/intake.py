"""A stand-in for the results intake on the provider network's gateway, for booted servers.

Booted servers reach host processes only at the gateway address, so this double listens
there (never on a public address). It speaks the two routes of ``docs/intake-api.md``
that an agent calls (``POST /v1/results``, ``POST /v1/heartbeat``), accepts only the
keys it was given (401 otherwise, as the real intake does for an unknown key) and records
what arrived with the key that sent it, so a test can tell which key an agent used and
that a revoked one is no longer used.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["GatewayIntake", "Received"]


@dataclass
class Received:
    kind: str
    """``results`` or ``heartbeat``."""
    key: str
    body: dict[str, Any] = field(default_factory=dict)


class GatewayIntake:
    """Records agents' reports and heartbeats; ``async with`` serves it on ``host``."""

    def __init__(self, host: str, keys: set[str] | None = None) -> None:
        if not ipaddress.ip_address(host).is_private:
            raise ValueError(f"the intake double listens on private addresses only, not {host}")
        self.host = host
        self.keys: set[str] = set(keys or ())
        """Accepted bearer keys; revoke one by removing it."""
        self.received: list[Received] = []
        self.refused: list[Received] = []
        with socket.socket() as probe:
            probe.bind((host, 0))
            self.port = int(probe.getsockname()[1])
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reports(self, experiment: str) -> list[dict[str, Any]]:
        return [
            r.body
            for r in self.received
            if r.kind == "results" and r.body.get("experiment") == experiment
        ]

    def latest(self, experiment: str) -> dict[str, tuple[int, int]]:
        """Counts of the highest sequence received: variant -> (visitors, conversions)."""
        reports = self.reports(experiment)
        if not reports:
            return {}
        best = max(reports, key=lambda r: r["sequence"])
        return {v["name"]: (v["visitors"], v["conversions"]) for v in best["variants"]}

    def heartbeats(self, key: str | None = None) -> list[dict[str, Any]]:
        return [
            r.body for r in self.received if r.kind == "heartbeat" and (key is None or r.key == key)
        ]

    async def _handle(self, request: web.Request, kind: str) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        body = await request.json()
        entry = Received(kind, key, body if isinstance(body, dict) else {})
        if scheme != "Bearer" or key not in self.keys:
            self.refused.append(entry)
            return web.json_response({"error": "unknown key"}, status=401)
        self.received.append(entry)
        if kind == "heartbeat":
            return web.json_response({"accepted": True}, status=202)
        last = max(
            (
                r.body["sequence"]
                for r in self.received[:-1]
                if r.kind == "results" and r.body.get("experiment") == entry.body.get("experiment")
            ),
            default=0,
        )
        if entry.body.get("sequence", 0) <= last:
            return web.json_response({"accepted": False, "reason": "stale sequence"})
        return web.json_response(
            {"accepted": True, "sequence": entry.body.get("sequence")}, status=202
        )

    async def _results(self, request: web.Request) -> web.Response:
        return await self._handle(request, "results")

    async def _heartbeat(self, request: web.Request) -> web.Response:
        return await self._handle(request, "heartbeat")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/results", self._results)
        app.router.add_post("/v1/heartbeat", self._heartbeat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
