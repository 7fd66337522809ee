"""The ports through which the reconcilers act on outside systems: what they need to
know of provider objects (views), and the calls they make (Protocols).

The clients in ``clients/`` implement these Protocols over the real SDKs; the unit
tests implement them as fakes in memory. Every call may raise only the errors of
``smart_operator.errors``. Pure: dataclasses and Protocols, no I/O, no SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from smart_operator.accounts import Placed, Unplaced
from smart_operator.keys import SSHKeyPair
from smart_operator.uptime import CheckResult

# -- views of provider objects ----------------------------------------------------------


@dataclass(frozen=True)
class ServerView:
    """What the operator needs to know of a server."""

    id: int
    name: str
    status: str
    ipv4: str | None
    ipv6: str | None
    labels: dict[str, str] = field(default_factory=dict)
    server_type: str = ""
    created: datetime | None = None


@dataclass(frozen=True)
class FirewallView:
    id: int
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None


@dataclass(frozen=True)
class ServerTypeView:
    name: str
    monthly_price: dict[str, float]
    """Gross monthly price (EUR) by location name."""
    orderable: frozenset[str] = frozenset()
    """Locations where it can be ordered now: in stock, and not past a deprecation."""
    deprecated: bool = False
    """A deprecation was announced (it will stop being orderable)."""


@dataclass(frozen=True)
class ZoneView:
    id: str
    name: str
    status: str
    name_servers: list[str] = field(default_factory=list)
    plan: str = "free"
    """The zone's plan (Cloudflare's ``plan.legacy_id``): free, pro, business, enterprise.
    What a record may carry depends on it."""


@dataclass(frozen=True)
class RecordView:
    id: str
    type: str
    name: str
    content: str
    comment: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QuotaView:
    """A ResourceQuota's status: what it enforces and what is used, as quantities."""

    hard: Mapping[str, str]
    used: Mapping[str, str]
    created: datetime | None = None


# -- providers --------------------------------------------------------------------------


class Servers(Protocol):
    """Hetzner Cloud: servers, firewalls, the operator's SSH key, the catalogue."""

    async def servers(self, labels: dict[str, str]) -> list[ServerView]: ...

    async def server(self, server_id: int) -> ServerView: ...

    async def server_by_name(self, name: str) -> ServerView | None: ...

    async def create_server(
        self,
        *,
        name: str,
        server_type: str,
        image: str,
        location: str,
        user_data: str,
        labels: dict[str, str],
        ssh_key_ids: Iterable[int],
        firewall_ids: Iterable[int],
    ) -> tuple[ServerView, int | None]:
        """The new server and the id of the action that boots it."""
        ...

    async def delete_server(self, server_id: int) -> None:
        """One already gone counts as deleted."""
        ...

    async def firewalls(self, labels: dict[str, str]) -> list[FirewallView]: ...

    async def firewall_by_name(self, name: str) -> FirewallView | None: ...

    async def create_firewall(
        self, name: str, labels: dict[str, str], ssh_sources: list[str]
    ) -> FirewallView: ...

    async def delete_firewall(self, firewall_id: int) -> None:
        """One already gone counts as deleted."""
        ...

    async def ensure_ssh_key(self, public_key: str, labels: dict[str, str]) -> int:
        """The id of this public key at the provider, registered if it is not yet."""
        ...

    async def delete_ssh_key(self, public_key: str, labels: dict[str, str]) -> bool:
        """Remove this public key from the provider if it is registered there with
        ``labels``; whether one was removed (servers keep their keys)."""
        ...


