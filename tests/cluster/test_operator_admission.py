"""The operator's account is held to the platform's own customer namespaces by the
admission policies of ``manifests/rbac/operator-admission-policy.yaml``, on the real API
server: RBAC lets it create, change and delete namespaces and create what a customer
namespace holds, the policies refuse it any namespace the platform did not make, any
write of what a customer namespace holds elsewhere, and any Secret but its own two (even
were its RBAC widened). And a Customer whose
``customer-<name>`` namespace someone else made is refused with a condition that says
so, and nothing in that namespace changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from smart_sim import platform
from tests.conftest import Cluster, Operator
from tests.waiting import eventually

OPERATOR = f"system:serviceaccount:{platform.OPERATOR_NAMESPACE}:{platform.OPERATOR_ACCOUNT}"
AS_OPERATOR = f"--as={OPERATOR}"
POLICY = "smart-operator-namespaces"
WRITES = "smart-operator-namespaced-writes"


def labels(customer: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "smart-operator", "smartserver.ai/customer": customer}


def namespace(name: str, **labelled: str) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labelled}}
    )


def as_operator(cluster: Cluster, *args: str, input: str | None = None) -> str:
    """What kubectl printed (stdout and stderr) for a request of the operator's account."""
    return cluster.try_kubectl(*args, AS_OPERATOR, input=input)


def refused(output: str, policy: str) -> bool:
    return f"ValidatingAdmissionPolicy '{policy}'" in output and "denied request" in output


@pytest.fixture
def plain(cluster: Cluster, unique: str) -> Iterator[str]:
    """A namespace someone else made (no platform labels), deleted after the test."""
    name = f"plain-{unique}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.try_kubectl("delete", "namespace", name, "--wait=false")


def test_the_operator_cannot_create_a_namespace_without_the_platforms_labels(
    cluster: Cluster, unique: str
) -> None:
    for name, labelled in [
        (f"plain-{unique}", {}),
        # Labelled for a customer, but not named after it.
        (f"other-{unique}", labels(f"x{unique}")),
        # Named like a customer namespace, without the manager's label.
        (f"customer-x{unique}", {"smartserver.ai/customer": f"x{unique}"}),
    ]:
        output = as_operator(cluster, "create", "-f", "-", input=namespace(name, **labelled))
        assert refused(output, POLICY), output
        assert f"namespace {name} is not one" in output
        assert cluster.get("namespace", name) is None


def test_the_operator_may_create_change_and_delete_a_customer_namespace(
    cluster: Cluster, unique: str
) -> None:
    name = f"customer-adm-{unique}"
    output = as_operator(
        cluster, "create", "-f", "-", input=namespace(name, **labels(f"adm-{unique}"))
    )
    assert "created" in output, output
    try:
        output = as_operator(cluster, "label", "namespace", name, "team=growth")
        assert "labeled" in output, output
        # Dropping the platform's labels would make it someone else's: refused.
        output = as_operator(cluster, "label", "namespace", name, "smartserver.ai/customer-")
        assert refused(output, POLICY), output
        output = as_operator(cluster, "delete", "namespace", name, "--wait=false")
        assert "deleted" in output, output
    finally:
        cluster.try_kubectl("delete", "namespace", name, "--wait=false")


def test_the_operator_cannot_delete_or_take_over_a_namespace_it_did_not_make(
    cluster: Cluster, plain: str
) -> None:
    output = as_operator(cluster, "delete", "namespace", plain, "--wait=false")
    assert refused(output, POLICY), output
    # Labelling it as a customer namespace would be adopting it: refused too (the
    # labels must be there before the change as well as after).
    output = as_operator(
        cluster, "label", "namespace", plain, *(f"{k}={v}" for k, v in labels("x").items())
    )
    assert refused(output, POLICY), output
    found = cluster.get("namespace", plain) or {}
    assert found["status"]["phase"] == "Active"
    assert "smartserver.ai/customer" not in found["metadata"].get("labels", {})


@pytest.mark.parametrize(
    ("where", "what"),
    [
        ("default", "serviceaccount"),
        ("default", "role"),
        ("default", "resourcequota"),
        (platform.OPERATOR_NAMESPACE, "secret"),
    ],
)
def test_the_operator_writes_nothing_outside_customer_namespaces(
    cluster: Cluster, unique: str, where: str, what: str
) -> None:
    name = f"probe-{unique}"
    metadata: dict[str, Any] = {"name": name, "namespace": where}
    obj: dict[str, Any] = {
        "secret": {
            "apiVersion": "v1",
            "kind": "Secret",
            # A token for an account of that namespace: what the cluster-wide "create
            # secrets" would otherwise let the operator mint.
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                **metadata,
                "annotations": {"kubernetes.io/service-account.name": "default"},
            },
        },
        "serviceaccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        "role": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": [],
        },
        "resourcequota": {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": metadata,
            "spec": {"hard": {}},
        },
    }[what]
    output = as_operator(cluster, "create", "-f", "-", input=json.dumps(obj))
    assert refused(output, WRITES), output
    assert cluster.get(what, name, "-n", where) is None


