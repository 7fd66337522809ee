"""Billing end to end: the real control plane, the operator billing through stripe-mock
(behind a recording proxy), and an intake that takes Stripe's webhooks, signed here the
way Stripe signs them. A Customer on a plan gets a subscription; a failed invoice past
the grace period (one second here) suspends it, so its experiment serves only the
control; a paid invoice resumes it. A payload with a bad signature is refused and
changes nothing.

The session's operator is restarted with billing on for this module and restarted
without it afterwards. The webhook intake runs as the intake's account with exactly
the rules of ``manifests/rbac/intake.yaml`` (get Customers, patch their status), which
the session applied, so this is also the proof that those rules are enough.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_sim import platform
from smart_sim.processes import IntakeProcess
from smart_sim.stripemock import API_KEY, Recorder, StripeMock, fixture_price, signature
from smart_sim.stripemock import webhook_event as stripe_event
from tests.cluster.conftest import experiment, wait_exp
from tests.conftest import Cluster, Operator
from tests.waiting import eventually

WEBHOOK_SECRET = "whsec_cluster_test"


class Stripe:
    """stripe-mock and the proxy that records what the operator sends it."""

    def __init__(self, mock: StripeMock, recorder: Recorder) -> None:
        self.mock = mock
        self.recorder = recorder
        self.price = fixture_price(mock.url)


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stripe]:
    with (
        StripeMock(tmp_path_factory.mktemp("stripe-mock")) as mock,
        Recorder(mock.url) as recorder,
    ):
        yield Stripe(mock, recorder)


@pytest.fixture(scope="module")
def billing_operator(
    operator: Operator, stripe: Stripe, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The session's operator, restarted with a Stripe key, plans with Stripe prices
    (``scale``, the plan the cluster tier's customers are on, with the price stripe-mock
    answers every subscription with) and a one-second grace period."""
    plans = tmp_path_factory.mktemp("plans") / "plans.yaml"
    plans.write_text(
        yaml.safe_dump(
            {
                "starter": {
                    "title": "Starter",
                    "price_monthly": 29,
                    "domains": 1,
                    "experiments": 3,
                    "stripe_price_id": "price_starter_test",
                },
                "pro": {
                    "title": "Pro",
                    "price_monthly": 99,
                    "domains": 5,
                    "experiments": 20,
                    "stripe_price_id": "price_pro_test",
                },
                "scale": {
                    "title": "Scale",
                    "price_monthly": 299,
                    "domains": 25,
                    "experiments": 100,
                    "stripe_price_id": stripe.price,
                },
            }
        )
    )
    saved = dict(operator.env)
    operator.env.update(
        {
            "SMART_STRIPE_API_KEY": API_KEY,
            "SMART_STRIPE_ENDPOINT": stripe.recorder.url,
            "SMART_PLANS_FILE": str(plans),
            "SMART_BILLING_GRACE_SECONDS": "1",
        }
    )
    operator.restart()
    try:
        yield operator
    finally:
        operator.env.clear()
        operator.env.update(saved)
        operator.restart()


