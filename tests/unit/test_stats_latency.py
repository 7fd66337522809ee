"""Latency percentiles, their bootstrap intervals and always-valid intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smart_operator.stats import (
    bootstrap_quantile_difference,
    bootstrap_quantile_interval,
    exact_bootstrap_distribution,
    quantile,
    quantile_confidence_sequence,
    summarize_latency,
)

# B. Efron and R. J. Tibshirani (1993), An Introduction to the Bootstrap, Table 1.1:
# survival times (days) of the seven mice in the treatment group.
MOUSE_TREATMENT = [94, 197, 16, 38, 99, 141, 23]


def test_exact_bootstrap_se_of_the_median_matches_efron_tibshirani_table_2_1() -> None:
    """Efron and Tibshirani (1993), Table 2.1: the bootstrap standard error of the
    treatment group's median with B = ∞ resamples is 37.83 (the same row gives 23.36
    for the mean, sqrt(Σ(x - x̄)²)/n, also checked)."""
    values, cdf = exact_bootstrap_distribution(MOUSE_TREATMENT, 0.5)
    weights = np.diff(np.concatenate([[0.0], cdf]))
    mean = float(np.sum(weights * values))
    se = math.sqrt(float(np.sum(weights * (values - mean) ** 2)))
    assert se == pytest.approx(37.83, abs=5e-3)
    data = np.asarray(MOUSE_TREATMENT, dtype=float)
    assert math.sqrt(float(np.sum((data - data.mean()) ** 2))) / data.size == pytest.approx(
        23.36, abs=5e-3
    )


def test_exact_bootstrap_distribution_equals_enumerating_every_resample() -> None:
    """Efron (1979), Annals of Statistics 7:1, §3: the bootstrap distribution of the
    median in closed form. Checked against all 7^7 = 823,543 equally likely
    resamples of the mouse data, enumerated."""
    data = np.sort(np.asarray(MOUSE_TREATMENT, dtype=float))
    n = data.size
    codes = np.arange(n**n)
    resamples = data[(codes[:, None] // n ** np.arange(n)) % n]
    medians = np.sort(resamples, axis=1)[:, n // 2]
    values, cdf = exact_bootstrap_distribution(MOUSE_TREATMENT, 0.5)
    enumerated = np.array([np.mean(medians <= v) for v in values])
    assert cdf == pytest.approx(enumerated, abs=1e-12)
    # The 95% percentile interval of that distribution.
    estimate = bootstrap_quantile_interval(MOUSE_TREATMENT, 0.5)
    assert estimate.value == 94
    assert (estimate.interval.low, estimate.interval.high) == (23, 141)


@pytest.mark.parametrize("q", [0.05, 0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [1, 7, 20, 100, 1001])
def test_quantile_is_hyndman_fan_definition_1(q: float, n: int) -> None:
    """Hyndman and Fan (1996), The American Statistician 50:361, definition 1 (inverse
    of the empirical distribution), as numpy implements it in
    ``np.quantile(method="inverted_cdf")`` (an independent implementation)."""
    samples = np.random.default_rng(n).lognormal(4.0, 0.6, n)
    assert quantile(samples, q) == float(np.quantile(samples, q, method="inverted_cdf"))


def test_quantile_confidence_sequence_covers_at_all_times() -> None:
    """Howard and Ramdas (2022), Bernoulli 28:1704: the interval covers the true
    quantile at every sample size at once with probability at least 1 - alpha.
    Seeded simulation: 200 streams of exponential latencies, checked after every
    100 requests up to 3,000; the share of streams ever missed must stay below 5%."""
    rng = np.random.default_rng(7)
    scale = 100.0
    for q in (0.5, 0.95):
        truth = -scale * math.log(1 - q)
        missed = 0
        for _ in range(200):
            stream = rng.exponential(scale, 3000)
            for n in range(100, 3001, 100):
                interval = quantile_confidence_sequence(stream[:n], q, alpha=0.05)
                if not interval.low <= truth <= interval.high:
                    missed += 1
                    break
        assert missed / 200 <= 0.05


def test_quantile_confidence_sequence_is_unbounded_with_little_data() -> None:
    interval = quantile_confidence_sequence([120.0, 80.0, 95.0], 0.95, alpha=0.05)
    assert interval.high == math.inf
    many = np.random.default_rng(3).exponential(100.0, 20_000)
    narrow = quantile_confidence_sequence(many, 0.5, alpha=0.05)
    assert narrow.low < 100 * math.log(2) < narrow.high
    assert narrow.high - narrow.low < 10


def test_bootstrap_difference_finds_a_faster_variant() -> None:
    """A variant 30% faster at every percentile: the bootstrap percentile interval of
    the p95 difference (Efron and Tibshirani 1993, ch. 13) lies below zero. Seeded,
    so repeatable."""
    rng = np.random.default_rng(11)
    control = rng.lognormal(5.0, 0.5, 4000)
    variant = 0.7 * rng.lognormal(5.0, 0.5, 4000)
    change = bootstrap_quantile_difference(control, variant, 0.95)
    assert change.value == pytest.approx(quantile(variant, 0.95) - quantile(control, 0.95))
    assert change.interval.high < 0
    assert change.interval.low < change.value < change.interval.high
    again = bootstrap_quantile_difference(control, variant, 0.95)
    assert again == change


def test_summary_and_bad_input() -> None:
    summary = summarize_latency(MOUSE_TREATMENT)
    assert summary.requests == 7
    assert summary.p50.value == 94
    assert summary.p95.value == 197
    with pytest.raises(ValueError, match="no latency samples"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match="finite"):
        quantile([1.0, math.nan], 0.5)
