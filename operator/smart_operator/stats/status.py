"""Maps an ``Analysis`` onto the ``Experiment`` status models, and reads back from them
what the next analysis continues from (``recorded``). Pure, no I/O.

The only module of the package that imports the resource models; the statistics
themselves do not depend on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from smart_operator.models.experiment import (
    Decision,
    Percentiles,
    RealUserTimings,
    Statistics,
    SyntheticLatency,
    VariantResult,
)
from smart_operator.stats.decision import Analysis, Recorded, VariantAnalysis, Verdict
from smart_operator.stats.latency import LatencySummary


def _finite(value: float | None) -> float | None:
    """None for values JSON (and so the API server) cannot carry: NaN and infinities."""
    return value if value is not None and math.isfinite(value) else None


def variant_result(variant: VariantAnalysis) -> VariantResult:
    """One variant's counts and statistics as the status shows them.

    ``rateLow/rateHigh`` is the Wilson interval; ``upliftLow/upliftHigh`` the
    always-valid interval that the decision uses (the look-once delta-method interval
    stays in the ``Analysis``); each with its level, so every label can say it.
    ``alwaysValidPValue`` is the running minimum the next analysis continues from.
    """
    rate_interval = variant.rate_interval
    uplift_interval = variant.uplift_interval
    latency = variant.latency
    return VariantResult(
        name=variant.name,
        visitors=variant.visitors,
        conversions=variant.conversions,
        rate=_finite(variant.rate),
        rate_low=_finite(rate_interval.low) if rate_interval else None,
        rate_high=_finite(rate_interval.high) if rate_interval else None,
        rate_confidence=_level(rate_interval.confidence) if rate_interval else None,
        uplift=_finite(variant.uplift),
        uplift_low=_finite(uplift_interval.low) if uplift_interval else None,
        uplift_high=_finite(uplift_interval.high) if uplift_interval else None,
        uplift_confidence=_level(uplift_interval.confidence) if uplift_interval else None,
        chance_to_beat_control=_finite(variant.chance_to_beat_control),
        always_valid_p_value=_finite(variant.p_value),
        p50_ms=_finite(latency.p50.value) if latency else None,
        p75_ms=_finite(latency.p75.value) if latency else None,
        p95_ms=_finite(latency.p95.value) if latency else None,
        real_user=_real_user(variant),
        synthetic=(
            SyntheticLatency(
                requests=variant.synthetic.requests,
                p50_ms=_finite(variant.synthetic.p50.value),
                p95_ms=_finite(variant.synthetic.p95.value),
            )
            if variant.synthetic
            else None
        ),
    )


def _percentiles(summary: LatencySummary | None) -> Percentiles | None:
    if summary is None:
        return None
    p50, p75, p95 = summary.p50, summary.p75, summary.p95
    return Percentiles(
        p50=_finite(p50.value),
        p50_low=_finite(p50.interval.low),
        p50_high=_finite(p50.interval.high),
        p75=_finite(p75.value),
        p75_low=_finite(p75.interval.low),
        p75_high=_finite(p75.interval.high),
        p95=_finite(p95.value),
        p95_low=_finite(p95.interval.low),
        p95_high=_finite(p95.interval.high),
        confidence=_level(p50.interval.confidence),
    )


def _real_user(variant: VariantAnalysis) -> RealUserTimings | None:
    """The real-user timings, or None where no page view of this variant was timed."""
    if not variant.timed_views and variant.latency is None and variant.ttfb is None:
        return None
    return RealUserTimings(
        views=variant.timed_views,
        lcp_ms=_percentiles(variant.latency),
        ttfb_ms=_percentiles(variant.ttfb),
        transfer_bytes=_percentiles(variant.transfer_bytes),
    )


def _level(confidence: float) -> float | None:
    """A level the status can carry: strictly between 0 and 1 (an alpha of 1e-300
    makes 1 - alpha round to 1.0, which says nothing a label could use)."""
    return confidence if 0.0 < confidence < 1.0 else None


def statistics(analysis: Analysis) -> Statistics:
    """The experiment-wide statistics: always-valid p-value, sample-ratio check, and
    how many more visitors per variant a decision needs."""
    return Statistics(
        always_valid_p_value=_finite(analysis.always_valid_p_value),
        sample_ratio_p_value=_finite(analysis.sample_ratio.p_value),
        sample_ratio_mismatch=analysis.sample_ratio.mismatch,
        visitors_needed=analysis.visitors_needed,
    )


def decision(analysis: Analysis, now: datetime, previous: Decision | None = None) -> Decision:
    """The decision; ``decidedAt`` is kept from ``previous`` while the outcome and the
    winner stay the same, set to ``now`` when they first appear, and empty while
    pending."""
    verdict = analysis.decision
    decided_at = None
    if verdict.outcome != "pending":
        same = (
            previous is not None
            and previous.outcome == verdict.outcome
            and previous.winner == verdict.winner
        )
        decided_at = previous.decided_at if same and previous and previous.decided_at else now
    return Decision(
        outcome=verdict.outcome,
        winner=verdict.winner,
        reason=verdict.reason,
        decided_at=decided_at,
    )


def to_status(
    analysis: Analysis, now: datetime, previous: Decision | None = None
) -> tuple[list[VariantResult], Statistics, Decision]:
    """Everything the ``Experiment`` status carries from an analysis."""
    return (
        [variant_result(v) for v in analysis.variants],
        statistics(analysis),
        decision(analysis, now, previous),
    )


def recorded(variants: Sequence[VariantResult], decision: Decision | None) -> Recorded:
    """What ``analyze`` continues from, read back from the status it wrote: each
    variant's running-minimum p-value and the decision on record."""
    p_values = {
        v.name: v.always_valid_p_value for v in variants if v.always_valid_p_value is not None
    }
    verdict = (
        Verdict(decision.outcome, decision.winner, decision.reason or "")
        if decision is not None
        else None
    )
    return Recorded(p_values=p_values, decision=verdict)
