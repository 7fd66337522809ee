"""Always-valid inference: a p-value and an interval that stay valid under peeking.

A fixed-horizon test checked after every report declares a false winner far more often
than its nominal 5%. The mixture sequential probability ratio test (mSPRT) does not:
its p-value may be looked at after every observation and the experiment stopped the
first time it drops below alpha, and the chance of ever declaring a false winner stays at
most alpha. The matching confidence sequence is an interval that covers the true effect at
all times at once.

Sources:

- R. Johari, P. Koomen, L. Pekelis and D. Walsh (2017), "Peeking at A/B Tests: Why it
  matters, and what to do about it", KDD 2017, and R. Johari, L. Pekelis and D. Walsh
  (2022), "Always Valid Inference: Continuous Monitoring of A/B Tests", Operations
  Research 70(3):1806-1821 — the mSPRT with a normal mixture and its always-valid
  p-value.
- S. R. Howard, A. Ramdas, J. McAuliffe and J. Sekhon (2021), "Time-uniform,
  nonparametric, nonasymptotic confidence sequences", Annals of Statistics
  49(2):1055-1080 — the same normal-mixture boundary as a confidence sequence.
- I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy and A. Ramdas (2024),
  "Time-uniform central limit theory and asymptotic confidence sequences", Annals of
  Statistics — why an estimated variance may be plugged in (asymptotic validity).

Here the effect is any asymptotically normal estimate θ̂ with variance v (for
conversions: the log risk ratio, with its variance taken at the rates the hypothesis
θ = θ₀ allows, as score tests do; see ``compare_conversions``). With a N(θ₀, τ²)
mixture over the alternative, the mixture likelihood ratio is::

    Λ = sqrt(v / (v + τ²)) · exp(τ² (θ̂ - θ₀)² / (2 v (v + τ²)))

which for two equal arms of n normal observations with variance s² (v = 2s²/n) is
exactly Johari et al.'s Λₙ = sqrt(2s²/(2s² + nτ²)) · exp(n²τ²(Ȳₙ - X̄ₙ - θ₀)² /
(4s²(2s² + nτ²))). The always-valid p-value is min(1, 1/Λ), and the confidence
sequence at level 1 - alpha is the set of θ₀ with Λ < 1/alpha::

    θ̂ ± sqrt(v (v + τ²) / τ² · log((v + τ²) / (v alpha²)))

This is Howard et al.'s two-sided normal-mixture boundary
|S| < sqrt((V + rho) log((V + rho)/(rho·alpha²))) on the information scale
(S = θ̂/v, V = 1/v, rho = 1/τ²). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smart_operator.stats._special import find_root
from smart_operator.stats.common import Interval
from smart_operator.stats.proportions import log_risk_ratio, log_risk_ratio_variance_under


def log_mixture_likelihood_ratio(
    estimate: float, variance: float, mixture_sd: float, null: float = 0.0
) -> float:
    """log Λ, the log of the normal-mixture likelihood ratio against θ = ``null``.

    Source: Johari, Pekelis and Walsh (2022), the mSPRT with a normal mixture in closed
    form; see the module docstring for the formula.
    """
    if variance <= 0.0 or mixture_sd <= 0.0:
        raise ValueError("variance and mixture_sd must be positive")
    tau2 = mixture_sd * mixture_sd
    total = variance + tau2
    return 0.5 * math.log(variance / total) + tau2 * (estimate - null) ** 2 / (
        2.0 * variance * total
    )


def always_valid_p_value(
    estimate: float, variance: float, mixture_sd: float, null: float = 0.0
) -> float:
    """The mSPRT's always-valid p-value min(1, 1/Λ) for the hypothesis θ = ``null``.

    Source: Johari, Pekelis and Walsh (2022), the always-valid p-value of the mSPRT.
    Rejecting when it falls below alpha, at any report, keeps the chance of a false
    rejection at most alpha (asymptotically, as the variance is estimated). The running
    minimum over reports is also valid; this function is stateless and returns the
    value at the current data.
    """
    log_lr = log_mixture_likelihood_ratio(estimate, variance, mixture_sd, null)
    return math.exp(-max(0.0, log_lr))


def confidence_sequence_half_width(variance: float, mixture_sd: float, alpha: float) -> float:
    """The half-width of the normal-mixture confidence sequence at level 1 - alpha.

    Source: Howard, Ramdas, McAuliffe and Sekhon (2021), the two-sided normal-mixture
    boundary; equivalently, inverting the mSPRT of Johari et al. (see module docstring)::

        sqrt(v (v + τ²) / τ² · log((v + τ²) / (v alpha²)))
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    tau2 = mixture_sd * mixture_sd
    total = variance + tau2
    # log(total / (v·alpha²)) taken apart: alpha² underflows to 0 below alpha ≈ 1e-162.
    log_ratio = math.log(total / variance) - 2.0 * math.log(alpha)
    return math.sqrt(variance * total / tau2 * log_ratio)


def confidence_sequence(
    estimate: float, variance: float, mixture_sd: float, alpha: float
) -> Interval:
    """The always-valid interval θ̂ ± half-width at level 1 - alpha (see
    ``confidence_sequence_half_width``)."""
    half = confidence_sequence_half_width(variance, mixture_sd, alpha)
    return Interval(estimate - half, estimate + half, 1.0 - alpha)