class Dns(Protocol):
    """Cloudflare: zones and DNS records."""

    async def zones(self) -> list[ZoneView]: ...

    async def zone_for(self, domain: str) -> ZoneView | None:
        """The zone that holds ``domain``: the domain itself or its closest parent."""
        ...

    async def create_zone(self, name: str) -> ZoneView: ...

    async def get_zone(self, zone_id: str) -> ZoneView: ...

    async def check_activation(self, zone_id: str) -> None: ...

    async def delete_zone(self, zone_id: str) -> None:
        """One already gone counts as deleted."""
        ...

    async def records(
        self,
        zone_id: str,
        *,
        name: str | None = None,
        tag: str | None = None,
        tag_present: str | None = None,
        comment_prefix: str | None = None,
    ) -> list[RecordView]: ...

    async def delete_record(self, zone_id: str, record_id: str) -> None:
        """One already gone counts as deleted."""
        ...

    async def batch(
        self,
        zone_id: str,
        *,
        posts: list[dict[str, Any]],
        patches: list[dict[str, Any]],
        deletes: list[str],
    ) -> list[RecordView]:
        """Create, change and delete in one all-or-nothing request; returns the created
        and changed records."""
        ...


class Actions(Protocol):
    """Waits for provider actions (a server booting)."""

    async def wait(self, action_id: int) -> str:
        """The action's final status: ``success`` or ``error``."""
        ...


class Fleet(Protocol):
    """Every managed server, listed in one call and shared by all Domains' checks."""

    async def servers(self, uid: str, max_age: float) -> list[ServerView]: ...

    def remember(self, uid: str, server: ServerView) -> None: ...

    def forget(self, uid: str) -> None: ...


class Catalog(Protocol):
    """The provider's server types with their prices."""

    async def types(self) -> dict[str, ServerTypeView]: ...


@dataclass(frozen=True)
class Identity:
    """Who this installation of the operator is, kept in its own Secrets."""

    ssh_key: SSHKeyPair
    """The operator's SSH key: the key its servers accept for deploys."""
    key_secret: bytes
    """Derives each new server's host key and intake key (``keys.derive_server_keys``),
    so a retried create sends the same keys."""
    installation: str
    """On the labels of every cloud object this installation makes: the sweep removes
    only its own installation's objects, so two installations can share an account."""
    previous_ssh_key: SSHKeyPair | None = None
    """The key ``ssh_key`` replaced, during a rotation (``id_ed25519.previous`` in the
    Secret): tried when a server refuses ``ssh_key``, and then replaced by it there."""


@dataclass
class Cloud:
    """The providers of one provider account (a Hetzner project and a Cloudflare
    account), and the shared views that keep calls flat as Domains grow."""

    servers: Servers
    dns: Dns
    actions: Actions
    fleet: Fleet
    catalog: Catalog
    identity: Identity
    ssh_key_id: int | None = None
    """The operator's key at the provider, once known."""
    account: str = "default"
    """The name of the provider account these clients act in."""
    pool: Pool | None = None
    """Every provider account of the operator (``smart_operator.accounts``); None with
    one account and no placement (the unit tests' fakes)."""


class Pool(Protocol):
    """The provider accounts: where a new Domain goes, and each account's clients."""

    @property
    def default(self) -> str:
        """The account of Domains made before the pool (nothing on their status)."""
        ...

    def cloud(self, name: str) -> Cloud | None:
        """The clients of one account; None when the pool has no such account."""
        ...

    def clouds(self) -> list[Cloud]:
        """Every account's clients."""
        ...

    async def place(self, uid: str, pin: str | None) -> Placed | Unplaced:
        """Choose the account of a new Domain (``accounts.place``) and count it there."""
        ...

    def note(self, uid: str, name: str) -> None:
        """The Domain ``uid`` is on the account ``name`` (counted in its load)."""
        ...

    def forget(self, uid: str) -> None:
        """The Domain ``uid`` is gone: it no longer counts on its account."""
        ...

    def exhausted(self, name: str) -> None:
        """The provider refused a server for the account's limit: count it full for a
        while (its servers are listed again meanwhile)."""
        ...


