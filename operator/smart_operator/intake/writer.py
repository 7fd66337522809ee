"""The writers: accepted reports and heartbeats become conditional status patches.

Each writer coalesces (``coalesce.Coalescer``) per object and writes like this:

1. Start from the cached object (the watch keeps it fresh; a write's response
   refreshes it too), or GET it when the cache has none or an older incarnation.
2. Decide what to write from the object as read and the newest value
   (``status.plan_results`` / ``status.plan_agent``); maybe nothing.
3. Merge-patch the status subresource with ``metadata.resourceVersion`` of the read.
   If anyone wrote in between (the operator, another intake replica), the API server
   answers 409: GET the object again and go back to 2. Step 2 compares sequences
   and takes the larger counts, so whichever replica writes last, the status ends at
   the highest sequence seen by any of them, and no write based on a stale read
   ever lands. ``status.history`` is decided in step 2 too, from the history as
   read, so a retried write adds its point once, and only if still due.

With several replicas each one does this independently; no coordination is needed
beyond the API server's resourceVersion check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from smart_operator.clients.kubeapi import WatchEvent
from smart_operator.coalesce import Coalescer
from smart_operator.errors import Conflict, NotFound
from smart_operator.intake import metrics
from smart_operator.intake.experiments import ExperimentCache, ExperimentView
from smart_operator.intake.keys import DomainRef, DomainView, KeyCache, domain_view
from smart_operator.intake.peers import Peers
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.status import (
    HistoryRules,
    PendingHeartbeat,
    PendingReport,
    PendingSilence,
    Skip,
    Write,
    plan_agent,
    plan_results,
    plan_silence,
)
from smart_operator.models.experiment import LEGACY_INCARNATION

log = logging.getLogger(__name__)

MAX_CONFLICTS = 20
"""Conflicts in a row before a write is retried later (with backoff) instead."""


class Store(Protocol):
    """The API calls the intake makes (``clients.results.ResultsApi``)."""

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def get_domain(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_experiment_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def patch_domain_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...

    def watch(self, plural: str) -> AsyncIterator[WatchEvent]: ...

    async def close(self) -> None: ...


class _TooManyConflicts(Exception):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


ResultsKey = tuple[str, str, str]
"""Namespace, Experiment name and agent incarnation: each incarnation's newest report
is kept apart, so a replaced server's last counts are not lost to its successor's."""


def _incarnation(pending: PendingReport) -> str:
    return pending.report.incarnation or LEGACY_INCARNATION


class ResultsWriter:
    """Writes accepted reports onto Experiment status. The analysis runs on
    ``analysis`` (a small thread pool the app owns), never on the event loop."""

    def __init__(
        self,
        api: Store,
        cache: ExperimentCache,
        settings: IntakeSettings,
        analysis: Executor | None = None,
    ) -> None:
        self._api = api
        self._cache = cache
        self._analysis = analysis
        self._idle = settings.idle_write_seconds
        self._history = HistoryRules(settings.history_seconds, settings.history_points)
        self._accepted: dict[tuple[str, str], int] = {}
        self._coalescer: Coalescer[ResultsKey, PendingReport] = Coalescer(
            "results",
            self._write,
            settings.flush_interval_seconds,
            concurrency=settings.max_concurrent_writes,
        )
        metrics.PENDING.labels("experiment").set_function(lambda: len(self._coalescer))

    def __len__(self) -> int:
        return len(self._coalescer)

    @property
    def idle(self) -> bool:
        return self._coalescer.busy == 0

    def accepted(self, uid: str, incarnation: str) -> int:
        """The highest sequence this process accepted from ``incarnation`` for the
        Experiment ``uid``."""
        return self._accepted.get((uid, incarnation), 0)

    def pending(self, namespace: str, name: str, incarnation: str) -> PendingReport | None:
        return self._coalescer.pending((namespace, name, incarnation))

    def offer(self, pending: PendingReport) -> None:
        if len(self._accepted) > 200_000:  # only a fast path; the status decides
            self._accepted.clear()
        sequence = pending.report.sequence
        key = (pending.uid, _incarnation(pending))
        self._accepted[key] = max(self._accepted.get(key, 0), sequence)
        namespace = pending.domain.namespace
        self._coalescer.offer((namespace, pending.report.experiment, key[1]), pending)

    async def drain(self, within: float) -> int:
        return await self._coalescer.drain(within)

    async def _read(self, namespace: str, name: str) -> ExperimentView | None:
        obj = await self._api.get_experiment(namespace, name)
        return self._cache.put(obj) if obj is not None else None

    async def _plan(self, view: ExperimentView, pending: PendingReport) -> Write | Skip:
        """``plan_results`` off the event loop: the statistics take milliseconds (bounded
        whatever the counts), which the loop spends answering agents instead."""
        plan = functools.partial(plan_results, view, pending, _now(), self._idle, self._history)
        return await asyncio.get_running_loop().run_in_executor(self._analysis, plan)

    async def _write(self, key: ResultsKey, pending: PendingReport) -> None:
        namespace, name, _ = key
        view = self._cache.get(namespace, name)
        if view is None or view.uid != pending.uid:
            view = await self._read(namespace, name)
        for _ in range(MAX_CONFLICTS):
            if view is None:
                metrics.SKIPPED.labels("experiment", "deleted").inc()
                return
            plan = await self._plan(view, pending)
            if isinstance(plan, Skip):
                metrics.SKIPPED.labels("experiment", plan.reason).inc()
                return
            started = time.perf_counter()
            try:
                updated = await self._api.patch_experiment_status(
                    namespace, name, view.resource_version, plan.status
                )
            except Conflict:
                metrics.WRITES.labels("experiment", "conflict").inc()
                view = await self._read(namespace, name)
                continue
            except NotFound:
                metrics.WRITES.labels("experiment", "gone").inc()
                metrics.SKIPPED.labels("experiment", "deleted").inc()
                return
            except Exception:
                metrics.WRITES.labels("experiment", "error").inc()
                raise
            finally:
                metrics.WRITE_SECONDS.labels("experiment").observe(time.perf_counter() - started)
            metrics.WRITES.labels("experiment", "ok").inc()
            metrics.DELAY_SECONDS.observe(time.monotonic() - pending.received)
            self._cache.put(updated)
            return
        raise _TooManyConflicts(f"{namespace}/{name}: {MAX_CONFLICTS} conflicts in a row")


@dataclass
class Liveness:
    """What this process knows of one agent's heartbeats."""

    last: PendingHeartbeat | None
    """The last heartbeat it received; ``None`` for an agent taken as alive from the
    status when the process started."""
    since: datetime
    """When it received that heartbeat (or took the agent as alive)."""


