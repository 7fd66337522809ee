"""What a Domain should have in the clouds, and what its status says: the decisions of
the Domain reconciler, as pure functions of the resource and what was observed.

Names are derived from the resource (never random), every cloud object carries the
resource's uid as a label or tag, and a DNS record is ours only when it carries our
tag: these three facts make every step safe to repeat and every leftover findable.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from publicsuffixlist import PublicSuffixList

from smart_operator.certificates import is_challenge_record
from smart_operator.conditions import Verdict, get_condition, is_true, set_condition
from smart_operator.errors import (
    ExternalError,
    OperatorKeyRefused,
    PermanentFailure,
    TemporaryFailure,
)
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
from smart_operator.ports import ServerTypeView, ServerView, ZoneView

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


# -- zones ------------------------------------------------------------------------------


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The Public Suffix List, as shipped by the ``publicsuffixlist`` package."""
    return PublicSuffixList()


def registrable_domain(domain: str) -> str | None:
    """The registrable domain (one label below a public suffix) that ``domain`` is in;
    None when ``domain`` is itself a public suffix. Cloudflare adds zones only for
    registrable domains (subdomain zones are an Enterprise feature)."""
    found: str | None = _public_suffixes().privatesuffix(domain)
    return found


def zone_candidates(domain: str) -> list[str]:
    """Where ``domain``'s zone may be, closest first: the domain itself, then each parent
    down to its registrable domain (nothing above that can be a zone)."""
    registrable = registrable_domain(domain)
    if registrable is None:
        return []
    labels = domain.split(".")
    depth = len(labels) - len(registrable.split("."))
    return [".".join(labels[start:]) for start in range(depth + 1)]


ACTIVATION_CHECK_SECONDS = {"free": 3600.0}
"""How often Cloudflare lets a pending zone's activation check be asked for: once an hour
on the Free plan, every 5 minutes on paid plans (API reference, "Rerun the Activation
Check": https://developers.cloudflare.com/api/resources/zones/subresources/activation_check/)."""
PAID_ACTIVATION_CHECK_SECONDS = 300.0


def activation_check_seconds(plan: str) -> float:
    return ACTIVATION_CHECK_SECONDS.get(plan, PAID_ACTIVATION_CHECK_SECONDS)


def pending_zone_message(zone: ZoneView, checked_at: datetime | None, interval: float) -> str:
    """What staff must do for a zone that is not active, and when it is checked next."""
    if zone.status == "moved":
        return (
            f"zone {zone.name} moved: its nameservers no longer point at Cloudflare. Set them "
            f"back to {', '.join(zone.name_servers)} at the registrar (Cloudflare deletes a "
            "Free zone left moved for 7 days; Smart Server then adds it again)"
        )
    servers = ", ".join(zone.name_servers) or "the zone's Cloudflare nameservers"
    message = (
        f"set the nameservers of {zone.name} to {servers} at its registrar; Cloudflare "
        "activates the zone on its own schedule once they are"
    )
    if checked_at is not None:
        due = checked_at + timedelta(seconds=interval)
        message += (
            f"; Smart Server asks it to check again at {due.strftime('%H:%M')} UTC (once "
            f"every {interval / 60:.0f} minutes is what the zone's {zone.plan} plan allows)"
        )
    return message


# -- which customer owns a zone ---------------------------------------------------------

OWNER_PREFIX = "smartserver-owner="


def owner_record_name(zone: str) -> str:
    """The TXT record that says which customer a zone belongs to."""
    return f"_smartserver-owner.{zone}"


def owner_content(installation: str, customer_uid: str) -> str:
    return f"{OWNER_PREFIX}{installation}/{customer_uid}"


def owner_comment(installation: str) -> str:
    """Not a Domain's record marker (``smartserver:``): no Domain's deletion or the
    sweep takes it; it goes with its zone."""
    return f"smartserver-owner:{installation} the customer this zone belongs to"


def parse_owner(content: str) -> tuple[str, str] | None:
    """(installation, customer uid) from an owner record's content."""
    text = content.strip().strip('"')
    if not text.startswith(OWNER_PREFIX):
        return None
    installation, _, customer = text.removeprefix(OWNER_PREFIX).partition("/")
    return (installation, customer) if installation and customer else None


def challenge_name(domain: str) -> str:
    """The TXT record staff add to let a customer use a zone that has no owner yet."""
    return f"_smartserver-challenge.{domain}"


def challenge_value(key_secret: bytes, domain_uid: str, customer_uid: str) -> str:
    """The challenge's value for one Domain of one customer (derived, so nothing needs
    storing and a retried pass asks for the same)."""
    digest = hmac.new(
        key_secret, f"challenge\0{domain_uid}\0{customer_uid}".encode(), hashlib.sha256
    ).hexdigest()
    return f"smartserver-challenge={digest[:32]}"


