"""The ``Customer`` resource: one paying tenant, cluster-scoped."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from smart_operator.models.common import (
    AGE_COLUMN,
    READY_COLUMN,
    CamelModel,
    Condition,
    KindInfo,
    PrinterColumn,
    Resource,
    StatusModel,
    Writer,
    conditions_field,
)

NAMESPACE_PREFIX = "customer-"
"""Each Customer's resources live in the namespace ``customer-<name>``."""
DASHBOARD_ACCOUNT = "dashboard-viewer"
"""The read-only ServiceAccount in a customer's namespace that signs in to the dashboard."""


def customer_namespace(customer: str) -> str:
    """The namespace of the Customer ``customer``."""
    return f"{NAMESPACE_PREFIX}{customer}"


def customer_of(namespace: str) -> str | None:
    """The Customer whose namespace ``namespace`` is, or None for any other namespace."""
    if not namespace.startswith(NAMESPACE_PREFIX):
        return None
    return namespace[len(NAMESPACE_PREFIX) :] or None


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PLAN_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
ACCOUNT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""A provider account's name (``smart_operator.accounts``): a label value, since the
Domains placed on it carry it as one."""


class LimitOverrides(CamelModel):
    """Per-customer exceptions to the plan's limits; an unset field keeps the plan's."""

    domains: int | None = Field(default=None, ge=0, le=10000, description="Most Domains")
    experiments: int | None = Field(
        default=None, ge=0, le=100000, description="Most Experiments, across all Domains"
    )


class CustomerSpec(CamelModel):
    """What platform staff declare about a customer."""

    email: str = Field(
        pattern=EMAIL_PATTERN, max_length=254, description="Where the customer is reached"
    )
    plan: str = Field(
        default="starter",
        pattern=PLAN_PATTERN,
        description="A plan of the operator's catalog (for example starter, pro, scale)",
    )
    limits: LimitOverrides | None = Field(
        default=None, description="Overrides of the plan's limits for this customer"
    )
    suspended: bool = Field(
        default=False,
        description="Suspended customers keep their resources but serve only control variants",
    )
    provider_account: str | None = Field(
        default=None,
        pattern=ACCOUNT_NAME_PATTERN,
        max_length=63,
        description="Pin the customer's new Domains to this provider account of the pool "
        "(the smartserver.ai/provider-account label of its Secret); unset lets the operator "
        "place each new Domain on the account with the most room. Domains placed already "
        "stay where they are",
    )


class Counts(CamelModel):
    domains: int = Field(default=0, ge=0)
    experiments: int = Field(default=0, ge=0)


class Limits(CamelModel):
    domains: int = Field(ge=0)
    experiments: int = Field(ge=0)


class Health(CamelModel):
    """The customer's results at a glance."""

    active_domains: int = Field(default=0, ge=0)
    experiments: int = Field(default=0, ge=0)
    average_improvement: float | None = Field(
        default=None, description="Mean relative uplift of concluded winners, as a fraction"
    )
    last_experiment: str | None = None


class Cost(CamelModel):
    """Monthly infrastructure cost against the plan price (US dollars)."""

    currency: str = "USD"
    plan_price: float = Field(ge=0)
    infrastructure: float = Field(default=0.0, ge=0, description="Servers, per month")
    margin: float = Field(description="(plan price - infrastructure) / plan price")
    profit: float = Field(default=0.0, description="Plan price minus infrastructure, per month")


class BillingState(StrEnum):
    """The Customer's billing at a glance (``status.billing.state``, the BILLING column)."""

    OFF = "Off"
    """The operator has no Stripe key: nobody is charged."""
    PENDING = "Pending"
    """No subscription yet (being made, or the plan has no Stripe price)."""
    ACTIVE = "Active"
    PAST_DUE = "PastDue"
    """A payment failed; the grace period has not run out."""
    SUSPENDED = "Suspended"
    """A payment failed longer than the grace period ago: experiments serve the control."""
    CANCELED = "Canceled"
    """The subscription was deleted in Stripe: experiments serve the control."""


class PaymentState(StrEnum):
    """What Stripe's newest webhook event said about the Customer's payments."""

    PAID = "Paid"
    PAYMENT_FAILED = "PaymentFailed"
    SUBSCRIPTION_DELETED = "SubscriptionDeleted"


