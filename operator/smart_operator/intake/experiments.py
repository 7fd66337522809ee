"""What the intake knows of every Experiment: a cache fed by a watch cluster-wide,
so that checking a report (does the experiment exist, is it this Domain's, which
variants does it have, which sequence is recorded) costs no API call.

A miss (an experiment created a moment ago, before its watch event arrived) is
looked up with a GET, within bounds (``misses``): a name found missing is remembered
for a few seconds, concurrent lookups of one name share one GET, and GETs are budgeted
per Domain and overall, so an agent, or whoever holds its key, cannot turn reports for
made-up names into API calls. The writers re-read the object before they write, so a
stale entry can delay a write but never misdirect one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, ValidationError

from smart_operator.intake import metrics
from smart_operator.intake.misses import MissBudget, MissLimits, Throttled
from smart_operator.models.common import CamelModel
from smart_operator.models.experiment import (
    Decision,
    ExperimentSpec,
    HistoryPoint,
    IncarnationCounts,
    Statistics,
    VariantResult,
)

log = logging.getLogger(__name__)


class ResultsStatus(CamelModel):
    """The part of ``ExperimentStatus`` the intake writes (and so reads); the rest of
    the status belongs to the operator and is neither read nor touched."""

    last_sequence: int | None = None
    last_report_at: datetime | None = None
    variants: list[VariantResult] = Field(default_factory=list)
    statistics: Statistics | None = None
    decision: Decision | None = None
    history: list[HistoryPoint] = Field(default_factory=list)
    incarnations: list[IncarnationCounts] = Field(default_factory=list)
    retired_incarnations: list[str] = Field(default_factory=list)
    counts_restarted_at: datetime | None = None


Fetch = Callable[[str, str], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class ExperimentView:
    namespace: str
    name: str
    uid: str
    resource_version: str
    created: datetime
    spec: ExperimentSpec
    status: ResultsStatus

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def experiment_view(obj: dict[str, Any]) -> ExperimentView | None:
    """The intake's view of an Experiment object; ``None`` if it cannot be read."""
    meta = obj.get("metadata") or {}
    try:
        spec = ExperimentSpec.model_validate(obj.get("spec") or {})
        status = ResultsStatus.model_validate(obj.get("status") or {})
    except ValidationError as error:
        log.warning(
            "ignoring unreadable Experiment %s/%s: %s",
            meta.get("namespace"),
            meta.get("name"),
            error.errors(include_url=False, include_input=False)[:3],
        )
        return None
    if not meta.get("name") or not meta.get("namespace"):
        return None
    return ExperimentView(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        created=_timestamp(meta.get("creationTimestamp")),
        spec=spec,
        status=status,
    )


class ExperimentCache:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, limits: MissLimits | None = None
    ) -> None:
        self.synced = False
        self._views: dict[tuple[str, str], ExperimentView] = {}
        self._misses = MissBudget(limits or MissLimits(), clock)
        self._lookups: dict[tuple[str, str], asyncio.Task[ExperimentView | None]] = {}
        self._deployed: dict[tuple[str, str], dict[str, datetime]] = {}
        """(namespace, Domain) → Experiment name → ``status.deployedAt`` (the operator's
        field, read for the heartbeat writer only)."""

    def __len__(self) -> int:
        return len(self._views)

    def get(self, namespace: str, name: str) -> ExperimentView | None:
        return self._views.get((namespace, name))

    def views(self) -> list[ExperimentView]:
        """Every cached Experiment (for the platform view)."""
        return list(self._views.values())

    def deployed_at(self, namespace: str, domain: str) -> datetime | None:
        """When an Experiment of the Domain was last deployed (confirmed by the operator)."""
        times = self._deployed.get((namespace, domain))
        return max(times.values()) if times else None

    def put(self, obj: dict[str, Any]) -> ExperimentView | None:
        """Add or replace one Experiment (from a watch event, a GET or a write)."""
        view = experiment_view(obj)
        if view is not None:
            self._forget_deploy(view.key)
            self._views[view.key] = view
            self._misses.forget(view.key)
            deployed = (obj.get("status") or {}).get("deployedAt")
            if isinstance(deployed, str):
                times = self._deployed.setdefault((view.namespace, view.spec.domain_ref), {})
                times[view.name] = _timestamp(deployed)
        return view

    def _forget_deploy(self, key: tuple[str, str]) -> None:
        old = self._views.get(key)
        if old is None:
            return
        times = self._deployed.get((old.namespace, old.spec.domain_ref))
        if times is not None:
            times.pop(old.name, None)
            if not times:
                del self._deployed[(old.namespace, old.spec.domain_ref)]

    def apply(self, kind: str, objects: list[dict[str, Any]]) -> None:
        """Apply one watch event (see ``KeyCache.apply``)."""
        if kind == "SYNC":
            self._views.clear()
            self._deployed.clear()
            self._misses.clear()
            for obj in objects:
                self.put(obj)
            self.synced = True
        elif kind == "DELETED":
            for obj in objects:
                meta = obj.get("metadata") or {}
                key = (meta.get("namespace", ""), meta.get("name", ""))
                self._forget_deploy(key)
                self._views.pop(key, None)
        else:
            for obj in objects:
                self.put(obj)

    async def lookup(
        self, namespace: str, name: str, fetch: Fetch, domain: str | None = None
    ) -> ExperimentView | None:
        """The cached view; else ``None`` for a name found missing moments ago; else one
        GET, shared by concurrent lookups of the name and charged to ``domain`` (the
        key's holder; the namespace when not given). Raises ``misses.Throttled``, making
        no call, when a budget is spent."""
        key = (namespace, name)
        view = self._views.get(key)
        if view is not None:
            return view
        if self._misses.known_missing(key):
            metrics.LOOKUPS.labels("remembered").inc()
            return None
        task = self._lookups.get(key)
        if task is None:
            try:
                self._misses.take(domain or namespace)
            except Throttled:
                metrics.LOOKUPS.labels("throttled").inc()
                raise
            # A task of its own: a requester that goes away does not cancel the GET
            # the others wait for.
            task = asyncio.create_task(self._fetch(key, fetch), name=f"lookup {namespace}/{name}")
            self._lookups[key] = task
            task.add_done_callback(functools.partial(self._looked_up, key))
        return await asyncio.shield(task)

    async def _fetch(self, key: tuple[str, str], fetch: Fetch) -> ExperimentView | None:
        try:
            obj = await fetch(*key)
        except Exception:
            metrics.LOOKUPS.labels("error").inc()
            raise
        view = self.put(obj) if obj is not None else None
        if view is None:
            self._misses.missing(key)
        metrics.LOOKUPS.labels("missing" if view is None else "found").inc()
        return view

    async def close(self) -> None:
        """Cancel the lookups still in flight (when the intake stops)."""
        tasks = list(self._lookups.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _looked_up(self, key: tuple[str, str], task: asyncio.Task[ExperimentView | None]) -> None:
        self._lookups.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every requester went away
