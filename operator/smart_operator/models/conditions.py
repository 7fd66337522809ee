"""The condition types and reasons of every kind, as enums: the only place their
spelling lives. ``Condition.type`` and ``Condition.reason`` stay plain strings on the
wire (a status written by another version still parses); code compares and writes the
enum members, which are strings.

Each reason also says how it is reported when a condition takes it: as a Warning
Event (``WARNINGS``), silently on a condition's first appearance (``QUIET``: the
expected starting state, such as ``Active``), and whether it ends a Domain in phase
``Failed`` (``PERMANENT``: only a change of the spec or of the operator's configuration
mends it). Pure.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    """Every kind: the aggregate, shown as the READY printer column."""
    # Customer
    QUOTA_APPLIED = "QuotaApplied"
    SUSPENDED = "Suspended"
    BILLING = "Billing"
    """True while the Customer's Stripe subscription is in good standing."""
    # Domain
    VERIFIED = "Verified"
    SERVER_READY = "ServerReady"
    AGENT_INSTALLED = "AgentInstalled"
    DNS_READY = "DNSReady"
    AGENT_CONNECTED = "AgentConnected"
    PAUSED = "Paused"
    CERTIFICATE_READY = "CertificateReady"
    """The site's TLS certificate is issued, installed and not close to expiry."""
    AVAILABLE = "Available"
    """Visitors reach the site: the platform's outside checks pass (``uptime``). Not part
    of Ready, which says the platform has done its part."""
    # Experiment
    CONFIG_VALID = "ConfigValid"
    DEPLOYED = "Deployed"


CUSTOMER_CONDITIONS = (
    ConditionType.QUOTA_APPLIED,
    ConditionType.SUSPENDED,
    ConditionType.BILLING,
    ConditionType.READY,
)
DOMAIN_CONDITIONS = (
    ConditionType.VERIFIED,
    ConditionType.SERVER_READY,
    ConditionType.DNS_READY,
    ConditionType.AGENT_INSTALLED,
    ConditionType.AGENT_CONNECTED,
)
"""The conditions that must all be True for a Domain to be Ready, in the order they
are reached (``Paused`` is a flag beside them)."""
EXPERIMENT_CONDITIONS = (ConditionType.CONFIG_VALID, ConditionType.DEPLOYED, ConditionType.READY)


class Reason(StrEnum):
    # -- shared ----------------------------------------------------------------------------
    READY = "Ready"
    PENDING = "Pending"
    ACTIVE = "Active"
    """Not paused, not suspended: the usual state."""
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    """A provider failed in a way that heals (5xx, 429, timeouts): retried."""
    PROVIDER_REJECTED = "ProviderRejected"
    """A provider refused in a way retrying cannot mend: the message says what to do."""
    # -- Customer --------------------------------------------------------------------------
    QUOTA_ENFORCED = "QuotaEnforced"
    QUOTA_PENDING = "QuotaPending"
    UNKNOWN_PLAN = "UnknownPlan"
    ACCOUNT_PENDING = "AccountPending"
    NAMESPACE_TAKEN = "NamespaceTaken"
    """The namespace ``customer-<name>`` exists without the platform's labels: someone
    else made it, so it is left alone and the Customer is not provisioned."""
    PROVISIONED = "Provisioned"
    SUSPENDED_BY_SPEC = "SuspendedBySpec"
    BILLING_NOT_CONFIGURED = "BillingNotConfigured"
    """The operator has no Stripe key: billing is off, nobody is charged."""
    PRICE_MISSING = "PriceMissing"
    """The Customer's plan has no Stripe price id in the plan catalogue."""
    SUBSCRIPTION_PENDING = "SubscriptionPending"
    SUBSCRIPTION_ACTIVE = "SubscriptionActive"
    PAYMENT_FAILED = "PaymentFailed"
    """A payment failed; the grace period runs."""
    PAYMENT_OVERDUE = "PaymentOverdue"
    """A payment failed longer than the grace period ago: billing suspends the Customer."""
    SUBSCRIPTION_CANCELED = "SubscriptionCanceled"
    """The subscription was deleted in Stripe: billing suspends the Customer."""
    # -- Domain ----------------------------------------------------------------------------
    OPERATOR_NOT_CONFIGURED = "OperatorNotConfigured"
    PAUSED_BY_SPEC = "PausedBySpec"
    INVALID_SPEC = "InvalidSpec"
    ZONE_ACTIVE = "ZoneActive"
    ZONE_PENDING = "ZonePending"
    ZONE_MOVED = "ZoneMoved"
    ZONE_GONE = "ZoneGone"
    """The verified zone is no longer in the Cloudflare account: found or made again."""
    ZONE_OF_ANOTHER_CUSTOMER = "ZoneOfAnotherCustomer"
    OWNERSHIP_CHALLENGE = "OwnershipChallenge"
    CREATING = "Creating"
    CREATE_FAILED = "CreateFailed"
    """The provider could not start a new server: it was removed and is made again."""
    CAPACITY_UNAVAILABLE = "CapacityUnavailable"
    """The provider has no capacity for the type in the location now."""
    QUOTA_EXCEEDED = "QuotaExceeded"
    """The provider account's limit (servers, cores...) is reached."""
    NO_PROVIDER_ACCOUNT = "NoProviderAccount"
    """No provider account of the pool may take the Domain (all drained or full, or the
    Customer's pinned one cannot), or its recorded account is gone from the pool."""
    STARTING = "Starting"
    RUNNING = "Running"
    RECORDS_POINT_AT_SERVER = "RecordsPointAtServer"
    RECORD_CONFLICT = "RecordConflict"
    UNMANAGED = "Unmanaged"
    DELETING = "Deleting"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    INSTALL_FAILED = "InstallFailed"
    NO_AGENT_BUNDLE = "NoAgentBundle"
    OPERATOR_KEY_REFUSED = "OperatorKeyRefused"
    """The server refused the operator's SSH key and its previous key (Secret
    smart-operator-ssh): the message names both fingerprints and what to do."""
    HEARTBEAT = "Heartbeat"
    WAITING_FOR_AGENT = "WaitingForAgent"
    AGENT_SILENT = "AgentSilent"
    # -- Experiment ------------------------------------------------------------------------
    VALID = "Valid"
    INVALID_TEMPLATE_CONFIG = "InvalidTemplateConfig"
    TEMPLATE_UNAVAILABLE = "TemplateUnavailable"
    """The template (version) it names is not there, is invalid, or was edited in place."""
    DOMAIN_NOT_FOUND = "DomainNotFound"
    WAITING_FOR_SERVER = "WaitingForServer"
    DOMAIN_BUSY = "DomainBusy"
    HOST_KEY_MISMATCH = "HostKeyMismatch"
    UNREACHABLE = "Unreachable"
    REVISION_REFUSED = "RevisionRefused"
    DEPLOYED = "Deployed"
    SERVING = "Serving"
    # -- Domain certificate ----------------------------------------------------------------
    CERTIFICATE_ISSUED = "CertificateIssued"
    ISSUING = "Issuing"
    RENEWAL_FAILED = "RenewalFailed"
    """An issuance or renewal failed; retried with backoff (also a Warning and a metric)."""
    ACME_NOT_CONFIGURED = "AcmeNotConfigured"
    # -- Domain availability ---------------------------------------------------------------
    SITE_REACHABLE = "SiteReachable"
    SITE_DOWN = "SiteDown"
    """Several outside checks in a row failed (also a Warning and an alert)."""


