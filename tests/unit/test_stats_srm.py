"""The sample-ratio-mismatch check against published chi-square values."""

from __future__ import annotations

import pytest

from smart_operator.stats import SRM_THRESHOLD, sample_ratio_check


def test_goodness_of_fit_matches_scipy_documented_example() -> None:
    """scipy's documented example for ``scipy.stats.chisquare``:
    ``chisquare([16, 18, 16, 14, 12, 12], f_exp=[16, 16, 16, 16, 16, 8])`` gives
    statistic 3.5 and p-value 0.62338762774958223. Weights 2:2:2:2:2:1 give those
    expected counts; the statistic is computed here, not by scipy."""
    check = sample_ratio_check([16, 18, 16, 14, 12, 12], [2, 2, 2, 2, 2, 1])
    assert check.statistic == pytest.approx(3.5, rel=1e-12)
    assert check.dof == 5
    assert check.p_value == pytest.approx(0.62338762774958223, rel=1e-10)
    assert not check.mismatch
    assert check.explanation.startswith("Traffic split matches the weights")


def test_flags_the_kohavi_tang_xu_example() -> None:
    """R. Kohavi, D. Tang and Y. Xu (2020), Trustworthy Online Controlled Experiments,
    ch. 21: 821,588 users in control and 815,482 in treatment of a 50/50 experiment
    have "a p-value of 1.8E-6" (printed to two digits; the statistic, 22.774, is
    computed here by hand: 2 * 3053² / 818535)."""
    check = sample_ratio_check([821_588, 815_482], [50, 50])
    assert check.statistic == pytest.approx(2 * 3053**2 / 818_535, rel=1e-12)
    assert check.p_value == pytest.approx(1.8e-6, abs=0.05e-6)
    assert check.mismatch
    assert "Traffic split looks wrong: expected 50.0% / 50.0%, got 50.2% / 49.8%" in (
        check.explanation
    )


def test_flags_the_wikipedia_600_400_example() -> None:
    """Wikipedia, "Sample ratio mismatch": 600 and 400 users in a 50/50 experiment,
    "a p-value of 2.54 x 10^-10" (three digits)."""
    check = sample_ratio_check([600, 400], [1, 1])
    assert check.p_value == pytest.approx(2.54e-10, abs=0.005e-10)
    assert check.mismatch


def test_threshold_and_unserved_arms() -> None:
    assert SRM_THRESHOLD == 0.001
    # p = 0.0023: suspicious, but above the 0.001 threshold.
    check = sample_ratio_check([5_000, 4_700], [1, 1])
    assert 0.001 < check.p_value < 0.01
    assert not check.mismatch
    # An arm with weight 0 is not served and is left out of the test.
    assert sample_ratio_check([500, 500, 3], [1, 1, 0]).p_value == pytest.approx(1.0)
    assert not sample_ratio_check([0, 0], [1, 1]).mismatch
