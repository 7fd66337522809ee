"""Maps an ``Analysis`` onto the ``Experiment`` status models. Pure, no I/O.

The only module of the package that imports the resource models; the statistics
themselves do not depend on them.
"""

from __future__ import annotations

import math
from datetime import datetime

from smart_operator.models.experiment import Decision, Statistics, VariantResult
from smart_operator.stats.decision import Analysis, VariantAnalysis


def _finite(value: float | None) -> float | None:
    """None for values JSON (and so the API server) cannot carry: NaN and infinities."""
    return value if value is not None and math.isfinite(value) else None


def variant_result(variant: VariantAnalysis) -> VariantResult:
    """One variant's counts and statistics as the status shows them.

    ``rateLow/rateHigh`` is the Wilson interval; ``upliftLow/upliftHigh`` the
    always-valid interval that the decision uses (the look-once delta-method interval
    stays in the ``Analysis``).
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
        uplift=_finite(variant.uplift),
        uplift_low=_finite(uplift_interval.low) if uplift_interval else None,
        uplift_high=_finite(uplift_interval.high) if uplift_interval else None,
        chance_to_beat_control=_finite(variant.chance_to_beat_control),
        p50_ms=_finite(latency.p50.value) if latency else None,
        p95_ms=_finite(latency.p95.value) if latency else None,
    )


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
