"""The latency probe's loop: measures the served performance experiment, stores samples.

While a performance experiment in ``split`` mode is served, ``LatencyProbe`` loads its
probe paths every ``probeSeconds`` (``probe.Probe``) and stores the time for the variant
that was active before *and* after the load; a load that straddles a configuration
change or a window switch is dropped and counted as such. ``state`` is its part of
``status``. This module never changes what nginx serves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from smart_agent import probe
from smart_agent._loops import pause
from smart_agent.deploy import ExperimentManifest
from smart_agent.serving import Serving
from smart_agent.settings import AgentSettings
from smart_agent.store import Store


class LatencyProbe:
    """The probe of the served experiment; ``close`` ends its connections."""

    def __init__(self, settings: AgentSettings, store: Store, serving: Serving) -> None:
        self.store = store
        self.serving = serving
        self.client = probe.Probe(
            f"http://{settings.listen_host}:{settings.listen_port}", settings.domain
        )
        self.state: dict[str, Any] = {"samples": 0, "dropped": 0, "error": None}

    async def close(self) -> None:
        await self.client.close()

    async def run(self, stop: asyncio.Event) -> None:
        """The *probe* loop."""
        while not stop.is_set():
            plan = self.serving.plan
            deployment = plan.deployment if plan else None
            manifest = deployment.manifest if deployment else None
            if plan is None or manifest is None or not _probed(manifest):
                await pause(stop, 1.0)
                continue
            assert manifest.performance is not None
            before = (self.serving.config, plan.active_variant)
            self.client.base_url = self.serving.base_url()
            try:
                ms = await self.client.load(
                    manifest.performance.probe_paths, manifest.performance.probe_mode
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.state["error"] = str(exc)
            else:
                current = self.serving.plan
                if current and (self.serving.config, current.active_variant) == before:
                    assert plan.active_variant is not None
                    self.store.add_latency(manifest.name, plan.active_variant, ms)
                    self.state["samples"] += 1
                    self.state["error"] = None
                else:
                    self.state["dropped"] += 1
            await pause(stop, manifest.performance.probe_seconds)


def _probed(manifest: ExperimentManifest) -> bool:
    return (
        manifest.type == "performance"
        and manifest.serving.mode == "split"
        and manifest.performance is not None
    )
