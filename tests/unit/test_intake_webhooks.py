"""Stripe's webhooks at the intake, end to end in one process: payloads signed the way
Stripe signs them (``t=<time>,v1=<HMAC-SHA256>``, made here, not by the SDK), verified
by the SDK at ``POST /v1/stripe/webhook``, and recorded on the Customer's
``status.payment`` through an in-memory API server that keeps resourceVersions and
answers stale writes with a conflict. Bad signatures are refused with 400 and change
nothing; redeliveries and late events change nothing either."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from smart_operator.clients.kubeapi import WatchEvent
from smart_operator.errors import Conflict, NotFound, TemporaryFailure
from smart_operator.intake.app import create_app
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.state import INTAKE
from smart_sim.stripemock import signature, webhook_event

SECRET = "whsec_test_secret"
UID = "c-uid-1"
SETTINGS = IntakeSettings(metrics_port=None, drain_seconds=1, stripe_webhook_secret=SECRET)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class EmptyStore:
    """No Domains and no Experiments: the agents' side of the intake is not tested here."""

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def get_domain(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def patch_experiment_status(self, *args: Any) -> dict[str, Any]:
        raise NotFound("kubernetes", "no experiments here")

    async def patch_domain_status(self, *args: Any) -> dict[str, Any]:
        raise NotFound("kubernetes", "no domains here")

    async def watch(self, plural: str) -> AsyncIterator[WatchEvent]:
        yield WatchEvent("SYNC", [])
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


class FakeCustomers:
    """Customers with resourceVersions and conditional status patches."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.writes: list[dict[str, Any]] = []
        self.before_write: Callable[[], Awaitable[None]] | None = None
        self.down = False

    def put(self, name: str, status: dict[str, Any] | None = None, uid: str = UID) -> None:
        self.objects[name] = {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": name, "uid": uid, "resourceVersion": str(next(self.versions))},
            "spec": {"email": f"founder@{name}.example", "plan": "starter"},
            "status": status or {},
        }

    def operator_writes(self, name: str, status: dict[str, Any]) -> None:
        obj = self.objects[name]
        obj["status"] = merge(obj["status"], status)
        obj["metadata"]["resourceVersion"] = str(next(self.versions))

    async def get_customer(self, name: str) -> dict[str, Any] | None:
        if self.down:
            raise TemporaryFailure("kubernetes", "connection refused")
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    async def patch_customer_status(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            await hook()
        obj = self.objects.get(name)
        if obj is None:
            raise NotFound("kubernetes", name)
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict("kubernetes", f"customer {name} changed")
        self.writes.append(copy.deepcopy(status))
        self.operator_writes(name, status)
        return copy.deepcopy(obj)

    def payment(self, name: str = "acme") -> dict[str, Any] | None:
        payment: dict[str, Any] | None = self.objects[name]["status"].get("payment")
        return payment


@pytest.fixture
def customers() -> FakeCustomers:
    store = FakeCustomers()
    store.put("acme", {"billing": {"state": "Active", "subscriptionId": "sub_test"}})
    return store


async def start(
    customers: FakeCustomers | None, settings: IntakeSettings = SETTINGS
) -> tuple[TestClient[Any, Any], Any]:
    app = create_app(settings, store=EmptyStore(), customers=customers)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client, app


@pytest.fixture
async def client(customers: FakeCustomers) -> AsyncIterator[TestClient[Any, Any]]:
    test_client, _ = await start(customers)
    try:
        yield test_client
    finally:
        await test_client.close()


async def deliver(
    client: TestClient[Any, Any],
    event: dict[str, Any],
    secret: str = SECRET,
    timestamp: int | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    payload = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature(payload, secret, timestamp),
    }
    response = await client.post(
        "/v1/stripe/webhook", data=body if body is not None else payload, headers=headers
    )
    return response.status, await response.json()


def failed(created: int | None = None, **changes: Any) -> dict[str, Any]:
    return webhook_event(
        "invoice.payment_failed", customer="acme", uid=UID, created=created, **changes
    )


async def test_a_failed_invoice_is_recorded_on_the_customer(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    event = failed(amount=2900)
    status, answer = await deliver(client, event)
    assert (status, answer["applied"], answer["reason"]) == (200, True, "recorded")
    payment = customers.payment()
    assert payment is not None
    assert (payment["state"], payment["eventId"], payment["subscriptionId"]) == (
        "PaymentFailed",
        event["id"],
        "sub_test",
    )
    assert (payment["amount"], payment["currency"]) == (29.0, "usd")
    assert payment["since"] == payment["eventCreated"]
    # Only the intake's field was written: the operator's billing is untouched.
    assert customers.writes == [{"payment": customers.writes[0]["payment"]}]
    assert customers.objects["acme"]["status"]["billing"]["state"] == "Active"


@pytest.mark.parametrize(
    ("secret", "age", "tamper", "error"),
    [
        ("whsec_another", 0, False, "bad_signature"),
        (SECRET, 0, True, "bad_signature"),
        (SECRET, 3600, False, "bad_signature"),  # a replay of an old delivery
    ],
    ids=["wrong-secret", "tampered-body", "too-old"],
)
async def test_a_payload_that_does_not_verify_is_refused_and_changes_nothing(
    client: TestClient[Any, Any],
    customers: FakeCustomers,
    secret: str,
    age: int,
    tamper: bool,
    error: str,
) -> None:
    event = failed()
    body = None
    if tamper:
        changed = copy.deepcopy(event)
        changed["type"] = "invoice.paid"
        body = json.dumps(changed).encode()
    status, answer = await deliver(
        client, event, secret=secret, timestamp=int(time.time()) - age, body=body
    )
    assert (status, answer["error"]) == (400, error)
    assert "Stripe-Signature" in answer["message"] or "signature" in answer["message"]
    assert customers.writes == [] and customers.payment() is None


async def test_a_request_without_a_signature_or_json_is_refused(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    response = await client.post(
        "/v1/stripe/webhook",
        data=json.dumps(failed()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400 and (await response.json())["error"] == "bad_signature"
    garbage = b"{not json"
    response = await client.post(
        "/v1/stripe/webhook",
        data=garbage,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": signature(garbage, SECRET),
        },
    )
    assert response.status == 400 and (await response.json())["error"] == "bad_payload"
    assert customers.writes == []


async def test_a_redelivered_event_is_acknowledged_and_changes_nothing(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    event = failed()
    await deliver(client, event)
    status, answer = await deliver(client, event)
    assert (status, answer["applied"], answer["reason"]) == (200, False, "duplicate")
    assert len(customers.writes) == 1


async def test_an_event_older_than_the_recorded_one_changes_nothing(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    now = int(time.time())
    paid = webhook_event("invoice.paid", customer="acme", uid=UID, created=now)
    await deliver(client, paid)
    status, answer = await deliver(client, failed(created=now - 60))
    assert (status, answer["applied"], answer["reason"]) == (200, False, "older")
    assert customers.payment()["state"] == "Paid"  # type: ignore[index]


async def test_events_that_are_not_the_customers_are_acknowledged_and_ignored(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    unknown = webhook_event("invoice.paid", customer="nobody", uid=UID)
    assert (await deliver(client, unknown))[1]["reason"] == "no_customer"
    recreated = webhook_event("invoice.paid", customer="acme", uid="an-older-acme")
    assert (await deliver(client, recreated))[1]["reason"] == "other_customer"
    other = failed(subscription="sub_another")
    assert (await deliver(client, other))[1]["reason"] == "other_subscription"
    unhandled = {**failed(), "type": "invoice.finalized"}
    status, answer = await deliver(client, unhandled)
    assert (status, answer["applied"], answer["reason"]) == (200, False, "ignored")
    assert customers.writes == []


async def test_a_concurrent_write_is_read_again_and_both_survive(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    async def operator_writes() -> None:
        customers.operator_writes("acme", {"billing": {"state": "Active", "amount": 29.0}})

    customers.before_write = operator_writes
    status, answer = await deliver(client, failed())
    assert (status, answer["applied"]) == (200, True)
    final = customers.objects["acme"]["status"]
    assert final["billing"]["amount"] == 29.0 and final["payment"]["state"] == "PaymentFailed"


async def test_an_unreachable_api_server_asks_stripe_to_deliver_again(
    client: TestClient[Any, Any], customers: FakeCustomers
) -> None:
    customers.down = True
    response = await client.post(
        "/v1/stripe/webhook",
        data=(payload := json.dumps(failed()).encode()),
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": signature(payload, SECRET),
        },
    )
    assert response.status == 503 and response.headers["Retry-After"]
    customers.down = False
    assert (await deliver(client, json.loads(payload)))[1]["applied"] is True


async def test_without_a_signing_secret_the_route_is_off(customers: FakeCustomers) -> None:
    client, app = await start(customers, IntakeSettings(metrics_port=None, drain_seconds=1))
    try:
        assert app[INTAKE].payments is not None
        status, answer = await deliver(client, failed())
        assert (status, answer["error"]) == (404, "billing_off")
        assert "SMART_INTAKE_STRIPE_WEBHOOK_SECRET" in answer["message"]
    finally:
        await client.close()
    assert customers.writes == []
