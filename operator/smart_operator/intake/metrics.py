"""Prometheus metrics of the intake, served on its own ``/metrics``.

Requests by endpoint and outcome (accepted, stale, ignored, rejected), rejections by
reason,
status writes by kind and outcome with their latency, writes that were not needed
(and why), the delay from a report's arrival to its status write, lookups of
Experiments the cache did not hold, and the gauges
that show whether the caches are filled and how much waits to be written.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "smartserver_intake_requests_total",
    "Requests by endpoint (results, heartbeat, stripe_webhook) and outcome (accepted, stale, "
    "ignored, rejected)",
    ["endpoint", "outcome"],
)
REJECTED = Counter(
    "smartserver_intake_rejected_total",
    "Rejected agent requests by endpoint and reason (the error code of the response)",
    ["endpoint", "reason"],
)
WRITES = Counter(
    "smartserver_intake_writes_total",
    "Status writes to the API server by kind (experiment, domain, customer) and outcome "
    "(ok, conflict, gone, error)",
    ["kind", "outcome"],
)
WRITE_SECONDS = Histogram(
    "smartserver_intake_write_duration_seconds",
    "Time of one status write (a conditional merge patch) by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SKIPPED = Counter(
    "smartserver_intake_skipped_total",
    "Pending values that needed no write, by kind and reason (stale, unchanged, deleted, "
    "replaced, domain_changed, invalid)",
    ["kind", "reason"],
)
SILENCES = Counter(
    "smartserver_intake_silences_total",
    "Agents this process found silent (no heartbeat for SMART_INTAKE_SILENT_SECONDS), by "
    "what it did: marked (status.agent.silentSince written), or left (the status records a "
    "later heartbeat, or a mark already)",
    ["outcome"],
)
PEER_QUESTIONS = Counter(
    "smartserver_intake_peer_questions_total",
    "Questions to the other replicas (SMART_INTAKE_PEERS) about agents due to be marked "
    "silent, by outcome (answered, error, unresolved)",
    ["outcome"],
)
LIVE_AGENTS = Gauge(
    "smartserver_intake_live_agents",
    "Agents whose heartbeats this process keeps in memory (heard from within "
    "SMART_INTAKE_SILENT_SECONDS, or taken as alive from the status at start)",
)
DELAY_SECONDS = Histogram(
    "smartserver_intake_report_delay_seconds",
    "From a report's arrival to the status write that carries it",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
PENDING = Gauge(
    "smartserver_intake_pending",
    "Objects with a value waiting to be written or being written, by kind",
    ["kind"],
)
CACHED = Gauge(
    "smartserver_intake_cached_objects",
    "Objects in the watch-fed caches, by kind (domains with a key, experiments)",
    ["kind"],
)
LOOKUPS = Counter(
    "smartserver_intake_experiment_lookups_total",
    "Reports for Experiments the cache did not hold, by outcome: found or missing (one "
    "GET each), remembered (found missing moments ago: no call), throttled (the lookup "
    "budget was spent: 429, no call), error (the GET failed)",
    ["outcome"],
)
SYNCED = Gauge(
    "smartserver_intake_synced",
    "1 once both caches have been filled from a full list",
)

PLATFORM_EXPERIMENTS = Gauge(
    "smartserver_platform_experiments",
    "Experiments on the platform by type (as of the last platform view)",
    ["type"],
)
PLATFORM_CONCLUDED = Gauge(
    "smartserver_platform_concluded_experiments",
    "Concluded experiments on the platform by type (as of the last platform view)",
    ["type"],
)