class HeartbeatWriter:
    """Writes heartbeats onto Domain ``status.agent``: liveness is kept in memory, and
    written on a change, as a renewal every ``heartbeat_write_seconds``, or as a mark
    when the agent falls silent (``status`` says when; docs/intake-api.md, "Liveness").

    ``sweep`` finds the agents no heartbeat reached for ``silent_seconds`` (``run``
    calls it every few seconds). At the first sweep after the Domains are listed, every
    agent the status shows alive is taken as alive from then on, so an agent that fell
    silent while no intake ran is still marked. ``observe`` sees every Domain from the
    watch: a mark another replica wrote for an agent this one heard from since is
    cleared at once, by writing its last heartbeat."""

    def __init__(
        self,
        api: Store,
        keys: KeyCache,
        settings: IntakeSettings,
        experiments: ExperimentCache | None = None,
        clock: Callable[[], datetime] = _now,
        peers: Peers | None = None,
    ) -> None:
        self._api = api
        self._keys = keys
        self._experiments = experiments
        self._clock = clock
        self._peers = peers
        self._every = settings.heartbeat_write_seconds
        self._silent_after = timedelta(seconds=settings.silent_seconds)
        self._live: dict[DomainRef, Liveness] = {}
        self._seeded = False
        self._coalescer: Coalescer[DomainRef, PendingHeartbeat | PendingSilence] = Coalescer(
            "heartbeats",
            self._write,
            settings.flush_interval_seconds,
            concurrency=settings.max_concurrent_writes,
        )
        metrics.PENDING.labels("domain").set_function(lambda: len(self._coalescer))
        metrics.LIVE_AGENTS.set_function(lambda: len(self._live))

    def __len__(self) -> int:
        return len(self._coalescer)

    @property
    def idle(self) -> bool:
        return self._coalescer.busy == 0

    @property
    def sweep_seconds(self) -> float:
        """How often ``run`` sweeps: a small part of ``silent_seconds``."""
        return min(10.0, max(0.05, self._silent_after.total_seconds() / 18))

    def offer(self, pending: PendingHeartbeat) -> None:
        self._live[pending.domain] = Liveness(pending, pending.received_at)
        self._coalescer.offer(pending.domain, pending)

    def heard(self, refs: list[DomainRef]) -> dict[DomainRef, datetime]:
        """When this process last received a heartbeat from each of ``refs`` it heard
        from (what it answers the other replicas, ``peers``)."""
        heard = {}
        for ref in refs:
            live = self._live.get(ref)
            if live is not None and live.last is not None:
                heard[ref] = live.last.received_at
        return heard

    async def sweep(self) -> int:
        """Mark the agents no heartbeat reached (this process, or any replica ``peers``
        names) for ``silent_seconds``; return how many marks were queued."""
        now = self._clock()
        if not self._seeded and self._keys.synced:
            self._seeded = True
            for view in self._keys.domains():
                agent = view.agent
                alive = (
                    agent is not None and agent.last_seen is not None and agent.silent_since is None
                )
                if alive and view.ref not in self._live:
                    self._live[view.ref] = Liveness(None, now)
        cutoff = now - self._silent_after
        due = [(ref, live) for ref, live in self._live.items() if live.since <= cutoff]
        if not due:
            return 0
        elsewhere = await self._peers.heard([ref for ref, _ in due]) if self._peers else {}
        marked = 0
        for ref, live in due:
            if self._live.get(ref) is not live:
                continue  # a heartbeat arrived meanwhile
            later = elsewhere.get(ref)
            if later is not None and later > cutoff:
                self._live[ref] = Liveness(live.last, later)  # another replica hears it
                continue
            del self._live[ref]
            found = self._keys.domain(ref)
            agent = found.agent if found is not None else None
            # The last heartbeat any replica received, for lastSeen on the mark.
            heard = [live.last.received_at] if live.last is not None else []
            heard += [later] if later is not None else []
            last = max(heard, default=None)
            if (
                agent is None
                or agent.last_seen is None
                or agent.silent_since is not None
                or (last is not None and agent.last_seen > last)
            ):
                metrics.SILENCES.labels("left").inc()
                continue
            self._coalescer.offer(ref, PendingSilence(ref, last, now))
            marked += 1
        return marked

    def observe(self, kind: str, objects: list[dict[str, Any]]) -> None:
        """A watch event of Domains (after ``KeyCache.apply``): clear a silence mark on an
        agent this process heard from after the mark's ``lastSeen``."""
        if kind == "DELETED":
            for obj in objects:
                view = domain_view(obj)
                if view is not None:
                    self._live.pop(view.ref, None)
            return
        for obj in objects:
            view = domain_view(obj)
            agent = view.agent if view is not None else None
            if view is None or agent is None or agent.silent_since is None:
                continue
            live = self._live.get(view.ref)
            if live is None or live.last is None:
                continue
            if agent.last_seen is None or live.since > agent.last_seen:
                with contextlib.suppress(RuntimeError):  # draining at shutdown
                    self._coalescer.offer(view.ref, live.last)

    async def run(self) -> None:
        """Sweep every ``sweep_seconds``, for as long as the process lives."""
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping for silent agents failed")

    async def drain(self, within: float) -> int:
        return await self._coalescer.drain(within)

    async def _read(self, ref: DomainRef) -> DomainView | None:
        obj = await self._api.get_domain(ref.namespace, ref.name)
        if obj is None:
            return None
        self._keys.put(obj)
        return domain_view(obj)

    def _plan(self, view: DomainView, pending: PendingHeartbeat | PendingSilence) -> Write | Skip:
        if isinstance(pending, PendingSilence):
            return plan_silence(view.agent, pending)
        deployed = (
            self._experiments.deployed_at(view.ref.namespace, view.ref.name)
            if self._experiments is not None
            else None
        )
        return plan_agent(view.agent, pending, self._every, deployed)

    async def _write(self, ref: DomainRef, pending: PendingHeartbeat | PendingSilence) -> None:
        view: DomainView | None = self._keys.domain(ref) or await self._read(ref)
        for _ in range(MAX_CONFLICTS):
            if view is None:
                metrics.SKIPPED.labels("domain", "deleted").inc()
                return
            plan = self._plan(view, pending)
            if isinstance(plan, Skip):
                metrics.SKIPPED.labels("domain", plan.reason).inc()
                if isinstance(pending, PendingSilence):
                    metrics.SILENCES.labels("left").inc()
                return
            started = time.perf_counter()
            try:
                updated = await self._api.patch_domain_status(
                    ref.namespace, ref.name, view.resource_version, plan.status
                )
            except Conflict:
                metrics.WRITES.labels("domain", "conflict").inc()
                view = await self._read(ref)
                continue
            except NotFound:
                metrics.WRITES.labels("domain", "gone").inc()
                metrics.SKIPPED.labels("domain", "deleted").inc()
                return
            except Exception:
                metrics.WRITES.labels("domain", "error").inc()
                raise
            finally:
                metrics.WRITE_SECONDS.labels("domain").observe(time.perf_counter() - started)
            metrics.WRITES.labels("domain", "ok").inc()
            if isinstance(pending, PendingSilence):
                metrics.SILENCES.labels("marked").inc()
            self._keys.put(updated)
            return
        raise _TooManyConflicts(f"{ref}: {MAX_CONFLICTS} conflicts in a row")
