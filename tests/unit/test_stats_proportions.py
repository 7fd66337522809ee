"""Rates, intervals and tests of proportions against published reference values.

Each test names its source. Published values are quoted at the precision they were
printed with, and checked to half a unit in their last digit.
"""

from __future__ import annotations

import pytest

from smart_operator.stats import (
    clopper_pearson_interval,
    newcombe_difference_interval,
    proportions_chi2_test,
    rate,
    relative_uplift_delta,
    relative_uplift_katz,
    two_proportion_test,
    wilson_interval,
)

# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion:
# comparison of seven methods", Statistics in Medicine 17:857-872, Table I, 95% limits
# for the four worked examples. Columns: x, n, method 3 (Wilson score, no continuity
# correction), method 5 (Clopper-Pearson "exact").
NEWCOMBE_1998_TABLE_I = [
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0000, 0.1611), (0.0000, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


@pytest.mark.parametrize(("x", "n", "wilson", "exact"), NEWCOMBE_1998_TABLE_I)
def test_wilson_interval_matches_newcombe_1998_table_i_method_3(
    x: int, n: int, wilson: tuple[float, float], exact: tuple[float, float]
) -> None:
    """Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score interval)."""
    interval = wilson_interval(x, n)
    assert (interval.low, interval.high) == pytest.approx(wilson, abs=5e-5)


@pytest.mark.parametrize(("x", "n", "wilson", "exact"), NEWCOMBE_1998_TABLE_I)
def test_clopper_pearson_interval_matches_newcombe_1998_table_i_method_5(
    x: int, n: int, wilson: tuple[float, float], exact: tuple[float, float]
) -> None:
    """Newcombe (1998), Stat Med 17:857, Table I, method 5 (Clopper-Pearson exact)."""
    interval = clopper_pearson_interval(x, n)
    assert (interval.low, interval.high) == pytest.approx(exact, abs=5e-5)


# Newcombe RG (1998), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Statistics in Medicine 17:873-890,
# Table II, method 10 (hybrid score, no continuity correction), 95% limits for p1 - p2.
NEWCOMBE_1998_TABLE_II = [
    ((56, 70), (48, 80), (0.0524, 0.3339)),
    ((9, 10), (3, 10), (0.1705, 0.8090)),
    ((6, 7), (2, 7), (0.0582, 0.8062)),
    ((5, 56), (0, 29), (-0.0381, 0.1926)),
    ((0, 10), (0, 20), (-0.1611, 0.2775)),
    ((0, 10), (0, 10), (-0.2775, 0.2775)),
    ((10, 10), (0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize(("first", "second", "limits"), NEWCOMBE_1998_TABLE_II)
def test_difference_interval_matches_newcombe_1998_table_ii_method_10(
    first: tuple[int, int], second: tuple[int, int], limits: tuple[float, float]
) -> None:
    """Newcombe (1998), Stat Med 17:873, Table II, method 10. The paper's p1 is our
    variant and its p2 our control (we report variant - control)."""
    estimate = newcombe_difference_interval(second[0], second[1], first[0], first[1])
    assert estimate.value == pytest.approx(first[0] / first[1] - second[0] / second[1])
    assert (estimate.interval.low, estimate.interval.high) == pytest.approx(limits, abs=5e-5)


def test_two_proportion_test_matches_faraway_2006_femsmoke() -> None:
    """J. J. Faraway (2006), Extending the Linear Model with R, §4.4: the Whickham
    smoking data of Appleton, French and Vanderpump (1996), 20-year deaths of 139/582
    smokers and 230/732 non-smokers. R's ``summary()`` of the 2x2 table (Pearson's
    chi-square, no continuity correction) prints ``Chisq = 9.121, df = 1,
    p-value = 0.002527``; the pooled z-test's square is that statistic."""
    result = two_proportion_test(230, 732, 139, 582)
    assert result.statistic**2 == pytest.approx(9.121, abs=5e-4)
    assert result.p_value == pytest.approx(0.002527, abs=5e-7)
    assert result.statistic < 0  # smokers (the "variant" here) died less often


def test_k_sample_test_matches_r_prop_test_documented_example() -> None:
    """R's ``?prop.test`` example (data from Fleiss 1981, p. 139): smokers among
    patients in four groups, ``prop.test(smokers, patients)`` prints
    ``X-squared = 12.6, df = 3, p-value = 0.005585``."""
    result = proportions_chi2_test([83, 90, 129, 70], [86, 93, 136, 82])
    assert result.dof == 3
    assert result.statistic == pytest.approx(12.60, abs=5e-3)
    assert result.p_value == pytest.approx(0.005585, abs=5e-7)


def test_katz_log_risk_ratio_matches_scipy_documented_example() -> None:
    """scipy's documented example for ``scipy.stats.contingency.relative_risk`` (data
    from Sahai and Khurshid (1996), Statistics in Epidemiology, Example 3.1: coronary
    heart disease in 27/122 with high and 44/487 with low catecholamine): relative risk
    2.4495156482861398, 95% interval (1.5836990926700116, 3.7886786315466354), the Katz
    et al. (1978) log interval. Reimplemented here, so the comparison is independent."""
    estimate = relative_uplift_katz(44, 487, 27, 122)
    assert 1 + estimate.value == pytest.approx(2.4495156482861398, rel=1e-12)
    assert 1 + estimate.interval.low == pytest.approx(1.5836990926700116, rel=1e-12)
    assert 1 + estimate.interval.high == pytest.approx(3.7886786315466354, rel=1e-12)


def test_delta_method_uplift_reproduces_the_issues_landing_page_example() -> None:
    """The issue: "20/400 against 32/400 is a +60% lift whose 95% interval runs from
    about -27% to +147%". That is the delta-method (Wald) interval on the ratio:
    se = 1.6 * sqrt(0.95/(400*0.05) + 0.92/(400*0.08)) = 0.441814 and
    1.6 - 1 -/+ 1.959964 * se = -0.26594 .. +1.46594, computed by hand here (no
    published source beyond the issue; the Katz interval for the same data, below,
    is the one to prefer for small counts)."""
    estimate = relative_uplift_delta(20, 400, 32, 400)
    assert estimate is not None
    assert estimate.value == pytest.approx(0.60, abs=1e-12)
    assert estimate.interval.low == pytest.approx(-0.26594, abs=5e-6)
    assert estimate.interval.high == pytest.approx(1.46594, abs=5e-6)
    katz = relative_uplift_katz(20, 400, 32, 400)
    # Katz: exp(log 1.6 -/+ 1.959964 * sqrt(1/32 - 1/400 + 1/20 - 1/400)) - 1.
    assert (katz.interval.low, katz.interval.high) == pytest.approx((-0.06873, 1.74894), abs=5e-5)


def test_rates_and_edge_cases() -> None:
    assert rate(20, 400) == 0.05
    assert rate(0, 0) is None
    assert wilson_interval(0, 0).low == 0.0
    assert wilson_interval(0, 0).high == 1.0
    assert wilson_interval(10, 10).high == 1.0
    assert relative_uplift_delta(0, 100, 5, 100) is None
    with pytest.raises(ValueError, match="more conversions"):
        rate(5, 4)
    zero = relative_uplift_katz(0, 100, 5, 100)  # Haldane-Anscombe: finite, positive
    assert zero.value == pytest.approx(5.5 / 101 / (0.5 / 101) - 1)
    assert two_proportion_test(0, 100, 0, 100).p_value == 1.0
