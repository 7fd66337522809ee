"""The Cloudflare simulator's in-memory model: zones, DNS records and their rules.

Pure: no I/O; time comes from the :class:`~smart_sim.ratelimit.SimClock`. A new zone is
``pending`` until it is activated: by an activation check once its owner has delegated
the domain to the assigned name servers (the simulator's control API stands in for the
registrar), or directly through the control API. Records follow Cloudflare's rules: names
are completed with the zone name, a CNAME shares its name with no other record, identical
records are refused, ``proxied`` forces the automatic TTL. Violations raise
:class:`CloudflareError` carrying the API's numeric code and HTTP status; validation
errors are wrapped like the API's (code 1004, the precise reason in ``error_chain``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from smart_sim.ratelimit import SimClock

__all__ = [
    "PROXIABLE_TYPES",
    "RECORD_TYPES",
    "CloudflareError",
    "CloudflareState",
    "DnsRecord",
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
_COMMENT_LIMIT = 500
"""The comment length limit of the paid plans (record tags need one too)."""
_CONTENT_LIMIT = 2048


class CloudflareError(Exception):
    """An API error: one entry of the envelope's ``errors`` with an HTTP status."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: int = 400,
        chain: Sequence[tuple[int, str]] = (),
    ) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status
        self.chain = tuple(chain)

    def to_json(self) -> dict[str, object]:
        """The entry of the ``errors`` list."""
        entry: dict[str, object] = {"code": self.code, "message": self.message}
        if self.chain:
            entry["error_chain"] = [{"code": c, "message": m} for c, m in self.chain]
        return entry


def _invalid(code: int, message: str) -> CloudflareError:
    return CloudflareError(1004, "DNS Validation Error", chain=[(code, message)])


def zone_not_found(zone_id: str) -> CloudflareError:
    """The API's answer to an unknown zone identifier."""
    return CloudflareError(
        7003,
        f"Could not route to /zones/{zone_id}, perhaps your object identifier is invalid?",
        status=404,
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
    activated_on: datetime | None = None
    records: dict[str, DnsRecord] = field(default_factory=dict)


RecordFilter = Callable[[DnsRecord], bool]


def _check_domain(name: str, *, what: str) -> str:
    name = name.strip().rstrip(".").lower()
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _invalid(9008, f"{what} {name!r} is not a valid DNS name.")
    return name


def _check_zone_name(name: object) -> str:
    if not isinstance(name, str):
        raise CloudflareError(1049, "The zone name is required and must be a string.")
    domain = name.strip().rstrip(".").lower()
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) and "_" not in label for label in labels):
        raise CloudflareError(1049, f"{domain} is not a registered domain")
    return domain


def _assigned_name_servers(zone_name: str) -> tuple[str, str]:
    digest = hashlib.sha256(zone_name.encode()).digest()
    first = digest[0] % len(_NAME_SERVERS)
    second = (first + 1 + digest[1] % (len(_NAME_SERVERS) - 1)) % len(_NAME_SERVERS)
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


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _invalid(9102, "Tags must be a list of strings of the form <name>:<value>.")
    seen: set[str] = set()
    for tag in value:
        name, _, tag_value = tag.partition(":")
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
    ) -> None:
        self.clock = clock
        self.account_id = account_id
        self.account_name = account_name
        self.delegate_new_zones = delegate_new_zones
        self.zones: dict[str, Zone] = {}

    # -- zones --------------------------------------------------------------------------

    def add_zone(
        self, name: object, *, status: str = "pending", delegated: bool | None = None
    ) -> Zone:
        """Create a zone of this account; raises 1061 when the name is taken."""
        domain = _check_zone_name(name)
        if status not in ("pending", "active"):
            raise CloudflareError(1004, f"status must be pending or active, not {status!r}")
        if any(z.name == domain for z in self.zones.values()):
            raise CloudflareError(1061, f"{domain} already exists")
        now = self.clock.wall()
        zone = Zone(
            id=uuid.uuid4().hex,
            name=domain,
            status=status,
            type="full",
            account_id=self.account_id,
            account_name=self.account_name,
            name_servers=_assigned_name_servers(domain),
            delegated=self.delegate_new_zones if delegated is None else delegated,
            created_on=now,
            modified_on=now,
            activated_on=now if status == "active" else None,
        )
        self.zones[zone.id] = zone
        return zone

    def get_zone(self, zone_id: str) -> Zone:
        """A zone by id, or 7003/404."""
        zone = self.zones.get(zone_id)
        if zone is None:
            raise zone_not_found(zone_id)
        return zone

    def zone_by_reference(self, reference: str) -> Zone:
        """A zone by id or by name (control API convenience)."""
        found = self.zones.get(reference) or next(
            (z for z in self.zones.values() if z.name == reference.lower()), None
        )
        if found is None:
            raise zone_not_found(reference)
        return found

    def delete_zone(self, zone_id: str) -> Zone:
        """Remove a zone with all its records."""
        return self.zones.pop(self.get_zone(zone_id).id)

    def activate(self, zone: Zone) -> None:
        """Make a zone active now (what Cloudflare does once it sees the delegation)."""
        if zone.status != "active":
            now = self.clock.wall()
            zone.status = "active"
            zone.activated_on = now
            zone.modified_on = now

    def activation_check(self, zone_id: str) -> Zone:
        """Check a zone's delegation: a delegated pending zone becomes active."""
        zone = self.get_zone(zone_id)
        if zone.delegated:
            self.activate(zone)
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
        if comment and len(comment) > _COMMENT_LIMIT:
            raise _invalid(9101, f"The comment is longer than {_COMMENT_LIMIT} characters.")
        if comment and ("\n" in comment or "\r" in comment):
            raise _invalid(9101, "The comment cannot contain line breaks.")
        comment = comment or None
        tags = _tags(fields["tags"]) if "tags" in fields else (previous.tags if previous else ())

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
            if record.type == "CNAME" or (other.type == "CNAME" and record.type in PROXIABLE_TYPES):
                raise CloudflareError(
                    81053, "An A, AAAA, or CNAME record with that host already exists."
                )
            if other.type == "CNAME":
                raise CloudflareError(81054, "A CNAME record with that host already exists.")
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
        """POST: a new record."""
        zone = self.get_zone(zone_id)
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