def test_the_operator_writes_no_secret_but_its_own_even_with_its_rbac_widened(
    cluster: Cluster, unique: str
) -> None:
    """Its RBAC holds it to its own namespace for Secrets; were that widened by mistake
    (here: impersonated with system:masters), the policy still refuses a token Secret
    for an account anywhere, a customer namespace included."""
    customer = f"customer-sec{unique}"
    cluster.kubectl("create", "-f", "-", input=namespace(customer, **labels(f"sec{unique}")))
    try:
        for where in ("kube-system", customer):
            name = f"probe-{unique}"
            token = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": name,
                    "namespace": where,
                    "annotations": {"kubernetes.io/service-account.name": "default"},
                },
            }
            output = as_operator(
                cluster, "create", "-f", "-", "--as-group=system:masters", input=json.dumps(token)
            )
            assert refused(output, WRITES), output
            assert "may write only its own two Secrets" in output, output
            assert cluster.get("secret", name, "-n", where) is None
    finally:
        cluster.try_kubectl("delete", "namespace", customer, "--wait=false")


def test_the_operator_writes_in_a_customer_namespace_and_its_own_secrets(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"writes-{unique}"
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": name},
            "spec": {"email": f"x@{name}.example"},
        }
    )
    try:
        eventually(
            lambda: (c := cluster.condition("customer", name, "Ready")) and c["status"] == "True",
            what="customer Ready",
        )
        # The operator made all of it, through the policies.
        objects = cluster.kubectl(
            "get", "resourcequota,serviceaccount,role,rolebinding,secret",
            "-n", f"customer-{name}", "-l", "app.kubernetes.io/managed-by=smart-operator",
            "-o", "name",
        ).split()  # fmt: skip
        assert sorted(o.split("/")[0] for o in objects) == [
            "resourcequota",
            "role.rbac.authorization.k8s.io",
            "rolebinding.rbac.authorization.k8s.io",
            "serviceaccount",
        ], objects
        # Its own Secrets in its namespace (made on its first start) are there.
        for secret in ("smart-operator-ssh", "smart-operator-keys"):
            assert cluster.get("secret", secret, "-n", platform.OPERATOR_NAMESPACE)
        # A dry run stands for a write of the same kind the policy lets through.
        probe = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": f"probe-{unique}", "namespace": f"customer-{name}"},
        }
        output = as_operator(
            cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(probe)
        )
        assert "created (server dry run)" in output, output
    finally:
        cluster.try_kubectl("delete", "customer", name, "--wait=false")


def test_a_customer_does_not_adopt_a_namespace_someone_else_made(
    cluster: Cluster, operator: Operator, unique: str
) -> None:
    name = f"taken-{unique}"
    taken = f"customer-{name}"
    cluster.kubectl("create", "namespace", taken)
    cluster.kubectl("create", "configmap", "theirs", "-n", taken, "--from-literal=a=b")
    before = cluster.get("namespace", taken) or {}
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": name},
            "spec": {"email": f"x@{name}.example"},
        }
    )
    try:
        ready = eventually(
            lambda: (
                (c := cluster.condition("customer", name, "Ready"))
                and c["reason"] == "NamespaceTaken"
                and c
            ),
            what="the Customer refused: its namespace is someone else's",
        )
        assert ready["status"] == "False"
        assert f"namespace {taken} exists and was not made by the platform" in ready["message"]
        assert f"kubectl label namespace {taken}" in ready["message"]
        customer = cluster.get("customer", name) or {}
        assert customer["status"]["phase"] == "Failed"
        events = cluster.kubectl(
            "get", "events", "-A", "-o", "json",
            "--field-selector", f"involvedObject.name={name},reason=NamespaceTaken",
        )  # fmt: skip
        assert json.loads(events)["items"], "a Warning Event says the same"
        # Nothing in the namespace changed: its labels, and what it holds.
        after = cluster.get("namespace", taken) or {}
        assert after["metadata"].get("labels") == before["metadata"].get("labels")
        assert after["metadata"].get("ownerReferences") is None
        made = cluster.kubectl(
            "get", "resourcequota,serviceaccount,role,rolebinding,secret", "-n", taken,
            "-l", "app.kubernetes.io/managed-by=smart-operator", "-o", "name",
        )  # fmt: skip
        assert made.strip() == ""
        # Deleting the Customer leaves the namespace and what it holds.
        cluster.kubectl("delete", "customer", name, "--timeout=60s")
        assert (cluster.get("namespace", taken) or {})["status"]["phase"] == "Active"
        assert cluster.get("configmap", "theirs", "-n", taken)
    finally:
        cluster.try_kubectl("delete", "customer", name, "--wait=false")
        cluster.try_kubectl("delete", "namespace", taken, "--wait=false")
