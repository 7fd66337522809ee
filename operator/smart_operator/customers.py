"""What a Customer should own, and what its status says. Pure functions: they build
desired objects and status from the resource, the plan and what was observed (the
billing standing included, decided by ``billing``); the reconciler applies them.
Nothing here talks to the API server or to Stripe.

A customer owns, in its namespace ``customer-<name>``: a ResourceQuota that enforces
the plan, and a read-only dashboard ServiceAccount with its Role and RoleBinding. Staff
give a customer a short-lived token of that account for the dashboard's audience
(``kubectl create token --audience``, docs/operations.md), which the API server itself
refuses; deleting the account revokes every such token, and the new account's uid on the
status ends the dashboard sessions opened with the old one. The namespace is the
platform's only when it carries ``MANAGED_BY`` and the customer's label
(``namespace_is_ours``): a namespace of that name that someone else made is never
adopted (``namespace_taken_status``), and an admission policy (manifests and chart)
refuses the operator any namespace without those labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from smart_operator.analytics import DomainFacts, customer_cost, customer_health
from smart_operator.conditions import Verdict, set_condition
from smart_operator.models.common import API_VERSION, GROUP
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.customer import (
    DASHBOARD_ACCOUNT,
    BillingStatus,
    Counts,
    Customer,
    CustomerStatus,
    Limits,
    customer_namespace,
)
from smart_operator.models.experiment import Experiment
from smart_operator.plans import Catalog, Plan, effective_limits

QUOTA_NAME = "plan-limits"
CUSTOMER_LABEL = f"{GROUP}/customer"
MANAGED_BY = {"app.kubernetes.io/managed-by": "smart-operator"}
DOMAINS_QUOTA = f"count/domains.{GROUP}"
EXPERIMENTS_QUOTA = f"count/experiments.{GROUP}"


def namespace_is_ours(labels: Mapping[str, str], customer_name: str) -> bool:
    """Whether a namespace with these labels is the one the platform made for the
    customer: what the admission policy ``smart-operator-namespaces`` checks too."""
    return (
        all(labels.get(key) == value for key, value in MANAGED_BY.items())
        and labels.get(CUSTOMER_LABEL) == customer_name
    )


def namespace_taken_message(customer_name: str) -> str:
    namespace = customer_namespace(customer_name)
    wanted = ",".join(
        f"{key}={value}" for key, value in {**MANAGED_BY, CUSTOMER_LABEL: customer_name}.items()
    )
    return (
        f"namespace {namespace} exists and was not made by the platform (it lacks the labels "
        f"{wanted}); nothing in it was changed. Delete or rename that namespace, or give this "
        f"Customer another name; to hand the namespace to this Customer instead, label it "
        f"(kubectl label namespace {namespace} {wanted.replace(',', ' ')}): deleting the "
        "Customer then deletes it"
    )


def namespace_taken_status(customer: Customer) -> CustomerStatus:
    """The status of a Customer whose namespace someone else made: Failed, with
    conditions saying so and how to mend it; the rest of the status as it was."""
    previous = customer.status or CustomerStatus()
    generation = customer.metadata.generation
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.namespace = None
    status.counts = None
    status.dashboard_account_uid = None
    message = namespace_taken_message(customer.metadata.name)
    conditions = previous.conditions
    for type in (ConditionType.QUOTA_APPLIED, ConditionType.READY):
        conditions = set_condition(
            conditions, type, "False", Reason.NAMESPACE_TAKEN, message, generation
        )
    status.phase = "Failed"
    status.conditions = conditions
    return status


def owner_reference(customer: Customer) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Customer",
        "name": customer.metadata.name,
        "uid": customer.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def quota_hard(limits: Limits) -> dict[str, str]:
    return {DOMAINS_QUOTA: str(limits.domains), EXPERIMENTS_QUOTA: str(limits.experiments)}


def quota_uncounted(
    wanted: Mapping[str, str], hard: Mapping[str, str] | None, used: Mapping[str, str] | None
) -> bool:
    """Whether the quota controller took the quota in (its status has the limits) but
    counts none of some resource: what it does with a quota made before it watched that
    resource (the first seconds after the CRDs are installed). It counts again only at
    its full resync (``--resource-quota-sync-period``, five minutes by default) or when
    the quota is new, so such a quota is made anew."""
    return _counts(hard) == _counts(wanted) and not set(wanted) <= set(used or {})


def desired_objects(customer: Customer, plan_name: str, limits: Limits) -> list[dict[str, Any]]:
    """Every object the customer owns, in the order they must be applied."""
    name = customer.metadata.name
    namespace = customer_namespace(name)
    labels = {CUSTOMER_LABEL: name, **MANAGED_BY}

    def meta(object_name: str, **extra: Any) -> dict[str, Any]:
        return {"name": object_name, "namespace": namespace, "labels": labels, **extra}

    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": labels,
                "ownerReferences": [owner_reference(customer)],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": meta(QUOTA_NAME, annotations={f"{GROUP}/plan": plan_name}),
            "spec": {"hard": quota_hard(limits)},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(DASHBOARD_ACCOUNT),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(DASHBOARD_ACCOUNT),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["domains", "experiments"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(DASHBOARD_ACCOUNT),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": DASHBOARD_ACCOUNT,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": DASHBOARD_ACCOUNT, "namespace": namespace}
            ],
        },
    ]


@dataclass(frozen=True)
class Observed:
    """What the handler saw of the customer's objects after applying them."""

    quota_hard: Mapping[str, str] | None = None
    quota_used: Mapping[str, str] | None = None
    account_uid: str | None = None
    """The uid of the dashboard ServiceAccount; None while it does not exist."""
    domains: tuple[DomainFacts, ...] = ()
    """The namespace's Domains, as the operator's watch last delivered them."""
    experiments: tuple[Experiment, ...] = ()
    server_prices: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Monthly server price (EUR) by (type, location), from the provider's pricing."""
    eur_to_usd: float = 1.0
    billing: tuple[BillingStatus, Verdict] | None = None
    """The billing status and the Billing condition (``billing.billing_status``); None
    leaves both as they are."""


