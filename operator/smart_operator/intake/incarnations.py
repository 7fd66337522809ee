"""Which agent incarnation a report comes from, and what each one has reported: pure
functions over the intake's part of an Experiment's status, no I/O.

An incarnation is one agent's counts database on one server. The agent makes a random
id when it creates that database (on every new server, and when a database is lost)
and sends it with every report (``ResultsReport.incarnation``). Sequences and counts
are per incarnation: a replaced server's agent starts again at sequence 1 and at zero
counts, and what it reports adds to what earlier incarnations reported instead of
being taken for a replay (which dropped it: "stale sequence", later 409 forever).

The status keeps, per incarnation, its last sequence and the counts it last reported
(``status.incarnations``); the totals (``status.variants``) grow by what each report
adds to its own incarnation's counts, so they never go down and nothing is counted
twice. Agents that send no id are the incarnation ``-`` (``LEGACY_INCARNATION``):
the same one for all of them, as before. On an Experiment recorded before incarnations
were kept, ``-`` holds the recorded sequence and totals; the first report with an id
takes that entry over when it continues it (a higher sequence, no lower counts: the same
agent, upgraded), and otherwise is a new incarnation.

At most ``MAX_INCARNATIONS`` are kept; beyond that the one that reported least recently
is retired: its counts stay in the totals, its id is remembered (the last
``MAX_RETIRED``), and a later report from it is refused, since what it adds could no
longer be told from what it had already added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smart_operator.intake.experiments import ResultsStatus
from smart_operator.intake.schema import ResultsReport
from smart_operator.models.experiment import (
    LEGACY_INCARNATION,
    HistoryCounts,
    IncarnationCounts,
)

MAX_INCARNATIONS = 8
"""Incarnations tracked one by one on a status (a server replaced eight times)."""
MAX_RETIRED = 32
"""Retired incarnation ids remembered, to refuse their late reports."""

NEVER = datetime.min.replace(tzinfo=UTC)

Counts = Mapping[str, tuple[int, int]]
"""Visitors and conversions by variant name."""


@dataclass(frozen=True)
class Source:
    """The incarnation a report belongs to, as the status records it."""

    id: str
    last_sequence: int = 0
    counts: Counts = field(default_factory=dict)
    first_report_at: datetime | None = None
    last_report_at: datetime | None = None
    new: bool = False
    """Not on record: it starts from zero counts."""
    adopted: bool = False
    """It takes over the ``-`` entry of counts recorded before incarnations were kept."""
    retired: bool = False
    """No longer tracked: its reports are refused."""


def _counts(items: list[HistoryCounts]) -> dict[str, tuple[int, int]]:
    return {c.variant: (c.visitors, c.conversions) for c in items}


def on_record(status: ResultsStatus) -> list[IncarnationCounts]:
    """The incarnations on record. An Experiment recorded before incarnations were kept
    has one, ``-``, with the recorded sequence and totals."""
    if status.incarnations:
        return list(status.incarnations)
    if status.last_sequence:
        return [
            IncarnationCounts(
                id=LEGACY_INCARNATION,
                last_sequence=status.last_sequence,
                last_report_at=status.last_report_at,
                counts=[
                    HistoryCounts(variant=v.name, visitors=v.visitors, conversions=v.conversions)
                    for v in status.variants
                ],
            )
        ]
    return []


def _continues(entry: IncarnationCounts, report: ResultsReport) -> bool:
    """Whether ``report`` can be the next report of ``entry``'s agent."""
    counts = _counts(entry.counts)
    return report.sequence > entry.last_sequence and all(
        v.visitors >= counts.get(v.name, (0, 0))[0]
        and v.conversions >= counts.get(v.name, (0, 0))[1]
        for v in report.variants
    )


def source_of(status: ResultsStatus, report: ResultsReport) -> Source:
    """The incarnation ``report`` belongs to (see the module docstring)."""
    name = report.incarnation or LEGACY_INCARNATION
    if name in status.retired_incarnations:
        return Source(name, retired=True)
    entries = on_record(status)
    for entry in entries:
        if entry.id == name:
            return Source(
                name,
                entry.last_sequence,
                _counts(entry.counts),
                entry.first_report_at,
                entry.last_report_at,
            )
    if (
        name != LEGACY_INCARNATION
        and len(entries) == 1
        and entries[0].id == LEGACY_INCARNATION
        and _continues(entries[0], report)
    ):
        legacy = entries[0]
        return Source(
            name,
            legacy.last_sequence,
            _counts(legacy.counts),
            legacy.first_report_at,
            legacy.last_report_at,
            adopted=True,
        )
    return Source(name, new=True)


def added(source: Source, report: ResultsReport) -> dict[str, tuple[int, int]]:
    """What ``report`` adds to the totals, by variant: its counts beyond those its own
    incarnation reported before (never negative)."""
    result = {}
    for variant in report.variants:
        visitors, conversions = source.counts.get(variant.name, (0, 0))
        result[variant.name] = (
            max(0, variant.visitors - visitors),
            max(0, variant.conversions - conversions),
        )
    return result


def growth(source: Source, report: ResultsReport) -> tuple[int, int]:
    """Visitors and conversions ``report`` adds, over all variants."""
    adds = added(source, report).values()
    return sum(v for v, _ in adds), sum(c for _, c in adds)


@dataclass(frozen=True)
class Recorded:
    """The bookkeeping after a report: every incarnation's entry, the retired ids, and
    when counts last restarted."""

    incarnations: list[IncarnationCounts]
    retired: list[str]
    restarted_at: datetime | None


def record(
    status: ResultsStatus, source: Source, report: ResultsReport, received_at: datetime
) -> Recorded:
    """The incarnations after ``report`` (of ``source``) is recorded at ``received_at``."""
    counts = dict(source.counts)
    for variant in report.variants:
        old = counts.get(variant.name, (0, 0))
        counts[variant.name] = (max(old[0], variant.visitors), max(old[1], variant.conversions))
    entry = IncarnationCounts(
        id=source.id,
        last_sequence=report.sequence,
        first_report_at=source.first_report_at or received_at,
        last_report_at=received_at,
        counts=[
            HistoryCounts(variant=name, visitors=v, conversions=c)
            for name, (v, c) in counts.items()
        ],
    )
    before = on_record(status)
    replaced = {source.id, LEGACY_INCARNATION} if source.adopted else {source.id}
    others = [e for e in before if e.id not in replaced]
    restarted_at = status.counts_restarted_at
    if source.new and any(c.visitors for e in others for c in e.counts):
        restarted_at = received_at
    retired = list(status.retired_incarnations)
    while len(others) + 1 > MAX_INCARNATIONS:
        oldest = min(others, key=lambda e: e.last_report_at or NEVER)
        others.remove(oldest)
        retired = [*retired, oldest.id][-MAX_RETIRED:]
    return Recorded([*others, entry], retired, restarted_at)
