"""The always-valid p-value and confidence sequence (normal-mixture mSPRT).

No paper prints a numeric example of the mixture likelihood ratio to check against,
so these tests check the implementation against the published formulas themselves,
each transcribed independently (Johari et al.'s two-sample form, Howard et al.'s
boundary), and against numerical integration of the mixture. The error guarantee
under continuous monitoring is checked by simulation in ``test_stats_simulation``.
"""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from smart_operator.stats import (
    always_valid_p_value,
    compare_conversions,
    confidence_sequence,
    confidence_sequence_half_width,
    log_mixture_likelihood_ratio,
    log_risk_ratio,
    restricted_rates,
)
from smart_operator.stats.sequential import information_factor_for_half_width


def test_equals_johari_et_al_two_sample_formula() -> None:
    """R. Johari, P. Koomen, L. Pekelis, D. Walsh (2017), "Peeking at A/B tests", KDD:
    for n observations per arm with variance s² and a N(0, τ²) mixture,
    Λₙ = sqrt(2s²/(2s² + nτ²)) · exp(n²τ²(Ȳₙ - X̄ₙ)² / (4s²(2s² + nτ²))),
    which is our formula with v = 2s²/n."""
    for n, s2, tau, diff in [
        (1000, 0.25, 0.1, 0.03),
        (50, 4.0, 1.0, 0.5),
        (10**6, 0.05, 0.02, 1e-3),
    ]:
        johari = math.log(math.sqrt(2 * s2 / (2 * s2 + n * tau**2))) + (
            n**2 * tau**2 * diff**2 / (4 * s2 * (2 * s2 + n * tau**2))
        )
        ours = log_mixture_likelihood_ratio(diff, 2 * s2 / n, tau)
        assert ours == pytest.approx(johari, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("estimate", "variance", "tau"), [(0.1, 0.01, 0.2), (-0.3, 0.02, 0.5)])
def test_equals_the_mixture_integral(estimate: float, variance: float, tau: float) -> None:
    """Λ = ∫ [N(θ̂; θ, v) / N(θ̂; 0, v)] N(θ; 0, τ²) dθ, integrated numerically."""

    def integrand(theta: float) -> float:
        log_ratio = (estimate * theta - theta**2 / 2) / variance
        return math.exp(log_ratio) * float(stats.norm.pdf(theta, 0.0, tau))

    value, _ = integrate.quad(integrand, -12 * tau, 12 * tau, epsabs=0, epsrel=1e-12, limit=200)
    assert math.exp(log_mixture_likelihood_ratio(estimate, variance, tau)) == pytest.approx(
        value, rel=1e-9
    )


def test_the_interval_is_the_inverted_test_and_howard_et_als_boundary() -> None:
    """At the edge of the 1 - alpha confidence sequence the always-valid p-value is
    exactly alpha (the sequence inverts the test), and the edge is the two-sided
    normal-mixture boundary of S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021),
    Annals of Statistics 49:1055, |S| = sqrt((V + rho) log((V + rho)/(rho alpha²))) with
    S = θ̂/v, V = 1/v, rho = 1/τ²."""
    estimate, variance, tau, alpha = 0.12, 0.003, 0.2, 0.05
    half = confidence_sequence_half_width(variance, tau, alpha)
    for edge in (estimate - half, estimate + half):
        assert always_valid_p_value(estimate, variance, tau, null=edge) == pytest.approx(alpha)
    big_v, rho = 1 / variance, 1 / tau**2
    boundary = math.sqrt((big_v + rho) * math.log((big_v + rho) / (rho * alpha**2)))
    assert half / variance == pytest.approx(boundary, rel=1e-12)
    interval = confidence_sequence(estimate, variance, tau, alpha)
    assert interval.low == pytest.approx(estimate - half)
    assert interval.confidence == pytest.approx(0.95)


