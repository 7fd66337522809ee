"""What a write should change, decided from the object as read and the newest report:
pure functions, no I/O, so every rule here is unit-tested without a cluster.

Results: the intake is the only writer of an Experiment's results (``lastSequence``,
``lastReportAt``, ``variants``, ``statistics``, ``decision``, ``history``), and writes
all of them in one patch, so counts and the statistics computed from them never
disagree.

- A report whose sequence is not above ``status.lastSequence`` changes nothing.
- Counts never go backwards: each count is the larger of the recorded one and the
  reported one (an agent's counts only grow, so this is the newest report's count).
- Counts, statistics and the decision are recomputed from the merged counts with
  ``stats.analyze``, continuing from the status as read (``stats.recorded``: each
  variant's running-minimum p-value and the decision, which stays once reached). If
  none of them changes, nothing is written, except that ``lastReportAt`` is refreshed
  once it is ``idle_write_seconds`` old.
- ``history`` (the counts over time, for the dashboard's chart) only rides along on
  a write that happens anyway, and is recomputed from the status as read each time
  (so a retry after a conflict never adds a point twice). A point with the merged
  counts is added when the history is empty, or when the counts differ from the
  newest point and that point is ``every_seconds`` old (a report received before the
  newest point, possible with two replicas, updates that point's counts instead, so
  the newest point always has the counts last written). Beyond ``points`` points,
  every other point of the older half is dropped: the oldest and the newest stay, so
  the history always spans the whole experiment at a coarser grain.

Heartbeats: ``status.agent`` gets the version, start time and ``lastSeen``; a
heartbeat that brings only a newer ``lastSeen`` is written once the recorded one is
``heartbeat_write_seconds`` old, and ``lastSeen`` never moves backwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from smart_operator.intake.experiments import ExperimentView
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import Heartbeat, ResultsReport
from smart_operator.models.domain import AgentStatus
from smart_operator.models.experiment import (
    Decision,
    HistoryCounts,
    HistoryPoint,
    Statistics,
    VariantResult,
)
from smart_operator.stats import VariantCounts, analyze, recorded, to_status

log = logging.getLogger(__name__)

HISTORY_SECONDS = 600.0
"""Default of ``SMART_INTAKE_HISTORY_SECONDS``: at most one history point per 10 minutes."""
HISTORY_POINTS = 288
"""Default of ``SMART_INTAKE_HISTORY_POINTS``."""
MIN_HISTORY_POINTS = 4
"""Thinning needs at least this many points to shorten the history."""

SkipReason = Literal["stale", "unchanged", "deleted", "replaced", "domain_changed", "invalid"]


@dataclass(frozen=True)
class PendingReport:
    """A report accepted by the API and waiting to be written."""

    report: ResultsReport
    domain: DomainRef
    uid: str
    """The Experiment's uid when the report was accepted: a report never lands on a
    new Experiment that merely has the old one's name."""
    received_at: datetime
    received: float
    """``time.monotonic()`` at receipt, for the report-to-status delay metric."""


@dataclass(frozen=True)
class PendingHeartbeat:
    heartbeat: Heartbeat
    domain: DomainRef
    received_at: datetime
    received: float


@dataclass(frozen=True)
class Write:
    """Merge ``status`` into the object's status."""

    status: dict[str, Any]


@dataclass(frozen=True)
class Skip:
    reason: SkipReason


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def merged_counts(view: ExperimentView, report: ResultsReport) -> list[VariantCounts]:
    """Each variant of the spec (control first) with the larger of its recorded and
    reported counts; timings come from the report, which carries the whole sample."""
    on_status = {v.name: v for v in view.status.variants}
    reported = {v.name: v for v in report.variants}
    counts = []
    for variant in view.spec.variants:
        old, new = on_status.get(variant.name), reported.get(variant.name)
        counts.append(
            VariantCounts(
                name=variant.name,
                visitors=max(old.visitors if old else 0, new.visitors if new else 0),
                conversions=max(old.conversions if old else 0, new.conversions if new else 0),
                weight=float(variant.weight),
                latencies_ms=tuple(new.latencies_ms or ()) if new else (),
            )
        )
    return counts


@dataclass(frozen=True)
class HistoryRules:
    """When ``plan_results`` adds a point to ``status.history`` and how many it keeps."""

    every_seconds: float = HISTORY_SECONDS
    points: int = HISTORY_POINTS

    def __post_init__(self) -> None:
        if self.points < MIN_HISTORY_POINTS:
            raise ValueError(f"a history keeps at least {MIN_HISTORY_POINTS} points")


def thin(points: list[HistoryPoint], most: int) -> list[HistoryPoint]:
    """At most ``most`` points: while there are more, drop every other point of the
    older half (the oldest and the newest always stay)."""
    most = max(most, MIN_HISTORY_POINTS)
    while len(points) > most:
        half = len(points) // 2
        points = points[:half:2] + points[half:]
    return points


