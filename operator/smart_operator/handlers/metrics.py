"""Prometheus metrics of the operator: reconciles per kind, their duration and
their outcome, and the Domains by phase with their agents' last reports. Served on
``/metrics`` by ``main``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from smart_operator.conditions import is_true
from smart_operator.models.conditions import ConditionType
from smart_operator.models.domain import Domain, DomainStatus

RECONCILES = Counter(
    "smartserver_reconcile_total",
    "Reconciles by kind and outcome (ok, retry, error)",
    ["kind", "outcome"],
)
STALE_READS = Counter(
    "smartserver_stale_reads_total",
    "Domain passes whose watched object predated the operator's own last status write "
    "(the watch stream lagging), so the object was read again from the API server",
)
RECONCILE_SECONDS = Histogram(
    "smartserver_reconcile_duration_seconds",
    "Time spent in one reconcile, by kind",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Count and time one reconcile of ``kind``."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except kopf.TemporaryError:
        outcome = "retry"
        raise
    finally:
        RECONCILES.labels(kind, outcome).inc()
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


class DomainCensus:
    """Every Domain this replica reconciles, as its last pass left it: the numbers an
    alert on Domains that stay unready, or on a silent agent, needs. Exposed as

    - ``smartserver_domains{phase,ready}``: how many Domains are in each phase;
    - ``smartserver_domain_agent_last_seen_timestamp_seconds{namespace,domain}``: when each
      Domain's agent last reported (Unix time), for Domains whose agent ever did, as the
      intake records it: renewed every ``status.agent.renewSeconds`` (an hour) while the
      agent beats, so alert on the AgentConnected condition instead of its age.
    """

    def __init__(self) -> None:
        self._domains: dict[str, tuple[str, str, str, bool, float | None]] = {}

    def record(self, uid: str, domain: Domain, status: DomainStatus) -> None:
        seen = status.agent.last_seen if status.agent else None
        self._domains[uid] = (
            domain.metadata.namespace or "",
            domain.metadata.name,
            status.phase.value if status.phase else "Pending",
            is_true(status.conditions, ConditionType.READY),
            seen.timestamp() if seen else None,
        )

    def forget(self, uid: str) -> None:
        self._domains.pop(uid, None)

    def collect(self) -> Iterator[Metric]:
        phases = GaugeMetricFamily(
            "smartserver_domains",
            "Domains by phase and readiness, as this replica's last passes left them",
            labels=["phase", "ready"],
        )
        counts: dict[tuple[str, str], int] = {}
        for _, _, phase, ready, _ in self._domains.values():
            key = (phase, "true" if ready else "false")
            counts[key] = counts.get(key, 0) + 1
        for (phase, readiness), count in sorted(counts.items()):
            phases.add_metric([phase, readiness], count)
        yield phases
        seen = GaugeMetricFamily(
            "smartserver_domain_agent_last_seen_timestamp_seconds",
            "When each Domain's agent last reported (Unix time), renewed hourly while it beats",
            labels=["namespace", "domain"],
        )
        for namespace, name, _, _, last in sorted(self._domains.values()):
            if last is not None:
                seen.add_metric([namespace, name], last)
        yield seen


DOMAIN_CENSUS = DomainCensus()
REGISTRY.register(DOMAIN_CENSUS)
