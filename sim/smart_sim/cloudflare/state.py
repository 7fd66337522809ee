"""The Cloudflare simulator's in-memory model: zones, plans, DNS records and their rules.

Pure: no I/O; time comes from the :class:`~smart_sim.ratelimit.SimClock`, and every
public method first settles what the clock has brought about (scheduled activation
checks, expiry), so readers always see the state at the current simulated time.
Violations raise :class:`CloudflareError` carrying the API's numeric code and HTTP
status; validation errors are wrapped like the API's (code 1004, the precise reason in
``error_chain``).

Contract rules and their sources (``plans/index.json`` is cloudflare-docs'
``src/content/plans/index.json``, the data behind the docs' plan tables):

- Zones made through the API are on the Free plan; paid plans come from the control API.
  Per plan (plans/index.json): record tags none on Free, else at most 20 per record with
  names of at most 32 and values of at most 100 characters; comments of at most 100
  characters on Free, 500 on paid plans; 200 records per Free zone created after
  2024-09-01, 3,500 on paid plans; batches of at most 200 changes on Free, 3,500 on paid
  plans (dns/manage-dns-records/how-to/batch-record-changes.mdx). Tags on a Free zone are
  refused with 1004 / 9300 "DNS record has 1 tags, exceeding the quota of 0."
  (kubernetes-sigs/external-dns#3706, cloudflare/terraform-provider-cloudflare#3217); a
  full zone with 81045 "Record quota exceeded." (js-org/js.org#2873).
- Zones only for registrable domains, by the Public Suffix List (the ``publicsuffixlist``
  package): a public suffix is 1099 and a subdomain 1116 (dns/zone-setups/troubleshooting/
  cannot-add-domain; "Subdomain zone setup" is Enterprise-only in plans/index.json).
- Activation (dns/zone-setups/reference/domain-status.mdx): Cloudflare checks a pending
  zone's delegation on its own schedule, first after 60 seconds and then at gradually
  increased intervals; an activation check can be asked for every 5 minutes on paid
  plans and every hour on Free ("Rerun the Activation Check" in the API reference), and
  it only queues a check (cloudflare/cloudflare-docs#32157). A Free zone still pending
  after 28 days is deleted, and a Free zone ``moved`` for 7 days too; a re-added zone
  gets a new name-server pair.
- Record conflicts: a CNAME where an A, AAAA or CNAME exists is 81053, an A or AAAA where a
  CNAME exists 81054 (cloudflare/terraform-provider-cloudflare#1247, jeessy2/ddns-go#1557).
- An unknown zone id is 400 with 7003 and 7000 (the responses quoted in
  rocket-cloudflare's and cloudflare-php-client's tests).

Not found in any public source, so the simulator's own (the operator must not depend on
them): the codes for tag and comment lengths (9102, 9101), for an oversized batch, and for
an activation check asked too early (429 with ``Retry-After``); the exact check schedule.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from publicsuffixlist import PublicSuffixList

from smart_sim.ratelimit import SimClock

__all__ = [
    "PLANS",
    "PROXIABLE_TYPES",
    "RECORD_TYPES",
    "CloudflareError",
    "CloudflareState",
    "DnsRecord",
    "Plan",
    "RecordFilter",
    "Zone",
    "zone_not_found",
]

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT")
"""The record types the simulator stores; others are refused with a clear message."""

PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_SERVERS = ("ada", "bob", "cruz", "dana", "elle", "finn", "gwen", "hank", "iris", "jay")
_CONTENT_LIMIT = 2048
_PSL = PublicSuffixList()

DAY = 86_400.0
_FIRST_CHECK = 60.0  # "The first check occurs after 60 seconds" (domain-status.mdx)
_LONGEST_CHECK_INTERVAL = 6 * 3600.0  # simulator's own: "gradually increased intervals"
_QUEUED_CHECK = 10.0  # simulator's own: a requested check runs shortly after, not at once
_PENDING_LIFETIME = 28 * DAY  # Free zones pending for 28 days are deleted
_MOVED_LIFETIME = 7 * DAY  # Free zones moved for 7 days are deleted
ACTIVATION_CHECK_TOO_SOON = 1224
"""Simulator's own code for an activation check asked too early (no public source)."""


