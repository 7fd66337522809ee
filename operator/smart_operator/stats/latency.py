"""Latency percentiles (p50, p75, p95) for performance experiments; lower is better.

Three things, each from its source:

- the percentile itself: the inverse of the empirical distribution function,
  "95% of requests took at most this long" (R. J. Hyndman and Y. Fan (1996), "Sample
  quantiles in statistical packages", The American Statistician 50:361-365,
  definition 1);
- bootstrap intervals for it, computed from the exact bootstrap distribution rather
  than by resampling (B. Efron (1979), "Bootstrap methods: another look at the
  jackknife", Annals of Statistics 7:1-26, §3), and for the difference between two
  arms by sampling from those exact distributions;
- an always-valid confidence sequence for a percentile, which the decision uses so
  that watching the dashboard does not inflate false winners (S. R. Howard and
  A. Ramdas (2022), "Sequential estimation of quantiles with applications to
  A/B-testing and best-arm identification", Bernoulli 28(3):1704-1728).

Pure functions, no I/O; the only randomness is a seeded generator for the difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smart_operator.stats._special import FloatArray, betainc
from smart_operator.stats.common import Estimate, Interval

# Guards ceil(q·n) against q·n landing a hair above an integer (0.95 · 100).
_EPS = 1e-9


def _sorted(samples: Sequence[float] | FloatArray) -> FloatArray:
    values = np.sort(np.asarray(samples, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(values)):
        raise ValueError("latency samples must be finite")
    return values


def _rank(q: float, n: int) -> int:
    """The 1-based rank of the q-quantile under Hyndman and Fan's definition 1."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    return max(1, math.ceil(q * n - _EPS))


def quantile(samples: Sequence[float] | FloatArray, q: float) -> float:
    """The q-quantile as the inverse empirical CDF: the smallest sample x with
    F̂(x) ≥ q (Hyndman and Fan 1996, definition 1)."""
    values = _sorted(samples)
    return float(values[_rank(q, values.size) - 1])


def exact_bootstrap_distribution(
    samples: Sequence[float] | FloatArray, q: float
) -> tuple[FloatArray, FloatArray]:
    """The bootstrap distribution of the q-quantile, exactly, as (values, CDF).

    Source: B. Efron (1979), Annals of Statistics 7:1-26, §3, which derives it for the
    median; the same argument holds for any quantile of definition 1. A resample of
    size n has at least k = ⌈qn⌉ values ≤ v exactly when its quantile is ≤ v, and the
    number of resampled values ≤ v is Binomial(n, F̂(v)), so::

        P*(Q* ≤ v) = P(Binomial(n, F̂(v)) ≥ k) = I_{F̂(v)}(k, n - k + 1)

    over the distinct sample values v. This is the bootstrap with infinitely many
    resamples, without resampling.
    """
    values = _sorted(samples)
    n = values.size
    k = _rank(q, n)
    distinct, counts = np.unique(values, return_counts=True)
    below = np.cumsum(counts) / n
    cdf = betainc(float(k), float(n - k + 1), below)
    cdf[-1] = 1.0
    return distinct, cdf


def _inverse(values: FloatArray, cdf: FloatArray, level: float) -> float:
    index = int(np.searchsorted(cdf, level - _EPS, side="left"))
    return float(values[min(index, values.size - 1)])


def bootstrap_quantile_interval(
    samples: Sequence[float] | FloatArray, q: float, confidence: float = 0.95
) -> Estimate:
    """The q-quantile with its bootstrap percentile interval.

    Source: Efron (1979) for the exact bootstrap distribution
    (``exact_bootstrap_distribution``); the percentile interval of B. Efron and
    R. J. Tibshirani (1993), An Introduction to the Bootstrap, ch. 13: the alpha/2 and
    1 - alpha/2 quantiles of that distribution.
    """
    values, cdf = exact_bootstrap_distribution(samples, q)
    alpha = 1.0 - confidence
    return Estimate(
        quantile(samples, q),
        Interval(
            _inverse(values, cdf, alpha / 2.0), _inverse(values, cdf, 1 - alpha / 2.0), confidence
        ),
    )


def _draw(values: FloatArray, cdf: FloatArray, uniforms: FloatArray) -> FloatArray:
    index = np.searchsorted(cdf, uniforms, side="left")
    return np.asarray(values[np.minimum(index, values.size - 1)], dtype=np.float64)


