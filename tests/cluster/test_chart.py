"""The Helm chart with a real ``helm``: it lints, renders, refuses bad values with a
clear message, installs the same RBAC as the kustomize base, and what it renders is
accepted by the real API server (server-side dry run).

``helm`` is built once from ``sim/kube/helm`` and cached like the control plane."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_operator.plans import DEFAULT_CATALOG, Catalog, Plan, load_catalog
from smart_sim import platform
from smart_sim.controlplane.binaries import ensure_helm
from tests.conftest import Cluster, Operator, eventually

CHART = platform.ROOT / "charts" / "smartserver"
RELEASE = "smartserver"
NAMESPACE = "smartserver-system"


@pytest.fixture(scope="session")
def helm(pytestconfig: pytest.Config) -> Path:
    """The pinned helm binary. `make test` builds it before pytest starts (`make
    binaries`); run alone on a fresh machine, the build happens here, with its progress
    shown rather than captured."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        return ensure_helm()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )


def render_text(helm: Path, *args: str, namespace: str = NAMESPACE) -> str:
    result = run_helm(helm, "template", RELEASE, str(CHART), "-n", namespace, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(helm: Path, *args: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    text = render_text(helm, *args, namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kustomize_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_chart_lints_strictly(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_rendering_installs_the_operator_and_its_configuration(helm: Path) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Pod",  # the `helm test` hook
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]

    operator = find(docs, "StatefulSet")
    assert operator["spec"]["replicas"] == 2
    pod = operator["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Distinct priorities: kopf freezes every replica when two share one.
    assert env["SMART_PRIORITY"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["SMART_LOG_FORMAT"] == "json"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]

    service = find(docs, "Service")
    assert service["spec"]["selector"] == operator["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def mounted_catalog(docs: list[dict[str, Any]], tmp_path: Path) -> Catalog:
    """The catalog the operator reads from the file the chart mounts for it."""
    config = find(docs, "ConfigMap")
    pod = find(docs, "StatefulSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "plans")
    volume = next(v for v in pod["volumes"] if v["name"] == "plans")
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    assert env["SMART_PLANS_FILE"] == f"{mount['mountPath']}/plans.yaml"
    plans_file = tmp_path / "plans.yaml"
    plans_file.write_text(config["data"]["plans.yaml"])
    return load_catalog(plans_file)


def test_operator_reads_the_plan_catalog_the_chart_mounts(helm: Path, tmp_path: Path) -> None:
    assert mounted_catalog(render(helm), tmp_path) == DEFAULT_CATALOG
    enterprise = ["title=Enterprise", "price_monthly=999", "domains=100", "experiments=500"]
    docs = render(helm, *(arg for a in enterprise for arg in ("--set", f"plans.enterprise.{a}")))
    catalog = mounted_catalog(docs, tmp_path)
    assert catalog.names == ["enterprise", "pro", "scale", "starter"]
    assert catalog.get("enterprise") == Plan(
        title="Enterprise", price_monthly=999, domains=100, experiments=500
    )


def test_changing_the_plans_rolls_the_operator(helm: Path) -> None:
    def checksum(*args: str) -> str:
        operator = find(render(helm, *args), "StatefulSet")
        return str(operator["spec"]["template"]["metadata"]["annotations"]["checksum/plans"])

    assert checksum() != checksum("--set", "plans.pro.price_monthly=109")


def test_service_monitor_only_when_enabled(helm: Path) -> None:
    assert not [d for d in render(helm) if d["kind"] == "ServiceMonitor"]
    docs = render(
        helm,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    )
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.replicas=-1", "at '/operator/replicas': minimum: got -1, want 0"),
        ("operator.logFormat=xml", "at '/operator/logFormat': value must be one of"),
        ("operator.replicsa=3", "at '/operator': additional properties 'replicsa' not allowed"),
        ("operator.ports.metrics=70000", "at '/operator/ports/metrics': maximum"),
        ("plans.gold.title=Gold", "at '/plans/gold': missing properties 'price_monthly'"),
        ("metrics.serviceMonitor.interval=soon", "at '/metrics/serviceMonitor/interval'"),
    ],
)
def test_schema_refuses_bad_values_naming_the_value(helm: Path, setting: str, message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_standalone_refuses_more_than_one_replica(helm: Path) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "operator.standalone=true")
    assert result.returncode != 0
    assert "set operator.replicas to 1" in result.stderr, result.stderr
    docs = render(helm, "--set", "operator.standalone=true", "--set", "operator.replicas=1")
    env = {
        e["name"]
        for e in find(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "SMART_PRIORITY" not in env and "SMART_PEERING_NAME" not in env


def test_cluster_roles_are_the_kustomize_ones(helm: Path) -> None:
    """Least privilege is tested once, on the kustomize base; the chart cannot drift."""
    docs = render(helm)
    operator = kustomize_objects(platform.MANIFESTS / "rbac" / "operator.yaml")
    staff = kustomize_objects(platform.MANIFESTS / "rbac" / "staff.yaml")
    assert (
        find(docs, "ClusterRole", f"{RELEASE}-operator")["rules"]
        == (find(operator, "ClusterRole")["rules"])
    )
    for role in ("editor", "viewer"):
        assert (
            find(docs, "ClusterRole", f"{RELEASE}-{role}")["rules"]
            == (find(staff, "ClusterRole", f"smartserver-{role}")["rules"])
        )
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == f"{RELEASE}-operator"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": find(docs, "ServiceAccount")["metadata"]["name"],
            "namespace": NAMESPACE,
        }
    ]


def test_the_chart_test_pod_passes_against_a_real_operator(helm: Path, operator: Operator) -> None:
    """Run the `helm test` pod's own check against the session's operator."""
    pod = find(render(helm), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"]
    result = subprocess.run(
        [sys.executable, "-c", command[2]],
        env={**os.environ, "METRICS_URL": operator.process.metrics_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "serves the operator's metrics" in result.stdout


# A ServiceMonitor CRD with the prometheus-operator's schema for the fields the chart
# sets, so that the API server checks them (strict field validation refuses others).
DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["selector"],
                                "properties": {
                                    "jobLabel": {"type": "string"},
                                    "namespaceSelector": {
                                        "type": "object",
                                        "properties": {
                                            "any": {"type": "boolean"},
                                            "matchNames": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                        },
                                    },
                                    "selector": {
                                        "type": "object",
                                        "x-kubernetes-map-type": "atomic",
                                        "properties": {
                                            "matchLabels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "matchExpressions": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "x-kubernetes-preserve-unknown-fields": True,
                                                },
                                            },
                                        },
                                    },
                                    "endpoints": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "port": {"type": "string"},
                                                "path": {"type": "string"},
                                                "interval": {
                                                    "type": "string",
                                                    "pattern": DURATION,
                                                },
                                                "scrapeTimeout": {
                                                    "type": "string",
                                                    "pattern": DURATION,
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def service_monitor_crd(cluster: Cluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(SERVICE_MONITOR_CRD))
    try:
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        )
        yield
    finally:
        cluster.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=false")


@pytest.fixture
def release_namespace(cluster: Cluster, unique: str) -> Iterator[str]:
    """A fresh namespace to install into, deleted afterwards."""
    name = f"chart-{unique}"
    cluster.kubectl("create", "namespace", name)
    try:
        # Pods are admitted only once the namespace has its default ServiceAccount.
        eventually(
            lambda: cluster.get("serviceaccount", "default", "-n", name),
            what=f"the default ServiceAccount of {name}",
        )
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.usefixtures("service_monitor_crd")
@pytest.mark.parametrize(
    "values",
    [
        pytest.param([], id="defaults"),
        pytest.param(
            [
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "operator.extraEnv[0].name=SMART_HETZNER_ENDPOINT",
                "--set",
                "operator.extraEnv[0].value=http://hetzner.example/v1",
                "--set",
                "operator.envFrom[0].secretRef.name=smartserver-cloud",
                "--set",
                "imagePullSecrets[0].name=registry",
            ],
            id="everything-on",
        ),
    ],
)
def test_rendered_chart_passes_a_server_side_dry_run(
    helm: Path, cluster: Cluster, release_namespace: str, values: list[str]
) -> None:
    rendered = render_text(helm, "--include-crds", *values, namespace=release_namespace)
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    output = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=smartserver-chart-test",
        "-f",
        "-",
        input=rendered,
    )
    applied = [line for line in output.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(docs), output
    for doc in docs:
        if doc["kind"] not in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"]["namespace"] == release_namespace
