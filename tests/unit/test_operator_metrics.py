"""The operator's census of Domains: what the alerts on unready Domains and silent agents
read (the chart's PrometheusRule)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from smart_operator.conditions import set_condition
from smart_operator.handlers.metrics import DomainCensus
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.domain import AgentStatus, Domain, DomainPhase, DomainStatus

SEEN = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def domain(name: str) -> Domain:
    return Domain.model_validate(
        {
            "metadata": {"name": name, "namespace": "customer-acme"},
            "spec": {"domain": f"{name}.example"},
        }
    )


def status(phase: DomainPhase, ready: bool, seen: datetime | None) -> DomainStatus:
    conditions = set_condition(
        [], ConditionType.READY, "True" if ready else "False", Reason.READY, "", 1
    )
    return DomainStatus(
        phase=phase, conditions=conditions, agent=AgentStatus(last_seen=seen) if seen else None
    )


def scrape(census: DomainCensus) -> str:
    registry = CollectorRegistry()
    registry.register(census)
    return generate_latest(registry).decode()


def test_domains_are_counted_by_phase_and_agents_by_their_last_report() -> None:
    census = DomainCensus()
    census.record("u1", domain("shop"), status(DomainPhase.READY, True, SEEN))
    census.record("u2", domain("blog"), status(DomainPhase.PROVISIONING, False, None))
    census.record("u3", domain("wiki"), status(DomainPhase.READY, True, SEEN))
    text = scrape(census)
    assert 'smartserver_domains{phase="Ready",ready="true"} 2.0' in text
    assert 'smartserver_domains{phase="Provisioning",ready="false"} 1.0' in text
    seen = "smartserver_domain_agent_last_seen_timestamp_seconds"
    shop = next(line for line in text.splitlines() if line.startswith(seen) and "shop" in line)
    assert 'namespace="customer-acme"' in shop
    assert float(shop.rsplit(" ", 1)[1]) == SEEN.timestamp()
    assert 'domain="blog"' not in text.split("smartserver_domain_agent_last_seen")[-1]

    census.forget("u1")
    census.forget("u3")
    text = scrape(census)
    assert 'phase="Ready"' not in text and 'domain="shop"' not in text
