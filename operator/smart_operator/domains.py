"""What a Domain should have in the clouds, and what its status says: the decisions of
the Domain reconciler, as pure functions of the resource and what was observed.

Names are derived from the resource (never random), every cloud object carries the
resource's uid as a label or tag, and a DNS record is ours only when it carries our
tag: these three facts make every step safe to repeat and every leftover findable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from smart_operator.conditions import Verdict, get_condition, is_true, set_condition
from smart_operator.models.common import Condition
from smart_operator.models.conditions import (
    DOMAIN_CONDITIONS,
    PERMANENT,
    ConditionType,
    Reason,
    as_reason,
)
from smart_operator.models.domain import (
    AgentStatus,
    DNSRecordStatus,
    Domain,
    DomainPhase,
    DomainStatus,
    ServerShape,
    ServerStatus,
)
from smart_operator.ports import ServerTypeView, ServerView

MANAGED_LABEL = "smartserver.ai/managed"
UID_LABEL = "smartserver.ai/uid"
INSTALLATION_LABEL = "smartserver.ai/installation"
ATTEMPT_LABEL = "smartserver.ai/attempt"
RECORD_TAG_NAME = "smartserver-uid"


def managed_labels(installation: str | None = None) -> dict[str, str]:
    """Every cloud object Smart Server made; of one installation, if given."""
    labels = {MANAGED_LABEL: "true"}
    if installation:
        labels[INSTALLATION_LABEL] = installation
    return labels


def domain_labels(uid: str) -> dict[str, str]:
    """What finds the cloud objects of one Domain (a uid is unique across clusters)."""
    return {MANAGED_LABEL: "true", UID_LABEL: uid}


def cloud_labels(uid: str, installation: str, attempt: str | None = None) -> dict[str, str]:
    """Labels of a cloud object made for one Domain: its uid, the installation that made
    it (the sweep touches only its own), and for a server the attempt that made it (its
    keys are derived from it: ``keys.derive_server_keys``)."""
    labels = {**domain_labels(uid), INSTALLATION_LABEL: installation}
    if attempt:
        labels[ATTEMPT_LABEL] = attempt
    return labels


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


# -- the server's shape -----------------------------------------------------------------


def shape_problem(shape: ServerShape, types: dict[str, ServerTypeView]) -> str | None:
    """Why the provider cannot make this server, naming the choices; None if it can."""
    if shape.type not in types:
        return (
            f"spec.server.type {shape.type!r} is not a Hetzner server type; "
            f"use one of: {', '.join(sorted(types))}"
        )
    locations = types[shape.type].monthly_price
    if locations and shape.location not in locations:
        return (
            f"spec.server.type {shape.type} is not offered in {shape.location}; "
            f"spec.server.location may be one of: {', '.join(sorted(locations))}"
        )
    return None


def monthly_price(shape: ServerShape, types: dict[str, ServerTypeView]) -> float | None:
    known = types.get(shape.type)
    return known.monthly_price.get(shape.location) if known else None


# -- the server -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerChoice:
    """Which of the servers labelled with a Domain's uid it keeps, and which go."""

    keep: ServerView | None
    remove: list[ServerView] = field(default_factory=list)


def choose_server(
    found: list[ServerView], known_id: int | None, attempt: str | None
) -> ServerChoice:
    """The server whose keys are known: the one the status names, else the one the
    status's create attempt made, else the oldest made by any attempt (its keys derive
    from its attempt label). Any other is removed: a second server, or one whose keys
    nobody knows (no attempt label), which would refuse every deploy."""
    known = [s for s in found if s.id == known_id] or [
        s for s in found if attempt and s.labels.get(ATTEMPT_LABEL) == attempt
    ]
    keyed = known or [s for s in found if s.labels.get(ATTEMPT_LABEL)]
    if not keyed:
        return ServerChoice(None, list(found))
    keep = min(keyed, key=lambda s: s.id)
    return ServerChoice(keep, [s for s in found if s.id != keep.id])


def create_attempt(server: ServerStatus | None) -> str | None:
    """The attempt a create must reuse: one recorded whose server is not known yet (its
    create was sent, and may have succeeded). None: a new attempt (a first server, or a
    replacement for one that is gone, which gets new keys)."""
    if server is None or server.id is not None:
        return None
    return server.create_attempt


def server_verdict(server: ServerView) -> Verdict:
    if server.status != "running":
        return ("False", Reason.STARTING, f"server {server.name} is {server.status}")
    return ("True", Reason.RUNNING, f"server {server.name} ({server.ipv4}) is running")


# -- DNS --------------------------------------------------------------------------------


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