# -- servers over SSH -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A customer server as the deployer reaches it: only its pinned host key is
    trusted."""

    address: str
    port: int
    host_public_key: str
    client_private_key: str
    username: str = "root"
    server_id: int | None = None
    """The provider's id of the server: a new server needs the experiment again."""
    previous_client_private_key: str | None = None
    """During an operator key rotation, the key ``client_private_key`` replaced: tried
    only when the server refuses ``client_private_key``."""


@dataclass(frozen=True)
class OperatorKeyCheck:
    """Which of the operator's keys a server accepts, after ``ensure_operator_key``."""

    accepted: str
    """The SHA256 fingerprint of the operator key the server accepts now."""
    replaced: str | None = None
    """The fingerprint of the previous key this call replaced on the server (None when
    the server accepted the current key already)."""


@dataclass(frozen=True)
class DeployResult:
    uploaded: bool
    switched: bool
    serving: str | None
    """The revision the agent confirmed it serves."""


class Deployer(Protocol):
    async def deploy(
        self, target: Target, experiment: str, revision: str, files: dict[str, bytes]
    ) -> DeployResult:
        """Upload a revision (unless the server has it), make it current, and have the
        agent confirm it serves it (``RevisionRefused`` when it does not)."""
        ...

    async def remove(self, target: Target, experiment: str) -> None:
        """Take an experiment off the server."""
        ...


@dataclass(frozen=True)
class AgentEnvironment:
    """What the agent on one server needs to know; written to its environment file."""

    intake_url: str
    intake_key: str
    domain: str
    resource: str = ""
    """``namespace/name`` of the Domain (for the agent's logs)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """More ``SMART_AGENT_*`` settings (without the prefix), e.g. ``REPORT_SECONDS``."""


@dataclass(frozen=True)
class InstallResult:
    version: str
    """The version the running agent reports."""
    sha256: str
    uploaded: bool
    restarted: bool


class AgentInstaller(Protocol):
    """Delivers the agent to a server over the pinned connection (``clients.agent_install``)."""

    @property
    def bundle_sha256(self) -> str:
        """The SHA-256 of the bundle it installs."""
        ...

    async def install(self, target: Target, env: AgentEnvironment) -> InstallResult:
        """Install the bundle (unless the server has it) with ``env``; restart the agent
        when anything changed."""
        ...

    async def prepare_host_key_rotation(self, target: Target) -> str:
        """The server's next host key (made on the server; asking again gives the same)."""
        ...

    async def commit_host_key_rotation(self, target: Target, next_public_key: str) -> str:
        """Make the prepared key the server's host key; returns it."""
        ...

    async def install_certificate(self, target: Target, issued: IssuedCertificate) -> None:
        """Deliver a certificate and its key, and have the agent serve them."""
        ...

    async def ensure_operator_key(self, target: Target) -> OperatorKeyCheck:
        """Make the server accept ``target.client_private_key``: when only the previous
        key is accepted, replace it with the current one in the login user's
        ``authorized_keys`` over that connection, and prove the current key works.
        ``OperatorKeyRefused`` when neither key is accepted."""
        ...


# -- Kubernetes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """One object of the platform's kinds."""

    plural: str
    name: str
    namespace: str | None = None


class Resources(Protocol):
    """The Kubernetes reads and writes of the reconcilers."""

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None: ...

    async def list_namespaced(self, plural: str, namespace: str) -> list[dict[str, Any]]: ...

    async def list_cluster(self, plural: str) -> list[dict[str, Any]]:
        """Every object of a cluster-scoped kind."""
        ...

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource; an object that is gone is left alone."""
        ...

    async def domain_uids(self) -> set[str]:
        """The uids of every Domain in the cluster."""
        ...

    async def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply one object of a kind the operator owns."""
        ...

    async def label(self, ref: ObjectRef, labels: dict[str, str]) -> None:
        """Merge labels into an object's metadata; an object that is gone is left alone."""
        ...

    async def read_quota(self, namespace: str, name: str) -> QuotaView | None: ...

    async def delete_quota(self, namespace: str, name: str) -> None:
        """Delete a ResourceQuota; one that is gone already is left alone."""
        ...

    async def account_uid(self, namespace: str, name: str) -> str | None:
        """The uid of a ServiceAccount, or None if it does not exist."""
        ...

    async def namespace_exists(self, name: str) -> bool: ...

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels; None when it does not exist."""
        ...

    async def delete_namespace(self, name: str) -> None: ...


EventType = Literal["Normal", "Warning"]


class Events(Protocol):
    """Kubernetes Events about one object."""

    def post(self, type: EventType, reason: str, message: str) -> None: ...


# -- outside checks of the sites -------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A Domain's site as a visitor reaches it."""

    name: str
    """The name visitors type (``spec.domain``)."""
    address: str | None
    """The server's address on the status (used only when DNS is not checked)."""
    https: bool
    """Whether the site has its certificate: checked over HTTPS, else plain HTTP."""


