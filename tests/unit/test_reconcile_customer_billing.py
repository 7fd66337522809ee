"""The Customer reconciler's billing, driven through fakes of its ports: a Stripe
customer and a subscription to the plan's price, made once (idempotency keys, look-up
before create) and kept in step with the plan; Stripe failures as conditions; the
payment record (what the intake writes from Stripe's webhooks) turned into the Billing
and Suspended conditions, the phase and Events; and experiments that serve only their
control while billing suspends the Customer."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smart_operator import billing, experiments
from smart_operator.errors import PermanentFailure, TemporaryFailure
from smart_operator.keys import generate_ssh_key
from smart_operator.models.customer import Customer, CustomerStatus
from smart_operator.models.experiment import Experiment, ExperimentStatus
from smart_operator.plans import Catalog, Plan
from smart_operator.ports import ObjectRef
from smart_operator.reconcile.customer import CustomerReconciler
from smart_operator.reconcile.experiment import ExperimentReconciler
from smart_operator.reconcile.status import StatusWriter
from smart_operator.settings import OperatorSettings
from smart_sim.stripemock import webhook_event
from tests.unit.fake_stripe import FakeStripe
from tests.unit.fakes import FakeDeployer, FakeEvents, FakeResources

UID = "0b9c2f4e-5d1a-4c3b-9e8f-7a6b5c4d3e2f"
REF = ObjectRef("customers", "acme")
NS = "customer-acme"
GRACE = 3 * 24 * 3600.0
START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
CATALOG = Catalog(
    {
        "starter": Plan(
            title="Starter",
            price_monthly=29,
            domains=1,
            experiments=3,
            stripe_price_id="price_starter",
        ),
        "pro": Plan(
            title="Pro", price_monthly=99, domains=5, experiments=20, stripe_price_id="price_pro"
        ),
        "free": Plan(title="Free", price_monthly=0, domains=1, experiments=1),
    }
)


def customer_body(plan: str = "starter", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": "acme", "uid": UID, "generation": 1},
        "spec": {"email": "founder@acme.example", "plan": plan, **spec},
    }


class World:
    """One Customer in a fake cluster, a fake Stripe, and a clock the test moves."""

    def __init__(self, stripe_on: bool = True, search_lag: int = 0) -> None:
        self.resources = FakeResources()
        self.stripe = FakeStripe(search_lag=search_lag)
        self.events = FakeEvents()
        self.stripe_on = stripe_on
        self.now = START
        self.resources.put(REF, customer_body())

    @property
    def body(self) -> dict[str, Any]:
        return self.resources.objects[REF]

    def reconciler(self, lock: asyncio.Lock | None = None) -> CustomerReconciler:
        """Built from the object as it is now, as each handler call does."""
        customer = Customer.model_validate(self.body)
        writer = StatusWriter(
            customer.status or CustomerStatus(),
            functools.partial(self.resources.patch_status, REF),
            self.events,
        )
        return CustomerReconciler(
            customer,
            resources=self.resources,
            plans=CATALOG,
            servers=None,
            eur_to_usd=1.0,
            writer=writer,
            events=self.events,
            billing=self.stripe if self.stripe_on else None,
            grace_seconds=GRACE,
            domains=lambda _: (),
            clock=lambda: self.now,
            lock=lock,
        )

    async def apply(self) -> None:
        await self.reconciler().apply()

    async def refresh(self) -> None:
        await self.reconciler().refresh()

    def status(self) -> CustomerStatus:
        return CustomerStatus.model_validate(self.body.get("status") or {})

    def condition(self, type: str) -> dict[str, Any]:
        return next(c for c in self.body["status"]["conditions"] if c["type"] == type)

    def webhook(self, type: str, at: datetime, **changes: Any) -> None:
        """What the intake writes when Stripe's webhook delivers an event."""
        recorded = self.status().billing
        event = billing.read_event(
            webhook_event(
                type,
                customer="acme",
                uid=UID,
                subscription=recorded.subscription_id if recorded else "sub_x",
                created=int(at.timestamp()),
                **changes,
            )
        )
        assert isinstance(event, billing.PaymentEvent)
        record = billing.record_event(self.status().payment, event, UID, None)
        assert not isinstance(record, billing.Skip), record
        self.body.setdefault("status", {})["payment"] = record.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )

    def creates(self) -> tuple[int, int]:
        return self.stripe.calls["create_customer"], self.stripe.calls["create_subscription"]


@pytest.fixture
def world() -> World:
    return World()


# -- the subscription ---------------------------------------------------------------------