@pytest.fixture(scope="module")
def webhooks(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An intake (a second replica, as its own account) that takes Stripe's webhooks;
    returns its webhook URL."""
    workdir = tmp_path_factory.mktemp("webhook-intake")
    kubeconfig = platform.intake_kubeconfig(cluster.plane, workdir / "intake.kubeconfig")
    env = {"SMART_INTAKE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with IntakeProcess(kubeconfig, workdir, name="webhook-intake", env=env) as intake:
        yield f"{intake.url}/v1/stripe/webhook"


def deliver(url: str, event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[int, Any]:
    payload = json.dumps(event).encode()
    request = urllib.request.Request(url, data=payload, method="POST")  # noqa: S310 (loopback)
    request.add_header("Content-Type", "application/json; charset=utf-8")
    request.add_header("Stripe-Signature", signature(payload, secret))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def customer_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get("customer", name) or {}).get("status") or {})


def serving(cluster: Cluster, namespace: str, name: str) -> list[str] | None:
    status = (cluster.get("experiment", name, "-n", namespace) or {}).get("status") or {}
    found: list[str] | None = status.get("serving")
    return found


def test_a_subscribed_customer_is_suspended_by_a_failed_invoice_and_resumed_by_a_paid_one(
    cluster: Cluster,
    billing_operator: Operator,
    stripe: Stripe,
    webhooks: str,
    site: tuple[str, Path],
) -> None:
    namespace, root = site
    name = namespace.removeprefix("customer-")
    customer = cluster.get("customer", name) or {}
    uid = customer["metadata"]["uid"]

    # The Customer on the scale plan has a subscription to the plan's price.
    billing = eventually(
        lambda: (
            (b := customer_status(cluster, name).get("billing"))
            and b.get("state") == "Active"
            and b
        ),
        60,
        "an active subscription",
    )
    made = [
        r
        for r in stripe.recorder.sent("POST", "/v1/subscriptions")
        if r.creates and r.form.get("metadata[smartserver_uid]") == uid
    ]
    # stripe-mock ignores idempotency keys; Stripe answers every create sent with the
    # same key with the first one's subscription. So: one key, whatever was retried.
    assert made and {r.idempotency_key for r in made} == {made[0].idempotency_key}
    assert made[0].idempotency_key and made[0].idempotency_key.startswith(f"smartserver-{uid}-")
    assert all(r.status == 200 for r in made)
    assert billing["subscriptionId"] in {r.answer["id"] for r in made}
    assert made[0].form["items[0][price]"] == stripe.price
    assert made[0].form["customer"] == billing["customerId"]
    condition = cluster.condition("customer", name, "Billing")
    assert condition is not None and condition["reason"] == "SubscriptionActive"
    table = cluster.kubectl("get", "customers", name).splitlines()
    assert table[0].split()[5] == "BILLING" and table[1].split()[5] == "Active"

    cluster.apply(experiment("offer", namespace, "site"))
    wait_exp(cluster, namespace, "offer", "Deployed")
    assert serving(cluster, namespace, "offer") == ["control", "bold"]

    now = int(time.time())
    failed = stripe_event(
        "invoice.payment_failed",
        customer=name,
        uid=uid,
        subscription=billing["subscriptionId"],
        stripe_customer=billing["customerId"],
        created=now - 5,
    )
    # A payload that does not verify is refused and changes nothing.
    status, answer = deliver(webhooks, failed, secret="whsec_someone_else")
    assert (status, answer["error"]) == (400, "bad_signature")
    assert "payment" not in customer_status(cluster, name)

    status, answer = deliver(webhooks, failed)
    assert (status, answer["applied"]) == (200, True), answer
    suspended = eventually(
        lambda: (
            (c := cluster.condition("customer", name, "Suspended")) and c["status"] == "True" and c
        ),
        60,
        "billing suspends the Customer",
    )
    assert suspended["reason"] == "PaymentOverdue"
    assert customer_status(cluster, name)["phase"] == "Suspended"
    assert not (cluster.get("customer", name) or {})["spec"].get("suspended")  # staff's switch
    eventually(lambda: serving(cluster, namespace, "offer") == ["control"], 60, "only the control")
    manifest = json.loads(
        (root / "opt/smart/experiments/offer/current/experiment.json").read_text()
    )
    assert manifest["serving"]["mode"] == "control"
    events = json.loads(
        cluster.kubectl(
            "get", "events", "-A", "-o", "json", f"--field-selector=involvedObject.name={name}"
        )
    )["items"]
    assert any(e["reason"] == "PaymentOverdue" and e["type"] == "Warning" for e in events)

    # Delivered again: acknowledged, nothing changes.
    assert deliver(webhooks, failed)[1]["reason"] == "duplicate"

    paid = stripe_event(
        "invoice.paid",
        customer=name,
        uid=uid,
        subscription=billing["subscriptionId"],
        stripe_customer=billing["customerId"],
        created=now,
    )
    status, answer = deliver(webhooks, paid)
    assert (status, answer["applied"]) == (200, True), answer
    eventually(
        lambda: (c := cluster.condition("customer", name, "Suspended")) and c["status"] == "False",
        60,
        "a paid invoice resumes the Customer",
    )
    eventually(
        lambda: serving(cluster, namespace, "offer") == ["control", "bold"],
        60,
        "every variant served again",
    )
    assert customer_status(cluster, name)["billing"]["state"] == "Active"
