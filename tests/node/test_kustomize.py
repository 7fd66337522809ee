"""The platform installed with ``kubectl apply -k manifests/`` on a node that runs its
pods: every component runs from the platform's image and becomes Ready, the operator
in its pod reconciles a Customer, and ``kubectl delete -k manifests/`` removes it all.
"""

from __future__ import annotations

import secrets
import uuid

from smart_sim.image import spec
from smart_sim.platform import MANIFESTS
from tests.node.conftest import NAMESPACE, LocalCluster, ready
from tests.waiting import eventually

# What the kustomize base runs, by its app.kubernetes.io/name label.
COMPONENTS = {"smart-operator": 2, "smart-intake": 2, "smart-dashboard": 1}


def test_the_kustomize_base_installs_a_working_platform_and_removes_it(
    local_cluster: LocalCluster,
) -> None:
    cluster = local_cluster
    # A cluster that never had the platform: the CRDs an earlier install left go first
    # (the base applies them together with what needs them).
    crds = [f"{plural}.smartserver.ai" for plural in ("customers", "domains", "experiments")]
    crds += ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    cluster.kubectl("delete", "crd", *crds, "--ignore-not-found", "--wait=true")
    # What the base asks an installer to provide: the dashboard's session key.
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "create", "secret", "generic", "smart-dashboard-env", "-n", NAMESPACE,
        f"--from-literal=SMART_DASHBOARD_SESSION_SECRET={secrets.token_hex(32)}",
    )  # fmt: skip
    try:
        cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
        cluster.kubectl("rollout", "status", "statefulset/smart-operator", "-n", NAMESPACE,
                        "--timeout=180s")  # fmt: skip
        for deployment in ("smart-intake", "smart-dashboard"):
            cluster.kubectl("rollout", "status", f"deployment/{deployment}", "-n", NAMESPACE,
                            "--timeout=180s")  # fmt: skip
        for name, count in COMPONENTS.items():
            pods = cluster.pods(selector=f"app.kubernetes.io/name={name}")
            assert len(pods) == count, f"{name}: {len(pods)} pods, the base runs {count}"
            for pod in pods:
                assert ready(pod), f"{pod['metadata']['name']} is not Running and Ready"
                (status,) = pod["status"]["containerStatuses"]
                assert status["image"] == spec.reference()

        customer = f"kustomize-{uuid.uuid4().hex[:6]}"
        cluster.apply(
            {
                "apiVersion": "smartserver.ai/v1alpha1",
                "kind": "Customer",
                "metadata": {"name": customer},
                "spec": {"email": f"owner@{customer}.example", "plan": "starter"},
            }
        )

        def customer_ready() -> bool:
            obj = cluster.get("customer", customer) or {}
            conditions = obj.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        eventually(customer_ready, 60, f"customer {customer} Ready")
        cluster.kubectl("delete", "customers", "--all", "--timeout=120s")
    finally:
        cluster.try_kubectl("delete", "-k", str(MANIFESTS), "--ignore-not-found", "--wait=false")
    # Polled here: kubectl's own --wait takes seconds longer than the deletion.
    eventually(
        lambda: (
            cluster.get("namespace", NAMESPACE) is None
            and cluster.get("crd", "customers.smartserver.ai") is None
        ),
        120,
        "the namespace and the CRDs gone",
    )
    assert cluster.get("crd", "clusterkopfpeerings.kopf.dev") is None
    leftovers = cluster.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/part-of=smartserver",
        "-o", "name",
    )  # fmt: skip
    assert leftovers.strip() == ""
