"""Fixed-horizon statistics of conversion rates: one rate, two rates, several rates.

Each function states the formula it implements and where it is published. These are
the classical, look-once methods: they describe the data (rates with intervals, the
uplift with an interval) and back the reference tests. The decision itself uses the
always-valid methods of ``sequential``, because a customer watches results live.
Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from smart_operator.stats._special import beta_ppf, chi2_sf, norm_sf
from smart_operator.stats.common import Estimate, Interval, Significance, check_counts, z_for


def rate(conversions: int, visitors: int) -> float | None:
    """The observed conversion rate, or None before the first visitor."""
    check_counts(conversions, visitors)
    return conversions / visitors if visitors else None


def wilson_interval(conversions: int, visitors: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval for one proportion.

    Source: E. B. Wilson (1927), "Probable inference, the law of succession, and
    statistical inference", JASA 22:209-212; method 3 of R. G. Newcombe (1998),
    "Two-sided confidence intervals for the single proportion: comparison of seven
    methods", Statistics in Medicine 17:857-872, who recommends it::

        (x + z²/2)/(n + z²)  ±  z·sqrt(x(n-x)/n + z²/4)/(n + z²)

    It stays inside [0, 1] and keeps close to nominal coverage for small counts, where
    the textbook Wald interval collapses.
    """
    check_counts(conversions, visitors)
    if visitors == 0:
        return Interval(0.0, 1.0, confidence)
    z = z_for(confidence)
    n, x = float(visitors), float(conversions)
    denominator = n + z * z
    centre = (x + z * z / 2.0) / denominator
    half = z * math.sqrt(x * (n - x) / n + z * z / 4.0) / denominator
    low = 0.0 if conversions == 0 else max(0.0, centre - half)
    high = 1.0 if conversions == visitors else min(1.0, centre + half)
    return Interval(low, high, confidence)


def clopper_pearson_interval(conversions: int, visitors: int, confidence: float = 0.95) -> Interval:
    """The Clopper-Pearson "exact" interval for one proportion, for small counts.

    Source: C. J. Clopper and E. S. Pearson (1934), Biometrika 26:404-413; method 5 of
    Newcombe (1998). The limits are beta quantiles::

        low = Beta⁻¹(alpha/2; x, n-x+1),   high = Beta⁻¹(1-alpha/2; x+1, n-x)

    Its coverage is at least nominal for every true rate, at the price of width.
    """
    check_counts(conversions, visitors)
    if visitors == 0:
        return Interval(0.0, 1.0, confidence)
    alpha = 1.0 - confidence
    x, n = conversions, visitors
    low = 0.0 if x == 0 else beta_ppf(alpha / 2.0, x, n - x + 1)
    high = 1.0 if x == n else beta_ppf(1.0 - alpha / 2.0, x + 1, n - x)
    return Interval(low, high, confidence)


def two_proportion_test(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
) -> Significance:
    """The two-sided two-proportion z-test with the pooled standard error.

    Source: any introductory text, e.g. A. Agresti (2013), Categorical Data Analysis,
    3rd ed., §3.2 (its square is Pearson's chi-square for the 2x2 table without
    continuity correction)::

        p̄ = (x₁ + x₂)/(n₁ + n₂),   z = (p₂ - p₁) / sqrt(p̄(1-p̄)(1/n₁ + 1/n₂))

    The statistic is positive when the variant converts better. A fixed-horizon test:
    its p-value is only valid if looked at once, at a sample size fixed in advance.
    """
    check_counts(control_conversions, control_visitors)
    check_counts(variant_conversions, variant_visitors)
    if control_visitors == 0 or variant_visitors == 0:
        return Significance(0.0, 1.0)
    pooled = (control_conversions + variant_conversions) / (control_visitors + variant_visitors)
    if pooled in (0.0, 1.0):
        return Significance(0.0, 1.0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control_visitors + 1 / variant_visitors))
    difference = variant_conversions / variant_visitors - control_conversions / control_visitors
    z = difference / se
    return Significance(z, min(1.0, 2.0 * norm_sf(abs(z))))


