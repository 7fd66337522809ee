"""The platform installed with Helm, as a user installs it, on a node that runs its
pods: ``helm install --wait`` of the unmodified chart with the platform's image, then
``helm test``, the in-pod operator at work (against the provider simulators, which the
pods reach on the node link), the standby operator taking over, ``helm upgrade`` and
``helm rollback``, and ``helm uninstall`` leaving nothing behind.

The tests of this module share one release and run in the order written: each leaves
the release as the next expects it (installed, upgraded, rolled back, uninstalled).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_sim.image import spec
from smart_sim.node import NODE_NAME
from smart_sim.platform import ROOT
from smart_sim.processes import Clouds
from tests.node.conftest import NAMESPACE, LocalCluster, ready, wait_all_ready
from tests.waiting import eventually

CHART = ROOT / "charts" / "smartserver"
RELEASE = "smartserver"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# How many pods of each component the chart runs by default.
COMPONENTS = {"operator": 2, "intake": 2, "dashboard": 1}
CLOUD_SECRET = "smartserver-cloud"


def selector(component: str) -> str:
    return f"{INSTANCE},app.kubernetes.io/component={component}"


@dataclass
class Release:
    cluster: LocalCluster
    clouds: Clouds
    values: Path

    def helm(self, *args: str) -> str:
        result = self.cluster.helm(*args)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def history(self) -> list[dict[str, Any]]:
        return list(json.loads(self.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json")))

    def operator_env(self, pod: dict[str, Any]) -> dict[str, str]:
        (container,) = pod["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def customer(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {"email": f"owner@{name}.example", "plan": "pro"},
    }


def condition(obj: dict[str, Any] | None, type: str) -> str | None:
    for found in (obj or {}).get("status", {}).get("conditions", []):
        if found["type"] == type:
            return str(found["status"])
    return None


@pytest.fixture(scope="module")
def release(
    local_cluster: LocalCluster, pod_clouds: Clouds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The chart installed with the default values, plus what a real installation
    adds: the cloud credentials in a Secret (here pointing at the simulators) and
    shorter intervals, so the tests need not wait for production timings."""
    cluster = local_cluster
    cluster.kubectl("create", "namespace", NAMESPACE)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CLOUD_SECRET, "namespace": NAMESPACE},
        "stringData": pod_clouds.operator_env(),
    }
    cluster.apply(secret)
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "operator": {
                    "envFrom": [{"secretRef": {"name": CLOUD_SECRET}}],
                    "resyncSeconds": 2,
                    # The chart's probe, asked more often: a rolling update of the two
                    # replicas waits for each one's readiness in turn.
                    "readinessProbe": {"periodSeconds": 2},
                    # No ACME CA here (the chart's SMART_TLS would win over the Secret's):
                    # the pods' servers never get an agent, so there is nothing to certify.
                    "tls": {"enabled": False},
                    "extraEnv": [
                        {"name": "SMART_VERIFY_SECONDS", "value": "1"},
                        {"name": "SMART_DRIFT_SECONDS", "value": "2"},
                    ],
                },
                "intake": {"publicUrl": f"http://{cluster.link.host_address}:8088"},
            }
        )
    )
    installed = Release(cluster, pod_clouds, values)
    try:
        result = cluster.helm(
            "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values),
            "--wait", "--timeout=5m",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        yield installed
    finally:
        cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found", "--wait")
        cluster.try_kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=60s")


def test_install_runs_every_platform_pod_from_the_platform_image(release: Release) -> None:
    cluster = release.cluster
    for component, count in COMPONENTS.items():
        pods = cluster.pods(selector=selector(component))
        assert len(pods) == count, f"{component}: {len(pods)} pods, the chart runs {count}"
        for pod in pods:
            assert ready(pod), f"{pod['metadata']['name']} is not Running and Ready"
            assert pod["spec"]["nodeName"] == NODE_NAME
            (status,) = pod["status"]["containerStatuses"]
            # The image the chart names by default, resolved to the one built here.
            assert status["image"] == spec.reference()
            assert status["imageID"].endswith(cluster.image.id)
            assert status["restartCount"] == 0, f"{pod['metadata']['name']} restarted"


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_the_pods_run_as_the_image_user_without_privileges_on_a_read_only_root(
    release: Release, component: str
) -> None:
    cluster = release.cluster
    pod = cluster.pods(selector=selector(component))[0]["metadata"]["name"]
    who = cluster.exec(NAMESPACE, pod, "id", "-u")
    assert who.stdout.strip() == str(spec.UID), who.stderr
    write = cluster.exec(NAMESPACE, pod, "touch", f"{spec.VENV}/written")
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    scratch = cluster.exec(NAMESPACE, pod, "touch", "/tmp/written")
    assert scratch.returncode == 0, scratch.stderr
    status = cluster.exec(NAMESPACE, pod, "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status")
    fields = dict(line.split(":\t") for line in status.stdout.strip().splitlines())
    assert fields == {"CapEff": "0000000000000000", "NoNewPrivs": "1"}


def test_helm_test_passes(release: Release) -> None:
    output = release.helm("test", RELEASE, "-n", NAMESPACE, "--timeout=2m")
    assert "Phase:          Succeeded" in output or "Succeeded" in output, output


def test_the_operator_in_its_pod_makes_a_customer_ready(release: Release) -> None:
    cluster = release.cluster
    name = f"pod-{uuid.uuid4().hex[:6]}"
    cluster.apply(customer(name))
    # Made right after the chart installed the CRDs, the Customer's quota may predate the
    # quota controller's watch of them: the operator makes it anew after 30 s.
    try:
        eventually(
            lambda: condition(cluster.get("customer", name), "Ready") == "True",
            90,
            f"customer {name} Ready",
        )
    except AssertionError as error:
        status = (cluster.get("customer", name) or {}).get("status")
        quota = cluster.get("resourcequota", "plan-limits", "-n", f"customer-{name}")
        raise AssertionError(
            f"{error}\nits status: {json.dumps(status)}\nits quota: {json.dumps(quota)}"
        ) from None
    assert cluster.get("namespace", f"customer-{name}") is not None
    assert cluster.get("resourcequota", "plan-limits", "-n", f"customer-{name}") is not None


def test_the_operator_in_its_pod_provisions_a_domain_through_the_simulators(
    release: Release,
) -> None:
    """The pods reach the Hetzner and Cloudflare simulators on the node link's host
    address: a Domain gets its zone (which the customer has delegated), its server and
    its DNS records. (Its agent never reports: pods cannot reach the booted servers'
    network; see the module docstring.)"""
    cluster = release.cluster
    name = f"dom-{uuid.uuid4().hex[:6]}"
    cluster.apply(customer(name))
    namespace = f"customer-{name}"
    eventually(lambda: cluster.get("namespace", namespace), 60, f"namespace {namespace}")
    fqdn = f"{name}.example"
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": "site", "namespace": namespace},
            "spec": {"domain": fqdn},
        }
    )
    eventually(
        lambda: condition(cluster.get("domain", "site", "-n", namespace), "DNSReady") == "True",
        90,
        "the Domain's server and DNS records, made by the operator in its pod",
    )
    domain = cluster.get("domain", "site", "-n", namespace) or {}
    server = domain["status"]["server"]
    assert server["id"] and server["ipv4"]
    cluster.kubectl("delete", "domain", "site", "-n", namespace, "--timeout=90s")


