"""What a write should change, decided from the object as read and the newest report:
pure functions, no I/O, so every rule here is unit-tested without a cluster.

Results: the intake is the only writer of an Experiment's results (``lastSequence``,
``lastReportAt``, ``variants``, ``statistics``, ``decision``, ``history``,
``incarnations``, ``retiredIncarnations``, ``countsRestartedAt``), and writes all of
them in one patch, so counts and the statistics computed from them never disagree.

- Sequences and counts are per agent incarnation (``incarnations``: a replaced server's
  agent is a new one, starting again at sequence 1 and zero counts). A report whose
  sequence is not above its incarnation's last one changes nothing; ``admit`` refuses
  at request time what ``plan_results`` could never write.
- Counts never go backwards: each total grows by what the report adds to its own
  incarnation's counts (nothing when a count is not above that incarnation's last),
  so a new server's counts add to the recorded ones, and ``countsRestartedAt`` says
  when that last began.
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

Heartbeats (liveness): the intake receives every heartbeat, so it keeps liveness in
memory and writes ``status.agent`` only when a reader learns something from it:

- a new agent (version, start time), a change of what it serves, or an agent that
  was marked silent: written at once, with ``lastSeen`` and ``renewSeconds``;
- the first heartbeat more than ``SERVED_GRACE_SECONDS`` after an Experiment of the
  Domain was deployed (the operator compares what it serves with the deploy);
- otherwise ``lastSeen`` is renewed once the recorded one is ``heartbeat_write_seconds``
  old (``renewSeconds`` on the status says so), and never moves backwards;
- silence (``plan_silence``): when no heartbeat reached the process for
  ``silent_seconds``, ``silentSince`` is set, with ``lastSeen`` the last one received.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from smart_operator.experiments import SERVED_GRACE_SECONDS
from smart_operator.intake.experiments import ExperimentView
from smart_operator.intake.incarnations import Source, added, growth, record, source_of
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import Heartbeat, ResultsReport, VariantReport
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

SkipReason = Literal[
    "stale", "unchanged", "deleted", "replaced", "domain_changed", "invalid", "retired"
]


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


def merged_counts(
    view: ExperimentView, source: Source, report: ResultsReport
) -> list[VariantCounts]:
    """Each variant of the spec (control first) with its recorded total plus what the
    report adds to its own incarnation's counts (``incarnations.added``); timings come
    from the report, which carries the whole sample (real-user timings, which decide,
    and the probe's, which are synthetic)."""
    on_status = {v.name: v for v in view.status.variants}
    reported = {v.name: v for v in report.variants}
    adds = added(source, report)
    counts = []
    for variant in view.spec.variants:
        old, new = on_status.get(variant.name), reported.get(variant.name)
        more_visitors, more_conversions = adds.get(variant.name, (0, 0))
        counts.append(
            VariantCounts(
                name=variant.name,
                visitors=(old.visitors if old else 0) + more_visitors,
                conversions=(old.conversions if old else 0) + more_conversions,
                weight=float(variant.weight),
                **_timings(new),
            )
        )
    return counts


def _timings(reported: VariantReport | None) -> dict[str, Any]:
    """A variant's timings for the analysis: the real-user ones decide, the probe's
    (``latenciesMs``) are synthetic."""
    if reported is None:
        return {}
    real = reported.real_user
    return {
        "synthetic_ms": tuple(reported.latencies_ms or ()),
        "latencies_ms": tuple(real.lcp_ms) if real else (),
        "ttfb_ms": tuple(real.ttfb_ms) if real else (),
        "transfer_bytes": tuple(float(b) for b in real.transfer_bytes) if real else (),
        "timed_views": real.views if real else 0,
    }


@dataclass(frozen=True)
class GrowthLimit:
    """How fast an Experiment's counts may plausibly grow between two reports."""

    visitors_per_second: float
    slack_seconds: float


@dataclass(frozen=True)
class Stale:
    """A replay or an older report of its incarnation: answered, changes nothing."""

    last_sequence: int


@dataclass(frozen=True)
class Refusal:
    """A report refused with a 4xx and its reason (``views.Rejected``)."""

    status: int
    error: str
    message: str
    detail: Any = None


def admit(
    view: ExperimentView,
    report: ResultsReport,
    newest: PendingReport | None,
    accepted_sequence: int,
    received_at: datetime,
    limit: GrowthLimit,
) -> Source | Stale | Refusal:
    """Whether the intake takes ``report`` (the request-time check; ``plan_results``
    decides again from the object it writes): the incarnation it belongs to, or why not.

    ``newest`` is this process's report of the same incarnation still waiting to be
    written, and ``accepted_sequence`` the highest sequence of it this process took:
    both are newer than the status may be. The report is refused when its incarnation
    is retired (409), when a count is lower than its incarnation's last one (409:
    counts are cumulative), or when its counts grew faster than ``limit`` allows since
    the incarnation's last report (since the Experiment was created, for a new one):
    422 ``implausible_growth``, so a broken or forged agent cannot write counts no
    server could have seen.
    """
    source = source_of(view.status, report)
    if source.retired:
        return Refusal(
            409,
            "incarnation_retired",
            f"incarnation {source.id!r} no longer reports for Experiment {report.experiment!r}: "
            "newer agents (servers) replaced it and its counts are kept in the totals",
        )
    last = max(source.last_sequence, accepted_sequence)
    if report.sequence <= last:
        return Stale(last)
    known = dict(source.counts)
    since = source.last_report_at or view.created
    if newest is not None and newest.uid == view.uid:
        known.update({v.name: (v.visitors, v.conversions) for v in newest.report.variants})
        since = newest.received_at
    decreased = [
        v.name
        for v in report.variants
        if v.name in known and (v.visitors < known[v.name][0] or v.conversions < known[v.name][1])
    ]
    if decreased:
        return Refusal(
            409,
            "counts_decreased",
            f"sequence {report.sequence} carries lower counts than already recorded for "
            f"{', '.join(decreased)}; counts are cumulative and never go down",
            {
                "variants": {
                    name: {"visitors": known[name][0], "conversions": known[name][1]}
                    for name in decreased
                }
            },
        )
    grown = Source(source.id, counts=known)
    visitors, conversions = growth(grown, report)
    seconds = max(0.0, (received_at - since).total_seconds())
    allowed = limit.visitors_per_second * (seconds + limit.slack_seconds)
    if max(visitors, conversions) > allowed:
        return Refusal(
            422,
            "implausible_growth",
            f"sequence {report.sequence} adds {visitors:,} visitors and {conversions:,} "
            f"conversions in {seconds:,.0f} s since the last report; at most "
            f"{limit.visitors_per_second:,.0f} a second are plausible for one Experiment "
            f"(here {allowed:,.0f}). Nothing was recorded.",
            {
                "visitors": visitors,
                "conversions": conversions,
                "seconds": round(seconds, 3),
                "allowed": int(allowed),
            },
        )
    return source


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
    source = source_of(view.status, report)
    if source.retired:
        return Skip("retired")
    if report.sequence <= source.last_sequence:
        return Skip("stale")
    counts = merged_counts(view, source, report)
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
    first_of_its_kind = source.new or source.adopted or not view.status.incarnations
    if (
        _results(*new) == _results(*old)
        and view.status.last_report_at is not None
        and not first_of_its_kind
    ):
        age = (pending.received_at - view.status.last_report_at).total_seconds()
        if age < idle_write_seconds:
            return Skip("unchanged")
    variants, statistics, decision = new
    kept = record(view.status, source, report, pending.received_at)
    status: dict[str, Any] = {
        "lastSequence": report.sequence,
        "lastReportAt": rfc3339(pending.received_at),
        # A list is replaced whole by a merge patch: send items without nulls
        # (the schema has no nullable fields). In objects, a null deletes a
        # field that no longer applies (a winner that is no longer one).
        "variants": [v.model_dump(by_alias=True, mode="json", exclude_none=True) for v in variants],
        "statistics": statistics.model_dump(by_alias=True, mode="json"),
        "decision": decision.model_dump(by_alias=True, mode="json"),
        "incarnations": [
            e.model_dump(by_alias=True, mode="json", exclude_none=True) for e in kept.incarnations
        ],
    }
    if kept.retired != view.status.retired_incarnations:
        status["retiredIncarnations"] = kept.retired
    if kept.restarted_at is not None and kept.restarted_at != view.status.counts_restarted_at:
        status["countsRestartedAt"] = rfc3339(kept.restarted_at)
    points = next_history(view.status.history, counts, pending.received_at, rules or HistoryRules())
    if points is not None:
        # Sent only when it changes: a merge patch leaves a field it does not name alone.
        status["history"] = [
            {"at": rfc3339(p.at), "counts": [c.model_dump(by_alias=True) for c in p.counts]}
            for p in points
        ]
    return Write(status)


def plan_agent(
    current: AgentStatus | None,
    pending: PendingHeartbeat,
    heartbeat_write_seconds: float,
    deployed_at: datetime | None = None,
) -> Write | Skip:
    """The ``status.agent`` patch for a heartbeat on the Domain as read, or why there
    is nothing to write (``LivenessRules``)."""
    beat = pending.heartbeat
    seen = current.last_seen if current else None
    if seen is not None and seen >= pending.received_at:
        return Skip("stale")
    serving = [{"name": e.name, "revision": e.revision} for e in beat.experiments]
    renew = int(heartbeat_write_seconds)
    same_agent = (
        current is not None
        and current.version == beat.version
        and current.started_at == beat.started_at
        # A change of what it serves is written at once: the operator compares it with
        # what it deployed.
        and [s.model_dump() for s in current.serving or []] == serving
        and current.silent_since is None
        and current.renew_seconds == renew
    )
    if (
        same_agent
        and seen is not None
        and (pending.received_at - seen).total_seconds() < heartbeat_write_seconds
        and not _after_deploy(seen, pending.received_at, deployed_at)
    ):
        return Skip("unchanged")
    return Write(
        {
            "agent": {
                "version": beat.version,
                "startedAt": rfc3339(beat.started_at),
                "lastSeen": rfc3339(pending.received_at),
                "serving": serving,
                "renewSeconds": renew,
                "silentSince": None,  # a merge patch's null removes the mark
            }
        }
    )


def _after_deploy(seen: datetime, received_at: datetime, deployed_at: datetime | None) -> bool:
    """Whether this is the first heartbeat received more than ``SERVED_GRACE_SECONDS``
    after an Experiment of the Domain was deployed: the operator compares what such a
    heartbeat says the agent serves with what it deployed, so it is written at once."""
    if deployed_at is None:
        return False
    after = deployed_at + timedelta(seconds=SERVED_GRACE_SECONDS)
    return seen <= after < received_at


@dataclass(frozen=True)
class PendingSilence:
    """No heartbeat from the Domain's agent reached this process for a while."""

    domain: DomainRef
    last_heard: datetime | None
    """The last heartbeat this process received from it; ``None`` when it received
    none since it started (it took the agent as alive from the status)."""
    found_at: datetime


def plan_silence(current: AgentStatus | None, pending: PendingSilence) -> Write | Skip:
    """The ``status.agent`` patch that marks the agent silent, or why not: it is marked
    already, or the status records a heartbeat later than this process's last one
    (another replica received it, and so is the one to tell)."""
    if current is None or current.last_seen is None:
        return Skip("unchanged")
    if current.silent_since is not None:
        return Skip("unchanged")
    if pending.last_heard is not None and current.last_seen > pending.last_heard:
        return Skip("stale")
    seen = max(current.last_seen, pending.last_heard or current.last_seen)
    return Write({"agent": {"lastSeen": rfc3339(seen), "silentSince": rfc3339(pending.found_at)}})