ZoneClaim = Literal["ours", "foreign", "unclaimed"]


def zone_claim(owner_records: list[str], installation: str, customer_uid: str) -> ZoneClaim:
    """Whether a zone is this customer's (an owner record names it), another's (one
    names someone else, in this installation or another), or nobody's yet."""
    owners = [o for o in (parse_owner(c) for c in owner_records) if o is not None]
    if not owners:
        return "unclaimed"
    return "ours" if (installation, customer_uid) in owners else "foreign"


# -- who owns a record ------------------------------------------------------------------


@dataclass(frozen=True)
class PlanLimits:
    """What a DNS record may carry on a Cloudflare plan
    (https://developers.cloudflare.com/dns/manage-dns-records/reference/record-attributes/:
    no tags on Free, comments up to 100 characters on Free and 500 on paid plans)."""

    tags: bool
    comment_length: int


def plan_limits(plan: str) -> PlanLimits:
    if plan == "free":
        return PlanLimits(tags=False, comment_length=100)
    return PlanLimits(tags=True, comment_length=500)


MARKER_PREFIX = "smartserver:"
_MARKER = re.compile(r"^smartserver:(?P<installation>[a-z0-9-]+):(?P<uid>[^\s:]+)(\s|$)")


def record_marker(installation: str, uid: str) -> str:
    """The start of the comment of every record Smart Server makes: works on every plan
    (Free zones refuse tags), and says which installation and Domain own the record."""
    return f"{MARKER_PREFIX}{installation}:{uid}"


def record_comment(domain: Domain, installation: str, plan: str) -> str:
    """The marker, then as much of a note for people as the plan's limit allows."""
    marker = record_marker(installation, domain.metadata.uid or "")
    note = (
        f" Domain {domain.metadata.namespace}/{domain.metadata.name}, "
        "managed by Smart Server: edits are reverted"
    )
    return (marker + note)[: plan_limits(plan).comment_length]


def record_tag(uid: str) -> str:
    """The tag older versions marked records with (paid plans only)."""
    return f"{RECORD_TAG_NAME}:{uid}"


@dataclass(frozen=True)
class RecordOwner:
    installation: str | None
    uid: str


def record_owner(comment: str | None, tags: tuple[str, ...] | list[str]) -> RecordOwner | None:
    """Who made a record: the marker in its comment, or an older version's tag (which
    names no installation); None for a record Smart Server did not make."""
    found = _MARKER.match(comment or "")
    if found is not None:
        return RecordOwner(found.group("installation"), found.group("uid"))
    prefix = f"{RECORD_TAG_NAME}:"
    tagged = next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), None)
    return RecordOwner(None, tagged) if tagged else None


# -- the server's shape -----------------------------------------------------------------


def shape_problem(shape: ServerShape, types: dict[str, ServerTypeView]) -> str | None:
    """Why the provider cannot make this server now, naming the choices; None if it
    can."""
    orderable = sorted(name for name, t in types.items() if t.orderable)
    known = types.get(shape.type)
    if known is None or not known.orderable:
        return (
            f"spec.server.type {shape.type!r} cannot be ordered from Hetzner (not in its "
            "catalogue, or deprecated: cx22, cpx11/21/31 and their kin have not been "
            f"orderable since the end of 2025); use one of: {', '.join(orderable)}"
        )
    if shape.location not in known.orderable:
        here = sorted(n for n, t in types.items() if shape.location in t.orderable)
        return (
            f"spec.server.type {shape.type} cannot be ordered in {shape.location} now "
            "(sold out or not offered there): set spec.server.location to one of "
            f"{', '.join(sorted(known.orderable))}, or spec.server.type to one of "
            f"{', '.join(here) or 'none (no type is orderable there now)'}"
        )
    return None


def alternatives(shape: ServerShape, types: dict[str, ServerTypeView]) -> str:
    """Other locations for the type, and other types for the location, in words."""
    known = types.get(shape.type)
    places = sorted((known.orderable if known else frozenset()) - {shape.location})
    kinds = sorted(n for n, t in types.items() if shape.location in t.orderable and n != shape.type)
    return (
        f"spec.server.location may be {', '.join(places) or '(no other location)'}, or "
        f"spec.server.type {', '.join(kinds[:6]) or '(no other type)'}"
    )


@dataclass(frozen=True)
class Failure:
    """What a provider failure means for a step's condition, and when to try again."""

    reason: Reason
    message: str
    retry_seconds: float


