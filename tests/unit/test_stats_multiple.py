"""Holm and Benjamini-Hochberg corrections against published examples."""

from __future__ import annotations

import pytest

from smart_operator.stats import adjust, benjamini_hochberg, holm

# Benjamini and Hochberg (1995), JRSS B 57:289, §4: the 15 p-values of the
# rt-PA/APSAC thrombolysis study of Neuhaus et al. (1992).
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
           0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # fmt: skip


def test_benjamini_hochberg_matches_the_1995_example_and_scipy_docs() -> None:
    """Y. Benjamini and Y. Hochberg (1995): at q = 0.05 their procedure rejects the
    four smallest p-values. The adjusted p-values are those printed in scipy's
    documentation of ``scipy.stats.false_discovery_control`` for the same data."""
    result = benjamini_hochberg(BH_1995, alpha=0.05)
    assert sum(result.rejected) == 4
    assert result.rejected[:4] == (True, True, True, True)
    scipy_documented = [0.0015, 0.003, 0.0095, 0.035625, 0.0603, 0.06385714, 0.06385714,
                        0.0645, 0.0765, 0.486, 0.58118182, 0.714875, 0.75323077, 0.81321429,
                        1.0]  # fmt: skip
    assert list(result.p_values) == pytest.approx(scipy_documented, abs=5e-9)


def test_holm_matches_the_wikipedia_example() -> None:
    """Wikipedia, "Holm-Bonferroni method": four hypotheses with p = 0.01, 0.04, 0.03
    and 0.005 at alpha = 0.05; hypotheses one and four are rejected, two and three
    are not. Adjusted p-values from Holm's (1979) definition, by hand:
    4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06."""
    result = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert result.rejected == (True, False, False, True)
    assert list(result.p_values) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_on_the_bh_example_is_stricter() -> None:
    """On the same 15 p-values a family-wise procedure rejects only three (scipy's
    documentation of ``false_discovery_control`` shows Bonferroni doing so; Holm's
    fourth step needs 0.0095 <= 0.05/12 = 0.00417 and fails)."""
    assert sum(holm(BH_1995).rejected) == 3


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_levels_match_the_rejections(method: str) -> None:
    """Each hypothesis's level is the alpha it was tested at: a p-value at or below
    it is rejected, above it is not, so an always-valid interval at that level
    excludes "no change" exactly for the rejected comparisons."""
    p_values = [0.004, 0.02, 0.011, 0.3, 0.013]
    result = adjust(p_values, 0.05, method)  # type: ignore[arg-type]
    for p, rejected, level in zip(p_values, result.rejected, result.levels, strict=True):
        assert (p <= level) == rejected
