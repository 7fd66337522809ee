"""What a Domain should have in the clouds, and what its status says. Pure functions.

Names are derived from the resource (never random), every cloud object carries the
resource's uid as a label or tag, and a DNS record is ours only when it carries our
tag: these three facts make every step safe to repeat and every leftover findable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from smart_operator.conditions import get_condition, set_condition
from smart_operator.models.common import Condition, ConditionStatus
from smart_operator.models.domain import Domain, DomainPhase

MANAGED_LABEL = "smartserver.ai/managed"
UID_LABEL = "smartserver.ai/uid"
RECORD_TAG_NAME = "smartserver-uid"
CONDITION_TYPES = ("Verified", "ServerReady", "DNSReady", "AgentConnected")


def managed_labels() -> dict[str, str]:
    return {MANAGED_LABEL: "true"}


def cloud_labels(uid: str) -> dict[str, str]:
    """Labels of every cloud object made for one Domain."""
    return {MANAGED_LABEL: "true", UID_LABEL: uid}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def cloud_name(domain: Domain, suffix: str = "") -> str:
    """``ss-<namespace>-<name>[-suffix]`` as a valid hostname (at most 63 characters;
    a hash of the full name replaces what does not fit)."""
    full = _slug(f"ss-{domain.metadata.namespace}-{domain.metadata.name}{suffix}")
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[:54].rstrip('-')}-{digest}"


def record_tag(uid: str) -> str:
    return f"{RECORD_TAG_NAME}:{uid}"


def record_comment(domain: Domain) -> str:
    return (
        f"Managed by Smart Server for Domain {domain.metadata.namespace}/{domain.metadata.name}; "
        "changes are reverted"
    )


@dataclass(frozen=True)
class DesiredRecord:
    type: Literal["A", "AAAA"]
    name: str
    content: str


def desired_records(domain: Domain, ipv4: str | None, ipv6: str | None) -> list[DesiredRecord]:
    """A and AAAA for the apex and, unless switched off, for ``www``."""
    if not domain.spec.dns.manage:
        return []
    names = [domain.spec.domain]
    if domain.spec.dns.www:
        names.append(f"www.{domain.spec.domain}")
    records: list[DesiredRecord] = []
    for name in names:
        if ipv4:
            records.append(DesiredRecord("A", name, ipv4))
        if ipv6:
            records.append(DesiredRecord("AAAA", name, ipv6))
    return records


Verdict = tuple[ConditionStatus, str, str]


def phase_and_ready(
    conditions: list[Condition], generation: int | None, deleting: bool = False
) -> tuple[DomainPhase, list[Condition]]:
    """The phase shown in ``kubectl get`` and the aggregate Ready condition."""
    by_type = {t: get_condition(conditions, t) for t in CONDITION_TYPES}
    failed = next(
        (c for c in conditions if c.status == "False" and c.reason in PERMANENT_REASONS), None
    )
    paused = get_condition(conditions, "Paused")
    if deleting:
        phase = DomainPhase.DELETING
    elif _true(paused) and not all(_true(c) for c in by_type.values()):
        phase = DomainPhase.PENDING
    elif failed is not None:
        phase = DomainPhase.FAILED
    elif not _true(by_type["Verified"]):
        phase = DomainPhase.VERIFYING
    elif all(_true(c) for c in by_type.values()):
        phase = DomainPhase.READY
    else:
        phase = DomainPhase.PROVISIONING
    if phase is DomainPhase.READY:
        ready: Verdict = ("True", "Ready", "server, DNS and agent are up")
    else:
        waiting = next((c for c in (by_type[t] for t in CONDITION_TYPES) if not _true(c)), None)
        ready = (
            "False",
            waiting.reason if waiting else phase.value,
            waiting.message if waiting else f"phase {phase.value}",
        )
    return phase, set_condition(conditions, "Ready", *ready, generation)


def _true(condition: Condition | None) -> bool:
    return condition is not None and condition.status == "True"


# Reasons that only a change of the spec (or of the operator's configuration) mends.
PERMANENT_REASONS = frozenset({"InvalidSpec", "OperatorNotConfigured", "ProviderRejected"})


@dataclass(frozen=True)
class ExistingRecord:
    id: str
    type: str
    name: str
    content: str
    tags: tuple[str, ...] = ()


@dataclass
class RecordPlan:
    """The changes that make a zone's records what a Domain wants, in one batch."""

    create: list[DesiredRecord]
    update: list[tuple[str, DesiredRecord]]
    delete: list[str]
    kept: list[ExistingRecord]
    conflicts: list[str]

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan_records(
    desired: list[DesiredRecord], existing: list[ExistingRecord], tag: str
) -> RecordPlan:
    """Ours (tagged) are corrected, duplicates and leftovers removed; a record that is
    not ours at a name we want is a conflict and is never changed."""
    ours = [r for r in existing if tag in r.tags]
    plan = RecordPlan([], [], [], [], [])
    for want in desired:
        mine = [r for r in ours if (r.type, r.name) == (want.type, want.name)]
        if mine:
            record, *extra = mine
            plan.delete.extend(r.id for r in extra)
            if record.content == want.content:
                plan.kept.append(record)
            else:
                plan.update.append((record.id, want))
            continue
        foreign = [
            r
            for r in existing
            if tag not in r.tags and r.name == want.name and r.type in (want.type, "CNAME")
        ]
        if foreign:
            plan.conflicts.append(
                f"{foreign[0].type} {want.name} → {foreign[0].content} exists and was not "
                "created by Smart Server"
            )
        else:
            plan.create.append(want)
    wanted = {(w.type, w.name) for w in desired}
    plan.delete.extend(r.id for r in ours if (r.type, r.name) not in wanted)
    return plan
