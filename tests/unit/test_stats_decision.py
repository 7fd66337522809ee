"""The analysis and decision rule that the operator calls, and its status mapping."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pydantic
import pytest

from smart_operator.models.experiment import Decision, ExperimentStatus, StoppingRules
from smart_operator.stats import Analysis, Policy, VariantCounts, analyze, recorded, to_status
from smart_operator.stats import StoppingRules as PlainRules
from smart_operator.stats._format import change, level
from smart_operator.stats.sequential import confidence_sequence_half_width

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = StoppingRules()  # the resource's defaults: 200 visitors, 28 days, alpha 0.05


def _analyze(
    counts: list[tuple[str, int, int]], days: float, policy: Policy | None = None
) -> Analysis:
    variants = [
        VariantCounts(name, visitors, conversions) for name, visitors, conversions in counts
    ]
    return analyze(variants, RULES, START, START + timedelta(days=days), policy=policy)


def test_the_issues_small_landing_page() -> None:
    """The issue: "20/400 against 32/400 is a +60% lift whose 95% interval runs from
    about -27% to +147%". That is the delta-method interval (kept as
    ``uplift_interval_fixed``); the always-valid interval that decides is wider, and
    the decision is to wait, with an estimate of the traffic it needs."""
    analysis = _analyze([("a", 400, 20), ("b", 400, 32)], days=4)
    variant = analysis.variants[1]
    assert variant.rate == 0.08
    assert variant.uplift == pytest.approx(0.60)
    assert variant.uplift_interval_fixed is not None
    assert round(variant.uplift_interval_fixed.low, 2) == -0.27
    assert round(variant.uplift_interval_fixed.high, 2) == 1.47
    assert variant.uplift_interval is not None
    assert variant.uplift_interval.low < -0.27 and variant.uplift_interval.high > 1.47
    assert variant.chance_to_beat_control is not None
    assert 0.95 < variant.chance_to_beat_control < 0.96
    assert analysis.decision.outcome == "pending"
    assert analysis.decision.reason.startswith("No clear winner yet: b 8.0% vs 5.0%, +60%")
    assert analysis.visitors_needed is not None and analysis.visitors_needed > 0
    assert "more visitors per variant" in analysis.decision.reason
    print("\n" + analysis.decision.reason)


def test_a_clear_winner() -> None:
    analysis = _analyze([("a", 5000, 250), ("b", 5000, 350)], days=7)
    assert analysis.decision.outcome == "winner"
    assert analysis.decision.winner == "b"
    assert analysis.decision.reason.startswith(
        "Variant b converts better: 7.0% vs 5.0% for control a, +40% (95% interval +"
    )
    assert "over 99% chance it beats control" in analysis.decision.reason
    assert analysis.always_valid_p_value is not None and analysis.always_valid_p_value < 0.05
    assert analysis.visitors_needed == 0
    print("\n" + analysis.decision.reason)


def test_control_wins_when_every_variant_is_worse() -> None:
    analysis = _analyze([("a", 5000, 350), ("b", 5000, 250)], days=7)
    assert (analysis.decision.outcome, analysis.decision.winner) == ("winner", "a")
    assert analysis.decision.reason.startswith("Control a converts better than every variant")


def test_not_enough_data_yet() -> None:
    """Below the minimum sample, with too few conversions to say more, the estimate is
    the gap to the minimum: 200 - 110 = 90 visitors, at 57.5 per variant per day."""
    analysis = _analyze([("a", 120, 3), ("b", 110, 4)], days=2)
    assert analysis.decision.outcome == "pending"
    assert analysis.decision.reason == (
        "Not enough data yet: about 90 more visitors per variant "
        "(about 2 days at the current traffic)."
    )
    assert analysis.visitors_needed == 90


def test_no_difference_when_the_interval_rules_out_meaningful_effects() -> None:
    analysis = _analyze([("a", 60_000, 3000), ("b", 60_000, 3010)], days=20)
    assert analysis.decision.outcome == "no_difference"
    assert analysis.decision.reason.startswith("No meaningful difference from control a: b 5.0%")
    assert analysis.decision.reason.endswith("every variant is within ±10%.")


def test_no_difference_at_the_time_limit() -> None:
    analysis = _analyze([("a", 5000, 250), ("b", 5000, 262)], days=28)
    assert analysis.decision.outcome == "no_difference"
    assert analysis.decision.reason.startswith("No clear winner after 28 days")
    early = _analyze([("a", 50, 2), ("b", 40, 1)], days=30)
    assert early.decision.outcome == "no_difference"
    assert early.decision.reason.startswith("Time limit of 28 days reached with too little data")


def test_sample_ratio_mismatch_blocks_the_decision() -> None:
    analysis = _analyze([("a", 5600, 250), ("b", 4400, 350)], days=7)
    assert analysis.sample_ratio.mismatch
    assert analysis.decision.outcome == "pending"
    assert analysis.decision.reason.startswith("Traffic split looks wrong: expected 50.0% / 50.0%")


def test_several_variants_are_corrected_with_holm() -> None:
    """Three comparisons: the best variant is tested at alpha/3 by Holm's first step,
    so its interval is a 98.3% interval (1 - 0.05/3 = 98.33%, cut to two digits of
    what it misses)."""
    counts = [("a", 5000, 250), ("b", 5000, 270), ("c", 5000, 360), ("d", 5000, 255)]
    analysis = _analyze(counts, days=10)
    assert (analysis.decision.outcome, analysis.decision.winner) == ("winner", "c")
    assert "(98.3% interval" in analysis.decision.reason
    best = analysis.variants[2]
    assert best.adjusted_p_value == pytest.approx(min(1.0, 3 * (best.p_value or 0.0)))
    bh = _analyze(counts, days=10, policy=Policy(correction="bh"))
    assert bh.decision.winner == "c"


def test_models_stopping_rules_and_status_mapping() -> None:
    analysis = _analyze([("a", 5000, 250), ("b", 5000, 350)], days=7)
    now = START + timedelta(days=7)
    variants, statistics, decision = to_status(analysis, now)
    status = ExperimentStatus(variants=variants, statistics=statistics, decision=decision)
    wire = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    b = wire["variants"][1]
    assert b["name"] == "b" and b["visitors"] == 5000 and b["conversions"] == 350
    assert b["rate"] == 0.07
    assert b["rateLow"] < 0.07 < b["rateHigh"]
    assert b["upliftLow"] > 0 and b["chanceToBeatControl"] > 0.99
    assert wire["statistics"]["sampleRatioMismatch"] is False
    assert wire["statistics"]["visitorsNeeded"] == 0
    assert wire["decision"]["outcome"] == "winner"
    assert wire["decision"]["decidedAt"] == now.isoformat().replace("+00:00", "Z")
    # The first decision time is kept while the decision stays the same.
    later = START + timedelta(days=8)
    _, _, kept = to_status(analysis, later, previous=decision)
    assert kept.decided_at == now
    _, _, pending = to_status(_analyze([("a", 10, 1), ("b", 10, 1)], 1), later, previous=decision)
    assert pending.decided_at is None
    assert isinstance(pending, Decision)


def test_latency_goal() -> None:
    """A performance experiment on p95: the variant is 30% faster, and the always-valid
    intervals (each arm at alpha/2) separate; the bootstrap difference is reported."""
    rng = np.random.default_rng(5)
    control = VariantCounts("a", 3000, 0, latencies_ms=tuple(rng.lognormal(5.0, 0.5, 3000)))
    variant = VariantCounts("b", 3000, 0, latencies_ms=tuple(0.7 * rng.lognormal(5.0, 0.5, 3000)))
    analysis = analyze(
        [control, variant], RULES, START, START + timedelta(days=3), metric="p95_latency"
    )
    assert (analysis.decision.outcome, analysis.decision.winner) == ("winner", "b")
    assert analysis.decision.reason.startswith("Variant b is faster: b p95 ")
    fast = analysis.variants[1]
    assert fast.latency is not None and fast.latency_change is not None
    assert fast.latency_change.interval.high < 0
    variants, _, _ = to_status(analysis, START)
    assert variants[1].p95_ms == pytest.approx(fast.latency.p95.value)
    few = analyze(
        [VariantCounts("a", 300, 0, latencies_ms=(1.0,) * 50), VariantCounts("b", 300, 0)],
        RULES, START, START + timedelta(days=1), metric="p50_latency",
    )  # fmt: skip
    assert few.decision.outcome == "pending"
    assert "real-user page views timed" in few.decision.reason


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least two variants"):
        _analyze([("a", 10, 1)], days=1)
    with pytest.raises(ValueError, match="unique"):
        _analyze([("a", 10, 1), ("a", 10, 1)], days=1)
    with pytest.raises(ValueError, match="impossible counts"):
        _analyze([("a", 10, 11), ("b", 10, 1)], days=1)


def test_relative_changes_read_as_a_founder_would() -> None:
    assert [change(v) for v in (0.6, -0.042, 0.0, 12.5, 9.99, 28192.8, float("inf"))] == [
        "+60%",
        "-4.2%",
        "+0%",
        "over +1,000%",
        "+999%",
        "over +1,000%",
        "over +1,000%",
    ]


@pytest.mark.parametrize("metric", ["conversion_rate", "p95_latency"])
def test_a_tiny_alpha_is_computed_in_logarithms(metric: str) -> None:
    """``alpha: 1e-300`` divided by zero (alpha² underflows to 0 below about 1e-162) in
    both always-valid boundaries, and the writer retried the analysis forever. Every
    alpha is now used through its logarithm: the analysis answers (nothing can be
    concluded at such a level) and the boundary is the formula's value."""
    rng = np.random.default_rng(8)
    variants = [
        VariantCounts("a", 500, 20, latencies_ms=tuple(rng.gamma(2.0, 50.0, 500))),
        VariantCounts("b", 500, 40, latencies_ms=tuple(rng.gamma(2.0, 40.0, 500))),
    ]
    for alpha in (1e-300, 1e-200):
        analysis = analyze(
            variants,
            PlainRules(alpha=alpha),
            START,
            START + timedelta(days=3),
            metric=metric,  # type: ignore[arg-type]
        )
        assert analysis.decision.outcome == "pending"
    tau2, v = 0.04, 0.01
    expected = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) + 600 * math.log(10)))
    assert confidence_sequence_half_width(v, 0.2, 1e-300) == pytest.approx(expected, rel=1e-12)


