"""Reporting: what the agent tells the intake, and when.

``Reporting`` builds each experiment's cumulative report from the store (the served
experiment's variants first, in its manifest's order; a performance experiment's
variants with their real-user timings, ``realUser``, and the probe's ``latenciesMs``)
and its loops hand them to the ``Reporter``: *report*, at most every ``report_seconds``
per experiment a new report when the counts changed (and every ``REFRESH_SECONDS`` even
when they did not), pending reports retried with backoff; *heartbeat*, the served
experiment's name and revision. This module neither counts nor chooses what nginx
serves; the ``Reporter`` does the HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from smart_agent._loops import pause
from smart_agent.reporter import Reporter
from smart_agent.serving import Serving
from smart_agent.settings import AgentSettings
from smart_agent.store import TIMING_SAMPLES, Store

REFRESH_SECONDS = 300.0
# A report must fit the intake's body limit (64 KiB by default): about 9 kB per variant
# for the probe's sample, about 17 bytes per page view for the real-user timings.
REPORT_BUDGET_BYTES = 60_000
PROBE_BYTES_PER_VARIANT = 9_000
BYTES_PER_TIMED_VIEW = 17
MIN_TIMED_VIEWS = 100


def real_user_views(variants: int) -> int:
    """How many page views' timings a report carries per variant (at most the store's
    sample, ``store.TIMING_SAMPLES``; a uniform subset of it when many variants share
    the report)."""
    variants = max(1, variants)
    spare = REPORT_BUDGET_BYTES - PROBE_BYTES_PER_VARIANT * variants
    fitting = spare // (BYTES_PER_TIMED_VIEW * variants)
    return max(MIN_TIMED_VIEWS, min(TIMING_SAMPLES, fitting))


class Reporting:
    """Builds reports from the store and sends them and the heartbeats through ``reporter``."""

    def __init__(
        self, settings: AgentSettings, store: Store, reporter: Reporter, serving: Serving
    ) -> None:
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self.serving = serving

    def report_content(self, name: str) -> dict[str, Any]:
        totals = self.store.totals(name)
        latencies = self.store.latencies(name)
        served = self.serving.deployment
        deployment = served if served and served.name == name else None
        revision = (
            deployment.manifest.revision
            if deployment
            else self.store.experiment_row(name).get("revision", "")
        )
        order = list(deployment.manifest.variant_names) if deployment else []
        order += sorted(set(totals) - set(order))
        timings = self.store.timings(name, limit=real_user_views(len(order)))
        variants = []
        for variant in order:
            counts = totals.get(variant)
            entry: dict[str, Any] = {
                "name": variant,
                "visitors": counts.visitors if counts else 0,
                "conversions": counts.conversions if counts else 0,
            }
            if variant in latencies:
                entry["latenciesMs"] = [round(ms, 3) for ms in latencies[variant]]
            if variant in timings:
                sample = timings[variant]
                entry["realUser"] = {
                    "views": sample.views,
                    # Whole milliseconds, as the page's script measures them: compact.
                    "ttfbMs": [round(ms) for ms in sample.ttfb_ms],
                    "lcpMs": [round(ms) for ms in sample.lcp_ms],
                    "transferBytes": sample.transfer_bytes,
                }
            variants.append(entry)
        return {"revision": revision, "variants": variants}

    def reported_experiments(self) -> list[str]:
        names = set(self.store.experiment_names())
        if self.serving.deployment is not None:
            names.add(self.serving.deployment.name)
        return sorted(names)

    async def run_reports(self, stop: asyncio.Event) -> None:
        """The *report* loop."""
        last_build = last_refresh = float("-inf")
        while not stop.is_set():
            if time.monotonic() - last_build >= self.settings.report_seconds:
                last_build = time.monotonic()
                # Unchanged counts are sent again now and then, so the intake sees the
                # experiment alive (a new sequence; cumulative counts make it harmless).
                refresh = time.monotonic() - last_refresh >= REFRESH_SECONDS
                if refresh:
                    last_refresh = time.monotonic()
                for name in self.reported_experiments():
                    content = self.report_content(name)
                    if not content["variants"] or not self.reporter.may_report(
                        name, content["revision"]
                    ):
                        continue
                    self.store.prepare_report(name, content, again=refresh)
            await self.reporter.send_pending()
            await pause(stop, min(0.5, self.settings.report_seconds))

    async def run_heartbeats(self, stop: asyncio.Event) -> None:
        """The *heartbeat* loop."""
        while not stop.is_set():
            served = []
            if self.serving.deployment is not None:
                manifest = self.serving.deployment.manifest
                served.append({"name": manifest.name, "revision": manifest.revision})
            delay = await self.reporter.heartbeat(served)
            await pause(stop, delay)
