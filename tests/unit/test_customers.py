"""Customer onboarding as pure functions: desired objects, plan resolution, status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from smart_operator import analytics, customers
from smart_operator.conditions import get_condition, set_condition
from smart_operator.models.common import Writer
from smart_operator.models.customer import Customer, CustomerStatus, Limits
from smart_operator.plans import DEFAULT_CATALOG, load_catalog
from smart_operator.reconcile.status import merge_patch


def customer(**spec: Any) -> Customer:
    return Customer.model_validate(
        {
            "metadata": {"name": "acme", "uid": "uid-1", "generation": 3},
            "spec": {"email": "a@acme.example", **spec},
        }
    )


def limits(domains: int, experiments: int) -> Limits:
    return Limits(domains=domains, experiments=experiments)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_the_note_plans_are_in_the_default_catalog() -> None:
    starter, pro = DEFAULT_CATALOG.get("starter"), DEFAULT_CATALOG.get("pro")
    assert starter is not None and (starter.domains, starter.price_monthly) == (1, 29)
    assert pro is not None and (pro.domains, pro.experiments) == (5, 20)
    assert len(DEFAULT_CATALOG.names) >= 3


def test_catalog_loads_from_yaml(tmp_path: Any) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text("solo:\n  title: Solo\n  price_monthly: 9\n  domains: 1\n  experiments: 1\n")
    catalog = load_catalog(path)
    assert catalog.names == ["solo"]


def test_namespace_is_owned_and_labelled() -> None:
    objects = by_kind(customers.desired_objects(customer(), "starter", limits(1, 3)))
    namespace = objects["Namespace"]["metadata"]
    assert namespace["name"] == "customer-acme"
    assert namespace["labels"][customers.CUSTOMER_LABEL] == "acme"
    owner = namespace["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Customer", "uid-1", True)


def test_quota_enforces_the_limits() -> None:
    objects = by_kind(customers.desired_objects(customer(), "pro", limits(5, 20)))
    assert objects["ResourceQuota"]["spec"]["hard"] == {
        "count/domains.smartserver.ai": "5",
        "count/experiments.smartserver.ai": "20",
    }


def test_dashboard_role_is_read_only_on_the_resources() -> None:
    objects = by_kind(customers.desired_objects(customer(), "pro", limits(5, 20)))
    (rule,) = objects["Role"]["rules"]
    assert rule["verbs"] == ["get", "list", "watch"]
    assert set(rule["resources"]) == {"domains", "experiments"}
    # No token Secret: a legacy token would work against the API server too. Staff
    # request short-lived dashboard-audience tokens of the account instead.
    assert "Secret" not in objects
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False


def test_overrides_replace_only_what_they_set() -> None:
    resolved = customers.resolve_plan(customer(plan="pro", limits={"domains": 9}), DEFAULT_CATALOG)
    assert resolved.limits is not None
    assert (resolved.limits.domains, resolved.limits.experiments) == (9, 20)


def test_unknown_plan_names_the_field_and_the_choices() -> None:
    c = customer(plan="gold")
    resolved = customers.resolve_plan(c, DEFAULT_CATALOG)
    status = customers.compute_status(c, DEFAULT_CATALOG, resolved, customers.Observed())
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and ready.status == "False" and ready.reason == "UnknownPlan"
    assert "spec.plan" in ready.message and "pro, scale, starter" in ready.message
    assert status.phase == "Failed"


def test_ready_once_quota_is_counted_and_the_dashboard_account_exists() -> None:
    c = customer(plan="starter")
    resolved = customers.resolve_plan(c, DEFAULT_CATALOG)
    hard = {"count/domains.smartserver.ai": "1", "count/experiments.smartserver.ai": "3"}
    pending = customers.compute_status(c, DEFAULT_CATALOG, resolved, customers.Observed())
    assert get_condition(pending.conditions, "Ready").reason == "QuotaPending"  # type: ignore[union-attr]
    uncounted = customers.Observed(
        quota_hard=hard, quota_used={"count/domains.smartserver.ai": "1"}, account_uid="u1"
    )
    not_yet = customers.compute_status(c, DEFAULT_CATALOG, resolved, uncounted)
    assert get_condition(not_yet.conditions, "QuotaApplied").status == "False"  # type: ignore[union-attr]
    used = {"count/domains.smartserver.ai": "1", "count/experiments.smartserver.ai": "0"}
    no_account = customers.Observed(quota_hard=hard, quota_used=used)
    waiting = customers.compute_status(c, DEFAULT_CATALOG, resolved, no_account)
    assert get_condition(waiting.conditions, "Ready").reason == "AccountPending"  # type: ignore[union-attr]
    assert waiting.dashboard_account_uid is None
    observed = customers.Observed(quota_hard=hard, quota_used=used, account_uid="u1")
    status = customers.compute_status(c, DEFAULT_CATALOG, resolved, observed)
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and ready.status == "True"
    assert ready.observed_generation == 3
    assert status.counts is not None and status.counts.domains == 1
    assert status.dashboard_account_uid == "u1"


def test_suspension_shows_in_phase_and_condition() -> None:
    c = customer(suspended=True)
    status = customers.compute_status(
        c, DEFAULT_CATALOG, customers.resolve_plan(c, DEFAULT_CATALOG), customers.Observed()
    )
    suspended = get_condition(status.conditions, "Suspended")
    assert status.phase == "Suspended"
    assert suspended is not None and suspended.status == "True"


def test_a_settled_status_computes_to_itself() -> None:
    """The status writer sends nothing when nothing changed, so a refresh of a settled
    Customer must compute exactly the status it has."""
    c = customer()
    resolved = customers.resolve_plan(c, DEFAULT_CATALOG)
    status = customers.compute_status(c, DEFAULT_CATALOG, resolved, customers.Observed())
    before = CustomerStatus().dump_of(Writer.OPERATOR)
    assert merge_patch(before, status.dump_of(Writer.OPERATOR))
    settled = c.model_copy(update={"status": status})
    again = customers.compute_status(settled, DEFAULT_CATALOG, resolved, customers.Observed())
    assert merge_patch(status.dump_of(Writer.OPERATOR), again.dump_of(Writer.OPERATOR)) == {}


def test_transition_time_changes_only_when_status_flips() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    conditions = set_condition([], "Ready", "False", "Waiting", "a", 1, at=first)
    conditions = set_condition(conditions, "Ready", "False", "StillWaiting", "b", 2, at=later)
    assert conditions[0].last_transition_time == first
    assert conditions[0].reason == "StillWaiting"
    conditions = set_condition(conditions, "Ready", "True", "Done", "c", 2, at=later)
    assert conditions[0].last_transition_time == later
    assert len(conditions) == 1


def test_quota_counts_as_the_api_server_writes_them_back() -> None:
    assert customers.parse_count("1k") == 1000
    assert customers.parse_count("20") == 20
    assert customers.parse_count("2Ki") == 2048
    c = customer(plan="scale", limits={"domains": 1000})
    resolved = customers.resolve_plan(c, DEFAULT_CATALOG)
    observed = customers.Observed(
        quota_hard={
            "count/domains.smartserver.ai": "1k",
            "count/experiments.smartserver.ai": "100",
        },
        quota_used={"count/domains.smartserver.ai": "0", "count/experiments.smartserver.ai": "0"},
        account_uid="u1",
    )
    status = customers.compute_status(c, DEFAULT_CATALOG, resolved, observed)
    assert get_condition(status.conditions, "QuotaApplied").status == "True"  # type: ignore[union-attr]


def test_health_and_cost_come_from_the_domains_facts_as_the_watch_delivers_them() -> None:
    """A Customer's refresh lists no Domains: the operator keeps each Domain's facts
    from its watch events, read from the body as the API server serves it."""
    ready = analytics.domain_facts(
        {
            "spec": {"domain": "a.example", "server": {"type": "cpx22", "location": "nbg1"}},
            "status": {"phase": "Ready", "server": {"id": 41}},
        }
    )
    building = analytics.domain_facts(
        {"spec": {"domain": "b.example"}, "status": {"phase": "Provisioning", "server": {"id": 42}}}
    )
    new = analytics.domain_facts({"spec": {"domain": "c.example"}})
    assert ready == analytics.DomainFacts(ready=True, server=("cpx22", "nbg1"))
    assert building == analytics.DomainFacts(ready=False, server=("cx23", "fsn1"))  # defaults
    assert new == analytics.DomainFacts(ready=False, server=None)

    c = customer(plan="pro")
    resolved = customers.resolve_plan(c, DEFAULT_CATALOG)
    observed = customers.Observed(
        domains=(ready, building, new),
        server_prices={("cpx22", "nbg1"): 8.0, ("cx23", "fsn1"): 4.5},
        eur_to_usd=1.1,
    )
    status = customers.compute_status(c, DEFAULT_CATALOG, resolved, observed)
    assert status.health is not None and status.health.active_domains == 1
    assert status.cost is not None
    assert status.cost.infrastructure == round((8.0 + 4.5) * 1.1, 2)  # servers that exist