def test_the_resource_bounds_alpha() -> None:
    """The CRD refuses an alpha below 0.0001 at ``kubectl apply``: a smaller one only
    asks for more visitors than any site has."""
    assert StoppingRules(alpha=0.0001).alpha == 0.0001
    with pytest.raises(pydantic.ValidationError, match=r"greater than or equal to 0\.0001"):
        StoppingRules(alpha=1e-300)


def test_interval_levels_read_exactly() -> None:
    """The level of an interval after the correction, never rounded up to a level it
    does not have: two significant digits of what is missing to 100%, cut rather than
    rounded: 1 - 0.05/3 (98.33%) is 98.3%, 1 - 0.05/4 (98.75%) is 98.7%, 1 - 0.01/3
    (99.667%) is 99.66%."""
    assert [level(c) for c in (0.95, 0.975, 1 - 0.05 / 3, 0.9875, 0.9999, 0.9, 1 - 0.01 / 3)] == [
        "95%",
        "97.5%",
        "98.3%",
        "98.7%",
        "99.99%",
        "90%",
        "99.66%",
    ]


# -- decisions that stay decided ------------------------------------------------------


def _status_after(
    counts: list[tuple[str, int, int]], days: float, before: tuple[list[Any], Any] = ([], None)
) -> tuple[Analysis, tuple[list[Any], Any]]:
    """Analyse as the intake does: continue from the status, write the status."""
    variants = [VariantCounts(n, v, c) for n, v, c in counts]
    now = START + timedelta(days=days)
    analysis = analyze(variants, RULES, START, now, recorded=recorded(*before))
    written, _, decision = to_status(analysis, now, previous=before[1])
    return analysis, (written, decision)


