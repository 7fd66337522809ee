"""The Hetzner Cloud simulator's in-memory model: what exists and the rules it obeys.

Pure: no I/O; time comes from the :class:`~smart_sim.ratelimit.SimClock`. Every public
method first settles the actions whose time has come (a finished ``create_server`` turns
the server ``starting``, then ``running`` once ``start_server`` is done), so readers
always see the state at the current simulated time. Violations raise
:class:`HcloudError` with the API's error code, HTTP status and details.

Contract rules, each from the current API specification (docs.hetzner.cloud; the copy
read is api-evangelist/hetzner ``openapi/_original/hetzner-openapi.yml``, late 2026):

- Error codes carry the statuses of its "Error Codes" table and of each operation's
  "Operation specific errors" (:data:`ERROR_STATUS`).
- A server type past its location's ``unavailable_after`` cannot be ordered there
  (``invalid_server_type``, "The server type does not fit for the given server or is
  deprecated", hetznercloud/hcloud-go ``hcloud/error.go``); a type that is out of stock in
  a location is ``resource_unavailable`` ("not available for order", 412).
- Any action on a server while another of its actions runs is ``locked`` (423).
- A firewall stays applied to a server until that server's ``delete_server`` action is
  done, so deleting the firewall meanwhile is ``resource_in_use`` (422).
- Firewall rules: at most 50 per firewall, at most 100 CIDR blocks per rule, in CIDR
  notation with empty host bits (a bare address is refused), descriptions of at most 255
  characters, ports 1-65535 as ``"80"`` or ``"1024-5000"``, names of at most 128.
- An action can be made to end in ``error`` (``fail_actions``), as a fault would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import itertools
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smart_sim.hetzner.catalog import IMAGES, LOCATIONS, SERVER_TYPES, Image, Location, ServerType
from smart_sim.hetzner.hooks import ServerInfo
from smart_sim.hetzner.labels import LabelError, parse_selector, validate_labels
from smart_sim.ratelimit import SimClock

__all__ = [
    "DEFAULT_ACTION_SECONDS",
    "ERROR_MESSAGES",
    "ERROR_STATUS",
    "FIREWALL_RULE_LIMIT",
    "Action",
    "Firewall",
    "FirewallRule",
    "FirewallTarget",
    "HcloudError",
    "HetznerState",
    "Ref",
    "SSHKey",
    "Server",
    "invalid_input",
    "not_found",
    "parse_rules",
]

Ref = int | str
"""A reference to a catalog entry or resource: its id, or its name."""

ERROR_STATUS: Mapping[str, int] = {
    # The "Error Codes" table of the current specification.
    "json_error": 400,
    "unauthorized": 401,
    "token_readonly": 401,
    "forbidden": 403,
    "maintenance": 403,
    "resource_limit_exceeded": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "uniqueness_error": 409,
    "conflict": 409,
    "deprecated_api_endpoint": 410,
    "resource_unavailable": 412,
    "invalid_input": 422,
    "service_error": 422,
    "unsupported_error": 422,
    "locked": 423,
    "protected": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "unavailable": 503,
    "timeout": 504,
    # Operation-specific errors: create_server (placement_error 422,
    # primary_ip_version_mismatch 412), create_firewall (server_already_added,
    # incompatible_network_type, firewall_resource_not_found: 422), delete_firewall
    # (resource_in_use 422). The firewall actions and invalid_server_type are not in the
    # copy read; they get the 422 every documented operation-specific error has.
    "placement_error": 422,
    "primary_ip_assigned": 422,
    "primary_ip_datacenter_mismatch": 422,
    "primary_ip_version_mismatch": 412,
    "server_already_added": 422,
    "incompatible_network_type": 422,
    "firewall_resource_not_found": 422,
    "firewall_already_applied": 422,
    "firewall_managed_by_label_selector": 422,
    "private_net_only_server": 422,
    "resource_in_use": 422,
    "invalid_server_type": 422,
    "server_not_stopped": 422,
}
"""HTTP status of each error code."""

ERROR_MESSAGES: Mapping[str, tuple[str, Mapping[str, object] | None]] = {
    "resource_unavailable": ("error during placement", None),  # packer-plugin-hcloud#198
    "placement_error": ("error during placement", None),
    "resource_limit_exceeded": (
        "project limit exceeded",
        {"limits": [{"name": "project_limit"}]},  # the specification's example
    ),
    "locked": ("server is locked", None),
    "unavailable": ("service unavailable", None),
    "service_error": ("service error", None),
    "server_error": ("internal server error", None),
    "timeout": ("request timeout", None),  # the specification's 5xx example
    "unauthorized": ("unable to authenticate", None),  # the specification's 4xx example
}
"""Default message and details of errors a fault may inject; others get their code."""

FIREWALL_RULE_LIMIT = 50
"""Rules per firewall ("Rules are limited to 50 entries per Firewall", create_firewall)."""

_CIDR_LIMIT = 100  # "You can specify 100 CIDR blocks at most." (source_ips, destination_ips)
_DESCRIPTION_LIMIT = 255  # rules[].description maxLength
_FIREWALL_NAME_LIMIT = 128  # "Limited to a maximum of 128 characters."

DEFAULT_ACTION_SECONDS: Mapping[str, float] = {
    "create_server": 10.0,
    "start_server": 5.0,
    "stop_server": 3.0,
    "shutdown_server": 5.0,
    "reboot_server": 5.0,
    "reset_server": 3.0,
    "delete_server": 2.0,
    "apply_firewall": 1.0,
    "remove_firewall": 1.0,
    "set_firewall_rules": 1.0,
}
"""Simulated seconds each action stays ``running``; unknown commands take 3 seconds.
The ``start_server`` that follows a create begins when the create is done."""

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_PROTOCOLS = ("tcp", "udp", "icmp", "esp", "gre")
_USER_DATA_LIMIT = 32 * 1024


class HcloudError(Exception):
    """An API error: ``{"error": {"code", "message", "details"}}`` with an HTTP status."""

    def __init__(
        self,
        code: str,
        message: str,
        details: Mapping[str, object] | None = None,
        *,
        status: int | None = None,
    ):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(code, 422)
        self.details: Mapping[str, object] | None = details


def invalid_input(field_name: str, message: str) -> HcloudError:
    """An ``invalid_input`` error naming the field, in the API's details shape."""
    return HcloudError(
        "invalid_input",
        f"invalid input in field '{field_name}': {message}",
        {"fields": [{"name": field_name, "messages": [message]}]},
    )


