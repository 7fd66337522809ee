"""Corrections for comparing several variants with the control at once.

With k variants there are k chances to find a false winner; these procedures keep the
overall error at alpha. Each returns adjusted p-values (compare them with alpha) and the level
at which each hypothesis is effectively tested (an always-valid interval at that level
excludes "no change" exactly when the hypothesis is rejected). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Correction = Literal["holm", "bh"]


@dataclass(frozen=True)
class Adjusted:
    """Adjusted p-values, the rejections at alpha, and each hypothesis's test level."""

    p_values: tuple[float, ...]
    rejected: tuple[bool, ...]
    levels: tuple[float, ...]


def _order(p_values: Sequence[float]) -> list[int]:
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    return sorted(range(len(p_values)), key=lambda i: p_values[i])


def holm(p_values: Sequence[float], alpha: float = 0.05) -> Adjusted:
    """Holm's step-down procedure; controls the family-wise error rate at alpha.

    Source: S. Holm (1979), "A simple sequentially rejective multiple test procedure",
    Scandinavian Journal of Statistics 6:65-70. With the p-values sorted,
    p₍₁₎ ≤ … ≤ p₍ₘ₎, reject while p₍ⱼ₎ ≤ alpha/(m - j + 1); the adjusted p-values are
    max_{i ≤ j} min(1, (m - i + 1) p₍ᵢ₎). Valid under any dependence between the tests
    (here every variant shares the control).
    """
    m = len(p_values)
    order = _order(p_values)
    adjusted = [0.0] * m
    levels = [0.0] * m
    running = 0.0
    stopped_at: int | None = None
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
        if running > alpha and stopped_at is None:
            stopped_at = rank
        # Once the procedure stops, every later hypothesis is judged at the level of
        # the step that failed, so its interval includes "no change" as it must.
        levels[index] = alpha / (m - (rank if stopped_at is None else stopped_at))
    rejected = tuple(p <= alpha for p in adjusted)
    return Adjusted(tuple(adjusted), rejected, tuple(levels))


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> Adjusted:
    """The Benjamini-Hochberg step-up procedure; controls the false discovery rate at alpha.

    Source: Y. Benjamini and Y. Hochberg (1995), "Controlling the false discovery rate:
    a practical and powerful approach to multiple testing", JRSS B 57:289-300. Reject
    the hypotheses with the k* smallest p-values, k* = max{j : p₍ⱼ₎ ≤ jalpha/m}; the
    adjusted p-values are min_{i ≥ j} min(1, m p₍ᵢ₎ / i). (Valid for independent or
    positively dependent tests, which comparisons against a shared control are.)
    """
    m = len(p_values)
    order = _order(p_values)
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m - 1, -1, -1):
        index = order[rank]
        running = min(running, min(1.0, m * p_values[index] / (rank + 1)))
        adjusted[index] = running
    rejected = tuple(p <= alpha for p in adjusted)
    k_star = sum(rejected)
    level = alpha * max(k_star, 1) / m if m else alpha
    return Adjusted(tuple(adjusted), rejected, tuple(level for _ in range(m)))


def adjust(p_values: Sequence[float], alpha: float, method: Correction = "holm") -> Adjusted:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate)."""
    if method == "holm":
        return holm(p_values, alpha)
    return benjamini_hochberg(p_values, alpha)
