"""The analysis of an experiment and its decision rule; what the operator calls.

``analyze`` takes the cumulative counts of each variant (control first), the stopping
rules and the clock, and returns every number the status shows plus a decision:
"pending", "winner" (with the winner's name) or "no_difference", and a reason in plain
words. It is a pure function of its arguments (no clock reads, no I/O), so the operator
can call it after every report.

The decision rule, in order:

1. The sample-ratio check (``srm``): a split that does not match the weights makes
   every other number suspect, so nothing is concluded while it is flagged.
2. Minimum-data gates: every served variant has ``min_visitors_per_variant`` visitors
   and the experiment has ``Policy.min_conversions`` conversions (or, for a latency
   goal, ``Policy.min_latency_samples`` real-user page views timed per variant).
3. Always-valid tests (``sequential``): each variant against the control with the
   normal-mixture mSPRT of Johari et al. on the log risk ratio. Its always-valid
   p-value is the running minimum over every report so far (``Recorded.p_values``,
   kept on the status): Johari et al. define it so, and its guarantee is exactly that
   stopping at the first report where it falls below alpha keeps the false-positive
   rate at alpha. The p-values are adjusted across variants with Holm (or
   Benjamini-Hochberg). A variant whose adjusted p-value is at most alpha, and which
   converts better, wins; if every variant is significantly worse, the control wins.
   For a latency goal, each arm gets an always-valid interval for its percentile at
   alpha/k (k arms, so all hold at once), and a variant wins when its interval lies
   entirely below the control's.
4. "no_difference" when the always-valid intervals rule out any meaningful effect
   (every variant within ±``Policy.meaningful_lift`` of control) or when the
   experiment reaches ``max_duration_days`` without a winner.

A latency goal is decided on real visitors' timings (``VariantCounts.latencies_ms``:
each page view's largest contentful paint, as the visitor's browser measured it over
the real network); the agent's probe (``synthetic_ms``, a load over loopback that no
network lies in) is summarised for the status but never decides.

Otherwise the decision stays "pending", with an estimate of how many more visitors per
variant would settle it if the observed difference held.

A decision, once reached, stays (``Recorded.decision``): the first crossing is the
stopping time the guarantee is for, and later data (which a p-value taken on the
current data alone would let drift back above alpha) does not reopen it. Only a
decision reached with a trustworthy split counts, since rule 1 blocks reaching one;
a mismatch that appears afterwards is reported (``sample_ratio``) but does not undo it
(serving only the promoted winner makes the split differ from the weights on purpose).
A kept decision is dropped when its winner is no longer one of the variants or the
rules now ask for more data than there is (staff raised the minimum sample).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

from smart_operator.stats import _format as fmt
from smart_operator.stats.bayes import chance_to_beat, expected_loss
from smart_operator.stats.common import Estimate, Interval
from smart_operator.stats.latency import (
    LatencySummary,
    bootstrap_quantile_difference,
    quantile_confidence_sequence,
    summarize_latency,
)
from smart_operator.stats.multiple import Correction, adjust
from smart_operator.stats.proportions import rate, relative_uplift_delta, wilson_interval
from smart_operator.stats.sequential import SequentialComparison, compare_conversions
from smart_operator.stats.srm import SRM_THRESHOLD, SampleRatioCheck, sample_ratio_check

Outcome = Literal["pending", "winner", "no_difference"]
Metric = Literal["conversion_rate", "p50_latency", "p95_latency"]

_QUANTILE_OF: dict[Metric, float] = {"p50_latency": 0.50, "p95_latency": 0.95}
_SECONDS_PER_DAY = 86_400.0


class Rules(Protocol):
    """The stopping rules the decision needs; ``models.StoppingRules`` fits."""

    @property
    def min_visitors_per_variant(self) -> int: ...

    @property
    def max_duration_days(self) -> int: ...

    @property
    def alpha(self) -> float: ...


@dataclass(frozen=True)
class StoppingRules:
    """Plain stopping rules with the defaults of the ``Experiment`` resource."""

    min_visitors_per_variant: int = 200
    max_duration_days: int = 28
    alpha: float = 0.05


@dataclass(frozen=True)
class Policy:
    """Settings of the decision rule that the resource does not carry."""

    mixture_sd: float = 0.2
    """Standard deviation of the mSPRT's normal mixture on the log risk ratio: the
    relative lift (±20%) the test finds fastest. Any value keeps the error at alpha."""
    correction: Correction = "holm"
    """How p-values are adjusted across variants: "holm" (family-wise) or "bh"."""
    meaningful_lift: float = 0.10
    """Relative changes smaller than this (±10%) are not worth acting on: when the
    always-valid interval of every variant lies inside, there is no difference."""
    min_conversions: int = 10
    """No decision before this many conversions over all variants."""
    min_latency_samples: int = 100
    """No latency decision before this many timings per served variant."""
    srm_threshold: float = SRM_THRESHOLD
    """The sample-ratio check flags a mismatch below this p-value."""
    confidence: float = 0.95
    """Level of the descriptive (look-once) intervals: rates, delta-method uplift,
    latency bootstrap."""
    prior: tuple[int, int] = (1, 1)
    """Beta prior of the Bayesian summaries (integers; uniform by default)."""
    latency_tuned_for: int = 1000
    """Timings per arm at which the latency confidence sequence is tightest."""


@dataclass(frozen=True)
class VariantCounts:
    """What the agents reported for one variant, cumulatively."""

    name: str
    visitors: int
    conversions: int
    weight: float = 1.0
    latencies_ms: Sequence[float] = field(default_factory=tuple)
    """Real-user page-load times in milliseconds (performance experiments: each timed
    page view's largest contentful paint); a list or an array. These decide."""
    synthetic_ms: Sequence[float] = field(default_factory=tuple)
    """The agent's probe of its own server over loopback, in ms: shown, never decides."""
    ttfb_ms: Sequence[float] = field(default_factory=tuple)
    """Real-user time to first byte, in ms."""
    transfer_bytes: Sequence[float] = field(default_factory=tuple)
    """Real-user bytes transferred per page view (the page and its resources)."""
    timed_views: int = 0
    """Page views whose timings the agents took in all (the samples are a reservoir)."""


@dataclass(frozen=True)
class VariantAnalysis:
    """Every number about one variant; the uplift fields compare it with the control."""

    name: str
    is_control: bool
    visitors: int
    conversions: int
    rate: float | None
    rate_interval: Interval | None
    uplift: float | None = None
    uplift_interval: Interval | None = None
    """Always-valid, at the level at which the correction tested this variant
    (``Interval.confidence``: 1 - alpha/m for Holm's first step of m comparisons)."""
    uplift_interval_fixed: Interval | None = None
    """Delta method, valid for one look only; descriptive."""
    chance_to_beat_control: float | None = None
    expected_loss: float | None = None
    """Expected loss (absolute rate) of shipping this variant instead of the control."""
    p_value: float | None = None
    """Always-valid p-value against the control, before adjustment: the running minimum
    over this report and every earlier one (``Recorded.p_values``)."""
    adjusted_p_value: float | None = None
    latency: LatencySummary | None = None
    latency_change: Estimate | None = None
    """Goal percentile minus the control's, in ms, with a bootstrap interval."""
    latency_interval: Interval | None = None
    """Always-valid interval of this arm's goal percentile, in ms."""
    synthetic: LatencySummary | None = None
    """The probe's timings (synthetic: over loopback, no network)."""
    ttfb: LatencySummary | None = None
    transfer_bytes: LatencySummary | None = None
    timed_views: int = 0


@dataclass(frozen=True)
class Verdict:
    """The decision: outcome, winner (for "winner") and a reason in plain words."""

    outcome: Outcome
    winner: str | None
    reason: str


@dataclass(frozen=True)
class Recorded:
    """What earlier analyses of the same experiment left behind (on its status), which
    this one continues from."""

    p_values: Mapping[str, float] = field(default_factory=dict)
    """Each variant's always-valid p-value against the control so far (the running
    minimum, before adjustment), by variant name."""
    decision: Verdict | None = None
    """The decision on record; kept if it concluded (see the module docstring)."""


@dataclass(frozen=True)
class Analysis:
    """The result of ``analyze``."""

    metric: Metric
    alpha: float
    elapsed_days: float
    variants: tuple[VariantAnalysis, ...]
    sample_ratio: SampleRatioCheck
    always_valid_p_value: float | None
    """The smallest adjusted always-valid p-value over the variants (running minima)."""
    visitors_needed: int | None
    """About how many more visitors per variant a decision needs (0 once decided)."""
    days_needed: float | None
    decision: Verdict

    @property
    def control(self) -> VariantAnalysis:
        return self.variants[0]


def _validate(variants: Sequence[VariantCounts], alpha: float) -> None:
    if len(variants) < 2:
        raise ValueError("an experiment needs at least two variants, control first")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    for v in variants:
        if v.visitors < 0 or v.conversions < 0 or v.conversions > v.visitors:
            raise ValueError(f"impossible counts for {v.name}: {v.conversions}/{v.visitors}")
        if v.weight < 0:
            raise ValueError(f"negative weight for {v.name}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")


class _Timings(NamedTuple):
    synthetic: LatencySummary | None
    ttfb: LatencySummary | None
    transfer_bytes: LatencySummary | None
    timed_views: int


def _describe(
    variant: VariantCounts,
    control: VariantCounts,
    is_control: bool,
    comparison: SequentialComparison | None,
    p_value: float | None,
    adjusted_p: float | None,
    level: float | None,
    policy: Policy,
) -> VariantAnalysis:
    observed = rate(variant.conversions, variant.visitors)
    interval = (
        wilson_interval(variant.conversions, variant.visitors, policy.confidence)
        if variant.visitors
        else None
    )
    latency = _summary(variant.latencies_ms, policy)
    timings = _Timings(
        _summary(variant.synthetic_ms, policy),
        _summary(variant.ttfb_ms, policy),
        _summary(variant.transfer_bytes, policy),
        variant.timed_views,
    )
    if is_control or control.visitors == 0 or variant.visitors == 0:
        return VariantAnalysis(
            variant.name,
            is_control,
            variant.visitors,
            variant.conversions,
            observed,
            interval,
            latency=latency,
            **timings._asdict(),
        )
    fixed = relative_uplift_delta(
        control.conversions,
        control.visitors,
        variant.conversions,
        variant.visitors,
        policy.confidence,
    )
    args = (control.conversions, control.visitors, variant.conversions, variant.visitors)
    return VariantAnalysis(
        name=variant.name,
        is_control=False,
        visitors=variant.visitors,
        conversions=variant.conversions,
        rate=observed,
        rate_interval=interval,
        uplift=fixed.value if fixed else (comparison.uplift if comparison else None),
        uplift_interval=(
            comparison.uplift_interval(level) if comparison and level is not None else None
        ),
        uplift_interval_fixed=fixed.interval if fixed else None,
        chance_to_beat_control=chance_to_beat(*args, prior=policy.prior),
        expected_loss=expected_loss(*args, prior=policy.prior),
        p_value=p_value,
        adjusted_p_value=adjusted_p,
        latency=latency,
        **timings._asdict(),
    )


def _summary(samples: Sequence[float], policy: Policy) -> LatencySummary | None:
    return summarize_latency(samples, policy.confidence) if len(samples) else None


def analyze(
    variants: Sequence[VariantCounts],
    rules: Rules,
    started_at: datetime,
    now: datetime,
    *,
    metric: Metric = "conversion_rate",
    policy: Policy | None = None,
    recorded: Recorded | None = None,
) -> Analysis:
    """Analyse the experiment's cumulative counts and decide (see the module docstring).

    ``variants`` lists the control first. ``started_at`` and ``now`` must both be aware
    (or both naive); the elapsed time drives ``max_duration_days`` and the "days
    needed" estimate. ``recorded`` is what the previous analysis left on the status
    (``status.recorded``): the running minima of the p-values and the decision.
    """
    policy = policy or Policy()
    recorded = recorded or Recorded()
    alpha = rules.alpha
    _validate(variants, alpha)
    elapsed_days = max(0.0, (now - started_at).total_seconds() / _SECONDS_PER_DAY)
    control = variants[0]
    srm = sample_ratio_check(
        [v.visitors for v in variants], [v.weight for v in variants], policy.srm_threshold
    )

    # Always-valid comparisons of conversion rates, adjusted across variants.
    compared: list[int] = []
    comparisons: dict[int, SequentialComparison] = {}
    for index, variant in enumerate(variants[1:], start=1):
        if variant.visitors and control.visitors:
            comparisons[index] = compare_conversions(
                control.conversions,
                control.visitors,
                variant.conversions,
                variant.visitors,
                policy.mixture_sd,
            )
            compared.append(index)
    running = {
        i: min(comparisons[i].p_value, recorded.p_values.get(variants[i].name, 1.0))
        for i in compared
    }
    adjusted = adjust([running[i] for i in compared], alpha, policy.correction)
    adjusted_p = dict(zip(compared, adjusted.p_values, strict=True))
    levels = dict(zip(compared, adjusted.levels, strict=True))

    described = [
        _describe(
            v,
            control,
            i == 0,
            comparisons.get(i),
            running.get(i),
            adjusted_p.get(i),
            levels.get(i),
            policy,
        )
        for i, v in enumerate(variants)
    ]
    if metric != "conversion_rate":
        described = _with_latency(described, variants, metric, alpha, policy)

    context = _Context(
        variants=variants,
        described=described,
        rules=rules,
        policy=policy,
        alpha=alpha,
        elapsed_days=elapsed_days,
        srm=srm,
    )
    kept = _kept(recorded.decision, context, metric)
    needed: int | None
    if kept is not None:
        verdict, needed = kept, 0
    elif metric == "conversion_rate":
        verdict, needed = _decide_conversions(context, comparisons, adjusted_p)
    else:
        verdict, needed = _decide_latency(context, metric)
    decided = verdict.outcome != "pending"
    return Analysis(
        metric=metric,
        alpha=alpha,
        elapsed_days=elapsed_days,
        variants=tuple(described),
        sample_ratio=srm,
        always_valid_p_value=(
            min(adjusted.p_values) if adjusted.p_values and metric == "conversion_rate" else None
        ),
        visitors_needed=0 if decided else needed,
        days_needed=0.0 if decided else _days_needed(needed, context),
        decision=verdict,
    )


@dataclass(frozen=True)
class _Context:
    variants: Sequence[VariantCounts]
    described: list[VariantAnalysis]
    rules: Rules
    policy: Policy
    alpha: float
    elapsed_days: float
    srm: SampleRatioCheck

    @property
    def served(self) -> list[int]:
        return [i for i, v in enumerate(self.variants) if v.weight > 0]

    @property
    def timed_out(self) -> bool:
        return self.elapsed_days >= self.rules.max_duration_days


def _with_latency(
    described: list[VariantAnalysis],
    variants: Sequence[VariantCounts],
    metric: Metric,
    alpha: float,
    policy: Policy,
) -> list[VariantAnalysis]:
    q = _QUANTILE_OF[metric]
    control = variants[0]
    arms = sum(1 for v in variants if len(v.latencies_ms))
    result: list[VariantAnalysis] = []
    for index, (analysis, variant) in enumerate(zip(described, variants, strict=True)):
        if not len(variant.latencies_ms):
            result.append(analysis)
            continue
        cs = quantile_confidence_sequence(
            variant.latencies_ms, q, alpha / max(arms, 1), policy.latency_tuned_for
        )
        change = (
            bootstrap_quantile_difference(
                control.latencies_ms, variant.latencies_ms, q, policy.confidence
            )
            if index > 0 and len(control.latencies_ms)
            else None
        )
        result.append(replace(analysis, latency_interval=cs, latency_change=change))
    return result


def _kept(decision: Verdict | None, context: _Context, metric: Metric) -> Verdict | None:
    """The recorded decision, if it concluded, still names one of the variants, and the
    minimum data the rules ask for is still there (counts only grow, so only a change of
    the rules, such as a raised minimum sample, can reopen a decision)."""
    if decision is None or decision.outcome == "pending":
        return None
    if decision.winner is not None and decision.winner not in {v.name for v in context.variants}:
        return None
    if _gate_gap(context) > 0:
        return None
    if metric == "conversion_rate":
        conversions = sum(context.variants[i].conversions for i in context.served)
        if conversions < context.policy.min_conversions:
            return None
    elif min((len(context.variants[i].latencies_ms) for i in context.served), default=0) < (
        context.policy.min_latency_samples
    ):
        return None
    return decision


def _gate_gap(context: _Context) -> int:
    """Visitors per variant still missing before the minimum sample is reached."""
    fewest = min((context.variants[i].visitors for i in context.served), default=0)
    return max(0, context.rules.min_visitors_per_variant - fewest)


def _gate_text(context: _Context, metric: Metric) -> str:
    rules, policy = context.rules, context.policy
    needs = f"each variant needs {fmt.count(rules.min_visitors_per_variant)} visitors and "
    if metric == "conversion_rate":
        return needs + f"the experiment {policy.min_conversions} conversions before a decision"
    return needs + f"{policy.min_latency_samples} real-user page views timed before a decision"


def _days_needed(needed: int | None, context: _Context) -> float | None:
    """How long ``needed`` more visitors per variant take at the traffic seen so far."""
    served = [context.variants[i].visitors for i in context.served]
    if needed is None or context.elapsed_days <= 0 or not served:
        return None
    per_day = sum(served) / len(served) / context.elapsed_days
    return needed / per_day if per_day > 0 else None


def _more_visitors(needed: int | None, context: _Context) -> str:
    """Say "about 1,200 more visitors per variant (about 5 days at the current traffic)"."""
    if needed is None or needed <= 0:
        return ""
    text = f"about {fmt.count(needed)} more visitors per variant"
    days = _days_needed(needed, context)
    if days is not None:
        text += f" ({fmt.days(days)} at the current traffic"
        if context.elapsed_days + days > context.rules.max_duration_days:
            text += f", past the {context.rules.max_duration_days}-day limit"
        text += ")"
    return text


def _not_enough(context: _Context, metric: Metric, needed: int | None) -> Verdict:
    more = _more_visitors(needed, context)
    if more and _gate_gap(context) > 0:
        return Verdict("pending", None, f"Not enough data yet: {more}.")
    return Verdict("pending", None, f"Not enough data yet: {_gate_text(context, metric)}.")


def _timed_out_early(context: _Context, metric: Metric) -> Verdict:
    return Verdict(
        "no_difference",
        None,
        f"Time limit of {context.rules.max_duration_days} days reached with too little data "
        f"to tell the variants apart ({_gate_text(context, metric)}). Keep control.",
    )


def _rate(variant: VariantAnalysis) -> str:
    return fmt.rate(variant.rate) if variant.rate is not None else "no data"


def _interval_text(interval: Interval) -> str:
    return (
        f"{fmt.level(interval.confidence)} interval {fmt.change(interval.low)} to "
        f"{fmt.change(interval.high)}"
    )


def _detail(variant: VariantAnalysis, control: VariantAnalysis) -> str:
    """The variant against the control: "b 5.6% vs 5.0%, +12% (95% interval -8% to +35%)"."""
    text = f"{variant.name} {_rate(variant)} vs {_rate(control)}"
    if variant.uplift is None:
        return text
    text += f", {fmt.change(variant.uplift)}"
    if variant.uplift_interval is not None:
        text += f" ({_interval_text(variant.uplift_interval)})"
    return text


def _decide_conversions(
    context: _Context,
    comparisons: dict[int, SequentialComparison],
    adjusted_p: dict[int, float],
) -> tuple[Verdict, int | None]:
    described, policy, rules = context.described, context.policy, context.rules
    control = described[0]
    if len(context.served) < 2 or 0 not in context.served:
        return Verdict("pending", None, _NOT_SERVED), None
    if context.srm.mismatch:
        return Verdict("pending", None, context.srm.explanation), None

    needed = _visitors_needed(context, comparisons)
    conversions = sum(context.variants[i].conversions for i in context.served)
    if _gate_gap(context) > 0 or conversions < policy.min_conversions:
        if context.timed_out:
            return _timed_out_early(context, "conversion_rate"), needed
        return _not_enough(context, "conversion_rate", needed), needed

    margin = math.log1p(policy.meaningful_lift)
    better: list[int] = []
    worse: list[int] = []
    equivalent: list[int] = []
    unclear: list[int] = []
    for index, comparison in comparisons.items():
        if adjusted_p[index] <= context.alpha:
            (better if comparison.log_ratio > 0 else worse).append(index)
            continue
        cs = described[index].uplift_interval
        if (
            cs is not None
            and cs.low > -1.0
            and -margin < math.log1p(cs.low) <= math.log1p(cs.high) < margin
        ):
            equivalent.append(index)
        else:
            unclear.append(index)

    if better:
        best = max(better, key=lambda i: described[i].rate or 0.0)
        return Verdict("winner", described[best].name, _winner_text(described, best, better)), 0
    details = "; ".join(_detail(described[i], control) for i in sorted(comparisons))
    if worse and not unclear and not equivalent:
        reason = (
            f"Control {control.name} converts better than every variant: {details}. Keep control."
        )
        return Verdict("winner", control.name, reason), 0
    if not unclear:
        if worse:
            reason = f"No variant beats control {control.name}: {details}. Keep control."
        else:
            lift = fmt.change(policy.meaningful_lift).lstrip("+")
            reason = (
                f"No meaningful difference from control {control.name}: {details}; every "
                f"variant is within ±{lift}."
            )
        return Verdict("no_difference", None, reason), 0
    if context.timed_out:
        reason = (
            f"No clear winner after {rules.max_duration_days} days: {details}. Any difference "
            "is too small to detect with this traffic; keep control or pick the cheaper option."
        )
        return Verdict("no_difference", None, reason), needed
    reason = f"No clear winner yet: {details}."
    more = _more_visitors(needed, context)
    if more:
        reason += f" About {more.removeprefix('about ')} would settle it if the difference holds."
    return Verdict("pending", None, reason), needed


_NOT_SERVED = "The control and at least one variant must be served (weight above 0)."


def _winner_text(described: list[VariantAnalysis], best: int, better: list[int]) -> str:
    control, winner = described[0], described[best]
    reason = (
        f"Variant {winner.name} converts better: {_rate(winner)} vs {_rate(control)} for "
        f"control {control.name}"
    )
    if winner.uplift is not None:
        reason += f", {fmt.change(winner.uplift)}"
        if winner.uplift_interval is not None:
            reason += f" ({_interval_text(winner.uplift_interval)})"
    if winner.chance_to_beat_control is not None:
        reason += f"; {fmt.chance(winner.chance_to_beat_control)} chance it beats control"
    others = [described[i].name for i in better if i != best]
    if others:
        reason += f". {', '.join(others)} also beat{'s' if len(others) == 1 else ''} control"
    return reason + "."


def _visitors_needed(context: _Context, comparisons: dict[int, SequentialComparison]) -> int | None:
    """About how many more visitors per variant until a comparison is settled.

    The variance of the log risk ratio falls like 1/n, so if the observed rates held,
    the always-valid interval at the Bonferroni level alpha/m would exclude "no change"
    (or fit inside the meaningful margin) after a known multiple of the current data
    (``SequentialComparison.data_factor_to_resolve``). The soonest comparison counts,
    and never less than what the minimum sample still needs.
    """
    gap = _gate_gap(context)
    conversions = sum(v.conversions for v in context.variants)
    if conversions < context.policy.min_conversions:
        # Too few conversions for the observed effect to mean anything yet.
        return gap or None
    level = context.alpha / max(1, len(comparisons))
    soonest: float | None = None
    for index, comparison in comparisons.items():
        factor = comparison.data_factor_to_resolve(level, context.policy.meaningful_lift)
        if factor is None:
            continue
        pair = (context.variants[0].visitors + context.variants[index].visitors) / 2.0
        more = pair * (factor - 1.0)
        soonest = more if soonest is None else min(soonest, more)
    if soonest is None:
        return gap or None
    return max(gap, math.ceil(soonest))


def _decide_latency(context: _Context, metric: Metric) -> tuple[Verdict, int | None]:
    described, policy, rules = context.described, context.policy, context.rules
    q = _QUANTILE_OF[metric]
    label = ("p50" if q == 0.5 else "p95") + " real-user LCP"
    control = described[0]
    if len(context.served) < 2 or 0 not in context.served:
        return Verdict("pending", None, _NOT_SERVED), None
    if context.srm.mismatch:
        return Verdict("pending", None, context.srm.explanation), None
    gap = _gate_gap(context)
    timed = [len(context.variants[i].latencies_ms) for i in context.served]
    if gap > 0 or min(timed) < policy.min_latency_samples:
        if context.timed_out:
            return _timed_out_early(context, metric), None
        return _not_enough(context, metric, gap or None), gap or None

    def value(v: VariantAnalysis) -> float:
        if v.latency is None:
            return math.nan
        return (v.latency.p50 if q == 0.5 else v.latency.p95).value

    def interval(v: VariantAnalysis) -> Interval:
        return v.latency_interval or Interval(-math.inf, math.inf, 1.0 - context.alpha)

    def detail(v: VariantAnalysis) -> str:
        text = (
            f"{v.name} {label} {fmt.milliseconds(value(v))} vs {fmt.milliseconds(value(control))}"
        )
        if v.latency_change is not None:
            c = v.latency_change
            text += (
                f" ({c.value:+.0f} ms, {fmt.level(c.interval.confidence)} interval "
                f"{c.interval.low:+.0f} to {c.interval.high:+.0f} ms)"
            )
        return text

    others = [i for i in context.served if i != 0]
    faster = [i for i in others if interval(described[i]).high < interval(control).low]
    slower = [i for i in others if interval(described[i]).low > interval(control).high]
    if faster:
        winner = described[min(faster, key=lambda i: value(described[i]))]
        change = value(winner) / value(control) - 1.0 if value(control) > 0 else 0.0
        reason = (
            f"Variant {winner.name} is faster: {detail(winner)} for control {control.name}, "
            f"{fmt.change(change)}."
        )
        return Verdict("winner", winner.name, reason), 0
    details = "; ".join(detail(described[i]) for i in others)
    if slower and len(slower) == len(others):
        reason = f"Control {control.name} is faster than every variant: {details}. Keep control."
        return Verdict("winner", control.name, reason), 0
    if context.timed_out:
        reason = (
            f"No clear winner after {rules.max_duration_days} days: {details}. Keep control "
            "or pick the cheaper option."
        )
        return Verdict("no_difference", None, reason), None
    return Verdict("pending", None, f"No clear winner yet: {details}."), None


__all__ = [
    "Analysis",
    "Metric",
    "Outcome",
    "Policy",
    "Recorded",
    "Rules",
    "StoppingRules",
    "VariantAnalysis",
    "VariantCounts",
    "Verdict",
    "analyze",
]
