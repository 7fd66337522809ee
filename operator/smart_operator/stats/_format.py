"""Numbers as a founder reads them: "8.0%", "+60%", "about 1,200", "about 5 days"."""

from __future__ import annotations

import math


def rate(value: float) -> str:
    """A conversion rate: one decimal, two below 1%."""
    return f"{100 * value:.2f}%" if value < 0.01 else f"{100 * value:.1f}%"


CHANGE_SHOWN_UP_TO = 10.0
"""Beyond +1,000% a figure says nothing more precise than "very large"."""


def change(value: float) -> str:
    """A relative change with its sign: "+60%", "-4.2%", "+1,250%", and beyond
    +1,000% "over +1,000%" (an early interval's bound can be a million percent)."""
    if value > CHANGE_SHOWN_UP_TO:
        return f"over {change(CHANGE_SHOWN_UP_TO)}"
    percent = 100 * value
    text = f"{percent:+.1f}%" if abs(percent) < 10 else f"{percent:+,.0f}%"
    return "+0%" if text in ("+0.0%", "-0.0%") else text


def level(confidence: float) -> str:
    """A confidence level with the digits it needs and no more: "95%", "97.5%",
    "98.3%" (1 - 0.05/3), "99.66%" (1 - 0.01/3), "99.99%": two significant digits of what
    is missing to 100%, cut rather than rounded, so never a level it does not have."""
    missing = 100.0 * (1.0 - confidence)
    if not 0.0 < missing < 100.0:
        return f"{100 * confidence:g}%"
    # Two significant digits of what is missing to 100%, cut (not rounded) so the
    # label never claims more than the interval has: 1 - 0.01/3 reads 99.66%.
    digits = max(0, math.ceil(-math.log10(missing))) + 1
    scale = 10**digits
    cut = math.floor(100.0 * confidence * scale + 1e-6) / scale
    return f"{cut:.{digits}f}".rstrip("0").rstrip(".") + "%"


def chance(probability: float) -> str:
    if probability > 0.99:
        return "over 99%"
    if probability < 0.01:
        return "under 1%"
    return f"{100 * probability:.0f}%"


def count(value: int) -> str:
    """A count rounded to two significant digits, with thousands separators."""
    if value < 100:
        return str(value)
    digits = len(str(value)) - 2
    rounded = round(value, -digits)
    return f"{rounded:,}"


def days(value: float) -> str:
    if value < 1:
        return "less than a day"
    if value < 1.5:
        return "about 1 day"
    return f"about {round(value)} days"


def milliseconds(value: float) -> str:
    return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"
