"""Billing with Stripe, decided: what a Customer's subscription should be, what a webhook
event means, and when a failed payment suspends the Customer. Pure functions over the
models and the views of ``ports``: the Customer reconciler acts on them through the
``Billing`` port, the intake's webhook route records events with them, the dashboard
sums revenue with them. No I/O, no SDK.

Facts of Stripe that shape it (each checked in Stripe's documentation):

- Idempotency (https://docs.stripe.com/idempotency): a retried request with the same
  ``Idempotency-Key`` returns the first answer; the key must come with the same
  parameters, and keys may be pruned after 24 hours. So every create carries a key
  derived from the Customer's uid, what is created and a digest of its parameters
  (``idempotency_key``): the same reconcile retried sends the same key; a changed
  parameter sends a new one instead of an error.
- Search is eventually consistent, "searchable in under 1 minute"
  (https://docs.stripe.com/search#data-freshness), while lists are not: a customer
  found by metadata search is only the fallback for a lost answer whose key has
  expired, and whatever is found is checked to carry the Customer's uid (search
  matches are not trusted blindly). Subscriptions are looked up by listing the
  customer's (strongly consistent) before one is created.
- Webhook events may arrive out of order and more than once
  (https://docs.stripe.com/webhooks#event-ordering,
  https://docs.stripe.com/webhooks#handle-duplicate-events): ``record_event`` keeps
  the newest event by its ``created`` time and the ids of the events it has seen, so
  an old or repeated event changes nothing.
- Amounts are in the currency's smallest unit, except for zero-decimal currencies
  (https://docs.stripe.com/currencies#zero-decimal).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from smart_operator.conditions import Verdict
from smart_operator.models.conditions import Reason
from smart_operator.models.customer import (
    BillingState,
    BillingStatus,
    Customer,
    PaymentRecord,
    PaymentState,
)
from smart_operator.ports import SubscriptionView

METADATA_UID = "smartserver_uid"
METADATA_CUSTOMER = "smartserver_customer"
"""Metadata on the Stripe customer and subscription that name the Customer resource.
Invoices carry a snapshot of the subscription's metadata, so every event the intake
handles names the Customer it is about."""

SEEN_EVENTS = 32
"""Event ids a Customer's payment record remembers (Stripe redelivers for up to three
days; a handful of events a month reach one Customer)."""

DEAD = frozenset({"canceled", "incomplete_expired"})
"""Subscription statuses that never bill again
(https://docs.stripe.com/api/subscriptions/object#subscription_object-status)."""

ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
"""https://docs.stripe.com/currencies#zero-decimal"""

PER_MONTH = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}
"""Billing intervals per month, to show every subscription's amount per month."""

EVENT_STATES = {
    "invoice.paid": PaymentState.PAID,
    "invoice.payment_failed": PaymentState.PAYMENT_FAILED,
    "customer.subscription.deleted": PaymentState.SUBSCRIPTION_DELETED,
}
"""The webhook events that change a Customer's standing; every other type is ignored."""

_PRECEDENCE = {
    PaymentState.PAYMENT_FAILED: 0,
    PaymentState.PAID: 1,
    PaymentState.SUBSCRIPTION_DELETED: 2,
}
"""Which state wins when two events carry the same second (``created`` has a one-second
grain): a payment that succeeded after a failure in the same second is the later one;
a deleted subscription bills no more."""


# -- what the operator asks Stripe for ----------------------------------------------------


def payment_state(text: str | None) -> PaymentState | None:
    """A recorded state; one this version does not know reads as none."""
    try:
        return PaymentState(text) if text is not None else None
    except ValueError:
        return None


def metadata(customer: Customer) -> dict[str, str]:
    """The metadata that ties a Stripe object to the Customer resource."""
    return {METADATA_UID: customer.metadata.uid or "", METADATA_CUSTOMER: customer.metadata.name}


def idempotency_key(uid: str, what: str, params: Mapping[str, Any]) -> str:
    """The key of one create: the same Customer, object and parameters always give the
    same key (Stripe keys may be up to 255 characters)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return f"smartserver-{uid}-{what}-{digest}"


def customer_params(customer: Customer) -> dict[str, Any]:
    """What a new Stripe customer is made with."""
    return {
        "name": customer.metadata.name,
        "email": customer.spec.email,
        "metadata": metadata(customer),
    }


def subscription_params(customer: Customer, customer_id: str, price_id: str) -> dict[str, Any]:
    """What a new subscription is made with."""
    return {"customer": customer_id, "price": price_id, "metadata": metadata(customer)}


def is_ours(found: Mapping[str, str], uid: str) -> bool:
    """Whether an object's metadata names the Customer ``uid``."""
    return bool(uid) and found.get(METADATA_UID) == uid