class BillingStatus(CamelModel):
    """The Customer's Stripe customer and subscription, as the operator last saw them."""

    # Strings rather than enums, so a status written by a newer version still parses.

    state: str = Field(
        default=BillingState.PENDING.value,
        description="Off, Pending, Active, PastDue, Suspended or Canceled",
    )
    suspended: bool = Field(
        default=False,
        description="Billing suspends the customer (its experiments serve only the control); "
        "spec.suspended is staff's own switch beside it",
    )
    customer_id: str | None = Field(default=None, description="The Stripe customer (cus_...)")
    subscription_id: str | None = Field(default=None, description="The subscription (sub_...)")
    subscription_item_id: str | None = Field(
        default=None, description="The subscription's item that carries the plan's price (si_...)"
    )
    price_id: str | None = Field(default=None, description="The Stripe price subscribed to")
    subscription_status: str | None = Field(
        default=None, description="Stripe's status of the subscription (active, past_due, ...)"
    )
    current_period_end: datetime | None = Field(
        default=None, description="When the subscription's current billing period ends"
    )
    amount: float | None = Field(
        default=None, ge=0, description="What the subscription charges per interval"
    )
    currency: str | None = Field(default=None, description="ISO code, lower case (usd)")
    interval: str | None = Field(
        default=None, description="The billing interval (month, year, ...), with its count"
    )
    monthly_amount: float | None = Field(
        default=None, ge=0, description="The amount per month, in the subscription's currency"
    )
    grace_ends_at: datetime | None = Field(
        default=None, description="While PastDue: when the Customer is suspended unless paid"
    )
    synced_at: datetime | None = Field(
        default=None, description="When the operator last read the subscription from Stripe"
    )


class PaymentRecord(CamelModel):
    """What Stripe's webhooks said last, written by the results intake."""

    # The intake is the internet-facing process; the operator turns this record into
    # conditions, phase, Events and suspension (``billing.standing``).

    state: str = Field(description="Paid, PaymentFailed or SubscriptionDeleted")
    since: datetime = Field(
        description="When this state began: the first failure of a run of failed payments"
    )
    event_id: str = Field(description="The newest event applied (evt_...)")
    event_type: str
    event_created: datetime = Field(description="Stripe's creation time of that event")
    invoice_id: str | None = None
    subscription_id: str | None = None
    amount: float | None = Field(default=None, ge=0, description="The invoice's amount")
    currency: str | None = None
    seen: list[str] = Field(
        default_factory=list,
        max_length=64,  # billing.SEEN_EVENTS are kept
        description="Ids of the newest events received, applied or not, so a redelivery "
        "changes nothing",
    )


class CustomerStatus(StatusModel):
    """Written by the operator, except ``payment`` (the intake's, from Stripe's webhooks)."""

    WRITERS: ClassVar[Mapping[str, Writer]] = {"payment": Writer.INTAKE}

    observed_generation: int | None = None
    phase: str | None = Field(default=None, description="Active, Suspended or Failed")
    namespace: str | None = None
    plan: str | None = None
    limits: Limits | None = None
    counts: Counts | None = None
    dashboard_account_uid: str | None = Field(
        default=None,
        description="uid of the dashboard ServiceAccount: dashboard sessions opened with a "
        "token of another account (one deleted to revoke access) end",
    )
    health: Health | None = None
    cost: Cost | None = None
    billing: BillingStatus | None = None
    payment: PaymentRecord | None = None
    conditions: list[Condition] = conditions_field()


class Customer(Resource):
    """A tenant: its namespace, plan limits and dashboard access."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="Customer",
        plural="customers",
        scope="Cluster",
        short_names=("cust",),
        columns=(
            READY_COLUMN,
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Plan", ".spec.plan"),
            PrinterColumn("Domains", ".status.counts.domains", type="integer"),
            PrinterColumn("Billing", ".status.billing.state"),
            PrinterColumn("Namespace", ".status.namespace", priority=1),
            PrinterColumn("Email", ".spec.email", priority=1),
            AGE_COLUMN,
        ),
        extra={
            "validations": [
                {
                    "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]{0,52}[a-z0-9])?$')",
                    "message": "metadata.name must be a DNS label of at most 54 characters "
                    "(lower-case letters, digits, '-'): the namespace customer-<name> is "
                    "derived from it",
                }
            ]
        },
    )
    kind: str = "Customer"
    spec: CustomerSpec
    status: CustomerStatus | None = None

    def is_suspended(self) -> bool:
        """Whether its experiments serve only the control: staff suspended it
        (``spec.suspended``) or billing did (``status.billing.suspended``)."""
        billing = self.status.billing if self.status else None
        return self.spec.suspended or bool(billing and billing.suspended)