def not_found(kind: str, ref: Ref) -> HcloudError:
    """A ``not_found`` error for a resource kind and the reference that missed."""
    return HcloudError("not_found", f"{kind} with ID {ref} not found")


def _uniqueness(kind: str, field_name: str) -> HcloudError:
    return HcloudError(
        "uniqueness_error",
        f"{kind} with the same {field_name} already exists",
        {"fields": [{"name": field_name}]},
    )


@dataclass
class Action:
    """An asynchronous action: ``running`` for ``duration`` simulated seconds, then done."""

    id: int
    command: str
    resources: tuple[tuple[str, int], ...]
    started: float
    duration: float
    effect: Callable[[], None] | None = None
    error: tuple[str, str] | None = None
    """(code, message) when the action ends in ``error`` instead of ``success``."""

    @property
    def finishes(self) -> float:
        """Simulated time at which the action is done."""
        return self.started + self.duration

    def status(self, now: float) -> str:
        """``running``, then ``success`` (or ``error``) at simulated time ``now``."""
        if now < self.finishes:
            return "running"
        return "error" if self.error is not None else "success"

    def progress(self, now: float) -> int:
        """Percent done at simulated time ``now``."""
        if self.duration <= 0 or now >= self.finishes:
            return 100
        return min(99, int((now - self.started) / self.duration * 100))

    def involves(self, resource_type: str, resource_id: int | None = None) -> bool:
        """Whether the action touches a resource type (and, if given, that resource)."""
        return any(t == resource_type and resource_id in (None, i) for t, i in self.resources)


@dataclass
class SSHKey:
    """An SSH public key of the project."""

    id: int
    name: str
    public_key: str
    fingerprint: str
    labels: dict[str, str]
    created: datetime


@dataclass(frozen=True)
class FirewallRule:
    """One firewall rule as the API documents it."""

    direction: str
    protocol: str
    port: str | None
    source_ips: tuple[str, ...]
    destination_ips: tuple[str, ...]
    description: str | None


@dataclass
class Firewall:
    """A firewall, applied to servers directly or through label selectors."""

    id: int
    name: str
    labels: dict[str, str]
    rules: list[FirewallRule]
    created: datetime
    server_ids: list[int] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)
    releasing: set[int] = field(default_factory=set)
    """Deleted servers the firewall stays applied to until their delete action is done."""


@dataclass
class Server:
    """A server; ``status`` moves with its actions."""

    id: int
    name: str
    server_type: ServerType
    location: Location
    image: Image
    labels: dict[str, str]
    user_data: str | None
    ssh_keys: tuple[SSHKey, ...]
    ipv4: str | None
    ipv4_id: int | None
    ipv6_network: str | None
    ipv6_id: int | None
    created: datetime
    status: str

    def info(self) -> ServerInfo:
        """The snapshot handed to host hooks."""
        return ServerInfo(
            id=self.id,
            name=self.name,
            ipv4=self.ipv4,
            ipv6_network=self.ipv6_network,
            user_data=self.user_data,
            ssh_public_keys=tuple(k.public_key for k in self.ssh_keys),
            labels=dict(self.labels),
            server_type=self.server_type.name,
            image=self.image.name,
            location=self.location.name,
        )


