"""Prometheus metrics of the operator: reconciles per kind, their duration and
their outcome. Served on ``/metrics`` by ``main``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "smartserver_reconcile_total",
    "Reconciles by kind and outcome (ok, retry, error)",
    ["kind", "outcome"],
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
