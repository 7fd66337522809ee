"""Small value types shared by the statistics modules. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from smart_operator.stats._special import norm_ppf


@dataclass(frozen=True)
class Interval:
    """A two-sided interval ``[low, high]`` at a stated confidence level."""

    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval."""

    value: float
    interval: Interval


@dataclass(frozen=True)
class Significance:
    """A test statistic, its degrees of freedom where it has them, and its p-value."""

    statistic: float
    p_value: float
    dof: int | None = None


def z_for(confidence: float) -> float:
    """The two-sided normal critical value for ``confidence`` (1.959964 at 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return norm_ppf(0.5 + confidence / 2.0)


def check_counts(conversions: int, visitors: int) -> None:
    """Reject counts that cannot describe a proportion."""
    if visitors < 0 or conversions < 0:
        raise ValueError(f"counts must not be negative: {conversions}/{visitors}")
    if conversions > visitors:
        raise ValueError(f"more conversions than visitors: {conversions}/{visitors}")