def test_p_value_is_one_without_evidence_and_falls_with_it() -> None:
    assert always_valid_p_value(0.0, 0.01, 0.2) == 1.0
    small = always_valid_p_value(0.2, 0.001, 0.2)
    assert 0.0 < small < always_valid_p_value(0.1, 0.001, 0.2) <= 1.0
    # Always stricter than the fixed-horizon z-test at the same data.
    z_test = 2 * stats.norm.sf(0.2 / math.sqrt(0.001))
    assert small > z_test


def test_conversion_comparison_tests_no_change_at_the_pooled_variance() -> None:
    """The effect is log(p_B/p_A). "No change" is tested at the variance the estimate
    has when there is none: at the pooled rate p̄, (1 - p̄)/p̄ · (1/n_A + 1/n_B), the
    delta-method form of the pooled variance of the classical two-proportion test
    (A. Agresti, Categorical Data Analysis, 3rd ed., 2013, section 3.1.3)."""
    comparison = compare_conversions(250, 5000, 350, 5000, mixture_sd=0.2)
    estimate, katz = log_risk_ratio(250, 5000, 350, 5000)
    assert estimate == pytest.approx(math.log(1.4))
    assert katz == pytest.approx(1 / 350 - 1 / 5000 + 1 / 250 - 1 / 5000)
    pooled = 600 / 10000
    variance = (1 - pooled) / pooled * (1 / 5000 + 1 / 5000)
    assert comparison.variance_at(0.0) == pytest.approx(variance)
    assert comparison.uplift == pytest.approx(0.4)
    assert comparison.p_value == pytest.approx(always_valid_p_value(estimate, variance, 0.2))
    interval = comparison.uplift_interval(0.05)
    assert interval.low < 0.4 < interval.high
    # The interval is the set of ratios not rejected: its bounds are rejected just so.
    for bound in (interval.low, interval.high):
        evidence = comparison.log_evidence_against(math.log1p(bound))
        assert evidence == pytest.approx(math.log(20.0), rel=1e-6)
    assert (comparison.p_value < 0.05) == (interval.low > 0.0)


def test_constrained_rates_are_the_maximum_likelihood_under_the_ratio() -> None:
    """C. P. Farrington and G. Manning (1990), Statistics in Medicine 9:1447-1454: the
    constrained estimate zeroes the score of the binomial log-likelihood under
    p_B = r·p_A, and at r = 1 it is the pooled rate."""
    x1, n1, x2, n2 = 2, 179, 118, 221
    assert restricted_rates(x1, n1, x2, n2, 1.0) == pytest.approx((120 / 400, 120 / 400))
    for ratio in (0.5, 2.0, 47.8, 300.0):
        p1, p2 = restricted_rates(x1, n1, x2, n2, ratio)
        assert p2 == pytest.approx(ratio * p1) and 0 < p1 < 1 and 0 < p2 < 1
        score = (x1 + x2) / p1 - (n1 - x1) / (1 - p1) - ratio * (n2 - x2) / (1 - ratio * p1)
        assert score == pytest.approx(0.0, abs=1e-6)


def test_a_control_with_two_conversions_does_not_hide_an_obvious_winner() -> None:
    """2 of 179 against 118 of 221 (1.1% against 53%): Katz's variance at the estimate,
    1/2 + ..., made this look like no evidence (p = 0.34 with a mixture sd of 0.2); the
    pooled variance sees what a two-proportion test sees."""
    comparison = compare_conversions(2, 179, 118, 221, mixture_sd=0.2)
    assert comparison.p_value < 1e-6
    assert comparison.uplift_interval(0.05).low > 1.0  # over +100%


def test_data_factor_solves_for_the_half_width() -> None:
    factor = information_factor_for_half_width(0.01, 0.2, 0.05, 0.05)
    assert factor is not None and factor > 1
    assert confidence_sequence_half_width(0.01 / factor, 0.2, 0.05) == pytest.approx(0.05)
    assert information_factor_for_half_width(0.01, 0.2, 0.05, 10.0) == 1.0
    assert information_factor_for_half_width(0.01, 0.2, 0.05, 0.0) is None
