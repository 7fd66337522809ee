"""What a write changes: idempotency by sequence, counts that never go backwards,
statistics and decision in the same patch, no write when nothing changed, the history
of counts the dashboard charts, and the heartbeat's lastSeen throttle."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from smart_operator.intake.experiments import ExperimentView, experiment_view
from smart_operator.intake.incarnations import source_of
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import Heartbeat, ResultsReport, RunningExperiment
from smart_operator.intake.status import (
    GrowthLimit,
    HistoryRules,
    PendingHeartbeat,
    PendingReport,
    PendingSilence,
    Refusal,
    Skip,
    Stale,
    Write,
    admit,
    plan_agent,
    plan_results,
    plan_silence,
    rfc3339,
)
from smart_operator.models.common import Writer
from smart_operator.models.domain import AgentStatus, DomainStatus
from smart_operator.models.experiment import ExperimentStatus

NOW = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
DOMAIN = DomainRef("customer-acme", "acme-example")


def experiment(status: dict[str, Any] | None = None, **spec: Any) -> ExperimentView:
    view = experiment_view(
        {
            "metadata": {
                "name": "headline",
                "namespace": DOMAIN.namespace,
                "uid": "uid-1",
                "resourceVersion": "7",
                "creationTimestamp": "2026-03-02T09:00:00Z",
            },
            "spec": {
                "domainRef": DOMAIN.name,
                "type": "landing_page",
                "template": "saas_landing",
                "variants": [{"name": "a"}, {"name": "b"}],
                **spec,
            },
            "status": status or {},
        }
    )
    assert view is not None
    return view


def pending(
    sequence: int,
    a: tuple[int, int],
    b: tuple[int, int],
    incarnation: str | None = None,
    **extra: Any,
) -> PendingReport:
    report = ResultsReport(
        experiment="headline",
        sequence=sequence,
        incarnation=incarnation,
        variants=[
            {"name": "a", "visitors": a[0], "conversions": a[1]},
            {"name": "b", "visitors": b[0], "conversions": b[1]},
        ],
    )
    fields = {"domain": DOMAIN, "uid": "uid-1", "received_at": NOW, "received": time.monotonic()}
    fields.update(extra)
    return PendingReport(report, **fields)


def written(plan: Write | Skip) -> dict[str, Any]:
    assert isinstance(plan, Write), plan
    # The intake writes only its own part of an Experiment's (or a Domain's) status.
    kind = DomainStatus if "agent" in plan.status else ExperimentStatus
    assert set(plan.status) <= kind.fields_of(Writer.INTAKE), plan.status
    return plan.status


def apply(view: ExperimentView, plan: Write | Skip) -> ExperimentView:
    """The view after the API server merged the patch (lists and objects replaced)."""
    status = view.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    for key, value in written(plan).items():
        status[key] = (
            {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value
        )
    return experiment(status)


def test_counts_statistics_and_decision_in_one_patch() -> None:
    status = written(plan_results(experiment(), pending(1, (5000, 250), (5000, 350)), NOW, 300))
    assert status["lastSequence"] == 1
    assert status["lastReportAt"] == "2026-03-09T09:00:00Z"
    assert [(v["name"], v["visitors"], v["conversions"]) for v in status["variants"]] == [
        ("a", 5000, 250),
        ("b", 5000, 350),
    ]
    assert status["variants"][1]["chanceToBeatControl"] > 0.99
    assert status["statistics"]["alwaysValidPValue"] < 0.05
    assert status["decision"]["outcome"] == "winner", status["decision"]
    assert status["decision"]["winner"] == "b"
    assert status["decision"]["decidedAt"] == "2026-03-09T09:00:00Z"
    # No nulls inside list items: the CRD has no nullable fields.
    assert all(None not in v.values() for v in status["variants"])


def test_a_replayed_or_older_report_changes_nothing() -> None:
    view = apply(experiment(), plan_results(experiment(), pending(5, (100, 5), (100, 9)), NOW, 300))
    assert plan_results(view, pending(5, (100, 5), (100, 9)), NOW, 300) == Skip("stale")
    assert plan_results(view, pending(4, (90, 5), (90, 8)), NOW, 300) == Skip("stale")


def test_counts_never_go_backwards() -> None:
    view = apply(experiment(), plan_results(experiment(), pending(5, (100, 5), (100, 9)), NOW, 300))
    status = written(plan_results(view, pending(6, (90, 7), (120, 8)), NOW, 300))
    assert [(v["visitors"], v["conversions"]) for v in status["variants"]] == [(100, 7), (120, 9)]


def test_a_variant_not_reported_keeps_its_counts() -> None:
    view = apply(experiment(), plan_results(experiment(), pending(1, (100, 5), (100, 9)), NOW, 300))
    report = ResultsReport(
        experiment="headline",
        sequence=2,
        variants=[{"name": "a", "visitors": 150, "conversions": 6}],
    )
    status = written(plan_results(view, PendingReport(report, DOMAIN, "uid-1", NOW, 0.0), NOW, 300))
    assert [(v["visitors"], v["conversions"]) for v in status["variants"]] == [(150, 6), (100, 9)]


def test_nothing_is_written_when_nothing_changed_until_the_report_time_is_old() -> None:
    view = apply(experiment(), plan_results(experiment(), pending(1, (100, 5), (100, 9)), NOW, 300))
    same = pending(2, (100, 5), (100, 9), received_at=NOW + timedelta(seconds=60))
    assert plan_results(view, same, NOW + timedelta(seconds=60), 300) == Skip("unchanged")
    later = pending(7, (100, 5), (100, 9), received_at=NOW + timedelta(seconds=301))
    status = written(plan_results(view, later, NOW + timedelta(seconds=301), 300))
    assert status["lastSequence"] == 7


def test_a_report_for_an_older_incarnation_or_another_domain_is_dropped() -> None:
    view = experiment()
    assert plan_results(view, pending(1, (1, 0), (1, 0), uid="uid-0"), NOW, 300) == Skip("replaced")
    other = DomainRef(DOMAIN.namespace, "other-domain")
    assert plan_results(view, pending(1, (1, 0), (1, 0), domain=other), NOW, 300) == Skip(
        "domain_changed"
    )


def test_a_winner_that_no_longer_holds_is_removed() -> None:
    """Objects are merged, so a field that no longer applies is sent as null: here staff
    raised the minimum sample after a winner was declared."""
    view = apply(
        experiment(), plan_results(experiment(), pending(1, (5000, 250), (5000, 350)), NOW, 300)
    )
    assert view.status.decision is not None and view.status.decision.winner == "b"
    stricter = experiment(
        view.status.model_dump(by_alias=True, mode="json", exclude_none=True),
        stopping={"minVisitorsPerVariant": 20000},
    )
    status = written(plan_results(stricter, pending(2, (5100, 255), (5100, 357)), NOW, 300))
    assert status["decision"]["outcome"] == "pending"
    assert status["decision"]["winner"] is None and status["decision"]["decidedAt"] is None


def test_a_winner_stays_when_the_next_report_wavers() -> None:
    """The status carries each variant's running-minimum p-value and the decision; the
    next report's data alone would say "pending", the plan keeps the winner and the
    time it was decided."""
    view = apply(
        experiment(), plan_results(experiment(), pending(1, (5000, 250), (5000, 330)), NOW, 300)
    )
    assert view.status.decision is not None and view.status.decision.winner == "b"
    first_p = view.status.variants[1].always_valid_p_value
    assert first_p is not None and first_p < 0.05
    later = NOW + timedelta(hours=12)
    status = written(
        plan_results(view, pending(2, (5400, 290), (5400, 335), received_at=later), later, 300)
    )
    assert status["decision"]["outcome"] == "winner", status["decision"]
    assert status["decision"]["winner"] == "b"
    assert status["decision"]["decidedAt"] == "2026-03-09T09:00:00Z"
    assert status["variants"][1]["alwaysValidPValue"] == first_p


def test_latency_goal_uses_the_reported_sample() -> None:
    """The real-user timings decide and show as p50Ms/p75Ms/p95Ms; the probe's, which
    say the opposite here (compression costs CPU over loopback), show as synthetic."""
    view = experiment(
        type="performance", template="nginx_optimization", goal={"metric": "p50_latency"}
    )

    def real(lcp: float, size: int) -> dict[str, object]:
        return {
            "views": 400,
            "ttfbMs": [lcp / 4] * 300,
            "lcpMs": [lcp + i % 7 for i in range(300)],
            "transferBytes": [size] * 300,
        }

    report = ResultsReport.model_validate(
        {
            "experiment": "headline",
            "sequence": 1,
            "variants": [
                {"name": "a", "visitors": 300, "conversions": 0, "latenciesMs": [5.0] * 300,
                 "realUser": real(900.0, 60_000)},
                {"name": "b", "visitors": 300, "conversions": 0, "latenciesMs": [6.0] * 300,
                 "realUser": real(400.0, 15_000)},
            ],
        }
    )  # fmt: skip
    status = written(plan_results(view, PendingReport(report, DOMAIN, "uid-1", NOW, 0.0), NOW, 300))
    a, b = status["variants"]
    assert (a["p95Ms"], b["p95Ms"]) == (906.0, 406.0)
    assert a["p50Ms"] <= a["p75Ms"] <= a["p95Ms"]
    assert a["realUser"]["views"] == 400
    lcp = a["realUser"]["lcpMs"]
    assert lcp["p95Low"] <= lcp["p95"] <= lcp["p95High"] and lcp["confidence"] == 0.95
    assert a["realUser"]["transferBytes"]["p50"] == 60_000
    assert a["realUser"]["ttfbMs"]["p50"] == 225.0
    assert (a["synthetic"]["p95Ms"], b["synthetic"]["p95Ms"]) == (5.0, 6.0)
    assert a["synthetic"]["requests"] == 300
    assert status["decision"]["outcome"] == "winner", status["decision"]
    assert status["decision"]["winner"] == "b"
    assert "real-user LCP" in status["decision"]["reason"]


def test_a_latency_goal_without_real_user_timings_stays_pending() -> None:
    """The probe alone never decides, however clear its figures."""
    view = experiment(
        type="performance", template="nginx_optimization", goal={"metric": "p95_latency"}
    )
    report = ResultsReport(
        experiment="headline",
        sequence=1,
        variants=[
            {"name": "a", "visitors": 300, "conversions": 0, "latencies_ms": [100.0] * 300},
            {"name": "b", "visitors": 300, "conversions": 0, "latencies_ms": [50.0] * 300},
        ],
    )
    status = written(plan_results(view, PendingReport(report, DOMAIN, "uid-1", NOW, 0.0), NOW, 300))
    assert status["decision"]["outcome"] == "pending"
    assert "real-user page views timed" in status["decision"]["reason"]
    assert [v["synthetic"]["p95Ms"] for v in status["variants"]] == [100.0, 50.0]
    assert all("p95Ms" not in v and "realUser" not in v for v in status["variants"])


# -- the history of counts -------------------------------------------------------------


def history(view: ExperimentView) -> list[tuple[str, tuple[int, ...]]]:
    """Each point as (time, visitors of a, conversions of a, visitors of b, ...)."""
    return [
        (
            p.at.strftime("%H:%M:%S"),
            tuple(n for c in p.counts for n in (c.visitors, c.conversions)),
        )
        for p in view.status.history
    ]


def report_at(
    view: ExperimentView,
    sequence: int,
    seconds: float,
    a: tuple[int, int],
    b: tuple[int, int],
    rules: HistoryRules,
) -> ExperimentView:
    """``view`` after the report ``sequence`` received ``seconds`` after NOW is written."""
    at = NOW + timedelta(seconds=seconds)
    plan = plan_results(view, pending(sequence, a, b, received_at=at), at, 300, rules)
    return apply(view, plan)


def test_the_first_report_starts_the_history() -> None:
    status = written(plan_results(experiment(), pending(1, (100, 5), (90, 9)), NOW, 300))
    assert status["history"] == [
        {
            "at": "2026-03-09T09:00:00Z",
            "counts": [
                {"variant": "a", "visitors": 100, "conversions": 5},
                {"variant": "b", "visitors": 90, "conversions": 9},
            ],
        }
    ]


def test_a_point_is_added_when_counts_changed_and_the_newest_point_is_old_enough() -> None:
    rules = HistoryRules(every_seconds=600, points=288)
    view = report_at(experiment(), 1, 0, (10, 1), (10, 2), rules)
    view = report_at(view, 2, 60, (20, 1), (20, 3), rules)  # too soon after the first point
    assert history(view) == [("09:00:00", (10, 1, 10, 2))]
    assert [v.visitors for v in view.status.variants] == [20, 20]  # the counts still move
    view = report_at(view, 3, 600, (30, 2), (30, 4), rules)
    view = report_at(view, 4, 1300, (30, 2), (30, 4), rules)  # old, but no new visitors
    view = report_at(view, 5, 1320, (40, 2), (40, 5), rules)
    assert history(view) == [
        ("09:00:00", (10, 1, 10, 2)),
        ("09:10:00", (30, 2, 30, 4)),
        ("09:22:00", (40, 2, 40, 5)),
    ]


def test_the_history_is_only_sent_when_a_point_is_added() -> None:
    """A merge patch leaves a field it does not name alone, so the (long) list travels
    only with the writes that change it."""
    rules = HistoryRules(every_seconds=600, points=288)
    view = report_at(experiment(), 1, 0, (10, 1), (10, 2), rules)
    later = NOW + timedelta(seconds=60)
    plan = plan_results(view, pending(2, (20, 1), (20, 3), received_at=later), later, 300, rules)
    status = written(plan)
    assert "history" not in status and status["lastSequence"] == 2


def test_a_due_point_never_causes_a_write_of_its_own() -> None:
    rules = HistoryRules(every_seconds=60, points=288)
    view = report_at(experiment(), 1, 0, (10, 1), (10, 2), rules)
    view = report_at(view, 2, 30, (20, 1), (20, 3), rules)  # counted, no point yet
    later = NOW + timedelta(seconds=120)
    same = pending(3, (20, 1), (20, 3), received_at=later)
    assert plan_results(view, same, later, 300, rules) == Skip("unchanged")
    # The next write that happens anyway (here the idle refresh of lastReportAt) adds it.
    idle = NOW + timedelta(seconds=400)
    refresh = pending(4, (20, 1), (20, 3), received_at=idle)
    view = apply(view, plan_results(view, refresh, idle, 300, rules))
    assert history(view) == [("09:00:00", (10, 1, 10, 2)), ("09:06:40", (20, 1, 20, 3))]


def test_a_long_experiment_keeps_a_bounded_history_spanning_its_whole_life() -> None:
    rules = HistoryRules(every_seconds=600, points=10)
    view = experiment()
    for step in range(1, 201):  # one report every 10 minutes for 33 hours
        view = report_at(view, step, (step - 1) * 600, (step * 10, step), (step * 10, 0), rules)
        assert len(view.status.history) <= 10
    points = view.status.history
    assert points[0].at == NOW  # the start stays
    assert points[-1].counts[0].visitors == 2000  # the newest is the current counts
    assert points[-1].at == NOW + timedelta(seconds=199 * 600)
    times = [p.at for p in points]
    assert times == sorted(set(times))
    # Thinning halves the grain of the older points; the newer half stays fine-grained.
    assert (times[-1] - times[-2]).total_seconds() == 600
    assert len(points) >= 5


def test_a_replayed_report_adds_no_point() -> None:
    rules = HistoryRules(every_seconds=0, points=288)
    view = report_at(experiment(), 5, 0, (100, 5), (100, 9), rules)
    later = NOW + timedelta(hours=1)
    for sequence in (5, 4):
        replay = pending(sequence, (120, 6), (120, 9), received_at=later)
        assert plan_results(view, replay, later, 300, rules) == Skip("stale")
    assert len(view.status.history) == 1


def test_a_retry_after_a_conflict_adds_its_point_once_from_the_fresh_status() -> None:
    """Replica 1 planned report 5 (with a point) on a status another replica then
    changed; the retry plans again from the status read afresh: report 5 is stale if
    the other replica wrote a newer one, and otherwise adds no point that is not due."""
    rules = HistoryRules(every_seconds=600, points=288)
    start = report_at(experiment(), 1, 0, (10, 1), (10, 1), rules)
    at = NOW + timedelta(seconds=700)
    mine = pending(5, (50, 5), (50, 6), received_at=at)
    first_try = written(plan_results(start, mine, at, 300, rules))
    assert len(first_try["history"]) == 2
    # Meanwhile the other replica wrote report 4 with its point, a second earlier.
    fresh = report_at(start, 4, 699, (40, 4), (40, 4), rules)
    assert len(fresh.status.history) == 2
    retried = apply(fresh, plan_results(fresh, mine, at, 300, rules))
    assert history(retried) == [("09:00:00", (10, 1, 10, 1)), ("09:11:39", (40, 4, 40, 4))]
    assert [v.visitors for v in retried.status.variants] == [50, 50]
    # Had it written report 6, the retry of 5 changes nothing at all.
    newer = report_at(start, 6, 699, (60, 6), (60, 6), rules)
    assert plan_results(newer, mine, at, 300, rules) == Skip("stale")


def test_a_newer_report_received_before_the_newest_point_updates_that_point() -> None:
    """Two replicas: one received report 9 at 09:10:00, the other report 8 at 09:10:01
    and wrote first. Report 9 lands after it; time in the history never goes back, and
    its newest point still has the counts of the status."""
    rules = HistoryRules(every_seconds=0, points=288)
    view = report_at(experiment(), 1, 0, (10, 1), (10, 1), rules)
    view = report_at(view, 8, 601, (80, 8), (80, 8), rules)
    view = report_at(view, 9, 600, (90, 9), (90, 9), rules)
    assert history(view) == [("09:00:00", (10, 1, 10, 1)), ("09:10:01", (90, 9, 90, 9))]


# -- agent incarnations: a new server's counts add ------------------------------------

OLD_SERVER, NEW_SERVER = "8b1f0c2e9d7a4e65", "f3a9e6d10c4b4e2a"


def totals(view: ExperimentView) -> list[tuple[int, int]]:
    return [(v.visitors, v.conversions) for v in view.status.variants]


def record(view: ExperimentView, plan: Write | Skip) -> ExperimentView:
    return apply(view, plan)


def test_a_new_servers_counts_add_to_the_recorded_ones() -> None:
    """The issue: drift repair replaced the server; its agent starts again at sequence
    1 with zero counts. Its report was "stale" (dropped) and later 409 forever; now it
    is a new incarnation whose counts add, a late report of the old server still adds
    its own growth once, and countsRestartedAt says when counts restarted."""
    view = experiment()
    for sequence, (a, b) in enumerate([((500, 25), (500, 30)), ((1000, 50), (1000, 60))], 1):
        view = record(view, plan_results(view, pending(sequence, a, b, OLD_SERVER), NOW, 300))
    assert view.status.counts_restarted_at is None
    later = NOW + timedelta(hours=1)
    first = pending(1, (100, 5), (100, 7), NEW_SERVER, received_at=later)
    view = record(view, plan_results(view, first, later, 300))
    assert totals(view) == [(1100, 55), (1100, 67)]
    assert view.status.counts_restarted_at == later
    assert [(i.id, i.last_sequence) for i in view.status.incarnations] == [
        (OLD_SERVER, 2),
        (NEW_SERVER, 1),
    ]
    second = pending(2, (200, 10), (200, 14), NEW_SERVER, received_at=later)
    view = record(view, plan_results(view, second, later, 300))
    assert totals(view) == [(1200, 60), (1200, 74)]
    # The old server's last report, delayed: it adds what it grew by, once.
    late = pending(3, (1010, 51), (1010, 61), OLD_SERVER, received_at=later)
    view = record(view, plan_results(view, late, later, 300))
    assert totals(view) == [(1210, 61), (1210, 75)]
    assert plan_results(view, late, later, 300) == Skip("stale")
    # The new server's replay changes nothing either.
    assert plan_results(view, second, later, 300) == Skip("stale")
    assert view.status.counts_restarted_at == later


def test_counts_recorded_before_incarnations_belong_to_agents_that_name_none() -> None:
    """An Experiment recorded by the previous intake (no incarnations on its status):
    agents that send no incarnation go on as before (a new server's agent among them
    is taken for a replay, as it always was); an agent that names one for the first
    time takes the old counts over when it continues them (the same agent, upgraded:
    nothing restarts), and is a new incarnation whose counts add otherwise."""
    old_status = {
        "lastSequence": 40,
        "lastReportAt": "2026-03-09T08:00:00Z",
        "variants": [
            {"name": "a", "visitors": 800, "conversions": 40},
            {"name": "b", "visitors": 800, "conversions": 48},
        ],
    }
    view = experiment(old_status)
    assert plan_results(view, pending(1, (10, 1), (10, 1)), NOW, 300) == Skip("stale")
    upgraded = record(
        view, plan_results(view, pending(41, (810, 41), (805, 48), OLD_SERVER), NOW, 300)
    )
    assert totals(upgraded) == [(810, 41), (805, 48)]
    assert [i.id for i in upgraded.status.incarnations] == [OLD_SERVER]
    assert upgraded.status.counts_restarted_at is None
    replaced = record(view, plan_results(view, pending(1, (10, 1), (12, 2), NEW_SERVER), NOW, 300))
    assert totals(replaced) == [(810, 41), (812, 50)]
    assert [i.id for i in replaced.status.incarnations] == ["-", NEW_SERVER]
    assert replaced.status.counts_restarted_at == NOW


def test_beyond_eight_incarnations_the_oldest_is_retired_and_refused() -> None:
    """Servers replaced over and over: the incarnation that reported least recently
    leaves the list (its counts stay in the totals); a late report from it is refused
    rather than counted a second time."""
    view = experiment()
    ids = [f"server-{i:02d}-incarnation" for i in range(10)]
    for i, name in enumerate(ids):
        at = NOW + timedelta(minutes=i)
        view = record(
            view, plan_results(view, pending(1, (10, 1), (10, 1), name, received_at=at), at, 300)
        )
    assert totals(view) == [(100, 10), (100, 10)]
    assert [i.id for i in view.status.incarnations] == ids[2:]
    assert view.status.retired_incarnations == ids[:2]
    late = pending(2, (20, 2), (20, 2), ids[0], received_at=NOW + timedelta(hours=1))
    assert plan_results(view, late, NOW + timedelta(hours=1), 300) == Skip("retired")
    refusal = admit(view, late.report, None, 0, NOW + timedelta(hours=1), LIMIT)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.error) == (
        409,
        "incarnation_retired",
    )


# -- plausible growth -----------------------------------------------------------------

LIMIT = GrowthLimit(visitors_per_second=100.0, slack_seconds=60.0)


def test_counts_that_grow_faster_than_a_server_can_count_are_refused() -> None:
    """100 visitors a second at most (the default is 10,000), 60 s of slack: a report
    60 s after the last may add 12,000 visitors, not 12,001; after a day, 8.6 million.
    A new incarnation is measured from the Experiment's creation."""
    view = apply(
        experiment(),
        plan_results(experiment(), pending(1, (100, 5), (100, 5), OLD_SERVER), NOW, 300),
    )
    minute = NOW + timedelta(seconds=60)
    fine = pending(2, (6100, 5), (6100, 5), OLD_SERVER).report
    assert admit(view, fine, None, 0, minute, LIMIT) == source_of(view.status, fine)
    too_many = pending(2, (6100, 5), (6101, 5), OLD_SERVER).report
    refusal = admit(view, too_many, None, 0, minute, LIMIT)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.error) == (422, "implausible_growth")
    assert refusal.detail == {
        "visitors": 12_001,
        "conversions": 0,
        "seconds": 60.0,
        "allowed": 12_000,
    }
    assert "12,001 visitors" in refusal.message and "Nothing was recorded" in refusal.message
    day = pending(2, (4_000_000, 9), (4_000_000, 9), OLD_SERVER).report
    assert not isinstance(admit(view, day, None, 0, NOW + timedelta(days=1), LIMIT), Refusal)
    # The Experiment was created on 2026-03-02 09:00, a week before NOW.
    new = pending(1, (30_000_000, 1), (30_000_000, 1), NEW_SERVER).report
    assert not isinstance(admit(view, new, None, 0, NOW, LIMIT), Refusal)
    forged = pending(1, (10**11, 1), (10**11, 1), NEW_SERVER).report
    assert isinstance(admit(view, forged, None, 0, NOW, LIMIT), Refusal)


