"""What a write should change, decided from the object as read and the newest report:
pure functions, no I/O, so every rule here is unit-tested without a cluster.

Results: the intake is the only writer of an Experiment's results (``lastSequence``,
``lastReportAt``, ``variants``, ``statistics``, ``decision``), and writes all of them
in one patch, so counts and the statistics computed from them never disagree.

- A report whose sequence is not above ``status.lastSequence`` changes nothing.
- Counts never go backwards: each count is the larger of the recorded one and the
  reported one (an agent's counts only grow, so this is the newest report's count).
- Counts, statistics and the decision are recomputed from the merged counts with
  ``stats.analyze``. If none of them changes, nothing is written, except that
  ``lastReportAt`` is refreshed once it is ``idle_write_seconds`` old.

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
from smart_operator.models.experiment import Decision, Statistics, VariantResult
from smart_operator.stats import VariantCounts, analyze, to_status

log = logging.getLogger(__name__)

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
    recorded = {v.name: v for v in view.status.variants}
    reported = {v.name: v for v in report.variants}
    counts = []
    for variant in view.spec.variants:
        old, new = recorded.get(variant.name), reported.get(variant.name)
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
    view: ExperimentView, pending: PendingReport, now: datetime, idle_write_seconds: float
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
    try:
        analysis = analyze(
            merged_counts(view, report),
            view.spec.stopping,
            view.created,
            now,
            metric=view.spec.goal.metric,
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
    return Write(
        {
            "lastSequence": report.sequence,
            "lastReportAt": rfc3339(pending.received_at),
            # A list is replaced whole by a merge patch: send items without nulls
            # (the schema has no nullable fields). In objects, a null deletes a
            # field that no longer applies (a winner that is no longer one).
            "variants": [
                v.model_dump(by_alias=True, mode="json", exclude_none=True) for v in variants
            ],
            "statistics": statistics.model_dump(by_alias=True, mode="json"),
            "decision": decision.model_dump(by_alias=True, mode="json"),
        }
    )


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
