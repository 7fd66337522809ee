"""Server-side SVG: the cumulative conversion rate of each variant over time, with its
95 % Wilson interval as a band. The points come from the Experiment's ``status.history``
(kept by the intake), so every dashboard replica draws the same chart, from the first
page after it starts. The markup is built from numbers and escaped names only, so it is
safe to insert into a page as is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

from smart_dashboard.present import pct, wilson
from smart_operator.models import Experiment, HistoryCounts, HistoryPoint

# Distinguishable for the common colour-vision deficiencies, each at least 4.5:1 on white.
PALETTE = ("#1d4ed8", "#b45309", "#047857", "#be185d", "#6d28d9", "#0e7490", "#4d7c0f")

WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 0.01
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        ceiling = step * 10**exponent
        if ceiling >= value:
            return float(ceiling)
    return float(10 ** (exponent + 1))


def chart_points(experiment: Experiment, now: datetime) -> list[HistoryPoint]:
    """The points of the chart: ``status.history``, then the current counts (as of
    ``status.lastReportAt``, else ``now``) when they are newer than its last point."""
    status = experiment.status
    if status is None:
        return []
    points = list(status.history)
    counts = [
        HistoryCounts(variant=v.name, visitors=v.visitors, conversions=v.conversions)
        for v in status.variants
    ]
    at = status.last_report_at or now
    if counts and (not points or points[-1].at < at):
        points.append(HistoryPoint(at=at, counts=counts))
    return points


def rate_chart(history: Sequence[HistoryPoint], variants: Sequence[str], title: str) -> Markup:
    """An SVG line chart with interval bands, or a short note when there is nothing
    to draw yet."""
    series: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
    for point in history:
        at = point.at.timestamp()
        for counts in point.counts:
            interval = wilson(counts.conversions, counts.visitors)
            if interval is None:
                continue
            series.setdefault(counts.variant, []).append(
                (at, counts.conversions / counts.visitors, interval[0], interval[1])
            )
    points = [p for s in series.values() for p in s]
    if not points:
        return Markup('<p class="chart-empty">The chart starts with the first visitors.</p>')
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    if t1 <= t0:
        t0, t1 = t0 - 30, t1 + 30
    label_format = "%H:%M:%S" if t1 - t0 < 3600 else "%d %b %H:%M"
    top = _nice_ceiling(max(p[3] for p in points) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    parts: list[str] = []
    # Grid and axes.
    for i in range(5):
        value = top * i / 4
        yy = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{LEFT - 8}" y="{yy + 4:.1f}" class="tick" text-anchor="end">'
            f"{escape(pct(value, 1 if top < 0.2 else 0))}</text>"
        )
    for i in range(4):
        t = t0 + (t1 - t0) * i / 3
        label = datetime.fromtimestamp(t, UTC).strftime(label_format)
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 18}" class="tick" '
            f'text-anchor="{anchor}">{escape(label)}</text>'
        )
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" class="axis-note" text-anchor="end">'
        "time (UTC)</text>"
    )
    descriptions: list[str] = []
    for index, (name, data) in enumerate(series.items()):
        if not data:
            continue
        c = colour(index)
        upper = " ".join(f"{x(t):.1f},{y(hi):.1f}" for t, _, _, hi in data)
        lower = " ".join(f"{x(t):.1f},{y(lo):.1f}" for t, _, lo, _ in reversed(data))
        line = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r, _, _ in data)
        safe = escape(name)
        if len(data) > 1:
            parts.append(f'<polygon points="{upper} {lower}" fill="{c}" class="band"/>')
            parts.append(f'<polyline points="{line}" stroke="{c}" class="line"/>')
        t, r, lo, hi = data[-1]
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" '
            f'stroke="{c}" class="whisker"/>'
            f'<circle cx="{x(t):.1f}" cy="{y(r):.1f}" r="4" fill="{c}">'
            f"<title>{safe}: {escape(pct(r))} ({escape(pct(lo))} to {escape(pct(hi))})</title>"
            "</circle>"
        )
        descriptions.append(f"{name} {pct(r)} (95% interval {pct(lo)} to {pct(hi)})")
    description = "Latest cumulative conversion rates: " + "; ".join(descriptions) + "."
    legend = "".join(
        f'<li><span class="swatch c{i % len(PALETTE)}"></span>{escape(name)}</li>'
        for i, name in enumerate(series)
    )
    svg = (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" role="img" '
        'aria-labelledby="chart-title chart-desc" preserveAspectRatio="xMidYMid meet">'
        f'<title id="chart-title">{escape(title)}</title>'
        f'<desc id="chart-desc">{escape(description)}</desc>' + "".join(parts) + "</svg>"
    )
    return Markup(  # noqa: S704 (built from numbers and escaped names only)
        f'<figure class="chart-figure">{svg}'
        f'<figcaption><ul class="legend">{legend}</ul>'
        "<span>Lines: cumulative conversion rate. Bands: 95% interval.</span>"
        "</figcaption></figure>"
    )