def next_history(
    history: list[HistoryPoint],
    counts: list[VariantCounts],
    at: datetime,
    rules: HistoryRules,
) -> list[HistoryPoint] | None:
    """The history with a point for ``counts`` at ``at`` added, or ``None`` when no
    point is due (the counts are those of the newest point, or it is younger than
    ``rules.every_seconds``). A report received before the newest point updates that
    point's counts instead."""
    point = HistoryPoint(
        at=at,
        counts=[
            HistoryCounts(variant=c.name, visitors=c.visitors, conversions=c.conversions)
            for c in counts
        ],
    )
    if history:
        newest = history[-1]
        if newest.counts == point.counts:
            return None
        age = (at - newest.at).total_seconds()
        if age < 0:
            # Received before the newest point, yet numbered higher: another replica
            # wrote a report it received later first. The newest point takes these
            # (larger) counts, so it stays the current counts and time never goes back.
            return [*history[:-1], newest.model_copy(update={"counts": point.counts})]
        if age < rules.every_seconds:
            return None
    return thin([*history, point], rules.points)


def _results(
    variants: list[VariantResult], statistics: Statistics | None, decision: Decision | None
) -> dict[str, Any]:
    """The compared part of a status, as JSON without empty fields."""

    def dump(model: Statistics | Decision | None) -> dict[str, Any] | None:
        return model.model_dump(by_alias=True, mode="json", exclude_none=True) if model else None

    return {
        "variants": [v.model_dump(by_alias=True, mode="json", exclude_none=True) for v in variants],
        "statistics": dump(statistics),
        "decision": dump(decision),
    }


def plan_results(
    view: ExperimentView,
    pending: PendingReport,
    now: datetime,
    idle_write_seconds: float,
    rules: HistoryRules | None = None,
) -> Write | Skip:
    """The status patch that records ``pending`` on the Experiment as read, or why
    there is nothing to write."""
    report = pending.report
    if pending.uid and view.uid and pending.uid != view.uid:
        return Skip("replaced")
    if view.spec.domain_ref != pending.domain.name:
        return Skip("domain_changed")
    if report.sequence <= view.recorded_sequence:
        return Skip("stale")
    counts = merged_counts(view, report)
    try:
        analysis = analyze(
            counts,
            view.spec.stopping,
            view.created,
            now,
            metric=view.spec.goal.metric,
            recorded=recorded(view.status.variants, view.status.decision),
        )
    except ValueError as error:
        log.error("cannot analyse %s/%s: %s", view.namespace, view.name, error)
        return Skip("invalid")
    new = to_status(analysis, now, previous=view.status.decision)
    old = (view.status.variants, view.status.statistics, view.status.decision)
    if _results(*new) == _results(*old) and view.status.last_report_at is not None:
        age = (pending.received_at - view.status.last_report_at).total_seconds()
        if age < idle_write_seconds:
            return Skip("unchanged")
    variants, statistics, decision = new
    status: dict[str, Any] = {
        "lastSequence": report.sequence,
        "lastReportAt": rfc3339(pending.received_at),
        # A list is replaced whole by a merge patch: send items without nulls
        # (the schema has no nullable fields). In objects, a null deletes a
        # field that no longer applies (a winner that is no longer one).
        "variants": [v.model_dump(by_alias=True, mode="json", exclude_none=True) for v in variants],
        "statistics": statistics.model_dump(by_alias=True, mode="json"),
        "decision": decision.model_dump(by_alias=True, mode="json"),
    }
    points = next_history(view.status.history, counts, pending.received_at, rules or HistoryRules())
    if points is not None:
        # Sent only when it changes: a merge patch leaves a field it does not name alone.
        status["history"] = [
            {"at": rfc3339(p.at), "counts": [c.model_dump(by_alias=True) for c in p.counts]}
            for p in points
        ]
    return Write(status)


def plan_agent(
    current: AgentStatus | None, pending: PendingHeartbeat, heartbeat_write_seconds: float
) -> Write | Skip:
    """The ``status.agent`` patch for a heartbeat on the Domain as read, or why there
    is nothing to write."""
    beat = pending.heartbeat
    seen = current.last_seen if current else None
    if seen is not None and seen >= pending.received_at:
        return Skip("stale")
    same_agent = (
        current is not None
        and current.version == beat.version
        and current.started_at == beat.started_at
    )
    if (
        same_agent
        and seen is not None
        and (pending.received_at - seen).total_seconds() < heartbeat_write_seconds
    ):
        return Skip("unchanged")
    return Write(
        {
            "agent": {
                "version": beat.version,
                "startedAt": rfc3339(beat.started_at),
                "lastSeen": rfc3339(pending.received_at),
            }
        }
    )