@dataclass(frozen=True)
class Plan:
    """A zone plan with the limits the DNS API enforces (plans/index.json)."""

    legacy_id: str
    id: str
    name: str
    price: int
    frequency: str
    record_tags: int
    """Tags per record; 0 where the plan has none."""
    comment_length: int
    records: int
    """Records per zone."""
    batch_changes: int
    activation_check_every: float
    """Seconds between activation checks one may ask for."""
    page_rule_quota: int
    subdomain_zones: bool

    def to_json(self) -> dict[str, object]:
        """The zone's ``plan`` object."""
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "currency": "USD",
            "frequency": self.frequency,
            "is_subscribed": self.price > 0,
            "can_subscribe": self.price > 0,
            "legacy_id": self.legacy_id,
            "legacy_discount": False,
            "externally_managed": False,
        }


def _paid(legacy_id: str, id_: str, name: str, price: int, page_rules: int) -> Plan:
    return Plan(
        legacy_id=legacy_id,
        id=id_,
        name=name,
        price=price,
        frequency="monthly",
        record_tags=20,
        comment_length=500,
        records=3500,
        batch_changes=3500,
        activation_check_every=300.0,
        page_rule_quota=page_rules,
        subdomain_zones=legacy_id == "enterprise",
    )


PLANS: Mapping[str, Plan] = {
    # The Free plan object as the API returns it (quoted in Cortex XSOAR's Cloudflare WAF
    # integration docs and others): id 0feeee..., "Free Website", price 0, frequency "".
    "free": Plan(
        legacy_id="free",
        id="0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        name="Free Website",
        price=0,
        frequency="",
        record_tags=0,
        comment_length=100,
        records=200,
        batch_changes=200,
        activation_check_every=3600.0,
        page_rule_quota=3,
        subdomain_zones=False,
    ),
    # Paid plans: names and page-rule quotas (20, 50, 125) from plans/index.json; ids and
    # prices are the simulator's own.
    "pro": _paid("pro", "94f3b7b768b0458b56d2cac4fe5ec0f9", "Pro Website", 25, 20),
    "business": _paid("business", "7f1c6e3a9b2d4f5e8a0c1b3d5e7f9a2c", "Business Website", 250, 50),
    "enterprise": _paid(
        "enterprise", "3e9a7c1f5b2d4e6a8c0f1b3d5a7e9c2b", "Enterprise Website", 0, 125
    ),
}
"""Zone plans by ``legacy_id``."""


class CloudflareError(Exception):
    """An API error: one entry of the envelope's ``errors`` with an HTTP status."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: int = 400,
        chain: Sequence[tuple[int, str]] = (),
        also: Sequence[tuple[int, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status
        self.chain = tuple(chain)
        self.also = tuple(also)
        """Further entries of ``errors`` after this one."""
        self.retry_after = retry_after
        """Simulated seconds for a ``Retry-After`` header, when the error has one."""

    def to_json(self) -> list[dict[str, object]]:
        """The entries of the ``errors`` list."""
        entry: dict[str, object] = {"code": self.code, "message": self.message}
        if self.chain:
            entry["error_chain"] = [{"code": c, "message": m} for c, m in self.chain]
        return [entry, *({"code": c, "message": m} for c, m in self.also)]


def _invalid(code: int, message: str) -> CloudflareError:
    return CloudflareError(1004, "DNS Validation Error", chain=[(code, message)])


def zone_not_found(zone_id: str) -> CloudflareError:
    """The API's answer to an unknown zone identifier: 7003, then 7000, with 400."""
    return CloudflareError(
        7003,
        f"Could not route to /zones/{zone_id}, perhaps your object identifier is invalid?",
        status=400,
        also=[(7000, "No route for that URI")],
    )


