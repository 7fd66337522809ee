"""The pure billing decisions: idempotency keys, what a webhook event means, how events
that arrive twice or out of order are recorded, when the grace period is over, and
what the subscriptions bring in a month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smart_operator import billing
from smart_operator.models.conditions import Reason
from smart_operator.models.customer import BillingStatus, PaymentRecord
from smart_operator.ports import SubscriptionView
from smart_sim.stripemock import webhook_event

UID = "5f0c-uid"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GRACE = 3 * 24 * 3600.0


def event(type: str, at: datetime, **changes: Any) -> billing.PaymentEvent:
    read = billing.read_event(
        webhook_event(type, customer="acme", uid=UID, created=int(at.timestamp()), **changes)
    )
    assert isinstance(read, billing.PaymentEvent), read
    return read


def apply(*events: billing.PaymentEvent) -> PaymentRecord | None:
    record: PaymentRecord | None = None
    for e in events:
        result = billing.record_event(record, e, UID, None)
        if isinstance(result, PaymentRecord):
            record = result
    return record


# -- idempotency keys ---------------------------------------------------------------------


def test_the_same_create_gets_the_same_key_and_another_create_another() -> None:
    params = {"customer": "cus_1", "price": "price_a", "metadata": {"x": "1"}}
    key = billing.idempotency_key(UID, "subscription", params)
    assert key == billing.idempotency_key(UID, "subscription", dict(reversed(params.items())))
    assert key.startswith(f"smartserver-{UID}-subscription-") and len(key) <= 255
    assert key != billing.idempotency_key(UID, "subscription", {**params, "price": "price_b"})
    assert key != billing.idempotency_key("other-uid", "subscription", params)
    assert key != billing.idempotency_key(UID, "customer", params)


# -- what an event means ------------------------------------------------------------------


def test_an_invoice_event_names_the_customer_subscription_and_amount() -> None:
    read = event("invoice.payment_failed", T0, subscription="sub_9", amount=9900)
    assert (read.customer, read.uid, read.subscription_id) == ("acme", UID, "sub_9")
    assert (read.state, read.amount, read.currency) == ("PaymentFailed", 99.0, "usd")
    assert read.created == T0 and read.invoice_id and read.invoice_id.startswith("in_")
    assert read.stripe_customer == "cus_test"


def test_an_invoice_in_an_older_api_versions_shape_is_read_too() -> None:
    body = webhook_event("invoice.paid", customer="acme", uid=UID, created=int(T0.timestamp()))
    invoice = body["data"]["object"]
    details = invoice.pop("parent")["subscription_details"]
    invoice["subscription"] = {"id": details["subscription"], "object": "subscription"}
    invoice["subscription_details"] = {"metadata": details["metadata"]}
    read = billing.read_event(body)
    assert isinstance(read, billing.PaymentEvent)
    assert (read.subscription_id, read.customer) == ("sub_test", "acme")


def test_a_deleted_subscription_event_reads_its_own_metadata() -> None:
    read = event("customer.subscription.deleted", T0, subscription="sub_7")
    assert (read.state, read.subscription_id, read.invoice_id) == (
        "SubscriptionDeleted",
        "sub_7",
        None,
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "invoice.created"}, "does not change"),
        ({"type": "charge.succeeded"}, "does not change"),
        ({"metadata": {}}, "not made by the operator"),
        ({"id": None}, "no id"),
    ],
)
def test_events_that_change_nothing_say_why(change: dict[str, Any], why: str) -> None:
    body = webhook_event("invoice.paid", customer="acme", uid=UID)
    if "metadata" in change:
        body["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    else:
        body.update(change)
    read = billing.read_event(body)
    assert isinstance(read, billing.Ignored) and why in read.reason


# -- recording: duplicates and order ------------------------------------------------------


def test_a_redelivered_event_changes_nothing() -> None:
    failed = event("invoice.payment_failed", T0)
    record = apply(failed)
    again = billing.record_event(record, failed, UID, None)
    assert isinstance(again, billing.Skip) and again.reason == "duplicate"


def test_an_older_event_arriving_late_changes_nothing() -> None:
    paid = event("invoice.paid", T0 + timedelta(hours=1))
    failed = event("invoice.payment_failed", T0)
    record = apply(paid)
    late = billing.record_event(record, failed, UID, None)
    assert isinstance(late, billing.Skip) and late.reason == "older"
    assert apply(paid, failed) == apply(paid)
    assert apply(failed, paid) is not None and apply(failed, paid).state == "Paid"  # type: ignore[union-attr]


def test_a_run_of_failures_counts_from_the_first() -> None:
    first = event("invoice.payment_failed", T0)
    retry = event("invoice.payment_failed", T0 + timedelta(days=1))
    record = apply(first, retry)
    assert record is not None and record.since == T0 and record.event_id == retry.id
    # Out of order: the retry first, then the first failure moves the start back.
    swapped = apply(retry, first)
    assert swapped is not None and swapped.since == T0 and swapped.event_id == retry.id
    assert first.id in swapped.seen and retry.id in swapped.seen


def test_in_the_same_second_a_payment_outranks_a_failure() -> None:
    failed = event("invoice.payment_failed", T0)
    paid = event("invoice.paid", T0)
    assert apply(failed, paid).state == "Paid"  # type: ignore[union-attr]
    assert apply(paid, failed).state == "Paid"  # type: ignore[union-attr]


def test_events_of_another_customer_or_subscription_are_not_this_ones() -> None:
    paid = event("invoice.paid", T0, subscription="sub_old")
    other = billing.record_event(None, paid, "someone-else", None)
    assert isinstance(other, billing.Skip) and other.reason == "other_customer"
    old = billing.record_event(None, paid, UID, "sub_new")
    assert isinstance(old, billing.Skip) and old.reason == "other_subscription"


def test_the_record_remembers_a_bounded_number_of_events() -> None:
    events = [event("invoice.paid", T0 + timedelta(minutes=i)) for i in range(50)]
    record = apply(*events)
    assert record is not None and len(record.seen) == billing.SEEN_EVENTS
    assert record.seen[-1] == events[-1].id


# -- standing -----------------------------------------------------------------------------

ACTIVE = BillingStatus(
    customer_id="cus_1",
    subscription_id="sub_1",
    price_id="price_a",
    subscription_status="active",
    amount=29.0,
    currency="usd",
    interval="month",
)


def test_within_the_grace_period_a_failure_is_past_due_not_suspended() -> None:
    record = apply(event("invoice.payment_failed", T0))
    before = billing.standing(ACTIVE, record, None, GRACE, T0 + timedelta(days=2, hours=23))
    assert (before.state, before.suspended) == ("PastDue", False)
    assert before.condition[1] is Reason.PAYMENT_FAILED
    assert before.grace_ends_at == T0 + timedelta(days=3)
    after = billing.standing(ACTIVE, record, None, GRACE, T0 + timedelta(days=3))
    assert (after.state, after.suspended) == ("Suspended", True)
    assert after.condition[1] is Reason.PAYMENT_OVERDUE and "3 days" in after.condition[2]


def test_a_paid_invoice_ends_a_suspension_and_a_deletion_suspends_at_once() -> None:
    paid = apply(event("invoice.payment_failed", T0), event("invoice.paid", T0 + timedelta(4)))
    assert billing.standing(ACTIVE, paid, None, GRACE, T0 + timedelta(5)).suspended is False
    deleted = apply(event("customer.subscription.deleted", T0))
    canceled = billing.standing(ACTIVE, deleted, None, GRACE, T0)
    assert (canceled.state, canceled.suspended) == ("Canceled", True)
    assert "metadata smartserver_uid" in canceled.condition[2]


def test_a_subscription_read_as_canceled_suspends_without_a_webhook() -> None:
    read = ACTIVE.model_copy(update={"subscription_status": "canceled"})
    assert billing.standing(read, None, None, GRACE, T0).suspended is True


def test_what_stripe_said_outranks_a_problem_reaching_it() -> None:
    problem = ("False", Reason.PROVIDER_UNAVAILABLE, "Stripe did not answer")
    record = apply(event("invoice.payment_failed", T0))
    overdue = billing.standing(ACTIVE, record, problem, GRACE, T0 + timedelta(days=4))
    assert overdue.suspended and overdue.condition[1] is Reason.PAYMENT_OVERDUE
    fine = billing.standing(ACTIVE, None, problem, GRACE, T0)
    assert (fine.state, fine.condition[1]) == ("Active", Reason.PROVIDER_UNAVAILABLE)
    pending = billing.standing(BillingStatus(), None, problem, GRACE, T0)
    assert pending.state == "Pending"


def test_an_active_subscription_says_what_it_charges() -> None:
    verdict = billing.standing(ACTIVE, None, None, GRACE, T0)
    assert verdict.condition[0] == "True" and "29.00 USD a month" in verdict.condition[2]


# -- when to ask Stripe -------------------------------------------------------------------


def test_a_refresh_reads_stripe_only_when_something_calls_for_it() -> None:
    synced = ACTIVE.model_copy(
        update={"synced_at": T0, "current_period_end": T0 + timedelta(days=20)}
    )
    due = billing.sync_due
    assert not due(synced, None, "price_a", "SubscriptionActive", T0 + timedelta(hours=1), 3600 * 6)
    assert due(synced, None, "price_b", None, T0, 3600 * 6)  # the plan changed
    assert due(synced, None, "price_a", "ProviderUnavailable", T0, 3600 * 6)
    assert due(synced, None, "price_a", None, T0 + timedelta(hours=6), 3600 * 6)
    assert due(synced, None, "price_a", None, T0 + timedelta(days=21), 10**9)  # period over
    webhook = apply(event("invoice.paid", T0 + timedelta(minutes=5)))
    assert due(synced, webhook, "price_a", None, T0 + timedelta(minutes=6), 3600 * 6)
    assert due(None, None, "price_a", None, T0, 3600 * 6)


# -- amounts ------------------------------------------------------------------------------


def test_amounts_in_major_units_and_per_month() -> None:
    assert billing.major_units(2900, "usd") == 29.0
    assert billing.major_units(2900, "JPY") == 2900.0
    assert billing.per_month(120.0, "year", 1) == 10.0
    assert billing.per_month(30.0, "month", 3) == 10.0
    assert billing.per_month(12.0, "week", 1) == 52.0
    assert billing.per_month(1.0, "fortnight", 1) is None
    assert billing.money(29.0, "usd") == "29.00 USD" and billing.money(500, "jpy") == "500 JPY"


def test_revenue_counts_subscriptions_in_good_standing_by_currency() -> None:
    statuses = [
        ACTIVE.model_copy(update={"state": "Active", "monthly_amount": 29.0}),
        ACTIVE.model_copy(update={"state": "Active", "monthly_amount": 99.0}),
        ACTIVE.model_copy(update={"state": "Suspended", "monthly_amount": 99.0}),
        ACTIVE.model_copy(update={"state": "Active", "monthly_amount": 10.0, "currency": "EUR"}),
        None,
    ]
    assert billing.monthly_revenue(statuses) == {"usd": 128.0, "eur": 10.0}


def test_a_live_subscription_made_for_the_customer_is_adopted_first_with_the_plans_price() -> None:
    def sub(id: str, status: str, price: str, uid: str = UID) -> SubscriptionView:
        return SubscriptionView(id, "cus_1", status, {"smartserver_uid": uid}, "si", price)

    found = billing.adoptable(
        [
            sub("a", "canceled", "price_a"),
            sub("b", "active", "price_b"),
            sub("c", "active", "price_a", uid="another"),
            sub("d", "past_due", "price_a"),
        ],
        UID,
        "price_a",
    )
    assert found is not None and found.id == "d"
    assert billing.adoptable([sub("a", "incomplete_expired", "price_a")], UID, "price_a") is None