def is_live(subscription: SubscriptionView) -> bool:
    return subscription.status not in DEAD


def adoptable(
    subscriptions: Iterable[SubscriptionView], uid: str, price_id: str
) -> SubscriptionView | None:
    """A live subscription made for the Customer ``uid`` (one with the plan's price
    first): what a create whose answer was lost, or staff in Stripe's dashboard, made."""
    ours = [s for s in subscriptions if is_live(s) and is_ours(s.metadata, uid)]
    return min(ours, key=lambda s: s.price_id != price_id, default=None)


def sync_due(
    billing: BillingStatus | None,
    payment: PaymentRecord | None,
    price_id: str | None,
    last_reason: str | None,
    now: datetime,
    every: float,
) -> bool:
    """Whether a refresh must read the subscription from Stripe: it is not in step
    with the plan, the last pass did not finish, a webhook came since, the billing
    period ended, or it has not been read for ``every`` seconds. Otherwise the status
    is rebuilt from what was recorded, so Stripe calls do not grow with refreshes."""
    if billing is None or billing.customer_id is None or billing.subscription_id is None:
        return True
    if billing.price_id != price_id or billing.synced_at is None:
        return True
    if last_reason in (Reason.PROVIDER_UNAVAILABLE, Reason.SUBSCRIPTION_PENDING):
        return True
    if payment is not None and payment.event_created > billing.synced_at:
        return True
    if billing.current_period_end is not None and now >= billing.current_period_end:
        return True
    return (now - billing.synced_at).total_seconds() >= every


# -- what the status says ----------------------------------------------------------------


def major_units(minor: int, currency: str) -> float:
    """An amount in the smallest unit as the currency's own unit (2900 usd is 29.0)."""
    return float(minor) if currency.lower() in ZERO_DECIMAL else minor / 100


def money(amount: float | None, currency: str | None) -> str:
    if amount is None or currency is None:
        return "an unknown amount"
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount:.0f} {currency.upper()}"
    return f"{amount:.2f} {currency.upper()}"


def per_month(amount: float, interval: str | None, count: int) -> float | None:
    factor = PER_MONTH.get(interval or "")
    if factor is None or count < 1:
        return None
    return round(amount * factor / count, 2)


@dataclass(frozen=True)
class Account:
    """What one pass learned of the Customer's Stripe side: the ids and the
    subscription, or the problem that stopped it (a Billing condition verdict)."""

    customer_id: str | None = None
    subscription: SubscriptionView | None = None
    problem: Verdict | None = None


def observed_status(
    previous: BillingStatus | None, account: Account, now: datetime
) -> BillingStatus:
    """The billing fields after a pass that talked to Stripe. A pass that stopped on a
    problem keeps what was recorded (an outage does not blank the amount)."""
    status = (previous or BillingStatus()).model_copy(deep=True)
    if account.customer_id is not None:
        status.customer_id = account.customer_id
    subscription = account.subscription
    if subscription is None:
        return status
    status.subscription_id = subscription.id
    status.subscription_item_id = subscription.item_id
    status.price_id = subscription.price_id
    status.subscription_status = subscription.status
    status.current_period_end = subscription.current_period_end
    status.currency = subscription.currency
    count = subscription.interval_count
    status.interval = (
        None
        if subscription.interval is None
        else subscription.interval
        if count == 1
        else f"{count} {subscription.interval}s"
    )
    if subscription.unit_amount is not None and subscription.currency:
        amount = major_units(
            subscription.unit_amount * subscription.quantity, subscription.currency
        )
        status.amount = amount
        status.monthly_amount = per_month(amount, subscription.interval, count)
    if account.problem is None:
        status.synced_at = now
    return status