def proportions_chi2_test(conversions: Sequence[int], visitors: Sequence[int]) -> Significance:
    """Pearson's chi-square test that k conversion rates are all equal (2xk table).

    Source: K. Pearson (1900); the k-sample test of R's ``prop.test`` without
    continuity correction::

        X² = Σᵢ (xᵢ - nᵢ p̄)² / (nᵢ p̄ (1 - p̄)),   k - 1 degrees of freedom
    """
    if len(conversions) != len(visitors) or len(conversions) < 2:
        raise ValueError("need matching conversions and visitors for at least two arms")
    for x, n in zip(conversions, visitors, strict=True):
        check_counts(x, n)
    total = sum(visitors)
    pooled = sum(conversions) / total if total else 0.0
    dof = len(conversions) - 1
    if pooled in (0.0, 1.0):
        return Significance(0.0, 1.0, dof)
    statistic = sum(
        (x - n * pooled) ** 2 / (n * pooled * (1 - pooled))
        for x, n in zip(conversions, visitors, strict=True)
        if n > 0
    )
    return Significance(statistic, chi2_sf(statistic, dof), dof)


def newcombe_difference_interval(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    confidence: float = 0.95,
) -> Estimate:
    """The hybrid score interval for the difference of two rates (variant - control).

    Source: R. G. Newcombe (1998), "Interval estimation for the difference between
    independent proportions: comparison of eleven methods", Statistics in Medicine
    17:873-890, method 10. With Wilson limits (lᵢ, uᵢ) for each rate and d = p₂ - p₁::

        low  = d - sqrt((p₂ - l₂)² + (u₁ - p₁)²)
        high = d + sqrt((u₂ - p₂)² + (p₁ - l₁)²)

    Unlike the Wald interval it behaves with zero counts and small samples.
    """
    if control_visitors == 0 or variant_visitors == 0:
        raise ValueError("both arms need visitors")
    p1 = control_conversions / control_visitors
    p2 = variant_conversions / variant_visitors
    w1 = wilson_interval(control_conversions, control_visitors, confidence)
    w2 = wilson_interval(variant_conversions, variant_visitors, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - w2.low) ** 2 + (w1.high - p1) ** 2)
    high = d + math.sqrt((w2.high - p2) ** 2 + (p1 - w1.low) ** 2)
    return Estimate(d, Interval(low, high, confidence))


def relative_uplift_delta(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    confidence: float = 0.95,
) -> Estimate | None:
    """The relative uplift p₂/p₁ - 1 with a delta-method (Wald) interval.

    Source: the first-order delta method for a ratio of independent estimates, as used
    for "percent change" metrics in R. Kohavi, D. Tang and Y. Xu (2020), Trustworthy
    Online Controlled Experiments, ch. 18, and A. Deng, U. Knoblich and J. Lu (2018),
    "Applying the Delta Method in Metric Analytics", KDD::

        Var(p̂₂/p̂₁) ≈ (p̂₂/p̂₁)² · ((1-p̂₁)/(n₁p̂₁) + (1-p̂₂)/(n₂p̂₂))

    The interval is symmetric around the uplift, so it can reach below -100% for small
    counts. For the issue's landing page, 20/400 against 32/400, it gives +60% with a
    95% interval from -26.6% to +146.6%. None when the control has no conversion yet.
    """
    check_counts(control_conversions, control_visitors)
    check_counts(variant_conversions, variant_visitors)
    if control_conversions == 0 or variant_visitors == 0:
        return None
    p1 = control_conversions / control_visitors
    p2 = variant_conversions / variant_visitors
    ratio = p2 / p1
    # The same formula multiplied out, so that it also holds when p̂₂ = 0.
    variance = ratio**2 * (1 - p1) / (control_visitors * p1) + p2 * (1 - p2) / (
        variant_visitors * p1**2
    )
    se = math.sqrt(variance)
    z = z_for(confidence)
    return Estimate(ratio - 1.0, Interval(ratio - 1.0 - z * se, ratio - 1.0 + z * se, confidence))


def log_risk_ratio(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
) -> tuple[float, float]:
    """log(p₂/p₁) and its large-sample variance (Katz et al. 1978).

    Source: D. Katz, J. Baptista, S. P. Azen and M. C. Pike (1978), "Obtaining
    confidence intervals for the risk ratio in cohort studies", Biometrics 34:469-474::

        Var(log RR) ≈ 1/x₂ - 1/n₂ + 1/x₁ - 1/n₁

    When a count is 0 (or equals its total), 0.5 is added to each cell of both arms,
    the Haldane-Anscombe correction (J. B. S. Haldane 1956, Ann. Hum. Genet. 20:309),
    so the estimate and its variance stay finite.
    """
    x1, n1, x2, n2 = _corrected(
        control_conversions, control_visitors, variant_conversions, variant_visitors
    )
    estimate = math.log((x2 / n2) / (x1 / n1))
    variance = 1.0 / x2 - 1.0 / n2 + 1.0 / x1 - 1.0 / n1
    return estimate, variance


