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


def test_conversion_comparison_uses_katz_variance() -> None:
    """The effect is log(p_B/p_A) with the variance of Katz et al. (1978),
    1/x_B - 1/n_B + 1/x_A - 1/n_A."""
    comparison = compare_conversions(250, 5000, 350, 5000, mixture_sd=0.2)
    estimate, variance = log_risk_ratio(250, 5000, 350, 5000)
    assert estimate == pytest.approx(math.log(1.4))
    assert variance == pytest.approx(1 / 350 - 1 / 5000 + 1 / 250 - 1 / 5000)
    assert comparison.uplift == pytest.approx(0.4)
    assert comparison.p_value == pytest.approx(always_valid_p_value(estimate, variance, 0.2))
    interval = comparison.uplift_interval(0.05)
    assert interval.low < 0.4 < interval.high


def test_data_factor_solves_for_the_half_width() -> None:
    factor = information_factor_for_half_width(0.01, 0.2, 0.05, 0.05)
    assert factor is not None and factor > 1
    assert confidence_sequence_half_width(0.01 / factor, 0.2, 0.05) == pytest.approx(0.05)
    assert information_factor_for_half_width(0.01, 0.2, 0.05, 10.0) == 1.0
    assert information_factor_for_half_width(0.01, 0.2, 0.05, 0.0) is None