def peers(cluster: LocalCluster) -> dict[str, Any]:
    peering = cluster.get("clusterkopfpeering", "smart-operator") or {}
    return dict(peering.get("status", {}))


def test_the_standby_operator_takes_over_when_the_active_pod_goes(release: Release) -> None:
    """kopf peering keeps one replica active, the one of highest priority (ordinal 1).
    When its pod goes (and cannot come back: the node is cordoned), the standby
    resumes and reconciles new Customers."""
    cluster = release.cluster
    eventually(lambda: len(peers(cluster)) == 2, 60, "both operator replicas in the peering")
    active = max(peers(cluster).items(), key=lambda item: item[1]["priority"])[0]
    assert active == f"{RELEASE}-operator-1"
    cluster.kubectl("cordon", NODE_NAME)
    try:
        cluster.kubectl("delete", "pod", active, "-n", NAMESPACE, "--wait=true", "--timeout=60s")
        name = f"standby-{uuid.uuid4().hex[:6]}"
        cluster.apply(customer(name))
        eventually(
            lambda: condition(cluster.get("customer", name), "Ready") == "True",
            90,
            f"customer {name} Ready, reconciled by the standby",
        )
        replacement = cluster.get("pod", active, "-n", NAMESPACE) or {}
        assert replacement.get("status", {}).get("phase") != "Running"
        logs = cluster.kubectl("logs", f"{RELEASE}-operator-0", "-n", NAMESPACE)
        assert name in logs, "the standby's log does not mention the customer it reconciled"
    finally:
        cluster.kubectl("uncordon", NODE_NAME)
    wait_all_ready(cluster, selector("operator"), COMPONENTS["operator"])