def test_admission_counts_from_the_newest_report_this_process_holds() -> None:
    """A report accepted a moment ago and not yet written is newer than the status:
    sequences, counts and growth are measured from it."""
    view = experiment()
    held = pending(3, (500, 20), (500, 25), OLD_SERVER, received_at=NOW)
    soon = NOW + timedelta(seconds=10)
    assert admit(
        view, pending(3, (500, 20), (500, 25), OLD_SERVER).report, held, 3, soon, LIMIT
    ) == Stale(3)
    lower = admit(view, pending(4, (400, 20), (500, 25), OLD_SERVER).report, held, 3, soon, LIMIT)
    assert isinstance(lower, Refusal) and lower.error == "counts_decreased"
    more = pending(4, (4001, 20), (4001, 25), OLD_SERVER).report
    # 7,002 in 10 s, where 100 a second with 60 s of slack allow 7,000
    assert isinstance(admit(view, more, held, 3, soon, LIMIT), Refusal)
    assert not isinstance(admit(view, more, None, 0, soon, LIMIT), Refusal)  # since creation


def beat(version: str = "0.4.1", started: datetime = NOW - timedelta(hours=1)) -> Heartbeat:
    return Heartbeat(version=version, started_at=started)


def test_heartbeat_lastseen_is_written_at_most_every_interval() -> None:
    first = plan_agent(None, PendingHeartbeat(beat(), DOMAIN, NOW, 0.0), 30)
    assert written(first)["agent"] == {
        "version": "0.4.1",
        "startedAt": "2026-03-09T08:00:00Z",
        "lastSeen": "2026-03-09T09:00:00Z",
        "serving": [],
        "renewSeconds": 30,
        "silentSince": None,
    }
    current = AgentStatus.model_validate(written(first)["agent"])
    soon = PendingHeartbeat(beat(), DOMAIN, NOW + timedelta(seconds=20), 0.0)
    assert plan_agent(current, soon, 30) == Skip("unchanged")
    later = PendingHeartbeat(beat(), DOMAIN, NOW + timedelta(seconds=30), 0.0)
    assert written(plan_agent(current, later, 30))["agent"]["lastSeen"] == "2026-03-09T09:00:30Z"