def test_the_running_minimum_of_the_p_value_is_kept_on_the_status() -> None:
    """Johari et al.'s always-valid p-value is the running minimum over the reports: a
    report whose data alone gives a larger p-value does not raise it."""
    strong, status = _status_after([("a", 5000, 250), ("b", 5000, 330)], days=7)
    first = strong.variants[1].p_value
    assert first is not None and first < 0.05
    assert status[0][1].always_valid_p_value == pytest.approx(first)
    weaker, _ = _status_after([("a", 5400, 280), ("b", 5400, 340)], days=8, before=status)
    alone = _analyze([("a", 5400, 280), ("b", 5400, 340)], days=8).variants[1].p_value
    assert alone is not None and alone > first
    assert weaker.variants[1].p_value == pytest.approx(first)
    assert weaker.always_valid_p_value == pytest.approx(first)


def test_a_winner_stays_a_winner_when_the_data_wavers() -> None:
    """Reached at 330/5000 against 250/5000; the next report's data alone would say
    "no clear winner yet", but the decision, its reason and its time stay."""
    won, status = _status_after([("a", 5000, 250), ("b", 5000, 330)], days=7)
    assert (won.decision.outcome, won.decision.winner) == ("winner", "b")
    decided_at = status[1].decided_at
    later, after = _status_after([("a", 5400, 290), ("b", 5400, 335)], days=8, before=status)
    alone = _analyze([("a", 5400, 290), ("b", 5400, 335)], days=8)
    assert alone.decision.outcome == "pending"
    assert later.decision == won.decision
    assert (after[1].outcome, after[1].winner, after[1].decided_at) == ("winner", "b", decided_at)
    assert later.visitors_needed == 0