def records_recorded(desired: list[DesiredRecord], recorded: list[DNSRecordStatus]) -> bool:
    """Whether the status records exactly the records wanted (so only drift made by
    others, which the periodic check finds, can be wrong)."""
    return {(r.type, r.name, r.content) for r in recorded} == {
        (w.type, w.name, w.content) for w in desired
    }


def records_verdict(plan: RecordPlan, desired: list[DesiredRecord], ipv4: str | None) -> Verdict:
    if plan.conflicts:
        return (
            "False",
            Reason.RECORD_CONFLICT,
            "; ".join(plan.conflicts)
            + ". It is left as it is: delete it in Cloudflare, or set spec.dns.www: false "
            "(for www) or spec.dns.manage: false to manage DNS yourself",
        )
    if not desired:
        return ("True", Reason.UNMANAGED, "spec.dns.manage is false")
    names = sorted({w.name for w in desired})
    return ("True", Reason.RECORDS_POINT_AT_SERVER, f"{', '.join(names)} → {ipv4}")


# -- the agent --------------------------------------------------------------------------


def agent_verdict(
    agent: AgentStatus | None, now: datetime, timeout_seconds: float, intake_url: str
) -> Verdict:
    seen = agent.last_seen if agent else None
    if seen is None:
        return (
            "False",
            Reason.WAITING_FOR_AGENT,
            f"no heartbeat yet; the agent reports to {intake_url}",
        )
    if now - seen <= timedelta(seconds=timeout_seconds):
        version = agent.version if agent and agent.version else "?"
        return ("True", Reason.HEARTBEAT, f"agent {version} last seen {seen.isoformat()}")
    return ("False", Reason.AGENT_SILENT, f"no heartbeat since {seen.isoformat()}")


# -- the whole Domain -------------------------------------------------------------------


def is_steady(status: DomainStatus, generation: int | None) -> bool:
    """Verified, with a running server, and the spec unchanged since: a pass may use
    the shared, cached views instead of asking the providers."""
    server = status.server
    return (
        is_true(status.conditions, ConditionType.VERIFIED)
        and is_true(status.conditions, ConditionType.SERVER_READY)
        and server is not None
        and server.id is not None
        and status.observed_generation == generation
    )


def next_check(status: DomainStatus, drift_seconds: float) -> float:
    """Seconds until the next pass of a Domain whose pass went through: soon while its
    agent has not reported, the drift interval once it has."""
    if not is_true(status.conditions, ConditionType.AGENT_CONNECTED):
        return min(drift_seconds, 10.0)
    return drift_seconds


def summarize(status: DomainStatus) -> DomainStatus:
    """``status`` with the phase shown by ``kubectl get`` and the aggregate Ready. A
    Domain being deleted stays ``Deleting``."""
    if status.phase is DomainPhase.DELETING:
        conditions = set_condition(
            status.conditions,
            ConditionType.READY,
            "False",
            Reason.DELETING,
            "its DNS records, server and firewall are being removed",
            status.observed_generation,
        )
        return status.model_copy(update={"conditions": conditions})
    phase, conditions = phase_and_ready(status.conditions, status.observed_generation)
    return status.model_copy(update={"phase": phase, "conditions": conditions})


def phase_and_ready(
    conditions: list[Condition], generation: int | None
) -> tuple[DomainPhase, list[Condition]]:
    by_type = {t: get_condition(conditions, t) for t in DOMAIN_CONDITIONS}
    failed = next((c for c in conditions if c.status == "False" and c.reason in PERMANENT), None)
    if is_true(conditions, ConditionType.PAUSED) and not all(_true(c) for c in by_type.values()):
        phase = DomainPhase.PENDING
    elif failed is not None:
        phase = DomainPhase.FAILED
    elif not _true(by_type[ConditionType.VERIFIED]):
        phase = DomainPhase.VERIFYING
    elif all(_true(c) for c in by_type.values()):
        phase = DomainPhase.READY
    else:
        phase = DomainPhase.PROVISIONING
    ready: Verdict
    if phase is DomainPhase.READY:
        ready = ("True", Reason.READY, "server, DNS and agent are up")
    else:
        # The condition that explains it: a permanent failure first, else the first
        # step not done yet.
        waiting = failed or next(
            (c for c in by_type.values() if c is not None and not _true(c)), None
        )
        ready = (
            ("False", as_reason(waiting.reason), waiting.message)
            if waiting is not None
            else ("False", Reason.PENDING, f"phase {phase.value}")
        )
    status, reason, message = ready
    return phase, set_condition(
        conditions, ConditionType.READY, status, reason, message, generation
    )


def _true(condition: Condition | None) -> bool:
    return condition is not None and condition.status == "True"