def bootstrap_quantile_difference(
    control: Sequence[float] | FloatArray,
    variant: Sequence[float] | FloatArray,
    q: float,
    confidence: float = 0.95,
    draws: int = 20_000,
    seed: int = 0,
) -> Estimate:
    """Variant's q-quantile minus control's, with a bootstrap percentile interval.

    Negative means the variant is faster. Each arm is resampled independently, so the
    bootstrap distribution of the difference is that of Q*_variant - Q*_control with
    the two drawn from their exact bootstrap distributions (Efron 1979); ``draws``
    pairs are sampled from them by inversion with a seeded generator, and the
    interval is the percentile interval of Efron and Tibshirani (1993), ch. 13.
    """
    rng = np.random.default_rng(seed)
    control_values, control_cdf = exact_bootstrap_distribution(control, q)
    variant_values, variant_cdf = exact_bootstrap_distribution(variant, q)
    differences = _draw(variant_values, variant_cdf, rng.random(draws)) - _draw(
        control_values, control_cdf, rng.random(draws)
    )
    alpha = 1.0 - confidence
    low, high = np.quantile(differences, [alpha / 2.0, 1.0 - alpha / 2.0], method="inverted_cdf")
    return Estimate(
        quantile(variant, q) - quantile(control, q), Interval(float(low), float(high), confidence)
    )


def bernoulli_subgaussian_variance(q: float) -> float:
    """The optimal sub-Gaussian variance proxy of a centred Bernoulli(q) variable.

    Source: M. Kearns and L. Saul (1998), "Large deviation methods for approximate
    probabilistic inference", UAI; D. Berend and A. Kontorovich (2013), "On the
    concentration of the missing mass", Electronic Communications in Probability 18::

        (1 - 2q) / (2 log((1 - q)/q)),  and 1/4 at q = 1/2
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    if abs(q - 0.5) < 1e-12:
        return 0.25
    return (1.0 - 2.0 * q) / (2.0 * math.log((1.0 - q) / q))


def quantile_confidence_sequence(
    samples: Sequence[float] | FloatArray, q: float, alpha: float, tuned_for: int = 1000
) -> Interval:
    """An always-valid interval for the true q-quantile (continuous latencies).

    Source: the construction of S. R. Howard and A. Ramdas (2022), Bernoulli
    28(3):1704-1728, for a fixed quantile, with the normal-mixture boundary of Howard,
    Ramdas, McAuliffe and Sekhon (2021). At the true quantile ξ, Sₙ = Σ(1{Xᵢ ≤ ξ} - q)
    is a sum of centred Bernoulli(q) variables, sub-Gaussian with variance proxy sigma²
    (``bernoulli_subgaussian_variance``), so with V = n·sigma² and probability ≥ 1 - alpha, at
    every n at once::

        |Sₙ| < u = sqrt((V + rho) log((V + rho) / (rho alpha²)))

    Hence ξ lies between the empirical quantiles at levels q - u/n and q + u/n (±∞
    when those leave (0, 1]). rho = Vₘ/(2 log(1/alpha) + log(1 + 2 log(1/alpha))) with
    Vₘ = sigma²·``tuned_for`` makes the boundary tightest near that many samples
    (Howard et al. 2021).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    values = _sorted(samples)
    n = values.size
    variance = bernoulli_subgaussian_variance(q)
    # Every alpha is used through its logarithm: alpha² underflows to 0 (and the
    # boundary divided by it) below alpha ≈ 1e-162.
    log_inv = -2.0 * math.log(alpha)
    rho = variance * tuned_for / (log_inv + math.log1p(log_inv))
    v = variance * n
    u = math.sqrt((v + rho) * (math.log((v + rho) / rho) + log_inv))
    low_rank = math.ceil(q * n - u - _EPS)
    high_rank = math.ceil(q * n + u - _EPS)
    low = float(values[low_rank - 1]) if low_rank >= 1 else -math.inf
    high = float(values[high_rank - 1]) if high_rank <= n else math.inf
    return Interval(low, high, 1.0 - alpha)


@dataclass(frozen=True)
class LatencySummary:
    """p50, p75 and p95 of one arm, each with its bootstrap interval, in milliseconds
    (or whatever unit the samples have: transfer sizes are summarised the same way)."""

    requests: int
    p50: Estimate
    p95: Estimate
    p75: Estimate


def summarize_latency(
    samples: Sequence[float] | FloatArray, confidence: float = 0.95
) -> LatencySummary:
    """p50, p75 and p95 with bootstrap percentile intervals (see
    ``bootstrap_quantile_interval``)."""
    values = _sorted(samples)
    return LatencySummary(
        int(values.size),
        bootstrap_quantile_interval(values, 0.50, confidence),
        bootstrap_quantile_interval(values, 0.95, confidence),
        bootstrap_quantile_interval(values, 0.75, confidence),
    )
