"""Chance to beat control and expected loss (exact Beta-Binomial sums, and numerical
integration above ``EXACT_TERMS``).

Published numbers for these two quantities are scarce; the tests use (1) closed forms
that are exact identities, (2) a published worked evaluation of Miller's formula, and
(3) independent numerical integration with scipy (``scipy.integrate.quad`` and a fine
grid), which shares no code with the finite sums under test.
"""

from __future__ import annotations

import math
import tracemalloc
from decimal import Decimal, localcontext

import numpy as np
import pytest
from scipy import integrate, stats

from smart_operator.stats import bayes, chance_to_beat, expected_loss, probability_greater


def _by_quadrature(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 > X2) = ∫ f1(x) F2(x) dx, integrated numerically."""
    mode = (a1 - 1) / (a1 + b1 - 2) if a1 + b1 > 2 else 0.5
    value, _ = integrate.quad(
        lambda x: stats.beta.pdf(x, a1, b1) * stats.beta.cdf(x, a2, b2),
        0.0,
        1.0,
        points=[mode],
        limit=200,
        epsabs=1e-13,
        epsrel=1e-12,
    )
    return float(value)


def test_closed_forms() -> None:
    """Exact identities: P(Beta(a, 1) > Beta(1, 1)) = ∫ a x^(a-1) · x dx = a/(a + 1),
    so 2/3 for a = 2 (and 1/2 for two uniform priors before any data)."""
    assert probability_greater(2, 1, 1, 1) == pytest.approx(2 / 3, abs=1e-14)
    assert probability_greater(1, 1, 2, 1) == pytest.approx(1 / 3, abs=1e-14)
    assert probability_greater(7, 1, 1, 1) == pytest.approx(7 / 8, abs=1e-14)
    assert chance_to_beat(0, 0, 0, 0) == pytest.approx(0.5, abs=1e-14)


def test_matches_a_published_evaluation_of_millers_formula() -> None:
    """E. Miller (2015), "Formulas for Bayesian A/B Testing", evaluated for
    alpha_A = 21, beta_A = 200, alpha_B = 31, beta_B = 200 in the notebook
    "evan_miller_formula" of github.com/sharnett/AB-testing (published on
    notebook.community): 0.906704245199. Cross-checked by quadrature."""
    assert probability_greater(31, 200, 21, 200) == pytest.approx(0.906704245199, abs=5e-13)
    assert chance_to_beat(20, 219, 30, 229) == pytest.approx(0.906704245199, abs=5e-13)
    assert _by_quadrature(31, 200, 21, 200) == pytest.approx(0.906704245199, abs=1e-10)


@pytest.mark.parametrize(
    "params",
    [
        (3, 50, 10, 40),  # fewest terms: a1
        (10, 40, 3, 50),  # a2
        (50, 40, 60, 3),  # b2
        (60, 3, 50, 40),  # b1
        (401, 7601, 441, 7561),  # a realistic experiment: 400/8000 vs 440/8000
    ],
)
def test_every_identity_agrees_with_quadrature(params: tuple[int, int, int, int]) -> None:
    """The four forms of Miller's sum (chosen by which parameter is smallest) against
    independent numerical integration of ∫ f1 F2 (scipy.integrate.quad)."""
    assert probability_greater(*params) == pytest.approx(_by_quadrature(*params), abs=1e-9)


def _loss_on_a_grid(a: tuple[int, int], b: tuple[int, int]) -> float:
    """E[max(A - B, 0)] by brute-force integration on a fine grid (midpoint rule),
    independent of the Beta(a + 1, b) identity the implementation uses."""
    x = (np.arange(400_000) + 0.5) / 400_000
    dx = 1.0 / 400_000
    fa = stats.beta.pdf(x, *a) * dx
    fb = stats.beta.pdf(x, *b) * dx
    below = np.cumsum(fb) - fb / 2  # P(B < x)
    below_mean = np.cumsum(fb * x) - fb * x / 2  # E[B; B < x]
    return float(np.sum(fa * (x * below - below_mean)))


def test_expected_loss_against_grid_integration_and_the_mean_identity() -> None:
    """Stucchio (2015), "Bayesian A/B Testing at VWO": the loss of shipping B is
    E[max(p_A - p_B, 0)]. Checked against brute-force grid integration, and against
    the exact identity E[max(A - B, 0)] - E[max(B - A, 0)] = E[A] - E[B]."""
    control, variant = (40, 1000), (55, 1000)  # posteriors of 39/1038 and 54/1053
    loss_variant = expected_loss(39, 1038, 54, 1053)
    loss_control = expected_loss(54, 1053, 39, 1038)
    assert loss_variant == pytest.approx(_loss_on_a_grid(control, variant), abs=1e-9)
    assert loss_control == pytest.approx(_loss_on_a_grid(variant, control), abs=1e-9)
    mean_a, mean_b = 40 / 1040, 55 / 1055
    assert loss_control - loss_variant == pytest.approx(mean_b - mean_a, abs=1e-12)


def test_rejects_non_integer_parameters() -> None:
    with pytest.raises(ValueError, match="integer"):
        probability_greater(1.5, 1, 1, 1)  # type: ignore[arg-type]


def test_chance_of_lift_at_zero_is_the_exact_chance_to_beat() -> None:
    """Gelman et al. (BDA3 §2.4): the probability of the event p_B > p_A, integrated
    numerically, must agree with Miller's exact finite sum (itself checked against a
    published value above) to four significant digits."""
    from smart_operator.stats import chance_of_lift, chance_to_beat

    exact = chance_to_beat(20, 400, 31, 400)
    assert chance_of_lift(20, 400, 31, 400, 0.0) == pytest.approx(exact, abs=5e-5)
    assert chance_of_lift(20, 400, 31, 400, 0.10) < exact


# -- bounded cost: numerical integration above EXACT_TERMS ----------------------------


def _exact_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """Miller's exact sum in double precision, whatever its size (the identity
    ``probability_greater`` uses when a1 is the smallest parameter, or its complement
    when a2 is)."""
    if a1 <= a2:
        return bayes._miller_sum(a2, b2, a1, b1)
    return 1.0 - bayes._miller_sum(a1, b1, a2, b2)


def _miller_in_decimal(a_a: int, b_a: int, a_b: int, b_b: int) -> Decimal:
    """P(X_B > X_A), Miller's sum (see ``bayes._miller_sum``) in 40-digit decimal
    arithmetic: the exact value, free of the double-precision rounding that a sum of
    10^4 terms accumulates. For integers, t₀ = B(a_a, b_a + b_b)/B(a_a, b_a) is the
    product Π_{j<a_a} (b_a + j)/(b_a + b_b + j), so no gamma function is needed."""
    with localcontext() as context:
        context.prec = 40
        term = Decimal(1)
        for j in range(a_a):
            term = term * (b_a + j) / (b_a + b_b + j)
        total = term
        for i in range(a_b - 1):
            term = term * (a_a + i) * (b_b + i) / ((a_a + b_a + b_b + i) * (1 + i))
            total += term
        return +total


def _exact_greater_in_decimal(a1: int, b1: int, a2: int, b2: int) -> float:
    if a1 <= a2:
        return float(_miller_in_decimal(a2, b2, a1, b1))
    return float(1 - _miller_in_decimal(a1, b1, a2, b2))


THRESHOLD = bayes.EXACT_TERMS + 1  # the smallest size that is integrated


@pytest.mark.parametrize(
    "params",
    [
        # posteriors of 10,200/100,000 against 10,000/100,000 (+2%, chance about 93%)
        (THRESHOLD + 200, 90_001, THRESHOLD, 90_001),
        # equal counts: exactly one half
        (THRESHOLD, 30_001, THRESHOLD, 30_001),
        # unequal traffic: the variant had twice the visitors (+1%)
        (2 * THRESHOLD + 200, 380_000, THRESHOLD, 190_000),
        # a lopsided case: the other arm ten times the visitors
        (THRESHOLD + 300, 100_000, 10 * THRESHOLD, 1_000_000),
    ],
)
def test_integration_at_the_threshold_agrees_with_the_exact_sum(
    params: tuple[int, int, int, int],
) -> None:
    """Just above ``EXACT_TERMS``, the integral (Gauss-Legendre, fixed size) against
    Miller's exact sum evaluated in 40 digits: within 1e-13. The double-precision sum
    (what ran before) and scipy's adaptive quadrature are further from it than the
    integral is, but agree with it within their own rounding."""
    assert min(params) > bayes.EXACT_TERMS
    integrated = probability_greater(*params)
    exact = _exact_greater_in_decimal(*params)
    assert integrated == pytest.approx(exact, abs=1e-13)
    assert _exact_greater(*params) == pytest.approx(exact, abs=1e-8)
    assert _by_quadrature(*params) == pytest.approx(exact, abs=1e-9)


def test_the_two_methods_meet_at_the_threshold() -> None:
    """One conversion more on each side turns the exact sum into the integral; the
    chance to beat control moves by what one conversion moves it, not by a jump."""
    below = chance_to_beat(bayes.EXACT_TERMS - 1, 100_000, bayes.EXACT_TERMS + 200, 100_000)
    above = chance_to_beat(bayes.EXACT_TERMS, 100_000, bayes.EXACT_TERMS + 201, 100_000)
    assert above == pytest.approx(below, abs=2e-3)
    # The posteriors: Beta(x + 1, n - x + 1) for the variant, then for the control.
    params = (THRESHOLD + 201, 99_801 - THRESHOLD, THRESHOLD, 100_002 - THRESHOLD)
    assert above == pytest.approx(_exact_greater_in_decimal(*params), abs=1e-13)


def _loss_by_adaptive_quadrature(a: tuple[int, int], b: tuple[int, int]) -> float:
    """E[max(A - B, 0)] = ∫ f_A(x) ∫_0^x F_B(y) dy dx, both integrals by scipy.integrate.quad
    (the inner one in closed form would share the implementation's identity)."""
    mean, sd = stats.beta.mean(*a), stats.beta.std(*a)
    low, high = mean - 12 * sd, mean + 12 * sd

    def below(x: float) -> float:
        value, _ = integrate.quad(lambda y: stats.beta.cdf(y, *b), 0.0, x, limit=200)
        return float(value)

    value, _ = integrate.quad(
        lambda x: stats.beta.pdf(x, *a) * below(x), low, high, points=[mean], limit=200
    )
    return float(value)


def test_expected_loss_at_the_threshold_agrees_with_the_identity_and_quadrature() -> None:
    """The integrated loss against Stucchio's identity with the exact sums in 40
    digits (relative 1e-9), and against nested adaptive quadrature (relative 1e-6).
    In double precision the identity's difference of two probabilities loses about
    half its digits to cancellation at this size; the integral does not."""
    control = (THRESHOLD + 200 - 1, 100_000)  # conversions, visitors
    variant = (THRESHOLD - 1, 100_000)
    integrated = expected_loss(*control, *variant)
    a = (control[0] + 1, control[1] - control[0] + 1)
    b = (variant[0] + 1, variant[1] - variant[0] + 1)
    mean_a, mean_b = Decimal(a[0]) / sum(a), Decimal(b[0]) / sum(b)
    identity = mean_a * (1 - _miller_in_decimal(a[0] + 1, a[1], *b)) - mean_b * (
        1 - _miller_in_decimal(*a, b[0] + 1, b[1])
    )
    assert integrated == pytest.approx(float(identity), rel=1e-9)
    assert integrated == pytest.approx(_loss_by_adaptive_quadrature(a, b), rel=1e-6)
    # and the mean identity E[max(A-B,0)] - E[max(B-A,0)] = E[A] - E[B] still holds
    reverse = expected_loss(*variant, *control)
    assert integrated - reverse == pytest.approx(float(mean_a - mean_b), abs=1e-12)


def test_cost_does_not_grow_with_the_counts() -> None:
    """10^9 conversions per arm (the schema allows 10^12): the summaries allocate a
    few kilobytes, not one float per conversion (8 GB before), and stay probabilities."""
    tracemalloc.start()
    try:
        chance = chance_to_beat(10**9, 10**10, 10**9 + 10**5, 10**10)
        loss = expected_loss(10**9, 10**10, 10**9 + 10**5, 10**10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
    # The difference is 10^5 conversions on 10^9, about 2.2 standard deviations.
    assert chance == pytest.approx(stats.norm.cdf(10**5 / math.sqrt(2 * 10**9 * 0.9)), abs=1e-4)
    assert 0.0 <= loss < 1e-6
    assert chance_to_beat(10**12 // 2, 10**12, 10**12 // 2, 10**12) == pytest.approx(0.5, abs=1e-9)
