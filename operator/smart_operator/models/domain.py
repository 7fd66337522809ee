"""The ``Domain`` resource: one customer domain with its own cloud server."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from smart_operator.models.common import (
    AGE_COLUMN,
    DOMAIN_PATTERN,
    READY_COLUMN,
    CamelModel,
    Condition,
    KindInfo,
    PrinterColumn,
    Resource,
    conditions_field,
)

# Hetzner Cloud locations, as listed by its API.
Location = Literal["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]


class DomainPhase(StrEnum):
    PENDING = "Pending"
    VERIFYING = "Verifying"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    FAILED = "Failed"
    DELETING = "Deleting"


class ServerShape(CamelModel):
    """The Hetzner Cloud server the domain runs on."""

    type: str = Field(
        default="cx22",
        pattern=r"^[a-z]{2,5}[0-9]{1,3}$",
        description="Hetzner server type (for example cx22, cpx21); checked against the API",
    )
    location: Location = Field(default="fsn1", description="Hetzner location")
    image: str = Field(
        default="ubuntu-24.04", pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$", description="OS image"
    )


class DNSOptions(CamelModel):
    """How the domain's records are kept in Cloudflare."""

    manage: bool = Field(default=True, description="Create A/AAAA records for the apex")
    www: bool = Field(default=True, description="Also point www at the server")
    proxied: bool = Field(default=False, description="Proxy through Cloudflare")
    ttl: int = Field(default=300, ge=60, le=86400, description="Record TTL in seconds")


class VerificationSpec(CamelModel):
    method: Literal["txt", "cloudflareZone"] = Field(
        default="cloudflareZone",
        description="Prove ownership by a TXT record or by an activated Cloudflare zone",
    )


class DomainSpec(CamelModel):
    """What platform staff declare about a domain."""

    domain: str = Field(
        pattern=DOMAIN_PATTERN,
        max_length=253,
        description="The fully qualified domain name, lower case (for example shop.example.com)",
    )
    server: ServerShape = ServerShape()
    dns: DNSOptions = DNSOptions()
    verification: VerificationSpec = VerificationSpec()
    paused: bool = Field(
        default=False, description="Serve only control variants and stop deploying"
    )


class VerificationStatus(CamelModel):
    method: str | None = None
    record_name: str | None = None
    record_value: str | None = None
    verified_at: datetime | None = None


class ServerStatus(CamelModel):
    id: int | None = None
    name: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    status: str | None = None
    firewall_id: int | None = None
    host_key_fingerprint: str | None = Field(
        default=None, description="SHA256 fingerprint of the pinned SSH host key"
    )
    monthly_price: float | None = Field(default=None, ge=0)


class DNSRecordStatus(CamelModel):
    id: str
    type: str
    name: str
    content: str


class DNSStatus(CamelModel):
    zone_id: str | None = None
    records: list[DNSRecordStatus] = Field(default_factory=list)


class AgentStatus(CamelModel):
    version: str | None = None
    last_seen: datetime | None = None
    started_at: datetime | None = None


class DomainStatus(CamelModel):
    observed_generation: int | None = None
    phase: DomainPhase | None = None
    verification: VerificationStatus | None = None
    server: ServerStatus | None = None
    dns: DNSStatus | None = None
    agent: AgentStatus | None = None
    intake_key_hash: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (hex) of the server's intake API key; the key itself is only "
        "in the server's user-data",
    )
    conditions: list[Condition] = conditions_field()


class Domain(Resource):
    """A customer domain: ownership, server, DNS and agent."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="Domain",
        plural="domains",
        scope="Namespaced",
        short_names=("dom",),
        columns=(
            PrinterColumn("Domain", ".spec.domain"),
            READY_COLUMN,
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("IPv4", ".status.server.ipv4"),
            PrinterColumn("Server", ".status.server.name", priority=1),
            PrinterColumn("Type", ".spec.server.type", priority=1),
            PrinterColumn("Agent", ".status.agent.lastSeen", type="date", priority=1),
            AGE_COLUMN,
        ),
    )
    kind: str = "Domain"
    spec: DomainSpec
    status: DomainStatus | None = None