@dataclass(frozen=True)
class Standing:
    """The Customer's standing: the Billing condition, and whether billing suspends it."""

    state: BillingState
    condition: Verdict
    suspended: bool = False
    grace_ends_at: datetime | None = None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _grace(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{seconds:g} s"


def standing(
    status: BillingStatus,
    payment: PaymentRecord | None,
    problem: Verdict | None,
    grace_seconds: float,
    now: datetime,
) -> Standing:
    """The Customer's standing from the newest webhook event (``payment``), the
    subscription as last read, and the problem of the last pass, if any.

    A failed payment suspends only once the grace period from the first failure has
    run out; a paid invoice newer than the failure ends it; a deleted (or, as read
    from Stripe, canceled) subscription suspends at once. What Stripe says about
    payments outranks a problem in reaching Stripe, which outranks being set up."""
    state = payment_state(payment.state) if payment is not None else None
    if state is PaymentState.SUBSCRIPTION_DELETED or status.subscription_status in DEAD:
        subscription = (payment.subscription_id if payment else None) or status.subscription_id
        when = f" at {_when(payment.event_created)}" if payment else ""
        return Standing(
            BillingState.CANCELED,
            (
                "False",
                Reason.SUBSCRIPTION_CANCELED,
                f"subscription {subscription} was canceled in Stripe{when}: experiments serve "
                f"only their control variant. To resume, subscribe Stripe customer "
                f"{status.customer_id} again with metadata {METADATA_UID}=<this Customer's uid> "
                "(the operator adopts it); its first paid invoice resumes the Customer",
            ),
            suspended=True,
        )
    if state is PaymentState.PAYMENT_FAILED and payment is not None:
        ends = payment.since + timedelta(seconds=grace_seconds)
        owed = money(payment.amount, payment.currency)
        invoice = payment.invoice_id or "an invoice"
        if now < ends:
            return Standing(
                BillingState.PAST_DUE,
                (
                    "False",
                    Reason.PAYMENT_FAILED,
                    f"payment of {invoice} ({owed}) failed at {_when(payment.since)}; "
                    f"experiments keep serving until {_when(ends)} and serve only their "
                    "control variant after that, unless it is paid",
                ),
                grace_ends_at=ends,
            )
        return Standing(
            BillingState.SUSPENDED,
            (
                "False",
                Reason.PAYMENT_OVERDUE,
                f"{invoice} ({owed}) is unpaid since {_when(payment.since)}, longer than the "
                f"grace period of {_grace(grace_seconds)}: experiments serve only their "
                "control variant until it is paid",
            ),
            suspended=True,
            grace_ends_at=ends,
        )
    if problem is not None:
        kind = BillingState.ACTIVE if status.subscription_id else BillingState.PENDING
        return Standing(kind, problem)
    if status.subscription_id is None:
        return Standing(
            BillingState.PENDING,
            ("False", Reason.SUBSCRIPTION_PENDING, "the subscription is being made"),
        )
    period = (
        f", current period ends {_when(status.current_period_end)}"
        if status.current_period_end
        else ""
    )
    every = ""
    if status.interval:
        every = f" every {status.interval}" if " " in status.interval else f" a {status.interval}"
    return Standing(
        BillingState.ACTIVE,
        (
            "True",
            Reason.SUBSCRIPTION_ACTIVE,
            f"subscription {status.subscription_id} ({status.subscription_status or 'active'})"
            f" to {status.price_id}: {money(status.amount, status.currency)}{every}{period}",
        ),
    )


def billing_off(previous: BillingStatus | None) -> tuple[BillingStatus, Verdict]:
    """Billing without a Stripe key: nothing is charged or suspended. The recorded ids
    stay, so turning billing on again finds the same subscription."""
    status = (previous or BillingStatus()).model_copy(deep=True)
    status.state = BillingState.OFF
    status.suspended = False
    status.grace_ends_at = None
    return status, (
        "False",
        Reason.BILLING_NOT_CONFIGURED,
        "billing is off: the operator has no Stripe key (SMART_STRIPE_API_KEY); nobody is "
        "charged and billing never suspends",
    )


def billing_status(
    status: BillingStatus,
    payment: PaymentRecord | None,
    problem: Verdict | None,
    grace_seconds: float,
    now: datetime,
) -> tuple[BillingStatus, Verdict]:
    """``status`` completed with the standing: its state, suspension and grace end."""
    verdict = standing(status, payment, problem, grace_seconds, now)
    completed = status.model_copy(deep=True)
    completed.state = verdict.state
    completed.suspended = verdict.suspended
    completed.grace_ends_at = verdict.grace_ends_at
    return completed, verdict.condition


# -- what a webhook event means ----------------------------------------------------------


@dataclass(frozen=True)
class PaymentEvent:
    """One webhook event that changes a Customer's standing."""

    id: str
    type: str
    created: datetime
    state: PaymentState
    customer: str
    """The Customer resource's name (from the metadata)."""
    uid: str
    stripe_customer: str | None = None
    subscription_id: str | None = None
    invoice_id: str | None = None
    amount: float | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Ignored:
    """An event that changes nothing, and why."""

    reason: str


def _id(value: Any) -> str | None:
    """An id that may come expanded into its object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def read_event(event: Mapping[str, Any]) -> PaymentEvent | Ignored:
    """What a verified webhook event means for a Customer, or why it means nothing.

    Invoices name their subscription and its metadata under
    ``parent.subscription_details`` (API versions since 2025-03-31) or
    ``subscription`` and ``subscription_details`` (earlier ones); both are read."""
    kind = event.get("type")
    state = EVENT_STATES.get(kind) if isinstance(kind, str) else None
    if state is None or not isinstance(kind, str):
        return Ignored(f"event type {kind!r} does not change a Customer's standing")
    event_id, created = event.get("id"), event.get("created")
    obj = _mapping(_mapping(event.get("data")).get("object"))
    if not isinstance(event_id, str) or not isinstance(created, int) or not obj:
        return Ignored("the event has no id, created time or object")
    if kind == "customer.subscription.deleted":
        meta = _mapping(obj.get("metadata"))
        subscription, invoice, amount_minor = _id(obj.get("id")), None, None
    else:
        details = _mapping(_mapping(obj.get("parent")).get("subscription_details"))
        legacy = _mapping(obj.get("subscription_details"))
        meta = _mapping(details.get("metadata")) or _mapping(legacy.get("metadata"))
        subscription = _id(details.get("subscription")) or _id(obj.get("subscription"))
        invoice = _id(obj.get("id"))
        field = "amount_paid" if state is PaymentState.PAID else "amount_due"
        amount_minor = obj.get(field)
    name, uid = meta.get(METADATA_CUSTOMER), meta.get(METADATA_UID)
    if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid:
        return Ignored(
            f"the event's subscription has no {METADATA_CUSTOMER} and {METADATA_UID} "
            "metadata: it was not made by the operator"
        )
    currency = obj.get("currency") if isinstance(obj.get("currency"), str) else None
    amount = (
        major_units(amount_minor, currency)
        if isinstance(amount_minor, int) and currency is not None
        else None
    )
    return PaymentEvent(
        id=event_id,
        type=kind,
        created=datetime.fromtimestamp(created, UTC),
        state=state,
        customer=name,
        uid=uid,
        stripe_customer=_id(obj.get("customer")),
        subscription_id=subscription,
        invoice_id=invoice,
        amount=amount,
        currency=currency,
    )


@dataclass(frozen=True)
class Skip:
    """The event needs no write, and why (``duplicate``, ``older``, ``other_customer``,
    ``other_subscription``)."""

    reason: str
    message: str


def record_event(
    previous: PaymentRecord | None,
    event: PaymentEvent,
    uid: str | None,
    subscription_id: str | None,
) -> PaymentRecord | Skip:
    """The Customer's payment record once ``event`` is applied, or why it stays.

    ``uid`` is the Customer's, ``subscription_id`` the one the operator recorded (an
    event about another subscription, or a Customer of the same name made anew, is
    not this Customer's). The newest event by ``created`` decides the state; an older
    one is skipped, except that an older failure moves the start of a run of failures
    back (the grace period counts from the first). A run of one state keeps its start.
    """
    if uid is not None and event.uid != uid:
        return Skip(
            "other_customer", f"the event is for Customer uid {event.uid}, this one is {uid}"
        )
    if subscription_id and event.subscription_id and event.subscription_id != subscription_id:
        return Skip(
            "other_subscription",
            f"the event is about subscription {event.subscription_id}; the Customer's is "
            f"{subscription_id}",
        )
    if previous is not None and event.id in previous.seen:
        return Skip("duplicate", f"event {event.id} was received before")
    seen = [*(previous.seen if previous else []), event.id][-SEEN_EVENTS:]
    if previous is not None:
        current = payment_state(previous.state)
        order = (event.created, _PRECEDENCE[event.state])
        recorded = (previous.event_created, _PRECEDENCE[current] if current else -1)
        if order < recorded:
            if current is event.state and event.created < previous.since:
                return previous.model_copy(update={"since": event.created, "seen": seen})
            return Skip(
                "older",
                f"event {event.id} ({event.type}) is older than the recorded "
                f"{previous.event_id} ({previous.event_type})",
            )
        if current is event.state:
            return previous.model_copy(
                update={
                    "event_id": event.id,
                    "event_type": event.type,
                    "event_created": event.created,
                    "invoice_id": event.invoice_id or previous.invoice_id,
                    "subscription_id": event.subscription_id or previous.subscription_id,
                    "amount": event.amount if event.amount is not None else previous.amount,
                    "currency": event.currency or previous.currency,
                    "seen": seen,
                }
            )
    return PaymentRecord(
        state=event.state.value,
        since=event.created,
        event_id=event.id,
        event_type=event.type,
        event_created=event.created,
        invoice_id=event.invoice_id,
        subscription_id=event.subscription_id,
        amount=event.amount,
        currency=event.currency,
        seen=seen,
    )


# -- revenue -----------------------------------------------------------------------------


def monthly_revenue(statuses: Iterable[BillingStatus | None]) -> dict[str, float]:
    """What the subscriptions in good standing bring in a month, by currency."""
    totals: dict[str, float] = {}
    for status in statuses:
        if (
            status is None
            or status.state != BillingState.ACTIVE
            or status.monthly_amount is None
            or status.currency is None
        ):
            continue
        currency = status.currency.lower()
        totals[currency] = round(totals.get(currency, 0.0) + status.monthly_amount, 2)
    return totals
