"""What the pages say about the resources: pure functions from the resource models
(and the clock) to words, numbers with their intervals, and badges. No I/O.

The rule throughout: an estimate is shown with its interval, and what the statistics
cannot say yet is shown as "not enough data yet: about N more visitors".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from smart_operator.models import Condition, Domain, Experiment
from smart_operator.models.domain import AgentStatus

Z95 = 1.959963984540054
WILSON_LEVEL = 0.95
"""The level of the Wilson intervals the dashboard computes itself (``wilson``, the
chart's bands), with ``Z95``."""


def wilson(conversions: int, visitors: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); ``None`` without
    visitors."""
    if visitors <= 0:
        return None
    p = min(max(conversions / visitors, 0.0), 1.0)
    z2 = z * z
    denominator = 1 + z2 / visitors
    centre = (p + z2 / (2 * visitors)) / denominator
    half = z * math.sqrt(p * (1 - p) / visitors + z2 / (4 * visitors * visitors)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def level_text(confidence: float) -> str:
    """A confidence level with the digits it needs and no more: "95%", "97.5%",
    "98.3%" (1 - 0.05/3 after Holm's correction), "99.66%" (1 - 0.01/3), "99.99%": two
    significant digits of what is missing to 100%, cut rather than rounded, so never a
    level the interval does not have."""
    missing = 100.0 * (1.0 - confidence)
    if not 0.0 < missing < 100.0:
        return f"{100 * confidence:g}%"
    # Two significant digits of what is missing to 100%, cut (not rounded) so the
    # label never claims more than the interval has: 1 - 0.01/3 reads 99.66%.
    digits = max(0, math.ceil(-math.log10(missing))) + 1
    scale = 10**digits
    cut = math.floor(100.0 * confidence * scale + 1e-6) / scale
    return f"{cut:.{digits}f}".rstrip("0").rstrip(".") + "%"


def pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"


def signed_pct(value: float, digits: int = 1) -> str:
    """ "+38.2%", and beyond +1,000% "over +1,000%": an early interval's upper bound can
    be a million percent, which says no more than "very large"."""
    if value > 10:
        return "over " + signed_pct(10, 0)
    text = f"{value * 100:+,.{digits}f}%"
    return text.replace("-", "\u2212")


def count(value: int) -> str:
    return f"{value:,}"


def money(value: float) -> str:
    sign = "\u2212" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return f"{int(seconds)} s ago"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def chance_text(probability: float) -> str:
    """A probability in whole percent, never rounded to a certainty it is not."""
    if probability >= 0.995:
        return "> 99%"
    if probability <= 0.005:
        return "< 1%"
    return pct(probability, 0)


def not_enough(more: int) -> str:
    return f"Not enough data yet: about {count(more)} more visitors"


@dataclass(frozen=True)
class Badge:
    label: str
    tone: str  # good, bad, warn, info, muted


DOMAIN_TONES = {
    "Ready": "good",
    "Failed": "bad",
    "Deleting": "muted",
    "Pending": "warn",
    "Verifying": "warn",
    "Provisioning": "info",
}
EXPERIMENT_TONES = {
    "Running": "info",
    "Concluded": "good",
    "Failed": "bad",
    "Pending": "warn",
    "Deploying": "warn",
}


def condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def problems(conditions: list[Condition]) -> list[Condition]:
    """Conditions that say why something is not ready: every ``False`` or ``Unknown``
    condition except the summary ``Ready`` (unless it is all there is), and never the
    ``Paused`` flag, whose ``False`` is good news."""
    bad = [c for c in conditions if c.status != "True" and c.type not in ("Ready", "Paused")]
    if bad:
        return bad
    ready = condition(conditions, "Ready")
    return [ready] if ready is not None and ready.status != "True" else []


def domain_badge(domain: Domain) -> Badge:
    status = domain.status
    phase = status.phase.value if status and status.phase else "Pending"
    return Badge(phase, DOMAIN_TONES.get(phase, "muted"))


def experiment_badge(experiment: Experiment) -> Badge:
    status = experiment.status
    phase = status.phase.value if status and status.phase else "Pending"
    return Badge(phase, EXPERIMENT_TONES.get(phase, "muted"))


@dataclass(frozen=True)
class Estimate:
    """A number with its interval and the interval's level ("97.5%"), or why there is
    none yet. The level is the one the status states (``rateConfidence``,
    ``upliftConfidence``): after ``alpha`` and the correction for several variants it
    is rarely 95%. Without one (a status written before the intake stated levels) the
    interval is shown without a level rather than with a wrong one."""

    value: str | None
    low: str | None = None
    high: str | None = None
    note: str | None = None
    level: str | None = None

    @property
    def interval(self) -> str | None:
        if self.low is None or self.high is None:
            return None
        return f"{self.low} to {self.high}"


@dataclass(frozen=True)
class VariantRow:
    name: str
    control: bool
    visitors: str
    conversions: str
    rate: Estimate
    uplift: Estimate
    chance: Estimate
    decision: Badge
    reason: str


@dataclass(frozen=True)
class TimingRow:
    """One variant's page-load figures (performance experiments): the real-user ones,
    which decide, and the probe's, which are synthetic."""

    name: str
    views: str
    lcp: Estimate  # p75 with its interval
    lcp_p50: str
    lcp_p95: str
    ttfb: str  # p75
    transfer: str  # p50
    synthetic: str  # the probe's p50 and p95, or a dash


def ms(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:,.0f} ms"


def size(value: float | None) -> str:
    if value is None:
        return "\u2014"
    return f"{value / 1000:,.1f} kB" if value >= 1000 else f"{value:,.0f} B"


def timing_rows(experiment: Experiment) -> list[TimingRow]:
    """The page-load table of a performance experiment (empty for the other kinds)."""
    if experiment.spec.type.value != "performance":
        return []
    results = {v.name: v for v in (experiment.status.variants if experiment.status else [])}
    rows = []
    for variant in experiment.spec.variants:
        result = results.get(variant.name)
        real = result.real_user if result else None
        lcp = real.lcp_ms if real else None
        if lcp is not None and lcp.p75 is not None:
            level = level_text(lcp.confidence) if lcp.confidence is not None else None
            low = ms(lcp.p75_low) if lcp.p75_low is not None else None
            high = ms(lcp.p75_high) if lcp.p75_high is not None else None
            p75 = Estimate(ms(lcp.p75), low, high, level=level)
        else:
            p75 = Estimate(None, note="No page views timed yet")
        synthetic = result.synthetic if result else None
        rows.append(
            TimingRow(
                name=variant.name,
                views=count(real.views if real else 0),
                lcp=p75,
                lcp_p50=ms(lcp.p50 if lcp else None),
                lcp_p95=ms(lcp.p95 if lcp else None),
                ttfb=ms(real.ttfb_ms.p75 if real and real.ttfb_ms else None),
                transfer=size(real.transfer_bytes.p50 if real and real.transfer_bytes else None),
                synthetic=(
                    f"{ms(synthetic.p50_ms)} / {ms(synthetic.p95_ms)}"
                    if synthetic and synthetic.p50_ms is not None
                    else "\u2014"
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class ExperimentSummary:
    """One experiment as the pages show it."""

    experiment: Experiment
    badge: Badge
    enough: bool
    more_needed: int
    visitors: int
    rows: list[VariantRow]
    outcome: Badge
    reason: str
    best: Estimate | None  # best non-control uplift, with interval, or why there is none
    best_variant: str | None
    srm: bool
    counts_restarted_at: datetime | None = None
    """When counts last started again from zero on a new server's agent (the earlier
    counts were kept and the new ones added): the status's ``countsRestartedAt``."""
    timings: list[TimingRow] | None = None
    """Performance experiments: each variant's page-load figures."""


def _more_needed(experiment: Experiment) -> int:
    status = experiment.status
    if status and status.statistics and status.statistics.visitors_needed is not None:
        return status.statistics.visitors_needed
    minimum = experiment.spec.stopping.min_visitors_per_variant
    seen = {v.name: v.visitors for v in (status.variants if status else [])}
    return sum(max(0, minimum - seen.get(v.name, 0)) for v in experiment.spec.variants)


def summarize(experiment: Experiment) -> ExperimentSummary:
    status = experiment.status
    results = {v.name: v for v in (status.variants if status else [])}
    decision = status.decision if status else None
    outcome_name = decision.outcome if decision else "pending"
    more = _more_needed(experiment)
    decided = outcome_name in ("winner", "no_difference")
    enough = decided or more == 0
    names = [v.name for v in experiment.spec.variants]
    names += [n for n in results if n not in names]
    control = names[0] if names else None
    rows: list[VariantRow] = []
    best: Estimate | None = None
    best_variant: str | None = None
    best_value = -math.inf
    total = 0
    for name in names:
        result = results.get(name)
        visitors = result.visitors if result else 0
        conversions = result.conversions if result else 0
        total += visitors
        if result and result.rate_low is not None and result.rate_high is not None:
            interval: tuple[float, float] | None = (result.rate_low, result.rate_high)
            rate_level = (
                level_text(result.rate_confidence) if result.rate_confidence is not None else None
            )
        else:
            interval, rate_level = wilson(conversions, visitors), level_text(WILSON_LEVEL)
        if visitors and interval:
            rate = Estimate(
                pct(conversions / visitors), pct(interval[0]), pct(interval[1]), level=rate_level
            )
        else:
            rate = Estimate(None, note="No visitors yet")
        is_control = name == control
        if is_control:
            uplift = Estimate(None, note="Baseline")
            chance = Estimate(None, note="Baseline")
        elif not enough:
            uplift = Estimate(None, note=not_enough(more))
            chance = Estimate(None, note=not_enough(more))
        else:
            if result and result.uplift is not None and result.uplift_low is not None:
                # No upper bound: the data cannot bound the uplift from above yet.
                high = result.uplift_high if result.uplift_high is not None else math.inf
                uplift = Estimate(
                    signed_pct(result.uplift),
                    signed_pct(result.uplift_low),
                    signed_pct(high),
                    level=(
                        level_text(result.uplift_confidence)
                        if result.uplift_confidence is not None
                        else None
                    ),
                )
                if result.uplift > best_value:
                    best_value = result.uplift
                    best, best_variant = uplift, name
            else:
                uplift = Estimate(None, note="Not estimated")
            if result and result.chance_to_beat_control is not None:
                chance = Estimate(chance_text(result.chance_to_beat_control))
            else:
                chance = Estimate(None, note="Not estimated")
        badge, reason = _variant_decision(name, is_control, outcome_name, decision, more, control)
        rows.append(
            VariantRow(
                name,
                is_control,
                count(visitors),
                count(conversions),
                rate,
                uplift,
                chance,
                badge,
                reason,
            )
        )
    outcome, text = _outcome(outcome_name, decision, more, control)
    if best is None and not enough:
        best = Estimate(None, note=not_enough(more))
    return ExperimentSummary(
        experiment=experiment,
        badge=experiment_badge(experiment),
        enough=enough,
        more_needed=more,
        visitors=total,
        rows=rows,
        outcome=outcome,
        reason=text,
        best=best,
        best_variant=best_variant,
        srm=bool(status and status.statistics and status.statistics.sample_ratio_mismatch),
        counts_restarted_at=status.counts_restarted_at if status else None,
        timings=timing_rows(experiment),
    )


def _variant_decision(
    name: str, is_control: bool, outcome: str, decision: object, more: int, control: str | None
) -> tuple[Badge, str]:
    winner = getattr(decision, "winner", None)
    if outcome == "winner":
        if name == winner:
            return Badge("Winner", "good"), "Converts better than the control, beyond chance."
        if is_control:
            return Badge("Control", "muted"), f"{winner} did better than this baseline."
        return Badge("Not chosen", "muted"), f"{winner} did better."
    if outcome == "no_difference":
        return Badge(
            "No difference", "muted"
        ), "Performs like the others, within the margin of error."
    if is_control:
        return Badge("Control", "muted"), "The baseline the other variants are compared with."
    if more > 0:
        return Badge("Collecting", "info"), f"About {count(more)} more visitors before a decision."
    return Badge("Undecided", "info"), f"No clear difference from {control} yet."


def _outcome(outcome: str, decision: object, more: int, control: str | None) -> tuple[Badge, str]:
    reason = getattr(decision, "reason", None)
    winner = getattr(decision, "winner", None)
    if outcome == "winner":
        return Badge(
            f"Winner: {winner}", "good"
        ), reason or f"{winner} converts better than {control}."
    if outcome == "no_difference":
        return Badge("No clear difference", "muted"), reason or (
            "The variants perform alike; keep whichever you prefer."
        )
    if more > 0:
        return Badge("Collecting data", "info"), reason or (
            f"About {count(more)} more visitors are needed before the results can say which "
            "variant is better."
        )
    return Badge("Undecided", "info"), reason or "No variant is clearly better yet."


def availability_pct(value: float | None) -> str:
    """ "99.93%": truncated, never rounded up, so a site that missed checks never shows
    100%; "—" without checks."""
    if value is None:
        return "\u2014"
    if value >= 100:
        return "100%"
    return f"{math.floor(value * 100) / 100:.2f}%"


@dataclass(frozen=True)
class Availability:
    """The site as visitors reach it, measured from the platform (``status.availability``)."""

    day: str
    month: str
    latency: str
    up: bool
    note: str


def availability(domain: Domain, now: datetime) -> Availability | None:
    """The card's availability figures; None before the first outside check."""
    measured = domain.status.availability if domain.status else None
    if measured is None:
        return None
    if measured.up:
        note = f"checked {ago(measured.checked_at, now)}"
    else:
        note = f"down since {ago(measured.since, now)}: {measured.last_result}"
    latency = f"{measured.latency_ms:,.0f} ms" if measured.latency_ms is not None else "\u2014"
    return Availability(
        day=availability_pct(measured.percent24h),
        month=availability_pct(measured.percent30d),
        latency=latency,
        up=measured.up,
        note=note,
    )


@dataclass(frozen=True)
class DomainCard:
    domain: Domain
    badge: Badge
    ready: bool
    why: list[Condition]
    last_seen: str
    availability: Availability | None
    experiments: int
    best: Estimate | None
    best_label: str | None


AGENT_TIMEOUT_SECONDS = 300.0
"""The operator's default SMART_AGENT_TIMEOUT_SECONDS."""


def agent_seen(agent: AgentStatus | None, now: datetime) -> str:
    """The agent's liveness, honestly: the intake rewrites ``lastSeen`` only every
    ``renewSeconds`` while heartbeats arrive and marks an agent silent itself, so an
    unmarked, renewed agent sent a heartbeat within the last few minutes (a stale
    ``lastSeen`` alone would make a live agent look gone)."""
    seen = agent.last_seen if agent else None
    if agent is None or seen is None:
        return "never"
    if agent.silent(now):
        return f"silent, last heartbeat {ago(seen, now)}"
    if agent.renew_seconds and agent.connected(now, AGENT_TIMEOUT_SECONDS):
        return "live (heartbeats within the last 4 min)"
    return ago(seen, now)


def domain_card(domain: Domain, summaries: list[ExperimentSummary], now: datetime) -> DomainCard:
    status = domain.status
    conditions = status.conditions if status else []
    ready_condition = condition(conditions, "Ready")
    ready = bool(ready_condition and ready_condition.status == "True")
    agent = status.agent if status else None
    mine = [s for s in summaries if s.experiment.spec.domain_ref == domain.metadata.name]
    best: Estimate | None = None
    best_label: str | None = None
    decided = [s for s in mine if s.enough and s.best is not None and s.best.value]
    if decided:
        top = max(decided, key=lambda s: _parse_pct(s.best.value if s.best else None))
        best, best_label = top.best, f"{top.best_variant} in {top.experiment.metadata.name}"
    elif mine:
        waiting = [s.more_needed for s in mine if not s.enough]
        if waiting:
            best = Estimate(None, note=not_enough(min(waiting)))
    return DomainCard(
        domain=domain,
        badge=domain_badge(domain),
        ready=ready,
        why=problems(conditions) if not ready else [],
        last_seen=agent_seen(agent, now),
        availability=availability(domain, now),
        experiments=len(mine),
        best=best,
        best_label=best_label,
    )


def _parse_pct(text: str | None) -> float:
    if not text:
        return -math.inf
    return float(text.replace("\u2212", "-").rstrip("%"))
