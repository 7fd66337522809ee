"""The ``Customer`` resource: one paying tenant, cluster-scoped."""

from __future__ import annotations

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


class CustomerStatus(StatusModel):
    """Written by the operator only."""

    observed_generation: int | None = None
    phase: str | None = Field(default=None, description="Active, Suspended or Failed")
    namespace: str | None = None
    plan: str | None = None
    limits: Limits | None = None
    counts: Counts | None = None
    dashboard_token_secret: str | None = Field(
        default=None, description="Secret in the customer's namespace holding the dashboard token"
    )
    health: Health | None = None
    cost: Cost | None = None
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