def test_a_mismatched_split_blocks_reaching_a_decision_not_keeping_one() -> None:
    """The same clear difference with a 56/44 split: no decision while the split is
    wrong. A decision reached on a sound split stays when the split drifts later (as
    it must once only the promoted winner is served), with the mismatch reported."""
    blocked, _ = _status_after([("a", 5600, 250), ("b", 4400, 350)], days=7)
    assert blocked.sample_ratio.mismatch and blocked.decision.outcome == "pending"
    won, status = _status_after([("a", 5000, 250), ("b", 5000, 350)], days=7)
    promoted, after = _status_after([("a", 5000, 250), ("b", 9000, 630)], days=9, before=status)
    assert promoted.sample_ratio.mismatch
    assert promoted.decision == won.decision and after[1].outcome == "winner"


def test_a_kept_winner_that_is_no_longer_a_variant_is_dropped() -> None:
    _, status = _status_after([("a", 5000, 250), ("b", 5000, 350)], days=7)
    renamed, _ = _status_after([("a", 5000, 250), ("c", 5000, 251)], days=8, before=status)
    assert renamed.decision.outcome == "pending"


def test_the_status_carries_each_intervals_level() -> None:
    """Two variants against control, alpha 0.05: Holm tests the first at 0.025, so its
    always-valid interval is a 97.5% interval, and the status says so; the rates'
    Wilson intervals are 95%."""
    analysis, (written, _) = _status_after(
        [("a", 5000, 250), ("b", 5000, 360), ("c", 5000, 260)], days=7
    )
    assert [v.rate_confidence for v in written] == [0.95, 0.95, 0.95]
    assert written[0].uplift_confidence is None
    assert written[1].uplift_confidence == pytest.approx(0.975)
    assert "(97.5% interval" in analysis.decision.reason
    # Holm stops at c, so c is judged at the level of that failed step: 1 - 0.05/1.
    assert written[2].uplift_confidence == pytest.approx(0.95)
