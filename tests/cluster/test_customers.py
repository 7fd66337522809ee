"""Customer onboarding end to end: the real control plane with the operator running
as its own ServiceAccount."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.conftest import Cluster, Operator
from tests.waiting import eventually


def customer(name: str, plan: str = "starter", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {"email": f"founder@{name}.example", "plan": plan, **spec},
    }


def domain(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"domain": f"{name}.example"},
    }


def ready(cluster: Cluster, name: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        condition = cluster.condition("customer", name, "Ready")
        return condition if condition and condition["status"] == "True" else None

    return eventually(check, timeout, f"customer {name} Ready")


def test_customer_gets_namespace_quota_and_dashboard_access(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"onboard-{unique}"
    cluster.apply(customer(name, plan="pro"))
    condition = ready(cluster, name)
    assert condition["reason"] == "Provisioned"

    obj = cluster.get("customer", name)
    assert obj is not None
    status = obj["status"]
    assert status["namespace"] == f"customer-{name}"
    assert status["limits"] == {"domains": 5, "experiments": 20}
    assert status["phase"] == "Active"
    assert all(
        c["observedGeneration"] == obj["metadata"]["generation"] for c in status["conditions"]
    )

    namespace = cluster.get("namespace", f"customer-{name}")
    assert namespace is not None
    assert namespace["metadata"]["labels"]["smartserver.ai/customer"] == name
    (owner,) = namespace["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Customer", obj["metadata"]["uid"])

    quota = cluster.get("resourcequota", "plan-limits", "-n", f"customer-{name}")
    assert quota is not None
    assert quota["spec"]["hard"] == {
        "count/domains.smartserver.ai": "5",
        "count/experiments.smartserver.ai": "20",
    }
    # The dashboard account, whose uid the status names, and no token Secret of it.
    account = cluster.get("serviceaccount", "dashboard-viewer", "-n", f"customer-{name}")
    assert account is not None and account["metadata"]["uid"] == status["dashboardAccountUid"]
    secrets = cluster.get("secrets", "-n", f"customer-{name}") or {}
    assert secrets.get("items", []) == []

    table = cluster.kubectl("get", "customers", name)
    assert table.split()[:5] == ["NAME", "READY", "PHASE", "PLAN", "DOMAINS"]
    assert table.splitlines()[1].split()[:5] == [name, "True", "Active", "pro", "0"]


def test_one_domain_more_than_the_plan_allows_is_refused(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"quota-{unique}"
    namespace = f"customer-{name}"
    cluster.apply(customer(name, plan="starter"))
    ready(cluster, name)
    cluster.apply(domain("first", namespace))
    refused = cluster.try_kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(domain("second", namespace))
    )
    assert "exceeded quota: plan-limits" in refused, refused
    assert "count/domains.smartserver.ai" in refused
    assert cluster.get("domain", "second", "-n", namespace) is None

    counted = eventually(
        lambda: (
            (cluster.get("customer", name) or {}).get("status", {}).get("counts", {}).get("domains")
            == 1
        ),
        what="the customer's status counts its domain",
    )
    assert counted


def test_plan_change_changes_the_quota(cluster: Cluster, operator: Operator, unique: str) -> None:
    name = f"upgrade-{unique}"
    cluster.apply(customer(name, plan="starter"))
    ready(cluster, name)
    cluster.kubectl("patch", "customer", name, "--type=merge", "-p", '{"spec":{"plan":"pro"}}')

    def quota_hard() -> dict[str, str] | None:
        quota = cluster.get("resourcequota", "plan-limits", "-n", f"customer-{name}") or {}
        hard = quota.get("status", {}).get("hard")
        return hard if hard and hard.get("count/domains.smartserver.ai") == "5" else None

    eventually(quota_hard, what="the quota follows the plan")
    status = eventually(
        lambda: (
            (s := (cluster.get("customer", name) or {}).get("status", {})).get("plan") == "pro"
            and s
        ),
        what="status shows the new plan",
    )
    assert status["limits"] == {"domains": 5, "experiments": 20}


def test_suspension_is_reflected_in_status(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"suspend-{unique}"
    cluster.apply(customer(name))
    ready(cluster, name)
    cluster.kubectl("patch", "customer", name, "--type=merge", "-p", '{"spec":{"suspended":true}}')
    condition = eventually(
        lambda: (
            (c := cluster.condition("customer", name, "Suspended")) and c["status"] == "True" and c
        ),
        what="Suspended condition",
    )
    assert condition["reason"] == "SuspendedBySpec"
    assert (cluster.get("customer", name) or {})["status"]["phase"] == "Suspended"


def test_unknown_plan_is_a_clear_condition_and_event_not_a_crash_loop(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"gold-{unique}"
    errors_before = operator.metric("smartserver_reconcile_total", kind="Customer", outcome="error")
    cluster.apply(customer(name, plan="gold"))
    condition = eventually(
        lambda: (
            (c := cluster.condition("customer", name, "Ready"))
            and c["reason"] == "UnknownPlan"
            and c
        ),
        what="UnknownPlan condition",
    )
    assert condition["status"] == "False"
    assert "spec.plan" in condition["message"] and "starter" in condition["message"]

    events = eventually(
        lambda: [
            e
            for e in json.loads(
                cluster.kubectl(
                    "get",
                    "events",
                    "-A",
                    "-o",
                    "json",
                    f"--field-selector=involvedObject.name={name}",
                )
            )["items"]
            if e["reason"] == "UnknownPlan"
        ],
        what="an UnknownPlan event",
    )
    assert events[0]["type"] == "Warning"
    assert cluster.get("namespace", f"customer-{name}") is None
    assert (
        operator.metric("smartserver_reconcile_total", kind="Customer", outcome="error")
        == errors_before
    )

    cluster.kubectl("patch", "customer", name, "--type=merge", "-p", '{"spec":{"plan":"starter"}}')
    ready(cluster, name)


def test_deleting_a_customer_removes_its_namespace_and_contents(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"leaver-{unique}"
    namespace = f"customer-{name}"
    cluster.apply(customer(name, plan="pro"))
    ready(cluster, name)
    cluster.apply(domain("site", namespace))
    cluster.kubectl("delete", "customer", name, "--wait=true", "--timeout=60s")
    assert cluster.get("namespace", namespace) is None
    assert cluster.get("customer", name) is None
    assert not (cluster.get("domains", "-n", namespace) or {}).get("items")


def test_metrics_count_reconciles(cluster: Cluster, operator: Operator, unique: str) -> None:
    before = operator.metric("smartserver_reconcile_total", kind="Customer", outcome="ok")
    cluster.apply(customer(f"metrics-{unique}"))
    ready(cluster, f"metrics-{unique}")
    assert operator.metric("smartserver_reconcile_total", kind="Customer", outcome="ok") > before
    assert operator.metric("smartserver_reconcile_duration_seconds_count", kind="Customer") > 0
