"""The Stripe client (``clients.stripe``) and the Customer reconciler's billing against
stripe-mock, Stripe's own mock server, over loopback HTTP through the official SDK.

stripe-mock validates every request against Stripe's OpenAPI specification (unknown
parameters, wrong enum values and missing credentials are refused) and answers from
fixtures: it keeps no state. So these tests prove what the wire shows, through a
recording proxy in front of it: the operator's requests are accepted by Stripe's own
specification, every create carries an idempotency key derived from the Customer's
uid, the ids stripe-mock hands back are the ones recorded on the status, a second
reconcile of a recorded subscription creates nothing, and failures arrive as the
errors of ``smart_operator.errors``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from smart_operator.clients.stripe import StripeBilling
from smart_operator.errors import PermanentFailure, TemporaryFailure
from smart_operator.models.customer import Customer, CustomerStatus
from smart_operator.plans import Catalog, Plan
from smart_operator.ports import ObjectRef
from smart_operator.reconcile.customer import CustomerReconciler
from smart_operator.reconcile.status import StatusWriter
from smart_sim.controlplane.cluster import free_port
from smart_sim.stripemock import API_KEY, Recorder, StripeMock, fixture_price
from tests.unit.fakes import FakeEvents, FakeResources

UID = "7d3f2a10-1c2b-4e5f-8a9b-0c1d2e3f4a5b"
REF = ObjectRef("customers", "acme")
PRO_PRICE = "price_pro_smartserver"


@pytest.fixture(scope="module")
def stripe_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StripeMock]:
    with StripeMock(tmp_path_factory.mktemp("stripe-mock")) as mock:
        yield mock


@pytest.fixture
def recorder(stripe_mock: StripeMock) -> Iterator[Recorder]:
    with Recorder(stripe_mock.url) as proxy:
        yield proxy


@pytest.fixture
async def stripe(recorder: Recorder) -> AsyncIterator[StripeBilling]:
    client = StripeBilling(API_KEY, recorder.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
def catalog(stripe_mock: StripeMock) -> Catalog:
    # stripe-mock answers every subscription with its fixture's price: the plan the
    # Customer starts on uses it, so a recorded subscription reads as in step with the
    # plan, as it would with Stripe.
    starter = fixture_price(stripe_mock.url)
    return Catalog(
        {
            "starter": Plan(
                title="Starter", price_monthly=29, domains=1, experiments=3, stripe_price_id=starter
            ),
            "pro": Plan(
                title="Pro", price_monthly=99, domains=5, experiments=20, stripe_price_id=PRO_PRICE
            ),
        }
    )


class Platform:
    """One Customer in a fake cluster, billed through the real client."""

    def __init__(self, stripe: StripeBilling, catalog: Catalog) -> None:
        self.stripe = stripe
        self.catalog = catalog
        self.resources = FakeResources()
        self.events = FakeEvents()
        self.resources.put(
            REF,
            {
                "kind": "Customer",
                "metadata": {"name": "acme", "uid": UID, "generation": 1},
                "spec": {"email": "founder@acme.example", "plan": "starter"},
            },
        )

    def reconciler(self) -> CustomerReconciler:
        customer = Customer.model_validate(self.resources.objects[REF])
        return CustomerReconciler(
            customer,
            resources=self.resources,
            plans=self.catalog,
            servers=None,
            eur_to_usd=1.0,
            writer=StatusWriter(
                customer.status or CustomerStatus(),
                functools.partial(self.resources.patch_status, REF),
                self.events,
            ),
            events=self.events,
            billing=self.stripe,
            domains=lambda _: (),
        )

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.resources.objects[REF]["status"])


@pytest.fixture
def platform(stripe: StripeBilling, catalog: Catalog) -> Platform:
    return Platform(stripe, catalog)


async def test_the_operators_requests_are_valid_stripe_requests_with_idempotency_keys(
    platform: Platform, recorder: Recorder, catalog: Catalog
) -> None:
    await platform.reconciler().apply()
    sent = recorder.sent()
    assert sent and all(r.status == 200 for r in sent), [(r.path, r.answer) for r in sent]

    assert len(sent) == 4, [c["message"] for c in platform.status["conditions"]]
    search, create_customer, list_subscriptions, create_subscription = sent
    assert (search.method, search.path) == ("GET", "/v1/customers/search")
    assert search.query["query"] == f"metadata['smartserver_uid']:'{UID}'"
    assert (create_customer.method, create_customer.path) == ("POST", "/v1/customers")
    assert create_customer.form["metadata[smartserver_uid]"] == UID
    assert create_customer.form["email"] == "founder@acme.example"
    assert list_subscriptions.path == "/v1/subscriptions" and list_subscriptions.method == "GET"
    assert list_subscriptions.query["status"] == "all"
    assert (create_subscription.method, create_subscription.path) == ("POST", "/v1/subscriptions")
    customer_id = create_customer.answer["id"]
    assert create_subscription.form["customer"] == customer_id
    assert create_subscription.form["items[0][price]"] == catalog.root["starter"].stripe_price_id
    assert create_subscription.form["metadata[smartserver_customer]"] == "acme"

    creates = [r for r in sent if r.creates]
    assert len(creates) == 2
    for request in creates:
        assert request.idempotency_key is not None
        assert request.idempotency_key.startswith(f"smartserver-{UID}-")

    billing = platform.status["billing"]
    assert billing["customerId"] == customer_id
    assert billing["subscriptionId"] == create_subscription.answer["id"]
    assert billing["subscriptionItemId"] == create_subscription.answer["items"]["data"][0]["id"]
    assert billing["state"] == "Active" and billing["currency"] == "usd"
    assert (
        billing["amount"]
        == create_subscription.answer["items"]["data"][0]["price"]["unit_amount"] / 100
    )


async def test_a_second_reconcile_of_a_recorded_subscription_creates_nothing(
    platform: Platform, recorder: Recorder
) -> None:
    await platform.reconciler().apply()
    recorded = platform.status["billing"]
    recorder.clear()
    await platform.reconciler().apply()
    await platform.reconciler().refresh()
    sent = recorder.sent()
    assert not [r for r in sent if r.creates]
    assert {(r.method, r.path) for r in sent} <= {
        ("GET", f"/v1/customers/{recorded['customerId']}"),
        ("POST", f"/v1/customers/{recorded['customerId']}"),  # the email, set again
        ("GET", f"/v1/subscriptions/{recorded['subscriptionId']}"),
    }
    assert platform.status["billing"]["subscriptionId"] == recorded["subscriptionId"]


async def test_a_plan_change_updates_the_subscriptions_item(
    platform: Platform, recorder: Recorder
) -> None:
    await platform.reconciler().apply()
    recorded = platform.status["billing"]
    recorder.clear()
    platform.resources.objects[REF]["spec"]["plan"] = "pro"
    await platform.reconciler().apply()
    (update,) = recorder.sent("POST", "/v1/subscriptions/")
    assert update.path == f"/v1/subscriptions/{recorded['subscriptionId']}"
    assert update.status == 200
    assert update.form["items[0][id]"] == recorded["subscriptionItemId"]
    assert update.form["items[0][price]"] == PRO_PRICE
    assert update.form["proration_behavior"] == "create_prorations"
    assert not [r for r in recorder.sent() if r.creates]
    assert "SubscriptionChanged" in platform.events.reasons("Normal")


async def test_deleting_the_customer_cancels_its_subscription(
    platform: Platform, recorder: Recorder
) -> None:
    await platform.reconciler().apply()
    subscription = platform.status["billing"]["subscriptionId"]
    recorder.clear()
    platform.resources.namespaces.clear()
    assert await platform.reconciler().delete()
    (cancel,) = recorder.sent("DELETE")
    assert (cancel.path, cancel.status) == (f"/v1/subscriptions/{subscription}", 200)


async def test_stripe_failures_arrive_as_the_operators_errors(recorder: Recorder) -> None:
    refused = StripeBilling("not-a-key", recorder.url)
    try:
        with pytest.raises(PermanentFailure, match="valid looking testmode secret API key"):
            await refused.get_subscription("sub_1")
    finally:
        await refused.close()
    unreachable = StripeBilling(API_KEY, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TemporaryFailure, match="get subscription sub_1"):
            await unreachable.get_subscription("sub_1")
    finally:
        await unreachable.close()


async def test_a_stripe_outage_leaves_a_condition_and_the_next_pass_subscribes(
    catalog: Catalog, recorder: Recorder
) -> None:
    down = StripeBilling(API_KEY, f"http://127.0.0.1:{free_port()}")
    platform = Platform(down, catalog)
    try:
        await platform.reconciler().apply()
    finally:
        await down.close()
    condition = next(c for c in platform.status["conditions"] if c["type"] == "Billing")
    assert (condition["status"], condition["reason"]) == ("False", "ProviderUnavailable")
    assert platform.resources.namespaces == {"customer-acme"}
    platform.stripe = StripeBilling(API_KEY, recorder.url)
    try:
        await platform.reconciler().refresh()
    finally:
        await platform.stripe.close()
    assert platform.status["billing"]["state"] == "Active"
    assert len([r for r in recorder.sent() if r.creates]) == 2
