"""The platform installed with Helm, as a user installs it, on a node that runs its
pods: ``helm install --wait`` of the unmodified chart with the platform's image, then
``helm test``, the whole flow with the platform in its pods, the standby operator
taking over, ``helm upgrade`` and ``helm rollback``, and ``helm uninstall`` leaving
nothing behind.

In the flow, the in-pod operator provisions a Domain through the provider simulators
(which the pods reach on the node link's host address): a booted Debian server on the
session's provider network, which the node joins (``pod_clouds``), its DNS records, and
its agent, delivered over SSH from the bundle the image carries. The agent reports to
the in-pod intake through the intake Service's NodePort on the node's provider address
(``intake.publicUrl``), so its heartbeat makes the Domain Ready; an Experiment is
deployed, visitors are sent to the server, and the intake writes their exact counts on
the Experiment's status.

The tests of this module share one release and run in the order written: each leaves
the release as the next expects it (installed, upgraded, rolled back, uninstalled).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from smart_sim.image import spec
from smart_sim.node import NODE_NAME
from smart_sim.platform import ROOT
from smart_sim.processes import CLOUD_TOKEN
from smart_sim.traffic import TrafficPlan, send_traffic
from tests.node.conftest import NAMESPACE, LocalCluster, PodClouds, ready, wait_all_ready
from tests.waiting import eventually

CHART = ROOT / "charts" / "smartserver"
RELEASE = "smartserver"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# How many pods of each component the chart runs by default.
COMPONENTS = {"operator": 2, "intake": 2, "dashboard": 1}
CLOUD_SECRET = "smartserver-cloud"
# The intake Service's node port, where the servers' agents report (intake.publicUrl).
INTAKE_NODE_PORT = 30088


def selector(component: str) -> str:
    return f"{INSTANCE},app.kubernetes.io/component={component}"


@dataclass
class Release:
    cluster: LocalCluster
    clouds: PodClouds
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
    local_cluster: LocalCluster, pod_clouds: PodClouds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The chart installed with the default values, plus what a real installation
    adds: the cloud credentials in a Secret (here pointing at the simulators), the
    intake exposed to the servers (here a NodePort on the node's provider address) and
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
    # The agents report and beat every second instead of every minute, and take the
    # visitor's address from X-Forwarded-For when the request comes from the host (the
    # traffic generator, standing in for a proxy such as Cloudflare's).
    agent_settings = {
        "REPORT_SECONDS": "1",
        "HEARTBEAT_SECONDS": "1",
        "DEPLOY_POLL_SECONDS": "0.5",
        "LOG_FLUSH_SECONDS": "0.2",
        "REAL_IP_FROM": f"{pod_clouds.gateway}/32",
    }
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
                    # the sites are served over plain HTTP.
                    "tls": {"enabled": False},
                    "extraEnv": [
                        {"name": "SMART_VERIFY_SECONDS", "value": "1"},
                        {"name": "SMART_DRIFT_SECONDS", "value": "2"},
                        {"name": "SMART_DEPLOY_CHECK_SECONDS", "value": "2"},
                        {"name": "SMART_AGENT_SETTINGS", "value": json.dumps(agent_settings)},
                    ],
                },
                "intake": {
                    "service": {"type": "NodePort", "nodePort": INTAKE_NODE_PORT},
                    "publicUrl": f"http://{pod_clouds.address}:{INTAKE_NODE_PORT}",
                },
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


def test_the_platform_in_its_pods_runs_an_experiment_on_a_booted_server(
    release: Release,
) -> None:
    """The whole flow with the platform in its pods: the operator makes the Domain's
    server and DNS records through the simulators and delivers the agent over SSH from
    the node's provider address; the agent's heartbeat reaches the intake through its
    NodePort and makes the Domain Ready; the Experiment is deployed, and the visitors'
    exact counts reach its status through the intake."""
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
    wait_domain(cluster, namespace, "DNSReady", 90)
    # The server boots, runs cloud-init, and gets its agent over SSH from the pod.
    wait_domain(cluster, namespace, "AgentInstalled", 240)
    connected = wait_domain(cluster, namespace, "AgentConnected", 60)
    assert connected["reason"] == "Heartbeat", connected
    wait_domain(cluster, namespace, "Ready", 60)
    domain = cluster.get("domain", "site", "-n", namespace) or {}
    server = domain["status"]["server"]
    assert server["id"] and server["ipv4"]
    assert domain["status"]["agent"]["version"]

    cluster.apply(experiment("flow", namespace, "site"))
    wait_experiment(cluster, namespace, "flow", "Deployed", 90)
    base = f"http://{server['ipv4']}"
    eventually(lambda: asyncio.run(served(base)), 30, "the agent serves the experiment")
    plan = TrafficPlan(
        visitors=300,
        conversion_rates={"control": 0.05, "bold": 0.15},
        host=fqdn,
        goal_url=STRIPE_LINK,
        bots=10,
        seed=7,
    )
    truth = asyncio.run(send_traffic(base, plan))
    assert not truth.errors and not truth.uncertain
    expected = truth.counts()

    def status_counts() -> dict[str, tuple[int, int]] | None:
        status = (cluster.get("experiment", "flow", "-n", namespace) or {}).get("status", {})
        counts = {v["name"]: (v["visitors"], v["conversions"]) for v in status.get("variants", [])}
        return counts if counts == expected else None

    eventually(status_counts, 60, f"the Experiment's status shows exactly {expected}")
    status = (cluster.get("experiment", "flow", "-n", namespace) or {})["status"]
    assert status["lastSequence"] >= 1
    assert status["decision"]["outcome"] in ("pending", "winner", "no_difference")

    # Removing the Domain removes its server: the node tier leaves no server running.
    cluster.kubectl("delete", "experiment", "flow", "-n", namespace, "--timeout=60s")
    cluster.kubectl("delete", "domain", "site", "-n", namespace, "--timeout=90s")
    eventually(
        lambda: not server_names(release.clouds),
        60,
        "the Domain's server deleted in the Hetzner simulator",
    )


STRIPE_LINK = "https://buy.stripe.com/test_1"


def wait_domain(cluster: LocalCluster, namespace: str, type: str, timeout: float) -> dict[str, Any]:
    return wait_for(cluster, "domain", namespace, "site", type, timeout)


def wait_experiment(
    cluster: LocalCluster, namespace: str, name: str, type: str, timeout: float
) -> dict[str, Any]:
    return wait_for(cluster, "experiment", namespace, name, type, timeout)


def wait_for(
    cluster: LocalCluster, kind: str, namespace: str, name: str, type: str, timeout: float
) -> dict[str, Any]:
    """Wait for a condition to be True; a failure shows the object's conditions."""
    seen: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        obj = cluster.get(kind, name, "-n", namespace) or {}
        conditions = seen[0] = obj.get("status", {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == type), None)
        return dict(found) if found and found["status"] == "True" else None

    try:
        return eventually(check, timeout, f"{kind} {name} {type}")
    except AssertionError as error:
        raise AssertionError(f"{error}; its conditions: {json.dumps(seen[0])}") from None


def experiment(name: str, namespace: str, domain_ref: str) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domainRef": domain_ref,
            "type": "landing_page",
            "template": "saas_landing",
            "templateConfig": {"brand": "Acme", "stripeLink": STRIPE_LINK},
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "bold", "weight": 50, "values": {"headline": "Ship pages that sell"}},
            ],
        },
    }


async def served(base: str) -> bool:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(base + "/", timeout=aiohttp.ClientTimeout(total=5)) as reply:
                return reply.status == 200 and "/_smart/convert?v=" in await reply.text()
        except aiohttp.ClientError:
            return False


def server_names(clouds: PodClouds) -> list[str]:
    """The servers the Hetzner simulator holds (its API, with the simulators' token)."""
    request = urllib.request.Request(  # noqa: S310 (the simulator, on the node link)
        f"{clouds.clouds.hetzner.url}/servers",
        headers={"Authorization": f"Bearer {CLOUD_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return [server["name"] for server in json.load(response)["servers"]]


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