def test_upgrade_with_a_changed_value_rolls_it_out(release: Release) -> None:
    cluster = release.cluster
    before = {p["metadata"]["uid"] for p in cluster.pods(selector=selector("operator"))}
    release.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(release.values),
        "--set", "operator.logFormat=plain", "--wait", "--timeout=5m",
    )  # fmt: skip
    pods = cluster.pods(selector=selector("operator"))
    assert {p["metadata"]["uid"] for p in pods}.isdisjoint(before), "not every pod was replaced"
    assert all(release.operator_env(p)["SMART_LOG_FORMAT"] == "plain" for p in pods)
    assert all(ready(p) for p in pods)
    assert [entry["revision"] for entry in release.history()] == [1, 2]


def test_rollback_restores_the_previous_values(release: Release) -> None:
    cluster = release.cluster
    release.helm("rollback", RELEASE, "1", "-n", NAMESPACE, "--wait", "--timeout=5m")
    wait_all_ready(cluster, selector("operator"), COMPONENTS["operator"])
    pods = cluster.pods(selector=selector("operator"))
    assert all(release.operator_env(p)["SMART_LOG_FORMAT"] == "json" for p in pods)
    history = release.history()
    assert [entry["revision"] for entry in history] == [1, 2, 3]
    assert history[-1]["description"] == "Rollback to 1"


def listable_kinds(cluster: LocalCluster, *flags: str) -> list[str]:
    kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name", *flags).split()
    return [kind for kind in kinds if kind not in ("events", "events.events.k8s.io")]


def test_uninstall_leaves_nothing(release: Release) -> None:
    cluster = release.cluster
    # Customers are the platform's data, not the chart's: they go first, while the
    # operator runs to remove what they own (docs/operations.md says the same).
    cluster.kubectl("delete", "customers", "--all", "--timeout=120s")
    release.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=3m")
    kinds = ",".join(listable_kinds(cluster))
    # Helm waits for what it deleted; the pods then take their grace period to stop.
    eventually(
        lambda: cluster.kubectl("get", kinds, "-A", "-l", INSTANCE, "-o", "name").strip() == "",
        90,
        "every object of the release gone",
    )
    namespaced = ",".join(listable_kinds(cluster, "--namespaced=true"))
    left = set(cluster.kubectl("get", namespaced, "-n", NAMESPACE, "-o", "name").split())
    assert left == {
        # What Kubernetes puts in every namespace.
        "configmap/kube-root-ca.crt",
        "serviceaccount/default",
        # What the installer made before installing: the cloud credentials.
        f"secret/{CLOUD_SECRET}",
        # The operator's SSH key, which every server trusts, and the secret every server's
        # keys derive from, with the installation's id: kept on purpose.
        "secret/smart-operator-ssh",
        "secret/smart-operator-keys",
    }
    # The peering object is the chart's too (kopf would otherwise leave its own).
    assert cluster.get("clusterkopfpeering", "smart-operator") is None
    # Helm never deletes CRDs (they hold the data); they stay, and nothing else.
    assert cluster.get("crd", "customers.smartserver.ai") is not None