class SiteProbe(Protocol):
    """One check of a site, from the platform side: DNS, TCP, TLS, HTTP."""

    async def check(self, site: Site) -> CheckResult:
        """Never raises for what it finds: a failure is a ``CheckResult`` saying where."""
        ...


# -- billing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BillingCustomerView:
    """A customer in the billing provider (Stripe's ``cus_...``)."""

    id: str
    email: str | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription, with its one item: the plan's price."""

    id: str
    customer: str
    status: str
    """The provider's status: active, trialing, past_due, unpaid, incomplete,
    incomplete_expired, canceled, paused."""
    metadata: dict[str, str] = field(default_factory=dict)
    item_id: str | None = None
    price_id: str | None = None
    unit_amount: int | None = None
    """In the currency's smallest unit (cents)."""
    quantity: int = 1
    currency: str | None = None
    interval: str | None = None
    interval_count: int = 1
    current_period_end: datetime | None = None


class Billing(Protocol):
    """Stripe: the Customer's customer record and its subscription. Every create
    carries an idempotency key, so a create retried after a lost answer returns the
    object the first one made."""

    async def find_customer(self, uid: str) -> BillingCustomerView | None:
        """The customer whose metadata names the Customer ``uid``, if any."""
        ...

    async def get_customer(self, customer_id: str) -> BillingCustomerView | None:
        """None when it does not exist or was deleted."""
        ...

    async def create_customer(
        self, *, name: str, email: str, metadata: dict[str, str], idempotency_key: str
    ) -> BillingCustomerView: ...

    async def update_customer(self, customer_id: str, *, email: str) -> None: ...

    async def get_subscription(self, subscription_id: str) -> SubscriptionView | None:
        """None when it does not exist."""
        ...

    async def subscriptions_of(self, customer_id: str) -> list[SubscriptionView]:
        """Every subscription of a customer, whatever its status."""
        ...

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> SubscriptionView: ...

    async def change_price(
        self, subscription_id: str, item_id: str, price_id: str
    ) -> SubscriptionView:
        """Move the subscription's item to another price (prorated)."""
        ...

    async def cancel_subscription(self, subscription_id: str) -> None:
        """One already gone counts as canceled."""
        ...


# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its key, as the CA issued them. ``key_pem`` is secret: it goes
    to the server over the pinned SSH connection and nowhere else (no log, no status)."""

    names: tuple[str, ...]
    key_pem: str = field(repr=False)
    fullchain_pem: str = field(repr=False)
    not_before: datetime
    not_after: datetime


class ChallengeRecords(Protocol):
    """Writes and removes the TXT records of DNS-01 challenges."""

    async def present(self, records: list[tuple[str, str]]) -> object:
        """Publish (name, value) TXT records; return a handle for ``clean``."""
        ...

    async def clean(self, handle: object) -> None:
        """Remove what ``present`` published; one already gone counts as removed."""
        ...


class CertificateAuthority(Protocol):
    """An ACME CA (Let's Encrypt in production, Pebble in tests)."""

    async def issue(self, names: list[str], records: ChallengeRecords) -> IssuedCertificate: ...