def provider_failure(error: ExternalError, drift_seconds: float, alternatives: str) -> Failure:
    """The condition a provider's failure becomes: what happened, and what staff can do
    (``alternatives``: other places and types for a server, in words). Nothing retries
    sooner than the failure can heal."""
    if error.code == "resource_limit_exceeded":
        return Failure(
            Reason.QUOTA_EXCEEDED,
            f"{error}: the Hetzner project's limit is reached. Raise it (Hetzner Console, "
            "the project's Limits) or remove servers; tried again every "
            f"{drift_seconds:.0f} s",
            drift_seconds,
        )
    if error.code in ("resource_unavailable", "placement_error", "action_failed"):
        reason = (
            Reason.CREATE_FAILED if error.code == "action_failed" else (Reason.CAPACITY_UNAVAILABLE)
        )
        delay = error.delay if isinstance(error, TemporaryFailure) else drift_seconds
        return Failure(
            reason,
            f"{error}; tried again in {delay:.0f} s, or {alternatives}",
            delay,
        )
    if isinstance(error, OperatorKeyRefused):
        return Failure(
            Reason.OPERATOR_KEY_REFUSED, f"{error}; tried again in {error.delay:.0f} s", error.delay
        )
    if error.code == "invalid_server_type":
        return Failure(Reason.INVALID_SPEC, f"{error}", drift_seconds)
    if isinstance(error, PermanentFailure):
        return Failure(Reason.PROVIDER_REJECTED, str(error), drift_seconds)
    if isinstance(error, TemporaryFailure):
        return Failure(
            Reason.PROVIDER_UNAVAILABLE, f"{error}; retrying in {error.delay:.0f} s", error.delay
        )
    return Failure(Reason.PROVIDER_UNAVAILABLE, f"{error}; retrying", 2.0)


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
    comment: str | None = None

    def owned_by(self, uid: str) -> bool:
        owner = record_owner(self.comment, self.tags)
        return owner is not None and owner.uid == uid


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
    desired: list[DesiredRecord], existing: list[ExistingRecord], uid: str
) -> RecordPlan:
    """Ours (marked for this Domain) are corrected, duplicates and leftovers removed; a
    record that is not ours at a name we want is a conflict and is never changed."""
    ours = [r for r in existing if r.owned_by(uid)]
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
            if not r.owned_by(uid) and r.name == want.name and r.type in (want.type, "CNAME")
        ]
        if foreign:
            plan.conflicts.append(
                f"{foreign[0].type} {want.name} → {foreign[0].content} exists and was not "
                "created by Smart Server"
            )
        else:
            plan.create.append(want)
    wanted = {(w.type, w.name) for w in desired}
    plan.delete.extend(
        r.id
        for r in ours
        # A DNS-01 challenge record belongs to the certificate step, which removes it.
        if (r.type, r.name) not in wanted and not is_challenge_record(r.type, r.name)
    )
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
    assert agent is not None
    if agent.silent(now):
        assert agent.silent_since is not None
        return (
            "False",
            Reason.AGENT_SILENT,
            f"no heartbeat since {seen.isoformat()} (the intake found the agent silent at "
            f"{agent.silent_since.isoformat()})",
        )
    if agent.connected(now, timeout_seconds):
        version = agent.version or "?"
        return ("True", Reason.HEARTBEAT, f"agent {version} last seen {seen.isoformat()}")
    return (
        "False",
        Reason.AGENT_SILENT,
        f"no heartbeat recorded since {seen.isoformat()} (is the intake running?)",
    )


# -- the whole Domain -------------------------------------------------------------------


def is_verified(status: DomainStatus, generation: int | None) -> bool:
    """The zone was found active and ours, and the spec is unchanged since: later passes
    use the recorded zone without reading it again. A zone deleted since is found by
    the next listing of its records (``ZoneGone``), which every set-up pass and every
    DNS check makes."""
    return (
        is_true(status.conditions, ConditionType.VERIFIED)
        and status.observed_generation == generation
    )


def is_steady(status: DomainStatus, generation: int | None) -> bool:
    """Verified, with a running server, and the spec unchanged since: a pass may use
    the shared, cached views instead of asking the providers."""
    server = status.server
    return (
        is_verified(status, generation)
        and is_true(status.conditions, ConditionType.SERVER_READY)
        and server is not None
        and server.id is not None
    )


def watched_behind(domain: Domain, steady_at: int | None) -> bool:
    """Whether the watched ``domain`` is older than this process's last pass over it,
    which left it steady at generation ``steady_at``: only the operator makes a steady
    Domain unsteady at the same generation, and its pass would have said so. Under load
    the watch stream lags the operator's own status writes; a pass acting on such a
    copy would ask the providers again for what it already knows."""
    generation = domain.metadata.generation
    if steady_at is None or steady_at != generation:
        return False
    return not is_steady(domain.status or DomainStatus(), generation)


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