async def test_a_customer_gets_a_stripe_customer_and_a_subscription_to_its_plans_price(
    world: World,
) -> None:
    await world.apply()
    (customer,) = world.stripe.customers.values()
    (subscription,) = world.stripe.subscriptions.values()
    assert customer.metadata == {"smartserver_uid": UID, "smartserver_customer": "acme"}
    assert customer.email == "founder@acme.example"
    assert (subscription.customer, subscription.price_id) == (customer.id, "price_starter")
    assert subscription.metadata["smartserver_uid"] == UID

    recorded = world.status().billing
    assert recorded is not None
    assert (recorded.customer_id, recorded.subscription_id) == (customer.id, subscription.id)
    assert recorded.subscription_item_id == subscription.item_id
    assert (recorded.state, recorded.suspended) == ("Active", False)
    assert (recorded.amount, recorded.currency, recorded.monthly_amount) == (29.0, "usd", 29.0)
    assert recorded.current_period_end == subscription.current_period_end
    condition = world.condition("Billing")
    assert (condition["status"], condition["reason"]) == ("True", "SubscriptionActive")
    assert "29.00 USD a month" in condition["message"]
    assert world.condition("Suspended")["status"] == "False"
    assert {"BillingCustomerCreated", "SubscriptionCreated", "SubscriptionActive"} <= set(
        world.events.reasons("Normal")
    )


async def test_every_create_carries_a_key_from_the_uid_and_what_it_makes(world: World) -> None:
    await world.apply()
    keys = list(world.stripe.keys)
    assert len(keys) == 2 and all(k.startswith(f"smartserver-{UID}-") for k in keys)
    assert {k.split(f"{UID}-")[1].split("-")[0] for k in keys} == {"customer", "subscription"}


async def test_later_passes_make_nothing_new_and_a_refresh_asks_stripe_nothing(
    world: World,
) -> None:
    await world.apply()
    await world.apply()
    assert world.creates() == (1, 1)
    calls = dict(world.stripe.calls)
    world.now += timedelta(minutes=5)
    await world.refresh()
    assert dict(world.stripe.calls) == calls  # nothing due: rebuilt from what was recorded
    world.now += timedelta(days=40)  # the billing period ended: read it again
    await world.refresh()
    assert world.stripe.calls["get_subscription"] == calls.get("get_subscription", 0) + 1
    assert world.creates() == (1, 1)


async def test_passes_that_overlap_make_one_customer_and_one_subscription() -> None:
    world = World(search_lag=10)
    lock = asyncio.Lock()  # the handlers' context gives every pass of a Customer one
    spec_changed, quota_changed = world.reconciler(lock), world.reconciler(lock)
    await asyncio.gather(spec_changed.apply(), quota_changed.refresh())
    assert world.creates() == (1, 1)
    # Without it, both find nothing and both create: only Stripe's idempotency keys
    # (the same for both) would keep the second from being a second subscription.
    racing = World(search_lag=10)
    await asyncio.gather(racing.reconciler().apply(), racing.reconciler().refresh())
    assert racing.creates() == (2, 2)
    assert (len(racing.stripe.customers), len(racing.stripe.subscriptions)) == (1, 1)


async def test_a_create_whose_answer_was_lost_is_sent_again_with_the_same_key() -> None:
    world = World(search_lag=10)  # search cannot find the new customer yet
    world.stripe.lose_next = True
    await world.apply()
    assert world.condition("Billing")["reason"] == "ProviderUnavailable"
    assert len(world.stripe.customers) == 1 and world.status().billing is not None
    assert world.status().billing.customer_id is None  # the answer never came

    world.stripe.lose_next = True  # the customer's create is answered now; the next is lost
    await world.apply()
    assert len(world.stripe.customers) == 1  # the same key gave the same customer back
    assert world.status().billing.customer_id in world.stripe.customers  # recorded at once
    assert len(world.stripe.subscriptions) == 1
    assert world.condition("Billing")["reason"] == "ProviderUnavailable"

    await world.apply()
    assert (len(world.stripe.customers), len(world.stripe.subscriptions)) == (1, 1)
    assert world.condition("Billing")["reason"] == "SubscriptionActive"


async def test_a_customer_made_before_is_found_by_the_customers_uid(world: World) -> None:
    await world.apply()
    world.body["status"].pop("billing")  # the status was lost (restored from a backup)
    await world.apply()
    assert world.creates() == (1, 1)
    assert world.stripe.calls["find_customer"] == 2
    recorded = world.status().billing
    assert recorded is not None and recorded.subscription_id in world.stripe.subscriptions


async def test_a_plan_change_moves_the_subscriptions_item_to_the_new_price(world: World) -> None:
    await world.apply()
    (subscription_id,) = world.stripe.subscriptions
    world.body["spec"]["plan"] = "pro"
    await world.apply()
    assert world.stripe.calls["change_price"] == 1
    assert world.stripe.subscriptions[subscription_id].price_id == "price_pro"
    assert world.creates() == (1, 1)
    recorded = world.status().billing
    assert recorded is not None and (recorded.price_id, recorded.amount) == ("price_pro", 99.0)
    assert "SubscriptionChanged" in world.events.reasons("Normal")


