"""The sample-ratio-mismatch (SRM) check: did each variant get its share of visitors?

When the split of visitors differs from the configured weights by more than chance
allows, something filters visitors unevenly (bots, redirects, caching, a broken
variant), and every other number of the experiment is suspect. Pure, no I/O.

Source: R. Kohavi, D. Tang and Y. Xu (2020), Trustworthy Online Controlled Experiments,
ch. 21 ("Sample Ratio Mismatch and Other Trust-Related Guardrail Metrics"), and
A. Fabijan et al. (2019), "Diagnosing Sample Ratio Mismatch in Online Controlled
Experiments", KDD 2019: a chi-square goodness-of-fit test of the visitor counts against
the weights, flagged at p < 0.001 because the check runs on every experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smart_operator.stats._special import chi2_sf

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class SampleRatioCheck:
    """The outcome of the check, with a sentence that explains it."""

    statistic: float
    dof: int
    p_value: float
    mismatch: bool
    expected_shares: tuple[float, ...]
    observed_shares: tuple[float, ...]
    explanation: str


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _p(p_value: float) -> str:
    return f"{p_value:.2g}" if p_value >= 1e-4 else f"{p_value:.1e}"


def sample_ratio_check(
    visitors: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD
) -> SampleRatioCheck:
    """Pearson's chi-square goodness-of-fit test of ``visitors`` against ``weights``.

    Source: K. Pearson (1900); for SRM, Kohavi, Tang and Xu (2020), ch. 21::

        Eᵢ = N · wᵢ / Σw,   X² = Σ (Oᵢ - Eᵢ)² / Eᵢ,   k - 1 degrees of freedom

    Arms with weight 0 are not served and are left out. A mismatch is flagged when the
    p-value is below ``threshold`` (0.001).
    """
    if len(visitors) != len(weights):
        raise ValueError("one weight per arm")
    arms = [(n, w) for n, w in zip(visitors, weights, strict=True) if w > 0]
    if any(n < 0 for n, _ in arms):
        raise ValueError("visitor counts must not be negative")
    total = sum(n for n, _ in arms)
    weight_sum = sum(w for _, w in arms)
    expected_shares = tuple(w / weight_sum for _, w in arms) if arms else ()
    dof = max(0, len(arms) - 1)
    if len(arms) < 2 or total == 0:
        return SampleRatioCheck(
            0.0, dof, 1.0, False, expected_shares, (), "No traffic to check the split on yet."
        )
    observed_shares = tuple(n / total for n, _ in arms)
    statistic = sum(
        (n - total * share) ** 2 / (total * share)
        for (n, _), share in zip(arms, expected_shares, strict=True)
    )
    p_value = chi2_sf(statistic, dof)
    mismatch = p_value < threshold
    expected_text = " / ".join(_percent(s) for s in expected_shares)
    observed_text = " / ".join(_percent(s) for s in observed_shares)
    if mismatch:
        explanation = (
            f"Traffic split looks wrong: expected {expected_text}, got {observed_text} "
            f"(chi-square p = {_p(p_value)}, below {threshold:g}). Results can't be "
            "trusted until the cause is found: bots, redirects, caching or a broken "
            "variant often drop visitors from one side."
        )
    else:
        explanation = (
            f"Traffic split matches the weights: expected {expected_text}, got "
            f"{observed_text} (chi-square p = {_p(p_value)})."
        )
    return SampleRatioCheck(
        statistic, dof, p_value, mismatch, expected_shares, observed_shares, explanation
    )