@dataclass(frozen=True)
class Resolution:
    """The plan a customer resolves to, or why it does not."""

    plan: Plan | None
    limits: Limits | None
    problem: str | None


def resolve_plan(customer: Customer, catalog: Catalog) -> Resolution:
    plan = catalog.get(customer.spec.plan)
    if plan is None:
        return Resolution(
            None,
            None,
            f"plan {customer.spec.plan!r} is not in the catalog; "
            f"set spec.plan to one of: {', '.join(catalog.names)}",
        )
    return Resolution(plan, effective_limits(plan, customer.spec), None)


_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_count(quantity: str) -> int:
    """A whole-number Kubernetes quantity, as the API server writes it back ("1k")."""
    text = quantity.strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return int(Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix])
    return int(Decimal(text))


def _counts(quantities: Mapping[str, str] | None) -> dict[str, int]:
    return {key: parse_count(value) for key, value in (quantities or {}).items()}


def _count(used: Mapping[str, str] | None, key: str) -> int:
    return _counts(used).get(key, 0)


def compute_status(
    customer: Customer, catalog: Catalog, resolution: Resolution, observed: Observed
) -> CustomerStatus:
    """The status the customer should show, keeping unrelated fields as they are."""
    previous = customer.status or CustomerStatus()
    generation = customer.metadata.generation
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.namespace = customer_namespace(customer.metadata.name)
    conditions = previous.conditions

    if resolution.plan is None or resolution.limits is None:
        message = resolution.problem or "unknown plan"
        conditions = set_condition(
            conditions,
            ConditionType.QUOTA_APPLIED,
            "False",
            Reason.UNKNOWN_PLAN,
            message,
            generation,
        )
        conditions = set_condition(
            conditions, ConditionType.READY, "False", Reason.UNKNOWN_PLAN, message, generation
        )
        status.phase = "Failed"
        status.conditions = conditions
        return status

    plan, limits = resolution.plan, resolution.limits
    status.plan = customer.spec.plan
    status.limits = limits
    # Enforced only once the quota controller counts every resource: until then the
    # API server refuses creations with "status unknown for quota".
    wanted = _counts(quota_hard(limits))
    applied = _counts(observed.quota_hard) == wanted and set(wanted) <= set(
        observed.quota_used or {}
    )
    if applied:
        conditions = set_condition(
            conditions,
            ConditionType.QUOTA_APPLIED,
            "True",
            Reason.QUOTA_ENFORCED,
            f"plan {customer.spec.plan}: up to {limits.domains} domains and "
            f"{limits.experiments} experiments",
            generation,
        )
        status.counts = Counts(
            domains=_count(observed.quota_used, DOMAINS_QUOTA),
            experiments=_count(observed.quota_used, EXPERIMENTS_QUOTA),
        )
    else:
        conditions = set_condition(
            conditions,
            ConditionType.QUOTA_APPLIED,
            "False",
            Reason.QUOTA_PENDING,
            "waiting for the quota controller to count the namespace's usage",
            generation,
        )
    status.dashboard_account_uid = observed.account_uid
    status.health = customer_health(observed.domains, observed.experiments)
    status.cost = customer_cost(
        observed.domains, plan.price_monthly, observed.server_prices, observed.eur_to_usd
    )

    ready: Verdict
    if not applied:
        ready = ("False", Reason.QUOTA_PENDING, "the plan's quota is not enforced yet")
    elif observed.account_uid is None:
        ready = (
            "False",
            Reason.ACCOUNT_PENDING,
            f"waiting for the dashboard ServiceAccount {DASHBOARD_ACCOUNT}",
        )
    else:
        ready = (
            "True",
            Reason.PROVISIONED,
            f"namespace {status.namespace} with the {plan.title} plan's quota and dashboard access",
        )
    state, reason, message = ready
    conditions = set_condition(conditions, ConditionType.READY, state, reason, message, generation)
    billed: Verdict | None = None
    if observed.billing is not None:
        status.billing, billed = observed.billing
        conditions = set_condition(conditions, ConditionType.BILLING, *billed, generation)
    suspension = _suspension(customer, status.billing, billed)
    conditions = set_condition(conditions, ConditionType.SUSPENDED, *suspension, generation)
    status.phase = "Suspended" if suspension[0] == "True" else "Active"
    status.conditions = conditions
    return status


def _suspension(
    customer: Customer, billing: BillingStatus | None, billed: Verdict | None
) -> Verdict:
    """The Suspended condition: staff's switch (``spec.suspended``) first, then
    billing's (an overdue payment or a canceled subscription)."""
    by_billing = billing is not None and billing.suspended
    if customer.spec.suspended:
        also = " (and billing: " + billed[2] + ")" if by_billing and billed else ""
        return (
            "True",
            Reason.SUSPENDED_BY_SPEC,
            f"experiments serve only their control variant{also}",
        )
    if by_billing:
        reason = billed[1] if billed else Reason.PAYMENT_OVERDUE
        why = billed[2] if billed else "billing suspended the Customer"
        return ("True", reason, why)
    return ("False", Reason.ACTIVE, "experiments are served")
