"""A Customer's quota that the quota controller took in without counting the platform's
resources (made in the first seconds after the CRDs were installed, before the
controller watched them) is made anew once it has stayed uncounted for a while, so the
Customer becomes Ready without waiting for the controller's five-minute resync."""

from __future__ import annotations

from datetime import timedelta

from smart_operator import customers
from smart_operator.models.customer import DASHBOARD_ACCOUNT
from smart_operator.ports import QuotaView
from smart_operator.reconcile.customer import QUOTA_RECOUNT_SECONDS
from tests.unit.test_reconcile_customer_billing import NS, START, World

HARD = {"count/domains.smartserver.ai": "1", "count/experiments.smartserver.ai": "3"}
KEY = (NS, customers.QUOTA_NAME)


def uncounted(age: float) -> QuotaView:
    """What the controller leaves on a quota made before it watched our resources."""
    return QuotaView(hard=HARD, used={}, created=START - timedelta(seconds=age))


def quota_applies(world: World) -> int:
    return sum(1 for obj in world.resources.applied if obj["kind"] == "ResourceQuota")


async def test_an_uncounted_quota_is_given_time_then_made_anew() -> None:
    world = World(stripe_on=False)
    world.resources.quotas[KEY] = uncounted(QUOTA_RECOUNT_SECONDS / 2)
    await world.refresh()
    assert world.resources.deleted_quotas == []
    assert world.condition("QuotaApplied")["reason"] == "QuotaPending"

    world.resources.quotas[KEY] = uncounted(QUOTA_RECOUNT_SECONDS + 1)
    applied = quota_applies(world)
    await world.refresh()
    assert world.resources.deleted_quotas == [KEY]
    assert quota_applies(world) == applied + 1
    (recreated,) = [o for o in world.resources.applied if o["kind"] == "ResourceQuota"][-1:]
    assert recreated["spec"]["hard"] == HARD
    assert "QuotaRecreated" in world.events.reasons("Normal")


async def test_a_counted_quota_or_one_not_yet_taken_in_is_left_alone() -> None:
    world = World(stripe_on=False)
    old = START - timedelta(hours=1)
    world.resources.quotas[KEY] = QuotaView(hard=HARD, used={key: "0" for key in HARD}, created=old)
    await world.refresh()
    assert world.condition("QuotaApplied")["status"] == "True"
    # Limits not in the status yet: the controller has not taken this version in.
    world.resources.quotas[KEY] = QuotaView(hard={}, used={}, created=old)
    await world.refresh()
    assert world.resources.deleted_quotas == []


async def test_a_deleted_dashboard_account_is_made_anew_with_a_new_uid() -> None:
    """Staff revoke a customer's dashboard tokens by deleting its account: the next pass
    makes it anew, and the status names the new uid (which ends the old sessions)."""
    world = World(stripe_on=False)
    counted = {key: "0" for key in HARD}
    world.resources.quotas[KEY] = QuotaView(hard=HARD, used=counted, created=START)
    await world.apply()
    first = world.status().dashboard_account_uid
    assert first is not None
    assert world.condition("Ready")["status"] == "True"
    await world.refresh()
    assert world.status().dashboard_account_uid == first  # nothing changed, nothing made
    assert "DashboardAccountCreated" not in world.events.reasons("Normal")

    del world.resources.accounts[(NS, DASHBOARD_ACCOUNT)]
    await world.refresh()
    second = world.status().dashboard_account_uid
    assert second is not None and second != first
    assert world.condition("Ready")["status"] == "True"
    assert "DashboardAccountCreated" in world.events.reasons("Normal")