def test_a_new_agent_is_written_at_once_and_lastseen_never_goes_back() -> None:
    current = AgentStatus(version="0.4.1", started_at=NOW - timedelta(hours=1), last_seen=NOW)
    upgraded = PendingHeartbeat(beat("0.5.0", NOW), DOMAIN, NOW + timedelta(seconds=2), 0.0)
    assert written(plan_agent(current, upgraded, 30))["agent"]["version"] == "0.5.0"
    older = PendingHeartbeat(beat("0.5.0", NOW), DOMAIN, NOW - timedelta(seconds=5), 0.0)
    assert plan_agent(current, older, 30) == Skip("stale")


def test_what_the_agent_serves_is_written_at_once_when_it_changes() -> None:
    served = [RunningExperiment(name="headline", revision="r-1")]
    first = plan_agent(None, PendingHeartbeat(beat(), DOMAIN, NOW, 0.0), 30)
    current = AgentStatus.model_validate(written(first)["agent"])
    deployed = Heartbeat(version="0.4.1", started_at=NOW - timedelta(hours=1), experiments=served)
    soon = PendingHeartbeat(deployed, DOMAIN, NOW + timedelta(seconds=2), 0.0)
    assert written(plan_agent(current, soon, 30))["agent"]["serving"] == [
        {"name": "headline", "revision": "r-1"}
    ]
    current = AgentStatus.model_validate(written(plan_agent(current, soon, 30))["agent"])
    again = PendingHeartbeat(deployed, DOMAIN, NOW + timedelta(seconds=4), 0.0)
    assert plan_agent(current, again, 30) == Skip("unchanged")


