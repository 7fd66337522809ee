"""A Customer's namespace is the platform's only when it carries the platform's labels
for that Customer: a ``customer-<name>`` namespace that someone else made is never
adopted, changed or deleted, and the Customer says so and how to mend it. A quota not
counted yet asks for another pass before the timer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from smart_operator import customers
from smart_operator.ports import QuotaView
from smart_operator.reconcile import customer as reconcile_customer
from tests.unit.test_reconcile_customer_billing import NS, START, World

HARD = {"count/domains.smartserver.ai": "1", "count/experiments.smartserver.ai": "3"}


def counted(world: World) -> None:
    """The quota controller counts the plan's quota (the starter plan's limits)."""
    world.resources.quotas[(NS, customers.QUOTA_NAME)] = QuotaView(
        hard=HARD, used={key: "0" for key in HARD}, created=START - timedelta(minutes=1)
    )


def foreign(world: World, **labels: str) -> None:
    world.resources.namespaces.add(NS)
    world.resources.namespace_labels_[NS] = dict(labels)


@pytest.mark.parametrize(
    "labels",
    [
        {},
        # Someone else's tooling: another manager.
        {"app.kubernetes.io/managed-by": "helm", customers.CUSTOMER_LABEL: "acme"},
        # Made by the platform, but for another Customer's name.
        {**customers.MANAGED_BY, customers.CUSTOMER_LABEL: "globex"},
    ],
)
async def test_a_namespace_the_platform_did_not_make_is_not_adopted(
    labels: dict[str, str],
) -> None:
    world = World(stripe_on=False)
    foreign(world, **labels)
    retry = await world.reconciler().apply()
    assert retry is not None and retry.delay >= 30
    assert world.resources.applied == []  # nothing in the namespace, nor the namespace
    assert world.resources.namespace_labels_[NS] == labels
    ready = world.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceTaken")
    assert f"namespace {NS} exists and was not made by the platform" in ready["message"]
    assert f"kubectl label namespace {NS}" in ready["message"]
    assert world.status().phase == "Failed"
    assert "NamespaceTaken" in world.events.reasons("Warning")
    # The timer's refresh says the same and reads nothing inside the namespace.
    await world.refresh()
    assert world.condition("Ready")["reason"] == "NamespaceTaken"
    assert world.resources.calls["read_quota"] == 0
    assert world.resources.calls["account_uid"] == 0
    # Deleting the Customer leaves the namespace alone.
    assert await world.reconciler().delete() is True
    assert NS in world.resources.namespaces


async def test_once_staff_hand_the_namespace_over_the_customer_is_provisioned() -> None:
    world = World(stripe_on=False)
    foreign(world)
    assert await world.reconciler().apply() is not None
    world.resources.namespace_labels_[NS] = {
        **customers.MANAGED_BY,
        customers.CUSTOMER_LABEL: "acme",
    }
    counted(world)
    assert await world.reconciler().apply() is None
    assert world.resources.applied[0]["kind"] == "Namespace"
    assert world.condition("QuotaApplied")["reason"] != "NamespaceTaken"


async def test_the_customers_own_namespace_is_applied_and_deleted() -> None:
    world = World(stripe_on=False)
    counted(world)
    assert await world.reconciler().apply() is None
    assert world.resources.namespace_labels_[NS] == {
        **customers.MANAGED_BY,
        customers.CUSTOMER_LABEL: "acme",
    }
    await world.reconciler().apply()  # the second pass finds its own namespace
    assert world.condition("Ready")["reason"] != "NamespaceTaken"
    assert await world.reconciler().delete() is True
    assert NS not in world.resources.namespaces


async def test_a_quota_not_counted_yet_asks_for_another_pass_before_the_timer() -> None:
    """A quota the controller took in without counting is made anew by the pass that
    finds it so after QUOTA_RECOUNT_SECONDS: the create pass asks to be made again in a
    fraction of that, rather than leaving it to the (minutes long) refresh timer."""
    world = World(stripe_on=False)
    retry = await world.reconciler().apply()
    assert retry is not None and "quota" in retry.why
    assert retry.delay < reconcile_customer.QUOTA_RECOUNT_SECONDS
    counted(world)
    assert await world.reconciler().apply() is None
    assert world.condition("Ready")["status"] == "True"


def test_namespace_is_ours_needs_both_labels_for_this_customer() -> None:
    ours = {**customers.MANAGED_BY, customers.CUSTOMER_LABEL: "acme"}
    assert customers.namespace_is_ours(ours, "acme")
    assert not customers.namespace_is_ours(ours, "globex")
    assert not customers.namespace_is_ours({customers.CUSTOMER_LABEL: "acme"}, "acme")
    assert not customers.namespace_is_ours(dict(customers.MANAGED_BY), "acme")
