"""Availability measured from outside: the pure half of the uptime checker
(``reconcile.uptime`` runs the checks, ``clients.probe`` makes them).

- ``offset`` and ``next_due``: each Domain is checked every ``interval`` seconds at its
  own offset inside the interval (from its uid), so the checks of many Domains are
  spread evenly over time instead of arriving together.
- ``record``: one check's result folded into the Domain's ``status.availability``: the
  verdict (down once ``failures`` checks in a row failed, up at the first that passes),
  and compact history: one bucket per hour for the last 24 hours and one per day for
  the last 30 days (at most 54 small objects, whatever the interval), from which the
  24-hour and 30-day percentages are computed.
- ``verdict``: the ``Available`` condition the reconciler derives from that status.

Pure: no I/O, no SDK.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from smart_operator.models.common import ConditionStatus
from smart_operator.models.conditions import Reason
from smart_operator.models.domain import AvailabilityBucket, AvailabilityStatus

HOURS = 24
DAYS = 30
USER_AGENT = "SmartServer-UptimeMonitor/1.0 (bot; +https://smartserver.ai/uptime)"
"""The checks' user agent: a monitor's, which the agents never count as a visitor."""


@dataclass(frozen=True)
class CheckResult:
    """One outside check of a site."""

    ok: bool
    ended_at: datetime
    latency_ms: float | None
    """DNS query to the page's last byte (None when the check failed)."""
    stage: str
    """``ok``, or where it failed: ``dns``, ``tcp``, ``tls``, ``http``, ``timeout``."""
    detail: str
    """What it saw, for people (the condition's message)."""
    address: str | None = None
    resolved_by: str = ""


def offset(uid: str, interval: float) -> float:
    """The Domain's place inside each interval (seconds): uniform over the uids."""
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def next_due(uid: str, interval: float, now: float) -> float:
    """The first moment after ``now`` (Unix seconds) at the Domain's offset."""
    phase = offset(uid, interval)
    turns = math.floor((now - phase) / interval) + 1
    return turns * interval + phase


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _add(
    buckets: list[AvailabilityBucket], start: datetime, ok: bool, oldest: datetime
) -> list[AvailabilityBucket]:
    kept = [b.model_copy() for b in buckets if oldest <= b.start <= start]
    if kept and kept[-1].start == start:
        kept[-1].total += 1
        kept[-1].ok += int(ok)
    else:
        kept.append(AvailabilityBucket(start=start, ok=int(ok), total=1))
    return kept


def percent(buckets: list[AvailabilityBucket]) -> float | None:
    total = sum(b.total for b in buckets)
    if total == 0:
        return None
    return round(100.0 * sum(b.ok for b in buckets) / total, 3)


def record(
    previous: AvailabilityStatus | None, result: CheckResult, failures: int
) -> AvailabilityStatus:
    """``previous`` with ``result`` added: the new verdict, figures and buckets."""
    at = result.ended_at
    hour, day = _hour(at), _day(at)
    hourly = _add(
        previous.hourly if previous else [], hour, result.ok, hour - timedelta(hours=HOURS - 1)
    )
    daily = _add(previous.daily if previous else [], day, result.ok, day - timedelta(days=DAYS - 1))
    consecutive = 0 if result.ok else (previous.consecutive_failures if previous else 0) + 1
    was_up = previous.up if previous else True
    up = result.ok or (was_up and consecutive < failures)
    since = previous.since if previous is not None and previous.up == up else at
    return AvailabilityStatus(
        up=up,
        since=since,
        checked_at=at,
        latency_ms=round(result.latency_ms, 1) if result.ok and result.latency_ms else None,
        consecutive_failures=consecutive,
        last_result=result.detail[:400],
        address=result.address,
        resolved_by=result.resolved_by[:120],
        percent24h=percent(hourly),
        percent30d=percent(daily),
        hourly=hourly,
        daily=daily,
    )


def changed(before: AvailabilityStatus | None, after: AvailabilityStatus) -> bool:
    """Whether the verdict differs (a first check that passes changes nothing)."""
    return (before.up if before else True) != after.up


def verdict(
    availability: AvailabilityStatus, interval: float
) -> tuple[ConditionStatus, Reason, str]:
    """The ``Available`` condition for ``availability``."""
    how = f"checked from the platform every {interval:g} s; {availability.resolved_by}"
    at = f"{availability.since:%Y-%m-%dT%H:%M:%SZ}"
    if not availability.up:
        return (
            "False",
            Reason.SITE_DOWN,
            f"visitors cannot reach the site since {at} ({availability.consecutive_failures} "
            f"checks in a row failed); the latest: {availability.last_result} ({how})",
        )
    failed = ""
    if availability.consecutive_failures:
        failed = f" ({availability.consecutive_failures} check(s) in a row failed)"
    return "True", Reason.SITE_REACHABLE, f"visitors reach the site{failed}; {how}"