def information_factor_for_half_width(
    variance: float, mixture_sd: float, alpha: float, target: float
) -> float | None:
    """By what factor the data must grow for the interval to shrink to ``target``.

    The variance of the estimate falls like 1/n, so with f times the data it is v/f;
    this solves half_width(v/f) = target for f (1.0 when already there). None when
    the target is not positive or would need over a million times the data.
    """
    if target <= 0.0:
        return None
    if confidence_sequence_half_width(variance, mixture_sd, alpha) <= target:
        return 1.0
    limit = 1e6

    def gap(log_factor: float) -> float:
        return (
            confidence_sequence_half_width(variance / math.exp(log_factor), mixture_sd, alpha)
            - target
        )

    if gap(math.log(limit)) > 0.0:
        return None
    return math.exp(find_root(gap, 0.0, math.log(limit)))


@dataclass(frozen=True)
class SequentialComparison:
    """A variant against the control on the log risk-ratio scale, always-valid.

    ``variance`` is Katz's, at the estimate. The test of each value θ₀ (and so the
    p-value at θ₀ = 0 and the interval, the θ₀ not rejected) takes the variance the
    estimate would have if θ₀ were true (``variance_at``), as score tests do.
    """

    log_ratio: float
    variance: float
    mixture_sd: float
    p_value: float
    counts: tuple[int, int, int, int]  # control conversions, visitors; variant's

    @property
    def uplift(self) -> float:
        """The relative uplift p_variant/p_control - 1."""
        return math.expm1(self.log_ratio)

    def variance_at(self, null: float) -> float:
        """The variance of the log risk ratio if its true value were ``null``."""
        return log_risk_ratio_variance_under(*self.counts, math.exp(null))

    def log_evidence_against(self, null: float) -> float:
        """log Λ for the hypothesis θ = ``null``, at that hypothesis's variance."""
        return log_mixture_likelihood_ratio(
            self.log_ratio, self.variance_at(null), self.mixture_sd, null
        )

    def uplift_interval(self, alpha: float) -> Interval:
        """The always-valid interval for the relative uplift at level 1 - alpha: the
        ratios the mSPRT does not reject at alpha, each tested at its own variance.

        Source: the confidence sequence as the inversion of the mSPRT (Johari et al.
        2022; Howard et al. 2021, see the module docstring), with the constrained
        variance of score intervals (Miettinen and Nurminen 1985). A bound the data
        cannot yet limit (a ratio of e^±16 still not rejected) is infinite: -100% or
        +∞ for the uplift.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        threshold = -math.log(alpha)
        low = self._bound(-1.0, threshold)
        high = self._bound(1.0, threshold)
        return Interval(math.expm1(low), math.expm1(high), 1.0 - alpha)

    def _bound(self, direction: float, threshold: float) -> float:
        def gap(distance: float) -> float:
            return self.log_evidence_against(self.log_ratio + direction * distance) - threshold

        inside = 0.0
        for outside in BOUND_SEARCH:
            if gap(outside) > 0.0:
                return self.log_ratio + direction * find_root(gap, inside, outside)
            inside = outside
        return direction * math.inf

    def data_factor_to_resolve(self, alpha: float, margin: float) -> float | None:
        """How many times the current data would settle this comparison, if the
        observed effect held: the interval must either exclude "no change"
        (half-width < |θ̂|) or fit inside ±``margin`` around it (half-width <
        log(1 + margin) - |θ̂|), whichever comes first. An estimate: it uses Katz's
        variance at the estimate for every value."""
        bound = math.log1p(margin)
        target = max(abs(self.log_ratio), bound - abs(self.log_ratio))
        return information_factor_for_half_width(self.variance, self.mixture_sd, alpha, target)


# How far from the estimate (log scale) each bound of the interval is looked for.
BOUND_SEARCH = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def compare_conversions(
    control_conversions: int,
    control_visitors: int,
    variant_conversions: int,
    variant_visitors: int,
    mixture_sd: float,
) -> SequentialComparison:
    """The always-valid comparison of a variant's conversion rate with the control's.

    The effect is the log risk ratio (``proportions.log_risk_ratio``), tested with the
    normal-mixture mSPRT of Johari et al. (2022); ``mixture_sd`` is the mixture's
    standard deviation on the log scale, roughly the relative lift the test is tuned
    to find fastest (0.2 ≈ ±20%). The p-value tests "no change" at the variance the
    estimate has when there is none: that of the pooled rate
    (``proportions.log_risk_ratio_variance_under`` at ratio 1), as the classical
    two-proportion test does. Katz's variance at the estimate would make a control
    with two conversions look like almost no evidence against a variant with a
    hundred.
    """
    counts = (control_conversions, control_visitors, variant_conversions, variant_visitors)
    estimate, variance = log_risk_ratio(*counts)
    p_value = always_valid_p_value(
        estimate, log_risk_ratio_variance_under(*counts, 1.0), mixture_sd
    )
    return SequentialComparison(estimate, variance, mixture_sd, p_value, counts)
