"""Bayesian summaries of a conversion experiment: chance to beat control, expected loss.

With a Beta(a₀, b₀) prior on each rate, the posterior after x conversions in n visits
is Beta(a₀ + x, b₀ + n - x). Both summaries below are exact finite sums (no sampling,
no numerical integration), which needs integer posterior parameters: the prior
parameters are integers (Beta(1, 1), the uniform prior, by default).

They are shown to customers because they read naturally ("93% chance B is better"),
but they do not decide: the decision uses the always-valid test of ``sequential``,
whose false-positive rate is controlled however often results are checked. Pure
functions, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from smart_operator.stats._special import beta_ppf, betainc, logsumexp
from smart_operator.stats.common import check_counts


def _miller_sum(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(X_B > X_A) for X_A ~ Beta(a_a, b_a), X_B ~ Beta(a_b, b_b): a sum of a_b terms.

    E. Miller (2015), "Formulas for Bayesian A/B Testing",
    https://www.evanmiller.org/bayesian-ab-testing.html::

        Σ_{i=0}^{a_b-1} B(a_a + i, b_b + b_a) / ((b_b + i) · B(1 + i, b_b) · B(a_a, b_a))

    The terms are computed in log space by their ratio, which the beta function's
    recurrence B(x + 1, y) = B(x, y) · x/(x + y) makes rational::

        tᵢ₊₁ / tᵢ = (a_a + i)(b_b + i) / ((a_a + b_a + b_b + i)(1 + i)),
        t₀ = B(a_a, b_a + b_b) / B(a_a, b_a)
    """
    log_t0 = _log_beta(a_a, b_a + b_b) - _log_beta(a_a, b_a)
    if a_b == 1:
        return math.exp(log_t0)
    j = np.arange(a_b - 1, dtype=np.float64)
    ratios = (a_a + j) / (a_a + b_a + b_b + j) * ((b_b + j) / (1.0 + j))
    log_terms = np.concatenate(([log_t0], log_t0 + np.cumsum(np.log(ratios))))
    return math.exp(logsumexp(log_terms))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X₁ > X₂) for independent X₁ ~ Beta(a1, b1) and X₂ ~ Beta(a2, b2).

    Source: E. Miller (2015), "Formulas for Bayesian A/B Testing" (the sum in
    ``_miller_sum``), with the symmetries P(X₁ > X₂) = 1 - P(X₂ > X₁) and
    P(X₁ > X₂) = P(1 - X₂ > 1 - X₁), where 1 - X ~ Beta(b, a). The sum has as many
    terms as the first parameter of the "greater" side, so the identity with the
    fewest terms is used: with conversion data that is usually the number of
    conversions, not of visitors. All four parameters must be positive integers.
    """
    for value in (a1, b1, a2, b2):
        if value < 1 or int(value) != value:
            raise ValueError("the exact sum needs positive integer beta parameters")
    fewest = min(a1, b1, a2, b2)
    if fewest == a1:
        result = _miller_sum(a2, b2, a1, b1)
    elif fewest == a2:
        result = 1.0 - _miller_sum(a1, b1, a2, b2)
    elif fewest == b2:
        # 1 - X₂ ~ Beta(b2, a2) is the "greater" side against 1 - X₁ ~ Beta(b1, a1).
        result = _miller_sum(b1, a1, b2, a2)
    else:
        result = 1.0 - _miller_sum(b2, a2, b1, a1)
    return min(1.0, max(0.0, result))


def _posterior(conversions: int, visitors: int, prior: tuple[int, int]) -> tuple[int, int]:
    check_counts(conversions, visitors)
    return prior[0] + conversions, prior[1] + visitors - conversions


def chance_to_beat(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    prior: tuple[int, int] = (1, 1),
) -> float:
    """The posterior probability that the variant's true rate exceeds the control's.

    Source: E. Miller (2015), "Formulas for Bayesian A/B Testing" (exact
    Beta-Binomial; see ``probability_greater``), with a Beta(prior) prior on each arm.
    """
    a_a, b_a = _posterior(control_conversions, control_visitors, prior)
    a_b, b_b = _posterior(variant_conversions, variant_visitors, prior)
    return probability_greater(a_b, b_b, a_a, b_a)


def expected_loss(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    prior: tuple[int, int] = (1, 1),
) -> float:
    """The expected loss of shipping the variant, E[max(p_control - p_variant, 0)].

    In absolute conversion rate: 0.001 means "if the variant is worse, shipping it costs
    on average 0.1 percentage points, weighted by how likely that is".

    Source: C. Stucchio (2015), "Bayesian A/B Testing at VWO" (VWO whitepaper), §4,
    via the identity x·Beta(x; a, b) = a/(a+b) · Beta(x; a+1, b)::

        E[max(p_A - p_B, 0)] = a_A/(a_A+b_A) · P(X'_A > X_B) - a_B/(a_B+b_B) · P(X_A > X'_B)

    with X'_A ~ Beta(a_A+1, b_A) and X'_B ~ Beta(a_B+1, b_B); each probability is the
    exact sum of ``probability_greater``.
    """
    a_a, b_a = _posterior(control_conversions, control_visitors, prior)
    a_b, b_b = _posterior(variant_conversions, variant_visitors, prior)
    mean_a = a_a / (a_a + b_a)
    mean_b = a_b / (a_b + b_b)
    first = mean_a * probability_greater(a_a + 1, b_a, a_b, b_b)
    second = mean_b * probability_greater(a_a, b_a, a_b + 1, b_b)
    return max(0.0, first - second)


def chance_of_lift(
    conversions_a: int,
    visitors_a: int,
    conversions_b: int,
    visitors_b: int,
    lift: float,
    prior: tuple[int, int] = (1, 1),
    points: int = 4001,
) -> float:
    """P(p_B > (1 + lift) · p_A) under independent Beta posteriors.

    The integral P = ∫ f_A(a) · (1 - I_{(1+lift)a}(alpha_B, beta_B)) da (Gelman et al.,
    *Bayesian Data Analysis*, 3rd ed., §2.4 on posterior probabilities of events) is
    evaluated on a grid of the quantiles of A's posterior (midpoint rule in
    probability), which is exact in the limit and accurate to about 1e-4 at the
    default size. With ``lift == 0`` it is the chance to beat control.
    """
    check_counts(conversions_a, visitors_a)
    check_counts(conversions_b, visitors_b)
    a_a, b_a = _posterior(conversions_a, visitors_a, prior)
    a_b, b_b = _posterior(conversions_b, visitors_b, prior)
    quantiles = (np.arange(points) + 0.5) / points
    rates_a = np.array([beta_ppf(float(q), a_a, b_a) for q in quantiles])
    threshold = np.clip(rates_a * (1.0 + lift), 0.0, 1.0)
    return float(np.mean(1.0 - betainc(a_b, b_b, threshold)))