@dataclass(frozen=True)
class FirewallTarget:
    """A resource a firewall is applied to: a server id or a label selector."""

    server_id: int | None = None
    selector: str | None = None


def _fingerprint(public_key: str) -> str:
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise invalid_input(
            "public_key", "must be an OpenSSH public key: '<type> <base64> [comment]'"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_input("public_key", "the key data is not valid base64") from None
    length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + length] != parts[0].encode():
        raise invalid_input("public_key", "the key data does not match its type")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _labels(value: object, field_name: str = "labels") -> dict[str, str]:
    try:
        return validate_labels(value)
    except LabelError as exc:
        raise invalid_input(field_name, str(exc)) from None


def _selector(
    value: str, field_name: str = "label_selector"
) -> Callable[[Mapping[str, str]], bool]:
    try:
        return parse_selector(value)
    except LabelError as exc:
        raise invalid_input(field_name, str(exc)) from None


def _check_hostname(name: str) -> None:
    if len(name) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in name.split(".")):
        raise invalid_input("name", f"{name!r} is not a valid hostname (RFC 1123)")


def _ipv4_pool(network: str) -> Iterator[str]:
    addresses = ipaddress.IPv4Network(network)
    # Loopback for servers that are hosts on this machine; the benchmarking range for
    # booted servers on a simulated provider network (smart_sim.boot.network).
    allowed = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("198.18.0.0/16"))
    if not any(addresses.subnet_of(net) for net in allowed):
        raise ValueError(
            f"simulated servers need addresses in 127.0.0.0/8 or 198.18.0.0/16; {network} is not"
        )
    # Skip .0 and .255: valid on loopback, but they confuse tools that assume a /24.
    return (str(a) for a in addresses.hosts() if a.packed[-1] not in (0, 255))


def _cidr(address: str, key: str) -> str:
    """A CIDR block as the API accepts it: with a prefix length and empty host bits."""
    if "/" not in address:
        raise invalid_input(
            "rules",
            f"{key}: {address!r} is not in CIDR block notation (a single host is "
            f"{address}/32 or {address}/128)",
        )
    try:
        network = ipaddress.ip_network(address, strict=True)
    except ValueError as exc:
        raise invalid_input(
            "rules", f"{key}: {address!r} is not a valid CIDR block ({exc})"
        ) from None
    # IPv6 blocks come back in their canonical form (RFC 5952), as the API returns them.
    return str(network) if network.version == 6 else address


def _port(port: object) -> str:
    if not isinstance(port, str):
        raise invalid_input("rules", "tcp and udp rules need a port like '80' or '1024-5000'")
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", port)
    if match is None:
        raise invalid_input("rules", f"port {port!r} is not a port like '80' or '1024-5000'")
    low = int(match[1])
    high = int(match[2]) if match[2] else low
    if not 1 <= low <= high <= 65535:
        raise invalid_input("rules", f"port {port!r} is outside 1-65535 or its range is reversed")
    return port


def parse_rules(value: object) -> list[FirewallRule]:
    """Validate firewall rules from a request body (field ``rules``)."""
    if not isinstance(value, list):
        raise invalid_input("rules", "must be a list of rules")
    if len(value) > FIREWALL_RULE_LIMIT:
        raise invalid_input(
            "rules", f"a firewall has at most {FIREWALL_RULE_LIMIT} rules, not {len(value)}"
        )
    rules: list[FirewallRule] = []
    for raw in value:
        if not isinstance(raw, dict):
            raise invalid_input("rules", "each rule must be an object")
        direction = raw.get("direction")
        protocol = raw.get("protocol")
        if direction not in ("in", "out"):
            raise invalid_input("rules", "direction must be 'in' or 'out'")
        if protocol not in _PROTOCOLS:
            raise invalid_input("rules", f"protocol must be one of {', '.join(_PROTOCOLS)}")
        port = raw.get("port")
        if protocol in ("tcp", "udp"):
            port = _port(port)
        elif port is not None:
            raise invalid_input("rules", f"{protocol} rules take no port")
        ips: dict[str, tuple[str, ...]] = {}
        for key in ("source_ips", "destination_ips"):
            addresses = raw.get(key) or []
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                raise invalid_input("rules", f"{key} must be a list of CIDR strings")
            if len(addresses) > _CIDR_LIMIT:
                raise invalid_input(
                    "rules", f"{key} has {len(addresses)} CIDR blocks; at most {_CIDR_LIMIT}"
                )
            ips[key] = tuple(_cidr(a, key) for a in addresses)
        wanted = "source_ips" if direction == "in" else "destination_ips"
        other = "destination_ips" if direction == "in" else "source_ips"
        if not ips[wanted]:
            raise invalid_input("rules", f"'{direction}' rules need {wanted}")
        if ips[other]:
            raise invalid_input("rules", f"'{direction}' rules take no {other}")
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid_input("rules", "description must be a string")
        if description is not None and len(description) > _DESCRIPTION_LIMIT:
            raise invalid_input(
                "rules", f"description is longer than {_DESCRIPTION_LIMIT} characters"
            )
        rules.append(
            FirewallRule(
                direction, protocol, port, ips["source_ips"], ips["destination_ips"], description
            )
        )
    return rules