def as_reason(text: str) -> Reason:
    """A reason read from a status; one this version does not know reads as Pending."""
    try:
        return Reason(text)
    except ValueError:
        return Reason.PENDING


WARNINGS = frozenset(
    {
        Reason.RENEWAL_FAILED,
        Reason.OPERATOR_KEY_REFUSED,
        Reason.PROVIDER_UNAVAILABLE,
        Reason.PROVIDER_REJECTED,
        Reason.UNKNOWN_PLAN,
        Reason.NAMESPACE_TAKEN,
        Reason.PRICE_MISSING,
        Reason.PAYMENT_FAILED,
        Reason.PAYMENT_OVERDUE,
        Reason.SUBSCRIPTION_CANCELED,
        Reason.OPERATOR_NOT_CONFIGURED,
        Reason.INVALID_SPEC,
        Reason.CREATE_FAILED,
        Reason.CAPACITY_UNAVAILABLE,
        Reason.QUOTA_EXCEEDED,
        Reason.NO_PROVIDER_ACCOUNT,
        Reason.RECORD_CONFLICT,
        Reason.INSTALL_FAILED,
        Reason.NO_AGENT_BUNDLE,
        Reason.ZONE_MOVED,
        Reason.ZONE_OF_ANOTHER_CUSTOMER,
        Reason.OWNERSHIP_CHALLENGE,
        Reason.AGENT_SILENT,
        Reason.INVALID_TEMPLATE_CONFIG,
        Reason.TEMPLATE_UNAVAILABLE,
        Reason.DOMAIN_NOT_FOUND,
        Reason.DOMAIN_BUSY,
        Reason.HOST_KEY_MISMATCH,
        Reason.UNREACHABLE,
        Reason.REVISION_REFUSED,
        Reason.SITE_DOWN,
    }
)
"""Reasons reported as Warning Events; every other reason change is a Normal Event."""

QUIET = frozenset(
    {
        Reason.PENDING,
        Reason.ACTIVE,
        Reason.VALID,
        Reason.QUOTA_PENDING,
        Reason.ACCOUNT_PENDING,
        Reason.BILLING_NOT_CONFIGURED,
        Reason.SUBSCRIPTION_PENDING,
        Reason.WAITING_FOR_SERVER,
        Reason.WAITING_FOR_AGENT,
        Reason.SITE_REACHABLE,
    }
)
"""Reasons that post no Event when a condition first appears with them: the expected
starting state says nothing new. A later change to them is reported as usual."""

PERMANENT = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.OPERATOR_NOT_CONFIGURED,
        Reason.PROVIDER_REJECTED,
        Reason.ZONE_OF_ANOTHER_CUSTOMER,
        Reason.NO_AGENT_BUNDLE,
    }
)
"""Reasons that only a change of the spec (or of the operator's configuration) mends:
a Domain with one of them is in phase ``Failed``."""
