"""Analytics answered from the resources themselves (the design note's SQL, without a
separate database): a customer's health and cost, and platform insights per
experiment type. Pure functions over parsed resources.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from smart_operator.models.customer import Cost, Health
from smart_operator.models.domain import DomainPhase, ServerShape
from smart_operator.models.experiment import Experiment, ExperimentPhase, ExperimentType
from smart_operator.stats import chance_of_lift

MEANINGFUL_LIFT = 0.10


def winning_uplift(experiment: Experiment) -> float | None:
    """The relative uplift of a concluded experiment's winner over control (0 for no
    meaningful difference); None while it is not concluded."""
    status = experiment.status
    if status is None or status.decision is None or status.decision.outcome == "pending":
        return None
    if status.decision.outcome == "no_difference":
        return 0.0
    winner = next((v for v in status.variants if v.name == status.decision.winner), None)
    return winner.uplift if winner is not None and winner.uplift is not None else None


@dataclass(frozen=True)
class DomainFacts:
    """What a Customer's health and cost need of one of its Domains."""

    ready: bool
    server: tuple[str, str] | None
    """The (type, location) of the Domain's server while it has one."""


_SHAPE = ServerShape()


def domain_facts(body: Mapping[str, Any]) -> DomainFacts:
    """A Domain's facts from its body as the API server serves it (the CRD's defaults
    applied; the model's defaults stand in where a field is missing), without
    validating the whole resource: the operator takes them from every watch event."""
    status = body.get("status") or {}
    server = status.get("server") or {}
    shape = (body.get("spec") or {}).get("server") or {}
    return DomainFacts(
        ready=status.get("phase") == DomainPhase.READY.value,
        server=(
            (shape.get("type", _SHAPE.type), shape.get("location", _SHAPE.location))
            if server.get("id")
            else None
        ),
    )


def customer_health(domains: Iterable[DomainFacts], experiments: Iterable[Experiment]) -> Health:
    """Active domains, experiments, mean improvement of concluded ones, the latest."""
    experiments = list(experiments)
    uplifts = [u for u in (winning_uplift(e) for e in experiments) if u is not None]
    latest = max(
        experiments,
        key=lambda e: (e.metadata.creation_timestamp or "", e.metadata.name),
        default=None,
    )
    return Health(
        active_domains=sum(1 for d in domains if d.ready),
        experiments=len(experiments),
        average_improvement=statistics.fmean(uplifts) if uplifts else None,
        last_experiment=latest.metadata.name if latest is not None else None,
    )


def customer_cost(
    domains: Iterable[DomainFacts],
    plan_price: float,
    server_prices: Mapping[tuple[str, str], float],
    eur_to_usd: float,
) -> Cost:
    """Monthly infrastructure (each Domain's server at its type's price in its
    location, from the provider's pricing) against the plan price."""
    infrastructure = sum(
        server_prices.get(d.server, 0.0) * eur_to_usd for d in domains if d.server is not None
    )
    profit = plan_price - infrastructure
    return Cost(
        plan_price=plan_price,
        infrastructure=round(infrastructure, 2),
        margin=round(profit / plan_price, 4) if plan_price else 0.0,
        profit=round(profit, 2),
    )


@dataclass(frozen=True)
class TypeInsight:
    """One experiment type across the platform."""

    type: str
    experiments: int
    running: int
    """Deployed and collecting data (phase Running)."""
    concluded: int
    """Decided: a winner, or no meaningful difference."""
    winners: int
    visitors: int
    average_improvement: float | None
    improvement_low: float | None
    improvement_high: float | None
    likely_above_10_percent: int
    """Concluded winners whose posterior chance of more than +10% is at least 95%."""


def platform_insights(experiments: Iterable[Experiment]) -> list[TypeInsight]:
    """Per type (every type, in the catalogue's order): mean improvement of concluded
    experiments with a 95% interval (normal approximation over experiments), how many
    very likely lift more than 10%, and the counts. The intake's platform API and the
    dashboard's platform page both show this."""
    by_type: dict[str, list[Experiment]] = {kind.value: [] for kind in ExperimentType}
    for experiment in experiments:
        by_type[experiment.spec.type.value].append(experiment)
    insights = []
    for kind, group in by_type.items():
        uplifts = [u for u in (winning_uplift(e) for e in group) if u is not None]
        mean = statistics.fmean(uplifts) if uplifts else None
        half = (
            1.96 * statistics.stdev(uplifts) / math.sqrt(len(uplifts)) if len(uplifts) > 1 else None
        )
        insights.append(
            TypeInsight(
                type=kind,
                experiments=len(group),
                running=sum(
                    1 for e in group if e.status and e.status.phase is ExperimentPhase.RUNNING
                ),
                concluded=len(uplifts),
                winners=sum(
                    1
                    for e in group
                    if e.status and e.status.decision and e.status.decision.outcome == "winner"
                ),
                visitors=sum(v.visitors for e in group if e.status for v in e.status.variants),
                average_improvement=mean,
                improvement_low=mean - half if mean is not None and half is not None else None,
                improvement_high=mean + half if mean is not None and half is not None else None,
                likely_above_10_percent=sum(1 for e in group if _likely_above(e)),
            )
        )
    return insights


def _likely_above(experiment: Experiment, certainty: float = 0.95) -> bool:
    status = experiment.status
    if status is None or status.decision is None or status.decision.outcome != "winner":
        return False
    variants = {v.name: v for v in status.variants}
    control = status.variants[0] if status.variants else None
    winner = variants.get(status.decision.winner or "")
    if control is None or winner is None or control.name == winner.name:
        return False
    return (
        chance_of_lift(
            control.conversions,
            control.visitors,
            winner.conversions,
            winner.visitors,
            MEANINGFUL_LIFT,
        )
        >= certainty
    )
