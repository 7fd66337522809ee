"""The uptime checker: every set-up Domain's site checked from the platform side at a
steady interval, spread over time, with a bound on the checks in flight.

The Domain passes tell it which sites exist (``watch`` after each pass once its agent is
installed, ``forget`` when it is deleted or its passes stop); ``run`` checks each
at its own offset inside ``SMART_UPTIME_SECONDS`` (``uptime.next_due``), through the
``SiteProbe`` port. Each result is folded into the Domain's ``status.availability``
(``uptime.record``), which this checker alone writes: at once when the site goes down
or comes back (and then the Domain's next pass runs at once, and turns the verdict
into the ``Available`` condition and its Event), else at most every
``SMART_UPTIME_WRITE_SECONDS``. A check still running when its next turn comes is
not doubled: that turn is skipped.

Metrics: ``smartserver_site_checks_total{outcome}``, and per Domain
``smartserver_site_up`` and ``smartserver_site_latency_seconds`` (the alert rule
``SmartServerSiteDown`` watches the former).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from smart_operator import uptime
from smart_operator.errors import ExternalError
from smart_operator.models.domain import AvailabilityStatus
from smart_operator.ports import ObjectRef, Resources, Site, SiteProbe

log = logging.getLogger(__name__)

CHECKS = Counter(
    "smartserver_site_checks_total",
    "Outside checks of the Domains' sites, by outcome (ok, or the stage that failed: "
    "dns, tcp, tls, http, timeout)",
    ["outcome"],
)
TICK = 1.0
"""The longest the loop sleeps: a newly watched site waits at most this past its turn."""


@dataclass
class Watched:
    ref: ObjectRef
    site: Site
    availability: AvailabilityStatus | None
    due: float
    written_at: float = float("-inf")
    running: bool = False
    flipped: bool = False
    """The site went down or came back, and that is not written yet."""


class UptimeChecker:
    def __init__(
        self,
        probe: SiteProbe,
        resources: Resources,
        *,
        interval: float,
        failures: int,
        concurrency: int,
        write_seconds: float,
        on_change: Callable[[str], None] = lambda uid: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_change(uid)``: the site went down or came back (run its Domain's pass now)."""
        self.probe = probe
        self.resources = resources
        self.interval = interval
        self.failures = failures
        self.write_seconds = write_seconds
        self.on_change = on_change
        self.clock = clock
        self.slots = asyncio.Semaphore(concurrency)
        self.sites: dict[str, Watched] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # -- what to check ---------------------------------------------------------------------

    def watch(
        self, uid: str, ref: ObjectRef, site: Site, recorded: AvailabilityStatus | None
    ) -> None:
        """Check ``site`` from now on (or keep checking it, with what changed of it).
        ``recorded``: the availability on the status, where a restarted operator
        continues the history and the verdict."""
        known = self.sites.get(uid)
        if known is not None:
            known.ref, known.site = ref, site
            return
        self.sites[uid] = Watched(
            ref, site, recorded, uptime.next_due(uid, self.interval, self.clock())
        )
        self._changed.set()

    def forget(self, uid: str) -> None:
        watched = self.sites.pop(uid, None)
        if watched is not None:
            SITES.forget(uid)

    def latest(self, uid: str) -> AvailabilityStatus | None:
        watched = self.sites.get(uid)
        return watched.availability if watched else None

    def overlay(self, uid: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the availability this checker last wrote, when the watched
        object does not show it yet (a pass run by a change reads it at once)."""
        watched = self.sites.get(uid)
        if watched is None or watched.availability is None or watched.written_at < 0:
            return body
        status = dict(body.get("status") or {})
        shown = status.get("availability") or {}
        written = watched.availability.model_dump(mode="json", by_alias=True, exclude_none=True)
        if str(shown.get("checkedAt", "")) >= written["checkedAt"]:
            return body
        status["availability"] = written
        return {**body, "status": status}

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Check every watched site at its turns, until cancelled."""
        try:
            while True:
                now = self.clock()
                for uid, watched in list(self.sites.items()):
                    if watched.due > now:
                        continue
                    watched.due = uptime.next_due(uid, self.interval, now)
                    if watched.running:
                        continue  # still checking since the last turn: skip this one
                    watched.running = True
                    task = asyncio.create_task(self.check(uid, watched), name=f"uptime {uid}")
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                upcoming = min((w.due for w in self.sites.values()), default=now + TICK)
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), timeout=max(0.0, min(TICK, upcoming - now))
                    )
        finally:
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def check(self, uid: str, watched: Watched) -> None:
        try:
            async with self.slots:
                result = await self.probe.check(watched.site)
            CHECKS.labels(result.stage).inc()
            if self.sites.get(uid) is not watched:
                return  # forgotten meanwhile
            before = watched.availability
            after = uptime.record(before, result, self.failures)
            watched.availability = after
            SITES.record(uid, watched.ref, after)
            if uptime.changed(before, after):
                watched.flipped = True  # until written: a failed write is tried again
            now = self.clock()
            if watched.flipped or now - watched.written_at >= self.write_seconds:
                payload = after.model_dump(mode="json", by_alias=True, exclude_none=True)
                await self.resources.patch_status(watched.ref, {"availability": payload})
                watched.written_at = now
            if watched.flipped:
                watched.flipped = False
                log.log(
                    logging.WARNING if not after.up else logging.INFO,
                    "%s/%s: site %s: %s",
                    watched.ref.namespace,
                    watched.ref.name,
                    "up" if after.up else "down",
                    after.last_result,
                )
                self.on_change(uid)
        except ExternalError as error:
            log.warning("availability of %s not written: %s", watched.ref.name, error)
        except Exception:
            log.exception("the uptime check of %s failed", watched.ref.name)
        finally:
            watched.running = False


class SiteCensus:
    """``smartserver_site_up{domain_namespace,domain}`` (1 up, 0 down: several checks in
    a row failed) and ``smartserver_site_latency_seconds{domain_namespace,domain}`` (the
    latest check that passed) of every checked site of this replica. The Domain's
    namespace is ``domain_namespace``: Prometheus sets ``namespace`` to the operator's."""

    def __init__(self) -> None:
        self._sites: dict[str, tuple[str, str, bool, float | None]] = {}

    def record(self, uid: str, ref: ObjectRef, availability: AvailabilityStatus) -> None:
        latency = availability.latency_ms / 1000 if availability.latency_ms is not None else None
        previous = self._sites.get(uid)
        if latency is None and previous is not None:
            latency = previous[3]
        self._sites[uid] = (ref.namespace or "", ref.name, availability.up, latency)

    def forget(self, uid: str) -> None:
        self._sites.pop(uid, None)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "smartserver_site_up",
            "Whether visitors reach each Domain's site, checked from the platform (0 once "
            "SMART_UPTIME_FAILURES checks in a row failed)",
            labels=["domain_namespace", "domain"],
        )
        latency = GaugeMetricFamily(
            "smartserver_site_latency_seconds",
            "The latest passing outside check of each Domain's site, DNS to last byte",
            labels=["domain_namespace", "domain"],
        )
        for namespace, name, is_up, seconds in sorted(self._sites.values()):
            up.add_metric([namespace, name], 1.0 if is_up else 0.0)
            if seconds is not None:
                latency.add_metric([namespace, name], seconds)
        yield up
        yield latency


SITES = SiteCensus()
REGISTRY.register(SITES)
