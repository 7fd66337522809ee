"""The operator as a process: least-privilege RBAC, peering, and a kill at any moment."""

from __future__ import annotations

import json

import pytest

from smart_sim import platform
from tests.conftest import Cluster, Operator
from tests.waiting import eventually

OPERATOR = f"system:serviceaccount:{platform.OPERATOR_NAMESPACE}:{platform.OPERATOR_ACCOUNT}"


def can(cluster: Cluster, who: str, *args: str) -> bool:
    answer = cluster.try_kubectl("auth", "can-i", f"--as={who}", *args).strip()
    return answer.splitlines()[0] == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "customers.smartserver.ai", True),
        ("patch", "customers.smartserver.ai/status", True),
        ("create", "namespaces", True),
        # Which namespaces: the admission policies (test_operator_admission.py).
        ("delete", "namespaces", True),
        ("list", "namespaces", False),
        ("watch", "namespaces", False),
        # No Secret anywhere but its own two in its namespace (test below).
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("get", "secrets", False),
        ("update", "secrets", False),
        ("create", "secrets", False),
        ("create", "customers.smartserver.ai", False),
        ("delete", "customers.smartserver.ai", False),
        ("delete", "domains.smartserver.ai", False),
        # Templates: read to render Experiments, never written.
        ("get", "clusterexperimenttemplates.smartserver.ai", True),
        ("list", "experimenttemplates.smartserver.ai", True),
        ("patch", "clusterexperimenttemplates.smartserver.ai", False),
        ("create", "experimenttemplates.smartserver.ai", False),
        ("create", "pods", False),
        ("create", "deployments.apps", False),
        ("create", "clusterrolebindings", False),
        ("delete", "secrets", False),
        ("escalate", "roles", False),
    ],
)
def test_operator_rbac_is_least_privilege(
    cluster: Cluster, verb: str, resource: str, allowed: bool
) -> None:
    assert can(cluster, OPERATOR, verb, resource, "--all-namespaces") is allowed


@pytest.mark.parametrize(
    ("verb", "secret", "namespace", "allowed"),
    [
        # Nothing in a customer namespace: dashboard tokens are stored nowhere.
        ("get", "dashboard-token", "customer-acme", False),
        ("create", "dashboard-token", "customer-acme", False),
        ("get", "other", "customer-acme", False),
        # Its own Secrets, in its own namespace only (a Role there).
        ("get", "smart-operator-ssh", platform.OPERATOR_NAMESPACE, True),
        ("get", "smart-operator-keys", platform.OPERATOR_NAMESPACE, True),
        ("get", "smart-operator-ssh", "default", False),
        ("patch", "smart-operator-ssh", platform.OPERATOR_NAMESPACE, False),
        ("get", "smart-dashboard-env", platform.OPERATOR_NAMESPACE, False),
    ],
)
def test_operator_reads_secrets_only_by_name(
    cluster: Cluster, verb: str, secret: str, namespace: str, allowed: bool
) -> None:
    assert can(cluster, OPERATOR, verb, f"secrets/{secret}", "-n", namespace) is allowed


def test_operator_lists_no_secrets_even_in_its_own_namespace(cluster: Cluster) -> None:
    for verb in ("list", "watch"):
        assert not can(cluster, OPERATOR, verb, "secrets", "-n", platform.OPERATOR_NAMESPACE)
        assert not can(cluster, OPERATOR, verb, "secrets", "-n", "customer-acme")


def test_dashboard_account_reads_only_its_own_namespace(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    names = [f"tenant-a-{unique}", f"tenant-b-{unique}"]
    for name in names:
        cluster.apply(
            {
                "apiVersion": "smartserver.ai/v1alpha1",
                "kind": "Customer",
                "metadata": {"name": name},
                "spec": {"email": f"x@{name}.example"},
            }
        )
    for name in names:
        eventually(
            lambda name=name: (
                (c := cluster.condition("customer", name, "Ready")) and c["status"] == "True"
            ),
            what=f"{name} Ready",
        )
    viewer = f"system:serviceaccount:customer-{names[0]}:dashboard-viewer"
    own, other = f"customer-{names[0]}", f"customer-{names[1]}"
    assert can(cluster, viewer, "list", "domains.smartserver.ai", "-n", own)
    assert can(cluster, viewer, "watch", "experiments.smartserver.ai", "-n", own)
    assert not can(cluster, viewer, "list", "domains.smartserver.ai", "-n", other)
    assert not can(cluster, viewer, "create", "domains.smartserver.ai", "-n", own)
    assert not can(cluster, viewer, "get", "secrets", "-n", own)
    assert not can(cluster, viewer, "list", "customers.smartserver.ai")


def test_operator_announces_itself_through_peering(cluster: Cluster, operator: Operator) -> None:
    peering = eventually(
        lambda: (
            (p := cluster.get("clusterkopfpeering", "smart-operator")) and p.get("status") and p
        ),
        what="the operator's entry in the peering object",
    )
    assert len(peering["status"]) >= 1


def test_killing_the_operator_mid_creation_leaves_every_customer_ready_once(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    names = [f"burst-{unique}-{i}" for i in range(12)]
    manifest = "\n---\n".join(
        json.dumps(
            {
                "apiVersion": "smartserver.ai/v1alpha1",
                "kind": "Customer",
                "metadata": {"name": name},
                "spec": {"email": f"x@{name}.example", "plan": "pro"},
            }
        )
        for name in names
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    # Kill as soon as the first customer has its namespace: the rest are mid-way.
    eventually(
        lambda: cluster.get("namespace", f"customer-{names[0]}"),
        what="the first namespace",
    )
    operator.restart()
    for name in names:
        eventually(
            lambda name=name: (
                (c := cluster.condition("customer", name, "Ready")) and c["status"] == "True"
            ),
            timeout=60,
            what=f"{name} Ready after the restart",
        )
    for name in names:
        namespace = f"customer-{name}"
        quotas = cluster.get("resourcequotas", "-n", namespace) or {}
        secrets = (
            cluster.get(
                "secrets", "-n", namespace, "-l", "app.kubernetes.io/managed-by=smart-operator"
            )
            or {}
        )
        assert [q["metadata"]["name"] for q in quotas["items"]] == ["plan-limits"]
        assert secrets.get("items", []) == []  # dashboard tokens are requested, never stored
        customer = cluster.get("customer", name) or {}
        types = [c["type"] for c in customer["status"]["conditions"]]
        assert sorted(types) == sorted(set(types))
