"""Chance to beat control and expected loss (exact Beta-Binomial sums).

Published numbers for these two quantities are scarce; the tests use (1) closed forms
that are exact identities, (2) a published worked evaluation of Miller's formula, and
(3) independent numerical integration with scipy (``scipy.integrate.quad`` and a fine
grid), which shares no code with the finite sums under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from smart_operator.stats import chance_to_beat, expected_loss, probability_greater


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