def _record_not_found() -> CloudflareError:
    return CloudflareError(81044, "Record does not exist.", status=404)


@dataclass(frozen=True)
class DnsRecord:
    """A DNS record; immutable, an update replaces it."""

    id: str
    name: str
    type: str
    content: str
    ttl: int
    proxied: bool
    comment: str | None
    tags: tuple[str, ...]
    priority: int | None
    created_on: datetime
    modified_on: datetime
    comment_modified_on: datetime | None
    tags_modified_on: datetime | None

    def tag_values(self) -> dict[str, str]:
        """Tags as name to value (lower-cased names; a bare tag has the value '')."""
        pairs = (tag.partition(":") for tag in self.tags)
        return {name.lower(): value for name, _, value in pairs}


@dataclass
class Zone:
    """A zone and its records."""

    id: str
    name: str
    status: str
    type: str
    account_id: str
    account_name: str
    name_servers: tuple[str, str]
    delegated: bool
    created_on: datetime
    modified_on: datetime
    plan: Plan
    created_at: float
    """Simulated seconds at creation."""
    next_check: float
    """When Cloudflare's own schedule checks the delegation next (simulated seconds)."""
    check_interval: float = _FIRST_CHECK
    queued_check: float | None = None
    """When a check someone asked for runs."""
    last_requested_check: float | None = None
    moved_at: float | None = None
    activated_on: datetime | None = None
    records: dict[str, DnsRecord] = field(default_factory=dict)


RecordFilter = Callable[[DnsRecord], bool]


def _check_domain(name: str, *, what: str) -> str:
    name = name.strip().rstrip(".").lower()
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _invalid(9008, f"{what} {name!r} is not a valid DNS name.")
    return name


_ROOT_DOMAIN_HINT = (
    "Please ensure you are providing the root domain and not any subdomains "
    "(e.g., example.com, not subdomain.example.com)"
)


def _check_zone_name(name: object, plan: Plan) -> str:
    """A zone name for a registrable domain (Public Suffix List), or the API's error."""
    if not isinstance(name, str):
        raise CloudflareError(1049, "The zone name is required and must be a string.")
    domain = name.strip().rstrip(".").lower()
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) and "_" not in label for label in labels):
        raise CloudflareError(1049, f"{domain} is not a registered domain")
    registrable = _PSL.privatesuffix(domain)
    if registrable is None:
        raise CloudflareError(
            1099, f"We were unable to identify {domain} as a registered domain. {_ROOT_DOMAIN_HINT}"
        )
    if registrable != domain and not plan.subdomain_zones:
        raise CloudflareError(1116, _ROOT_DOMAIN_HINT)
    return domain


def _assigned_name_servers(zone_name: str, generation: int) -> tuple[str, str]:
    """A pair per zone name; each re-added zone gets another pair than the one before."""
    count = len(_NAME_SERVERS)
    digest = hashlib.sha256(zone_name.encode()).digest()
    first = (digest[0] + generation) % count
    second = (first + 1 + digest[1] % (count - 1)) % count
    return (
        f"{_NAME_SERVERS[first]}.ns.cloudflare.com",
        f"{_NAME_SERVERS[second]}.ns.cloudflare.com",
    )