def test_an_agent_marked_silent_is_written_at_its_next_heartbeat() -> None:
    marked = AgentStatus(
        version="0.4.1",
        started_at=NOW - timedelta(hours=1),
        last_seen=NOW,
        renew_seconds=3600,
        silent_since=NOW + timedelta(minutes=3),
    )
    back = PendingHeartbeat(beat(), DOMAIN, NOW + timedelta(minutes=4), 0.0)
    agent = written(plan_agent(marked, back, 3600))["agent"]
    assert agent["silentSince"] is None and agent["lastSeen"] == "2026-03-09T09:04:00Z"


def test_a_new_renewal_interval_is_written_so_readers_know_how_stale_lastseen_may_be() -> None:
    # Written by an intake that renewed every 60 s, read by one that renews hourly.
    old = AgentStatus(version="0.4.1", started_at=NOW - timedelta(hours=1), last_seen=NOW)
    soon = PendingHeartbeat(beat(), DOMAIN, NOW + timedelta(seconds=30), 0.0)
    assert written(plan_agent(old, soon, 3600))["agent"]["renewSeconds"] == 3600
    current = old.model_copy(update={"renew_seconds": 3600})
    assert plan_agent(current, soon, 3600) == Skip("unchanged")


def test_the_first_heartbeat_after_a_deploy_and_its_grace_is_written_at_once() -> None:
    """The operator redeploys when a heartbeat received over 30 s after the deploy does
    not name the revision: with lastSeen renewed hourly it must not wait an hour."""
    current = AgentStatus(
        version="0.4.1", started_at=NOW - timedelta(hours=1), last_seen=NOW, renew_seconds=3600
    )
    deployed = NOW + timedelta(minutes=10)

    def at(seconds: float) -> PendingHeartbeat:
        return PendingHeartbeat(beat(), DOMAIN, deployed + timedelta(seconds=seconds), 0.0)

    assert plan_agent(current, at(20), 3600, deployed) == Skip("unchanged")  # within grace
    after = written(plan_agent(current, at(40), 3600, deployed))["agent"]
    assert after["lastSeen"] == rfc3339(deployed + timedelta(seconds=40))
    recorded = AgentStatus.model_validate(after)
    assert plan_agent(recorded, at(70), 3600, deployed) == Skip("unchanged")  # told once