async def test_an_email_change_reaches_the_stripe_customer(world: World) -> None:
    await world.apply()
    world.body["spec"]["email"] = "billing@acme.example"
    await world.apply()
    (customer,) = world.stripe.customers.values()
    assert customer.email == "billing@acme.example"


async def test_without_a_stripe_key_billing_is_off_and_says_so() -> None:
    world = World(stripe_on=False)
    await world.apply()
    condition = world.condition("Billing")
    assert (condition["status"], condition["reason"]) == ("False", "BillingNotConfigured")
    assert "SMART_STRIPE_API_KEY" in condition["message"]
    status = world.status()
    assert status.billing is not None and status.billing.state == "Off"
    assert (status.phase, world.condition("Suspended")["status"]) == ("Active", "False")
    assert world.resources.namespaces == {NS}
    assert world.stripe.calls == {}


async def test_a_plan_without_a_stripe_price_is_a_warning_condition(world: World) -> None:
    world.body["spec"]["plan"] = "free"
    await world.apply()
    condition = world.condition("Billing")
    assert (condition["status"], condition["reason"]) == ("False", "PriceMissing")
    assert "stripe_price_id" in condition["message"]
    assert "PriceMissing" in world.events.reasons("Warning")
    assert world.resources.namespaces == {NS} and world.creates() == (0, 0)


async def test_stripe_unavailable_is_a_condition_and_the_rest_is_applied(world: World) -> None:
    world.stripe.fail("create_customer", TemporaryFailure("stripe", "HTTP 503"))
    await world.apply()
    condition = world.condition("Billing")
    assert (condition["status"], condition["reason"]) == ("False", "ProviderUnavailable")
    assert world.resources.namespaces == {NS}
    assert world.status().billing is not None and world.status().billing.state == "Pending"
    await world.refresh()  # a pass that did not finish is due again
    assert world.condition("Billing")["reason"] == "SubscriptionActive"


async def test_stripe_refusing_is_a_warning_that_names_what_it_refused(world: World) -> None:
    world.stripe.fail(
        "create_subscription", PermanentFailure("stripe", "No such price: 'price_starter'")
    )
    await world.apply()
    condition = world.condition("Billing")
    assert condition["reason"] == "ProviderRejected" and "No such price" in condition["message"]
    assert world.status().billing is not None and world.status().billing.customer_id
    assert "ProviderRejected" in world.events.reasons("Warning")


async def test_a_canceled_subscription_is_not_replaced_but_an_adopted_one_is_used(
    world: World,
) -> None:
    await world.apply()
    (old,) = world.stripe.subscriptions
    world.stripe.set_status(old, "canceled")
    world.now += timedelta(days=40)
    await world.refresh()
    assert world.creates() == (1, 1)
    assert world.condition("Suspended")["reason"] == "SubscriptionCanceled"
    # Staff subscribe the customer again in Stripe; the operator adopts that one.
    customer_id = world.status().billing.customer_id
    new = world.stripe.add_subscription(customer_id, "price_starter", UID)
    await world.apply()
    assert world.status().billing.subscription_id == new.id and world.creates() == (1, 1)
    assert world.condition("Billing")["reason"] == "SubscriptionActive"


async def test_deleting_the_customer_cancels_its_subscription(world: World) -> None:
    await world.apply()
    assert await world.reconciler().delete()
    (subscription,) = world.stripe.subscriptions.values()
    assert subscription.status == "canceled"
    assert await world.reconciler().delete()  # a second deletion has nothing to cancel
    assert world.stripe.calls["cancel_subscription"] == 1


# -- payments: what the webhooks said -----------------------------------------------------