def _full_name(zone: Zone, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _invalid(9008, "The record name is required.")
    name = name.strip().rstrip(".").lower()
    if name == "@":
        return zone.name
    if name != zone.name and not name.endswith("." + zone.name):
        name = f"{name}.{zone.name}"
    labels = name.split(".")
    _check_domain(".".join(labels[1:] if labels[0] == "*" else labels), what="Record name")
    return name


def _content(record_type: str, content: object) -> str:
    if not isinstance(content, str) or not content:
        raise _invalid(9009, f"Content for {record_type} record is required.")
    if record_type == "A":
        try:
            return str(ipaddress.IPv4Address(content))
        except ValueError:
            raise _invalid(9005, "Content for A record must be a valid IPv4 address.") from None
    if record_type == "AAAA":
        try:
            return str(ipaddress.IPv6Address(content))
        except ValueError:
            raise _invalid(9006, "Content for AAAA record must be a valid IPv6 address.") from None
    if record_type in ("CNAME", "MX", "NS"):
        return _check_domain(content, what=f"Content for {record_type} record")
    if len(content) > _CONTENT_LIMIT:
        raise _invalid(9010, f"Content for TXT record must be at most {_CONTENT_LIMIT} characters.")
    return content


def _tags(value: object, plan: Plan) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _invalid(9102, "Tags must be a list of strings of the form <name>:<value>.")
    if len(value) > plan.record_tags:
        raise _invalid(
            9300, f"DNS record has {len(value)} tags, exceeding the quota of {plan.record_tags}."
        )
    seen: set[str] = set()
    for tag in value:
        name, _, tag_value = tag.partition(":")
        if len(name) > 32 or len(tag_value) > 100:
            raise _invalid(
                9102,
                f"Tag {tag!r} is too long: names have at most 32 characters, values at most 100.",
            )
        name = name.lower()
        if not _TAG_NAME.match(name):
            raise _invalid(
                9102, f"Tag {tag!r} is invalid: names have only letters, digits, '-' and '_'."
            )
        if "\n" in tag_value or "\r" in tag_value:
            raise _invalid(9102, f"Tag {tag!r} is invalid: values cannot contain line breaks.")
        if name in seen:
            raise _invalid(9102, f"Tag name {name!r} is used twice.")
        seen.add(name)
    return tuple(value)


class CloudflareState:
    """Zones and DNS records of one simulated Cloudflare account."""

    def __init__(
        self,
        clock: SimClock,
        *,
        account_id: str,
        account_name: str,
        delegate_new_zones: bool = False,
        default_plan: str = "free",
    ) -> None:
        self.clock = clock
        self.account_id = account_id
        self.account_name = account_name
        self.delegate_new_zones = delegate_new_zones
        self.default_plan = self.plan(default_plan)
        self.zones: dict[str, Zone] = {}
        self._generations: dict[str, int] = {}

    @staticmethod
    def plan(legacy_id: object) -> Plan:
        """A plan by its ``legacy_id`` (free, pro, business, enterprise)."""
        found = PLANS.get(legacy_id) if isinstance(legacy_id, str) else None
        if found is None:
            raise CloudflareError(
                1004, f"plan must be one of {', '.join(PLANS)}, not {legacy_id!r}"
            )
        return found

    # -- time ---------------------------------------------------------------------------

    def settle(self) -> None:
        """Run the activation checks and expiries whose time has come."""
        now = self.clock.now()
        for zone in list(self.zones.values()):
            if zone.status == "pending":
                self._run_checks(zone, now)
            if zone.plan.legacy_id != "free":
                continue  # paid zones stay pending or moved until the plan is removed
            stale = zone.status == "pending" and now >= zone.created_at + _PENDING_LIFETIME
            gone = zone.moved_at is not None and now >= zone.moved_at + _MOVED_LIFETIME
            if stale or gone:
                self._expire(zone)

    def _run_checks(self, zone: Zone, now: float) -> None:
        while True:
            due = min(zone.next_check, zone.queued_check or math.inf)
            if due > now:
                return
            if zone.queued_check is not None and zone.queued_check <= zone.next_check:
                zone.queued_check = None
            else:
                zone.check_interval = min(zone.check_interval * 2, _LONGEST_CHECK_INTERVAL)
                zone.next_check += zone.check_interval
            if zone.delegated:
                self._activate(zone, due)
                return

    def _expire(self, zone: Zone) -> None:
        del self.zones[zone.id]

    # -- zones --------------------------------------------------------------------------

    def add_zone(
        self,
        name: object,
        *,
        status: str = "pending",
        delegated: bool | None = None,
        plan: Plan | None = None,
    ) -> Zone:
        """Create a zone of this account; raises 1061 when the name is taken."""
        self.settle()
        plan = plan or self.default_plan
        domain = _check_zone_name(name, plan)
        if status not in ("pending", "active"):
            raise CloudflareError(1004, f"status must be pending or active, not {status!r}")
        if any(z.name == domain for z in self.zones.values()):
            raise CloudflareError(1061, f"{domain} already exists")
        generation = self._generations.get(domain, 0)
        self._generations[domain] = generation + 1
        now = self.clock.wall()
        at = self.clock.now()
        zone = Zone(
            id=uuid.uuid4().hex,
            name=domain,
            status=status,
            type="full",
            account_id=self.account_id,
            account_name=self.account_name,
            name_servers=_assigned_name_servers(domain, generation),
            delegated=self.delegate_new_zones if delegated is None else delegated,
            created_on=now,
            modified_on=now,
            plan=plan,
            created_at=at,
            next_check=at + _FIRST_CHECK,
            activated_on=now if status == "active" else None,
        )
        if status == "active":
            zone.delegated = True
        self.zones[zone.id] = zone
        return zone

    def get_zone(self, zone_id: str) -> Zone:
        """A zone by id, or 7003/400."""
        self.settle()
        zone = self.zones.get(zone_id)
        if zone is None:
            raise zone_not_found(zone_id)
        return zone

    def zone_by_reference(self, reference: str) -> Zone:
        """A zone by id or by name (control API convenience)."""
        self.settle()
        found = self.zones.get(reference) or next(
            (z for z in self.zones.values() if z.name == reference.lower()), None
        )
        if found is None:
            raise zone_not_found(reference)
        return found

    def delete_zone(self, zone_id: str) -> Zone:
        """Remove a zone with all its records."""
        return self.zones.pop(self.get_zone(zone_id).id)

    def _activate(self, zone: Zone, at: float | None = None) -> None:
        if zone.status != "active":
            moment = self.clock.wall(at)
            zone.status = "active"
            zone.delegated = True
            zone.moved_at = None
            zone.activated_on = moment
            zone.modified_on = moment

    def activate(self, zone: Zone) -> None:
        """Make a zone active now (what Cloudflare does once it sees the delegation)."""
        self.settle()
        self._activate(zone)

    def delegate(self, zone: Zone) -> None:
        """The owner pointed the domain at the assigned name servers: the next check (on
        Cloudflare's schedule, or one asked for) activates the zone."""
        self.settle()
        zone.delegated = True

    def set_plan(self, zone: Zone, plan: Plan) -> None:
        """Change a zone's plan (the simulator's stand-in for a subscription)."""
        self.settle()
        zone.plan = plan

    def move(self, zone: Zone) -> None:
        """The domain no longer points at Cloudflare: an active zone becomes ``moved``."""
        self.settle()
        zone.delegated = False
        if zone.status == "active":
            zone.status = "moved"
            zone.moved_at = self.clock.now()
            zone.modified_on = self.clock.wall()

    def activation_check(self, zone_id: str) -> Zone:
        """Ask for an activation check: it is queued, at most as often as the plan allows."""
        zone = self.get_zone(zone_id)
        now = self.clock.now()
        last = zone.last_requested_check
        every = zone.plan.activation_check_every
        if last is not None and now < last + every:
            wait = last + every - now
            raise CloudflareError(
                ACTIVATION_CHECK_TOO_SOON,
                f"An activation check can be requested every {every / 60:.0f} minutes on the "
                f"{zone.plan.name} plan; try again in {math.ceil(wait)} seconds.",
                status=429,
                retry_after=wait,
            )
        zone.last_requested_check = now
        if zone.status == "pending":
            zone.queued_check = now + _QUEUED_CHECK
        return zone

    # -- records ------------------------------------------------------------------------

    def get_record(self, zone_id: str, record_id: str) -> DnsRecord:
        """A record by id, or 81044/404."""
        record = self.get_zone(zone_id).records.get(record_id)
        if record is None:
            raise _record_not_found()
        return record

    def find_records(self, zone_id: str, matches: RecordFilter) -> list[DnsRecord]:
        """The zone's records that pass a filter, in creation order."""
        return [r for r in self.get_zone(zone_id).records.values() if matches(r)]

    def _build(
        self,
        zone: Zone,
        fields: Mapping[str, object],
        previous: DnsRecord | None,
    ) -> DnsRecord:
        """A validated record from request fields (on top of ``previous`` for a PATCH)."""
        record_type = fields.get("type", previous.type if previous else None)
        if not isinstance(record_type, str) or record_type.upper() not in RECORD_TYPES:
            raise _invalid(
                9000,
                f"DNS record type {record_type!r} is invalid or not simulated; "
                f"supported: {', '.join(RECORD_TYPES)}.",
            )
        record_type = record_type.upper()
        name = _full_name(zone, fields.get("name", previous.name if previous else None))
        content = _content(
            record_type, fields.get("content", previous.content if previous else None)
        )
        proxied = fields.get("proxied", previous.proxied if previous else False)
        if not isinstance(proxied, bool):
            raise _invalid(9004, "proxied must be a boolean.")
        if proxied and record_type not in PROXIABLE_TYPES:
            raise _invalid(9004, f"This record type cannot be proxied ({record_type}).")
        ttl = fields.get("ttl", previous.ttl if previous else 1)
        if isinstance(ttl, float) and ttl.is_integer():
            ttl = int(ttl)
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int)
            or not (ttl == 1 or 60 <= ttl <= 86400)
        ):
            raise _invalid(9021, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
        if proxied:
            ttl = 1
        priority = fields.get("priority", previous.priority if previous else None)
        if record_type == "MX":
            if isinstance(priority, float) and priority.is_integer():
                priority = int(priority)
            if (
                isinstance(priority, bool)
                or not isinstance(priority, int)
                or not 0 <= priority <= 65535
            ):
                raise _invalid(9103, "MX records need a priority between 0 and 65535.")
        else:
            priority = None
        comment = fields.get("comment", previous.comment if previous else None)
        if comment is not None and not isinstance(comment, str):
            raise _invalid(9101, "The comment must be a string.")
        limit = zone.plan.comment_length
        if comment and len(comment) > limit:
            raise _invalid(
                9101,
                f"The comment is longer than {limit} characters, the limit of the "
                f"{zone.plan.name} plan.",
            )
        if comment and ("\n" in comment or "\r" in comment):
            raise _invalid(9101, "The comment cannot contain line breaks.")
        comment = comment or None
        tags = (
            _tags(fields["tags"], zone.plan)
            if "tags" in fields
            else (previous.tags if previous else ())
        )

        now = self.clock.wall()
        comment_modified_on = tags_modified_on = None
        if comment is not None:
            unchanged = previous is not None and comment == previous.comment
            comment_modified_on = previous.comment_modified_on if previous and unchanged else now
        if tags:
            unchanged = previous is not None and tags == previous.tags
            tags_modified_on = previous.tags_modified_on if previous and unchanged else now
        return DnsRecord(
            id=previous.id if previous else uuid.uuid4().hex,
            name=name,
            type=record_type,
            content=content,
            ttl=ttl,
            proxied=proxied,
            comment=comment,
            tags=tags,
            priority=priority,
            created_on=previous.created_on if previous else now,
            modified_on=now,
            comment_modified_on=comment_modified_on,
            tags_modified_on=tags_modified_on,
        )

    @staticmethod
    def _check_conflicts(records: Mapping[str, DnsRecord], record: DnsRecord) -> None:
        for other in records.values():
            if other.id == record.id or other.name != record.name:
                continue
            if record.type == "CNAME" and other.type in PROXIABLE_TYPES:
                raise CloudflareError(
                    81053, "An A, AAAA, or CNAME record with that host already exists."
                )
            if other.type == "CNAME" or record.type == "CNAME":
                raise CloudflareError(
                    81054,
                    "A CNAME record with that host already exists. For more details, refer to "
                    "<https://developers.cloudflare.com/dns/manage-dns-records/troubleshooting/"
                    "records-with-same-name/>.",
                )
            if (other.type, other.content, other.priority) == (
                record.type,
                record.content,
                record.priority,
            ):
                raise CloudflareError(81058, "An identical record already exists.")

    def _store(self, records: dict[str, DnsRecord], record: DnsRecord) -> DnsRecord:
        self._check_conflicts(records, record)
        records[record.id] = record
        return record

    def create_record(self, zone_id: str, fields: Mapping[str, object]) -> DnsRecord:
        """POST: a new record, within the plan's records per zone."""
        zone = self.get_zone(zone_id)
        if len(zone.records) >= zone.plan.records:
            raise CloudflareError(81045, "Record quota exceeded.")
        return self._store(zone.records, self._build(zone, fields, None))

    def replace_record(
        self, zone_id: str, record_id: str, fields: Mapping[str, object]
    ) -> DnsRecord:
        """PUT: overwrite a record; omitted optional fields are reset."""
        zone = self.get_zone(zone_id)
        previous = self.get_record(zone_id, record_id)
        blank = replace(previous, proxied=False, ttl=1, comment=None, tags=(), priority=None)
        full = {"comment": None, "tags": [], **fields}
        return self._store(zone.records, self._build(zone, full, blank))

    def patch_record(self, zone_id: str, record_id: str, fields: Mapping[str, object]) -> DnsRecord:
        """PATCH: change only the given fields of a record."""
        zone = self.get_zone(zone_id)
        previous = self.get_record(zone_id, record_id)
        return self._store(zone.records, self._build(zone, fields, previous))

    def delete_record(self, zone_id: str, record_id: str) -> DnsRecord:
        """DELETE: remove a record."""
        record = self.get_record(zone_id, record_id)
        del self.get_zone(zone_id).records[record_id]
        return record

    def batch(
        self,
        zone_id: str,
        *,
        deletes: Sequence[str],
        patches: Sequence[tuple[str, Mapping[str, object]]],
        puts: Sequence[tuple[str, Mapping[str, object]]],
        posts: Sequence[Mapping[str, object]],
    ) -> dict[str, list[DnsRecord]]:
        """Apply deletes, patches, puts, then posts, all or nothing."""
        zone = self.get_zone(zone_id)
        changes = len(deletes) + len(patches) + len(puts) + len(posts)
        if changes > zone.plan.batch_changes:
            raise CloudflareError(
                1004,
                f"A batch on the {zone.plan.name} plan has at most {zone.plan.batch_changes} "
                f"changes, not {changes}.",
            )
        original = zone.records
        zone.records = dict(original)
        done: dict[str, list[DnsRecord]] = {"deletes": [], "patches": [], "puts": [], "posts": []}
        step = ""
        try:
            for index, record_id in enumerate(deletes):
                step = f"deletes[{index}]"
                done["deletes"].append(self.delete_record(zone_id, record_id))
            for index, (record_id, fields) in enumerate(patches):
                step = f"patches[{index}]"
                done["patches"].append(self.patch_record(zone_id, record_id, fields))
            for index, (record_id, fields) in enumerate(puts):
                step = f"puts[{index}]"
                done["puts"].append(self.replace_record(zone_id, record_id, fields))
            for index, fields in enumerate(posts):
                step = f"posts[{index}]"
                done["posts"].append(self.create_record(zone_id, fields))
        except CloudflareError as exc:
            zone.records = original
            exc.message = f"{step}: {exc.message}"
            raise
        return done