class HetznerState:
    """Servers, SSH keys, firewalls and actions of one simulated project."""

    def __init__(
        self,
        clock: SimClock,
        *,
        action_seconds: Mapping[str, float] | None = None,
        ipv4_network: str = "127.10.0.0/16",
        server_quota: int | None = None,
        ids_of: HetznerState | None = None,
    ) -> None:
        """``ids_of``: another project of the same simulator, whose id sequences this one
        shares (Hetzner's ids are unique across projects)."""
        self.clock = clock
        self.server_quota = server_quota
        self.action_seconds = {**DEFAULT_ACTION_SECONDS, **(action_seconds or {})}
        self.servers: dict[int, Server] = {}
        self.ssh_keys: dict[int, SSHKey] = {}
        self.firewalls: dict[int, Firewall] = {}
        self.actions: dict[int, Action] = {}
        self._pending: list[Action] = []
        self._server_ids: Iterator[int] = (
            ids_of._server_ids if ids_of else itertools.count(60_000_001)
        )
        self._key_ids: Iterator[int] = ids_of._key_ids if ids_of else itertools.count(20_000_001)
        self._firewall_ids: Iterator[int] = (
            ids_of._firewall_ids if ids_of else itertools.count(1_700_001)
        )
        self._action_ids: Iterator[int] = (
            ids_of._action_ids if ids_of else itertools.count(400_000_001)
        )
        self._ip_ids: Iterator[int] = ids_of._ip_ids if ids_of else itertools.count(80_000_001)
        self._ipv4 = _ipv4_pool(ipv4_network)
        self._ipv6 = itertools.count(1)
        self.fail_actions: tuple[str, str] | None = None
        """While set, every action started ends in ``error`` with this (code, message)."""
        self.sold_out: set[tuple[str, str]] = set()
        """(server type, location) pairs that are out of stock (``available: false``)."""

    # -- time ---------------------------------------------------------------------------

    def settle(self) -> None:
        """Apply the effects of the actions that are done by now."""
        now = self.clock.now()
        done = [a for a in self._pending if a.finishes <= now]
        for action in sorted(done, key=lambda a: (a.finishes, a.id)):
            self._pending.remove(action)
            # A failed action leaves things as they were: no server runs, no firewall
            # applies.
            if action.effect is not None and action.error is None:
                action.effect()

    def _start(
        self,
        command: str,
        resources: Sequence[tuple[str, int]],
        effect: Callable[[], None] | None = None,
        *,
        after: float = 0.0,
    ) -> Action:
        """Start an action now that finishes ``after`` plus its own duration from now."""
        action = Action(
            id=next(self._action_ids),
            command=command,
            resources=tuple(resources),
            started=self.clock.now(),
            duration=after + self.action_seconds.get(command, 3.0),
            effect=effect,
            error=self.fail_actions,
        )
        self.actions[action.id] = action
        self._pending.append(action)
        self.settle()
        return action

    # -- catalog ------------------------------------------------------------------------

    def listed_server_types(self) -> list[ServerType]:
        """The types ``GET /server_types`` returns: past its ``unavailable_after`` in every
        location a type is no longer listed (DeprecationInfo, in the specification)."""
        now = self.clock.wall()
        return [
            t for t in SERVER_TYPES if any(t.orderable_in(name, now) for name in t.location_names)
        ]

    def server_type(self, ref: Ref) -> ServerType:
        """A server type by id or name, or invalid_input listing the orderable names."""
        found = next((t for t in SERVER_TYPES if ref in (t.id, t.name)), None)
        if found is None:
            allowed = ", ".join(sorted(t.name for t in self.listed_server_types()))
            raise invalid_input("server_type", f"unknown server type {ref!r}; allowed: {allowed}")
        return found

    def available(self, server_type: ServerType, location: str) -> bool:
        """Whether a type is in stock in a location (``locations[].available``)."""
        return (server_type.name, location) not in self.sold_out

    def _orderable_location(self, stype: ServerType, location: Ref | None) -> Location:
        """The location to create a type in, or the error the API gives for it."""
        now = self.clock.wall()
        if location is None:
            candidates = [n for n in stype.location_names if stype.orderable_in(n, now)]
            if not candidates:
                raise self._deprecated_type(stype, stype.location_names[0])
            in_stock = [n for n in candidates if self.available(stype, n)]
            return self.location((in_stock or candidates)[0])
        loc = self.location(location)
        if loc.name not in stype.location_names:
            raise invalid_input(
                "server_type",
                f"server type {stype.name} is not available in {loc.name}; "
                f"available in: {', '.join(stype.location_names)}",
            )
        if not stype.orderable_in(loc.name, now):
            raise self._deprecated_type(stype, loc.name)
        return loc

    def _deprecated_type(self, stype: ServerType, location: str) -> HcloudError:
        deprecation = stype.deprecation_in(location)
        assert deprecation is not None
        now = self.clock.wall()
        successors = sorted(
            t.name
            for t in SERVER_TYPES
            if t.category == stype.category
            and t.architecture == stype.architecture
            and any(t.orderable_in(n, now) for n in t.location_names)
        )
        return HcloudError(
            "invalid_server_type",
            f"server type {stype.name} is deprecated in {location} and cannot be ordered "
            f"after {deprecation.unavailable_after.date().isoformat()}"
            + (f"; orderable types like it: {', '.join(successors)}" if successors else ""),
        )

    @staticmethod
    def location(ref: Ref) -> Location:
        """A location by id or name, or invalid_input listing the allowed names."""
        found = next((loc for loc in LOCATIONS if ref in (loc.id, loc.name)), None)
        if found is None:
            allowed = ", ".join(loc.name for loc in LOCATIONS)
            raise invalid_input("location", f"unknown location {ref!r}; allowed: {allowed}")
        return found

    @staticmethod
    def image(ref: Ref, architecture: str) -> Image:
        """An image by id, or by name for an architecture; invalid_input otherwise."""
        for image in IMAGES:
            if image.id == ref:
                if image.architecture != architecture:
                    raise invalid_input(
                        "image", f"image {ref} is for {image.architecture}, not {architecture}"
                    )
                return image
            if image.name == ref and image.architecture == architecture:
                return image
        allowed = ", ".join(sorted({i.name for i in IMAGES}))
        raise invalid_input("image", f"unknown image {ref!r}; allowed: {allowed}")

    # -- actions ------------------------------------------------------------------------

    def get_action(self, action_id: int, resource_type: str | None = None) -> Action:
        """An action by id (only among a resource type's actions when given)."""
        self.settle()
        action = self.actions.get(action_id)
        if action is None or (resource_type and not action.involves(resource_type)):
            raise not_found("action", action_id)
        return action

    def find_actions(
        self,
        *,
        ids: Sequence[int] | None = None,
        resource_type: str | None = None,
        resource_id: int | None = None,
        statuses: Sequence[str] = (),
    ) -> list[Action]:
        """Actions by id and/or resource, optionally only those in some statuses."""
        self.settle()
        now = self.clock.now()
        candidates = (
            [self.actions[i] for i in dict.fromkeys(ids) if i in self.actions]
            if ids is not None
            else list(self.actions.values())
        )
        return [
            a
            for a in candidates
            if (resource_type is None or a.involves(resource_type, resource_id))
            and (not statuses or a.status(now) in statuses)
        ]

    # -- servers ------------------------------------------------------------------------

    def get_server(self, server_id: int) -> Server:
        """A server by id, or not_found."""
        self.settle()
        server = self.servers.get(server_id)
        if server is None:
            raise not_found("server", server_id)
        return server

    def find_servers(
        self,
        *,
        name: str | None = None,
        label_selector: str | None = None,
        statuses: Sequence[str] = (),
    ) -> list[Server]:
        """Servers matching every given filter."""
        self.settle()
        matcher = _selector(label_selector) if label_selector else None
        return [
            s
            for s in self.servers.values()
            if (name is None or s.name == name)
            and (matcher is None or matcher(s.labels))
            and (not statuses or s.status in statuses)
        ]

    def create_server(
        self,
        *,
        name: str,
        server_type: Ref,
        image: Ref,
        location: Ref | None = None,
        ssh_keys: Sequence[Ref] = (),
        firewall_ids: Sequence[int] = (),
        user_data: str | None = None,
        labels: object = None,
        start_after_create: bool = True,
        enable_ipv4: bool = True,
        enable_ipv6: bool = True,
    ) -> tuple[Server, Action, list[Action], str | None]:
        """Create a server: (server, create action, next actions, root password)."""
        self.settle()
        _check_hostname(name)
        stype = self.server_type(server_type)
        loc = self._orderable_location(stype, location)
        img = self.image(image, stype.architecture)
        keys = tuple(self._ssh_key_for_server(ref) for ref in ssh_keys)
        for firewall_id in firewall_ids:
            if firewall_id not in self.firewalls:
                raise invalid_input("firewalls", f"firewall {firewall_id} not found")
        if user_data is not None and len(user_data.encode()) > _USER_DATA_LIMIT:
            raise invalid_input("user_data", f"must be at most {_USER_DATA_LIMIT} bytes")
        checked_labels = _labels({} if labels is None else labels)
        if any(s.name == name for s in self.servers.values()):
            raise _uniqueness("server", "name")
        if self.server_quota is not None and len(self.servers) >= self.server_quota:
            # The project's server limit: ``resource_limit_exceeded`` (403, the error
            # table), "server limit exceeded" as the API words it (hcloud provider output
            # in mysticaltech/terraform-hcloud-kube-hetzner#760 and
            # hetzneronline/community-content#933); the details name the limit in the
            # specification's shape ({"limits": [{"name": ...}]}).
            raise HcloudError(
                "resource_limit_exceeded",
                "server limit exceeded",
                {"limits": [{"name": "server_limit"}]},
            )
        if not self.available(stype, loc.name):
            raise HcloudError(
                "resource_unavailable",
                f"server type {stype.name} is currently not available in {loc.name}",
            )
        if not (enable_ipv4 or enable_ipv6):
            raise invalid_input("public_net", "a server needs IPv4 or IPv6 (no private networks)")
        ipv4 = next(self._ipv4, None) if enable_ipv4 else None
        if enable_ipv4 and ipv4 is None:
            raise HcloudError("resource_limit_exceeded", "no simulated IPv4 addresses are left")

        server = Server(
            id=next(self._server_ids),
            name=name,
            server_type=stype,
            location=loc,
            image=img,
            labels=checked_labels,
            user_data=user_data,
            ssh_keys=keys,
            ipv4=ipv4,
            ipv4_id=next(self._ip_ids) if enable_ipv4 else None,
            ipv6_network=self._next_ipv6() if enable_ipv6 else None,
            ipv6_id=next(self._ip_ids) if enable_ipv6 else None,
            created=self.clock.wall(),
            status="initializing",
        )
        self.servers[server.id] = server
        for firewall_id in dict.fromkeys(firewall_ids):
            self.firewalls[firewall_id].server_ids.append(server.id)

        # The server boots once it exists: initializing, then starting, then running (the
        # server statuses of the specification).
        resources = [("server", server.id)]
        created = "starting" if start_after_create else "off"
        action = self._start("create_server", resources, self._set_status(server, created))
        next_actions = (
            [
                self._start(
                    "start_server",
                    resources,
                    self._set_status(server, "running"),
                    after=action.duration,
                )
            ]
            if start_after_create
            else []
        )
        next_actions += [
            self._start("apply_firewall", [*resources, ("firewall", fid)])
            for fid in dict.fromkeys(firewall_ids)
        ]
        password = None if keys else secrets.token_urlsafe(15)
        return server, action, next_actions, password

    def _next_ipv6(self) -> str:
        prefix = (0x20010DB8 << 96) | (next(self._ipv6) << 64)
        return str(ipaddress.IPv6Network((prefix, 64)))

    def _ssh_key_for_server(self, ref: Ref) -> SSHKey:
        key = next((k for k in self.ssh_keys.values() if ref in (k.id, k.name)), None)
        if key is None:
            raise invalid_input("ssh_keys", f"SSH key {ref!r} not found")
        return key

    def _set_status(self, server: Server, status: str) -> Callable[[], None]:
        def effect() -> None:
            server.status = status

        return effect

    def update_server(self, server_id: int, *, name: str | None, labels: object) -> Server:
        """Rename a server and/or replace its labels."""
        server = self.get_server(server_id)
        if name is not None and name != server.name:
            _check_hostname(name)
            if any(s.name == name for s in self.servers.values()):
                raise _uniqueness("server", "name")
        new_labels = None if labels is None else _labels(labels)
        if name is not None:
            server.name = name
        if new_labels is not None:
            server.labels = new_labels
        return server

    def _check_unlocked(self, server_id: int) -> None:
        """``locked`` while any action on the server is still running."""
        running = next((a for a in self._pending if a.involves("server", server_id)), None)
        if running is not None:
            raise HcloudError(
                "locked",
                f"server {server_id} is locked: action {running.id} ({running.command}) "
                "is still running",
            )

    def delete_server(self, server_id: int) -> tuple[Server, Action]:
        """Delete a server: it disappears at once, but its firewalls stay applied to it
        until the delete action is done."""
        server = self.get_server(server_id)
        self._check_unlocked(server_id)
        applied = self.firewalls_of(server)
        del self.servers[server_id]
        for firewall in applied:
            firewall.releasing.add(server_id)

        def released() -> None:
            for firewall in applied:
                firewall.releasing.discard(server_id)
                if server_id in firewall.server_ids:
                    firewall.server_ids.remove(server_id)

        return server, self._start("delete_server", [("server", server_id)], released)

    def power(self, server_id: int, operation: str) -> Action:
        """A power action: poweron, poweroff, shutdown, reboot or reset."""
        server = self.get_server(server_id)
        self._check_unlocked(server_id)
        commands = {
            "poweron": ("start_server", "starting", "running"),
            "poweroff": ("stop_server", "stopping", "off"),
            "shutdown": ("shutdown_server", server.status, "off"),
            "reboot": ("reboot_server", server.status, "running"),
            "reset": ("reset_server", server.status, "running"),
        }
        command, during, after = commands[operation]
        server.status = during
        return self._start(command, [("server", server_id)], self._set_status(server, after))

    # -- SSH keys -----------------------------------------------------------------------

    def get_ssh_key(self, key_id: int) -> SSHKey:
        """An SSH key by id, or not_found."""
        key = self.ssh_keys.get(key_id)
        if key is None:
            raise not_found("ssh_key", key_id)
        return key

    def find_ssh_keys(
        self,
        *,
        name: str | None = None,
        fingerprint: str | None = None,
        label_selector: str | None = None,
    ) -> list[SSHKey]:
        """SSH keys matching every given filter."""
        matcher = _selector(label_selector) if label_selector else None
        return [
            k
            for k in self.ssh_keys.values()
            if (name is None or k.name == name)
            and (fingerprint is None or k.fingerprint == fingerprint)
            and (matcher is None or matcher(k.labels))
        ]

    def create_ssh_key(self, *, name: str, public_key: str, labels: object = None) -> SSHKey:
        """Register a public key; names and fingerprints are unique."""
        if not name:
            raise invalid_input("name", "must not be empty")
        fingerprint = _fingerprint(public_key)
        checked_labels = _labels({} if labels is None else labels)
        if any(k.name == name for k in self.ssh_keys.values()):
            raise _uniqueness("SSH key", "name")
        if any(k.fingerprint == fingerprint for k in self.ssh_keys.values()):
            raise _uniqueness("SSH key", "public_key")
        key = SSHKey(
            id=next(self._key_ids),
            name=name,
            public_key=public_key.strip(),
            fingerprint=fingerprint,
            labels=checked_labels,
            created=self.clock.wall(),
        )
        self.ssh_keys[key.id] = key
        return key

    def update_ssh_key(self, key_id: int, *, name: str | None, labels: object) -> SSHKey:
        """Rename an SSH key and/or replace its labels."""
        key = self.get_ssh_key(key_id)
        if name is not None and any(
            k.name == name and k.id != key_id for k in self.ssh_keys.values()
        ):
            raise _uniqueness("SSH key", "name")
        new_labels = None if labels is None else _labels(labels)
        if name is not None:
            key.name = name
        if new_labels is not None:
            key.labels = new_labels
        return key

    def delete_ssh_key(self, key_id: int) -> None:
        """Delete an SSH key (servers keep the keys they were created with)."""
        self.get_ssh_key(key_id)
        del self.ssh_keys[key_id]

    # -- firewalls ----------------------------------------------------------------------

    def get_firewall(self, firewall_id: int) -> Firewall:
        """A firewall by id, or not_found."""
        self.settle()
        firewall = self.firewalls.get(firewall_id)
        if firewall is None:
            raise not_found("firewall", firewall_id)
        return firewall

    def find_firewalls(
        self, *, name: str | None = None, label_selector: str | None = None
    ) -> list[Firewall]:
        """Firewalls matching every given filter."""
        self.settle()
        matcher = _selector(label_selector) if label_selector else None
        return [
            f
            for f in self.firewalls.values()
            if (name is None or f.name == name) and (matcher is None or matcher(f.labels))
        ]

    def servers_behind(self, firewall: Firewall, selector: str | None = None) -> list[Server]:
        """The servers a firewall applies to through one selector, or through all of them."""
        selectors = firewall.selectors if selector is None else [selector]
        matchers = [parse_selector(s) for s in selectors]
        direct = [] if selector is not None else firewall.server_ids
        return [
            s for s in self.servers.values() if s.id in direct or any(m(s.labels) for m in matchers)
        ]

    def firewalls_of(self, server: Server) -> list[Firewall]:
        """The firewalls applied to a server, directly or by label selector."""
        return [
            f
            for f in self.firewalls.values()
            if server.id in f.server_ids
            or any(parse_selector(s)(server.labels) for s in f.selectors)
        ]

    def create_firewall(
        self,
        *,
        name: str,
        labels: object = None,
        rules: list[FirewallRule] | None = None,
        apply_to: Sequence[FirewallTarget] = (),
    ) -> tuple[Firewall, list[Action]]:
        """Create a firewall, applying it at once to the given targets."""
        self.settle()
        if not name:
            raise invalid_input("name", "must not be empty")
        if len(name) > _FIREWALL_NAME_LIMIT:
            raise invalid_input("name", f"is longer than {_FIREWALL_NAME_LIMIT} characters")
        checked_labels = _labels({} if labels is None else labels)
        if any(f.name == name for f in self.firewalls.values()):
            raise _uniqueness("firewall", "name")
        self._check_targets(apply_to)
        firewall = Firewall(
            id=next(self._firewall_ids),
            name=name,
            labels=checked_labels,
            rules=list(rules or []),
            created=self.clock.wall(),
        )
        self.firewalls[firewall.id] = firewall
        return firewall, self._apply(firewall, apply_to)

    def _check_targets(self, targets: Sequence[FirewallTarget]) -> None:
        for target in targets:
            if target.server_id is not None and target.server_id not in self.servers:
                raise HcloudError(
                    "firewall_resource_not_found", f"server {target.server_id} not found"
                )
            if target.server_id is not None:
                self._check_unlocked(target.server_id)
            if target.selector is not None:
                _selector(target.selector, "apply_to")

    def _apply(self, firewall: Firewall, targets: Sequence[FirewallTarget]) -> list[Action]:
        for target in targets:
            if target.server_id in firewall.server_ids or target.selector in firewall.selectors:
                applied = target.selector or f"server {target.server_id}"
                raise HcloudError(
                    "firewall_already_applied",
                    f"firewall {firewall.id} is already applied to {applied}",
                )
        actions = []
        for target in targets:
            if target.selector is None:
                assert target.server_id is not None
                firewall.server_ids.append(target.server_id)
                servers = [self.servers[target.server_id]]
            else:
                firewall.selectors.append(target.selector)
                servers = self.servers_behind(firewall, target.selector)
            resources = [("firewall", firewall.id)]
            actions += [
                self._start("apply_firewall", [*resources, ("server", s.id)]) for s in servers
            ]
        return actions

    def apply_firewall(self, firewall_id: int, targets: Sequence[FirewallTarget]) -> list[Action]:
        """Apply a firewall to more servers or label selectors."""
        firewall = self.get_firewall(firewall_id)
        self._check_targets(targets)
        return self._apply(firewall, targets)

    def remove_firewall(self, firewall_id: int, targets: Sequence[FirewallTarget]) -> list[Action]:
        """Stop applying a firewall to servers or label selectors (absent ones are ignored)."""
        firewall = self.get_firewall(firewall_id)
        actions = []
        for target in targets:
            if target.server_id is not None and target.server_id in firewall.server_ids:
                firewall.server_ids.remove(target.server_id)
                resources = [("firewall", firewall.id), ("server", target.server_id)]
                actions.append(self._start("remove_firewall", resources))
            elif target.selector is not None and target.selector in firewall.selectors:
                servers = self.servers_behind(firewall, target.selector)
                firewall.selectors.remove(target.selector)
                actions += [
                    self._start("remove_firewall", [("firewall", firewall.id), ("server", s.id)])
                    for s in servers
                ]
        return actions

    def set_firewall_rules(self, firewall_id: int, rules: list[FirewallRule]) -> list[Action]:
        """Replace a firewall's rules."""
        firewall = self.get_firewall(firewall_id)
        firewall.rules = list(rules)
        servers = self.servers_behind(firewall)
        return [
            self._start("set_firewall_rules", [("firewall", firewall.id)]),
            *(
                self._start("apply_firewall", [("firewall", firewall.id), ("server", s.id)])
                for s in servers
            ),
        ]

    def update_firewall(self, firewall_id: int, *, name: str | None, labels: object) -> Firewall:
        """Rename a firewall and/or replace its labels."""
        firewall = self.get_firewall(firewall_id)
        if name is not None and any(
            f.name == name and f.id != firewall_id for f in self.firewalls.values()
        ):
            raise _uniqueness("firewall", "name")
        if name is not None and len(name) > _FIREWALL_NAME_LIMIT:
            raise invalid_input("name", f"is longer than {_FIREWALL_NAME_LIMIT} characters")
        new_labels = None if labels is None else _labels(labels)
        if name is not None:
            firewall.name = name
        if new_labels is not None:
            firewall.labels = new_labels
        return firewall

    def delete_firewall(self, firewall_id: int) -> None:
        """Delete a firewall that applies to nothing any more."""
        firewall = self.get_firewall(firewall_id)
        if firewall.server_ids or firewall.selectors or firewall.releasing:
            raise HcloudError(
                "resource_in_use",
                f"firewall {firewall_id} is still applied to a resource; remove it from its "
                "resources first (a deleted server holds it until its delete action is done)",
            )
        del self.firewalls[firewall_id]
