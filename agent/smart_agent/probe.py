"""The latency probe of performance experiments: the agent loads its own pages.

A performance experiment serves one variant's nginx settings at a time (time windows,
``schedule``); the probe loads the experiment's probe paths through nginx the way a
visitor would and records how long the whole load took for the variant that was active
before *and* after the load (a load that straddles a switch is dropped).

- ``cold``: a new connection per path and no validators, as a first visit.
- ``returning``: one keep-alive connection, with ``If-None-Match`` and
  ``If-Modified-Since`` from the previous load, as a repeat visit.

The probe's user agent is a bot's (``smart-agent``), so its loads are never counted as
visitors. This module measures; it does not store or report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import aiohttp

from smart_agent import __version__
from smart_agent.deploy import ExperimentManifest, ProbeMode


def schedule(manifest: ExperimentManifest) -> tuple[str, ...]:
    """One cycle of windows: each variant as many times as its weight (reduced by gcd)."""
    weights = [(v.name, v.weight) for v in manifest.variants if v.weight > 0]
    divisor = math.gcd(*(w for _, w in weights))
    cycle: list[str] = []
    # Interleave, so a 2:1 split runs a, b, a rather than a, a, b.
    remaining = {name: weight // divisor for name, weight in weights}
    while any(remaining.values()):
        for name, _ in weights:
            if remaining[name]:
                cycle.append(name)
                remaining[name] -= 1
    return tuple(cycle)


def active_variant(manifest: ExperimentManifest, now: float) -> str:
    """The variant whose settings are served in the time window holding ``now``."""
    window = manifest.performance.window_seconds if manifest.performance else 3600
    cycle = schedule(manifest)
    return cycle[int(now // window) % len(cycle)]


def window_end(manifest: ExperimentManifest, now: float) -> float:
    window = manifest.performance.window_seconds if manifest.performance else 3600
    return (now // window + 1) * window


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``samples``."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Probe:
    """Loads pages from the agent's nginx and times them."""

    def __init__(self, base_url: str, host: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": f"smart-agent/{__version__} (latency probe)"}
        if host:
            self.headers["Host"] = host
        self._validators: dict[str, dict[str, str]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def load(self, paths: Sequence[str], mode: ProbeMode) -> float:
        """Milliseconds to load every path in turn; raises ``aiohttp.ClientError``."""
        timeout = aiohttp.ClientTimeout(total=30)
        started = time.perf_counter()
        if mode == "cold":
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                for path in paths:
                    await self._fetch(session, path, {})
        else:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=timeout)
            for path in paths:
                validators = self._validators.get(path, {})
                response_headers = await self._fetch(self._session, path, validators)
                kept = {
                    "If-None-Match": response_headers.get("ETag"),
                    "If-Modified-Since": response_headers.get("Last-Modified"),
                }
                fresh = {k: v for k, v in kept.items() if v}
                if fresh:
                    self._validators[path] = fresh
        return (time.perf_counter() - started) * 1000

    async def _fetch(
        self, session: aiohttp.ClientSession, path: str, extra: dict[str, str]
    ) -> dict[str, str]:
        async with session.get(
            self.base_url + path,
            headers={**self.headers, **extra, "Accept-Encoding": "gzip"},
            allow_redirects=False,
            # Its own server over loopback: the certificate names the site, not the
            # address, and what is timed is the same handshake either way.
            ssl=False,
        ) as response:
            await response.read()
            if response.status >= 400:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=path
                )
            return dict(response.headers)