def test_a_silent_agent_is_marked_with_its_last_heartbeat() -> None:
    current = AgentStatus(version="0.4.1", last_seen=NOW, renew_seconds=3600)
    heard = NOW + timedelta(minutes=20)
    found = heard + timedelta(minutes=3)
    mark = written(plan_silence(current, PendingSilence(DOMAIN, heard, found)))
    assert mark == {
        "agent": {"lastSeen": "2026-03-09T09:20:00Z", "silentSince": "2026-03-09T09:23:00Z"}
    }
    # Taken as alive from the status at start, never heard since: its recorded lastSeen.
    unheard = written(plan_silence(current, PendingSilence(DOMAIN, None, found)))
    assert unheard["agent"]["lastSeen"] == "2026-03-09T09:00:00Z"
    # Another replica recorded a later heartbeat: that one is hearing it.
    later = current.model_copy(update={"last_seen": heard + timedelta(seconds=30)})
    assert plan_silence(later, PendingSilence(DOMAIN, heard, found)) == Skip("stale")
    marked = AgentStatus.model_validate({**mark["agent"], "version": "0.4.1"})
    assert plan_silence(marked, PendingSilence(DOMAIN, heard, found)) == Skip("unchanged")
    assert plan_silence(None, PendingSilence(DOMAIN, heard, found)) == Skip("unchanged")