async def test_a_failed_payment_suspends_only_once_the_grace_period_is_over(
    world: World,
) -> None:
    await world.apply()
    failed_at = world.now
    world.webhook("invoice.payment_failed", failed_at)
    world.now = failed_at + timedelta(hours=1)
    await world.refresh()
    condition = world.condition("Billing")
    assert (condition["status"], condition["reason"]) == ("False", "PaymentFailed")
    assert "2026-12-07 09:00 UTC" in condition["message"]  # when the grace period ends
    status = world.status()
    assert status.billing is not None and status.billing.state == "PastDue"
    assert status.billing.grace_ends_at == failed_at + timedelta(seconds=GRACE)
    assert (status.phase, world.condition("Suspended")["status"]) == ("Active", "False")
    assert "PaymentFailed" in world.events.reasons("Warning")

    world.now = failed_at + timedelta(seconds=GRACE + 1)
    await world.refresh()
    suspended = world.condition("Suspended")
    assert (suspended["status"], suspended["reason"]) == ("True", "PaymentOverdue")
    assert "only their control variant" in suspended["message"]
    status = world.status()
    assert (status.phase, status.billing.state, status.billing.suspended) == (
        "Suspended",
        "Suspended",
        True,
    )
    assert world.body["spec"].get("suspended") is None  # staff's switch is left alone
    assert "PaymentOverdue" in world.events.reasons("Warning")

    world.webhook("invoice.paid", world.now)
    world.now += timedelta(minutes=1)
    await world.refresh()
    assert world.condition("Suspended")["reason"] == "Active"
    assert world.condition("Billing")["reason"] == "SubscriptionActive"
    assert (world.status().phase, world.status().billing.suspended) == ("Active", False)
    assert world.events.posted[-1][:2] in {("Normal", "Active"), ("Normal", "SubscriptionActive")}


async def test_a_deleted_subscription_suspends_at_once(world: World) -> None:
    await world.apply()
    world.webhook("customer.subscription.deleted", world.now)
    await world.refresh()
    suspended = world.condition("Suspended")
    assert (suspended["status"], suspended["reason"]) == ("True", "SubscriptionCanceled")
    assert world.status().billing.state == "Canceled"
    assert "SubscriptionCanceled" in world.events.reasons("Warning")


async def test_staff_and_billing_suspension_stand_side_by_side(world: World) -> None:
    await world.apply()
    world.webhook("invoice.payment_failed", world.now - timedelta(days=4))
    world.body["spec"]["suspended"] = True
    await world.apply()
    suspended = world.condition("Suspended")
    assert suspended["reason"] == "SuspendedBySpec" and "billing" in suspended["message"]
    world.body["spec"]["suspended"] = False
    await world.apply()
    assert world.condition("Suspended")["reason"] == "PaymentOverdue"
    assert world.status().phase == "Suspended"


async def test_without_a_key_billing_never_suspends(world: World) -> None:
    await world.apply()
    world.webhook("customer.subscription.deleted", world.now)
    world.stripe_on = False
    await world.refresh()
    assert world.condition("Suspended")["status"] == "False"
    assert world.status().billing.state == "Off"
    assert world.status().billing.subscription_id  # kept for when billing is on again


# -- experiments of a suspended Customer ----------------------------------------------------

HOST_KEY = generate_ssh_key("root@server")
OPERATOR_KEY = generate_ssh_key("smart-operator")


def domain_body() -> dict[str, Any]:
    return {
        "kind": "Domain",
        "metadata": {"name": "shop", "namespace": NS, "uid": "d-1", "generation": 1},
        "spec": {"domain": "shop.example"},
        "status": {
            "server": {"id": 7, "ipv4": "198.18.0.7", "hostPublicKey": HOST_KEY.public},
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": "",
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                }
                for kind, reason in (("ServerReady", "Running"), ("AgentInstalled", "Installed"))
            ],
        },
    }


def experiment_body() -> dict[str, Any]:
    return {
        "kind": "Experiment",
        "metadata": {"name": "hero", "namespace": NS, "uid": "e-1", "generation": 1},
        "spec": {
            "domainRef": "shop",
            "type": "landing_page",
            "template": "saas_landing",
            "templateConfig": {"stripeLink": "https://buy.stripe.com/test_acme"},
            "variants": [{"name": "control"}, {"name": "bold", "values": {"headline": "Go"}}],
        },
    }


async def test_a_customer_suspended_by_billing_serves_only_the_control(world: World) -> None:
    deployer = FakeDeployer()
    world.resources.put(ObjectRef("domains", "shop", NS), domain_body())
    ref = ObjectRef("experiments", "hero", NS)
    world.resources.put(ref, experiment_body())

    async def serving() -> list[str]:
        experiment = Experiment.model_validate(world.resources.objects[ref])
        await ExperimentReconciler(
            experiment,
            resources=world.resources,
            deployer=deployer,
            client_private_key=OPERATOR_KEY.private,
            settings=OperatorSettings(),
            writer=StatusWriter(
                experiment.status or ExperimentStatus(),
                functools.partial(world.resources.patch_status, ref),
                FakeEvents(),
                experiments.summarize,
            ),
            events=FakeEvents(),
        ).run()
        return list(world.resources.objects[ref]["status"]["serving"])

    await world.apply()
    assert await serving() == ["control", "bold"]
    world.webhook("invoice.payment_failed", world.now - timedelta(seconds=GRACE + 60))
    await world.refresh()
    assert await serving() == ["control"]
    world.webhook("invoice.paid", world.now)
    await world.refresh()
    assert await serving() == ["control", "bold"]
    assert deployer.uploads == 3