def _haldane(x1: float, n1: float, x2: float, n2: float) -> tuple[float, float, float, float]:
    """The counts ``log_risk_ratio`` uses: 0.5 added to each cell when one is empty."""
    if min(x1, x2) == 0.0 or x1 == n1 or x2 == n2:
        return x1 + 0.5, n1 + 1.0, x2 + 0.5, n2 + 1.0
    return x1, n1, x2, n2


def restricted_rates(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    ratio: float,
) -> tuple[float, float]:
    """The maximum-likelihood rates (p₁, p₂) of two binomial arms under the constraint
    p₂ = ratio · p₁.

    Source: C. P. Farrington and G. Manning (1990), "Test statistics and sample size
    formulae for comparative binomial trials with null hypothesis of non-zero risk
    difference or non-unity relative risk", Statistics in Medicine 9:1447-1454, the
    closed form of the constrained estimate behind the score test and interval of
    O. Miettinen and M. Nurminen (1985), Statistics in Medicine 4:213-226: p₁ is the
    smaller root of::

        ratio·N·p₁² - (n₁ + ratio·n₂ + x₂ + ratio·x₁)·p₁ + (x₁ + x₂) = 0,  N = n₁ + n₂

    (the zero of the constrained log-likelihood's derivative). With ratio 1 it is the
    pooled rate of both arms. Counts as in ``log_risk_ratio`` (Haldane's 0.5 when a
    cell is empty).
    """
    x1, n1, x2, n2 = _corrected(
        control_conversions, control_visitors, variant_conversions, variant_visitors
    )
    return _restricted(x1, n1, x2, n2, ratio)


def _corrected(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
) -> tuple[float, float, float, float]:
    check_counts(control_conversions, control_visitors)
    check_counts(variant_conversions, variant_visitors)
    if control_visitors == 0 or variant_visitors == 0:
        raise ValueError("both arms need visitors")
    return _haldane(
        float(control_conversions),
        float(control_visitors),
        float(variant_conversions),
        float(variant_visitors),
    )


def _restricted(x1: float, n1: float, x2: float, n2: float, ratio: float) -> tuple[float, float]:
    if not ratio > 0.0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    a = ratio * (n1 + n2)
    b = n1 + ratio * n2 + x2 + ratio * x1
    c = x1 + x2
    # The smaller root, written so that it does not cancel when 4ac is small.
    p1 = 2.0 * c / (b + math.sqrt(max(0.0, b * b - 4.0 * a * c)))
    return p1, ratio * p1


def log_risk_ratio_variance_under(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    ratio: float,
) -> float:
    """The large-sample variance of log(p̂₂/p̂₁) if the true ratio were ``ratio``:
    (1 - p₁)/(n₁p₁) + (1 - p₂)/(n₂p₂) at the constrained rates of ``restricted_rates``.

    Source: the delta-method variance of the log risk ratio (Katz et al. 1978) taken at
    the constrained maximum-likelihood rates instead of the observed ones, as the score
    methods of Miettinen and Nurminen (1985) and Farrington and Manning (1990) do. At
    ratio 1 this is the pooled variance of the classical two-proportion test; unlike
    Katz's it stays small when one arm has few conversions but the other many.
    """
    x1, n1, x2, n2 = _corrected(
        control_conversions, control_visitors, variant_conversions, variant_visitors
    )
    p1, p2 = _restricted(x1, n1, x2, n2, ratio)
    return (1.0 - p1) / (n1 * p1) + (1.0 - p2) / (n2 * p2)


def relative_uplift_katz(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    confidence: float = 0.95,
) -> Estimate:
    """The relative uplift p₂/p₁ - 1 with the log risk-ratio interval of Katz et al.

    Source: Katz, Baptista, Azen and Pike (1978), Biometrics 34:469-474; the method of
    ``scipy.stats.contingency.relative_risk``::

        exp(log RR ± z·sqrt(1/x₂ - 1/n₂ + 1/x₁ - 1/n₁)) - 1

    Built on the log scale, it never goes below -100% and is skewed the way a ratio
    is: the interval to prefer for small counts. With a zero count the point
    estimate and the interval use the Haldane-Anscombe correction (see
    ``log_risk_ratio``).
    """
    estimate, variance = log_risk_ratio(
        control_conversions, control_visitors, variant_conversions, variant_visitors
    )
    half = z_for(confidence) * math.sqrt(variance)
    return Estimate(
        math.expm1(estimate),
        Interval(math.expm1(estimate - half), math.expm1(estimate + half), confidence),
    )
