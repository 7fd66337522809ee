"""The Helm chart with a real ``helm``: it lints, renders, refuses bad values with a
clear message, installs the same RBAC as the kustomize base, and what it renders is
accepted by the real API server (server-side dry run). It installs the operator, the
results intake and the dashboard; the accounts it creates for the intake and the
dashboard are checked on the real API server, and the processes run as them with the
settings the chart renders.

``helm`` is built once from ``sim/kube/helm`` and cached like the control plane."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from smart_dashboard import views as dashboard_views
from smart_dashboard.settings import DashboardSettings
from smart_operator import billing
from smart_operator.intake import views as intake_views
from smart_operator.intake.settings import IntakeSettings
from smart_operator.plans import DEFAULT_CATALOG, Catalog, Plan, load_catalog
from smart_operator.settings import OperatorSettings
from smart_operator.templates.catalog import TemplateName
from smart_sim import platform, stripemock
from smart_sim.controlplane.binaries import ensure_helm
from smart_sim.processes import DashboardProcess, IntakeProcess, http_ok
from tests.cluster.admission import patch_status, refused, wait_for_policy
from tests.conftest import Cluster, Operator
from tests.waiting import eventually

CHART = platform.ROOT / "charts" / "smartserver"
RELEASE = "smartserver"
NAMESPACE = "smartserver-system"
# What the chart renders without a namespace.
CLUSTER_KINDS = {
    "CustomResourceDefinition",
    "ClusterExperimentTemplate",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterKopfPeering",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


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


def render_text(helm: Path, *args: str, namespace: str = NAMESPACE, release: str = RELEASE) -> str:
    result = run_helm(helm, "template", release, str(CHART), "-n", namespace, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(
    helm: Path, *args: str, namespace: str = NAMESPACE, release: str = RELEASE
) -> list[dict[str, Any]]:
    text = render_text(helm, *args, namespace=namespace, release=release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kustomize_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def server_dry_run(cluster: Cluster, rendered: str) -> str:
    """``kubectl apply --server-side --dry-run=server`` of ``rendered``; its output."""
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=smartserver-chart-test",
        "-f",
        "-",
        input=rendered,
    )


def test_chart_lints_strictly(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


# What the chart installs for the operator alone, with the intake and the dashboard off.
BUILTIN_TEMPLATES = ["ClusterExperimentTemplate"] * len(TemplateName)  # the catalogue
OPERATOR_KINDS = [
    *BUILTIN_TEMPLATES,
    "ClusterKopfPeering",  # the replicas' peering object
    "ClusterRole",  # the operator's
    "ClusterRole",  # staff: editor
    "ClusterRole",  # staff: viewer
    "ClusterRoleBinding",
    "ConfigMap",  # the plan catalog
    "Pod",  # the `helm test` hook
    "Role",  # the operator's own Secrets
    "RoleBinding",
    "Service",  # the operator's metrics
    "ServiceAccount",
    "StatefulSet",
    "ValidatingAdmissionPolicy",  # the operator's namespaces
    "ValidatingAdmissionPolicy",  # and where it writes
    "ValidatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicyBinding",
]


def test_default_rendering_installs_the_operator_and_its_configuration(helm: Path) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        *BUILTIN_TEMPLATES,
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",  # the intake's
        "ClusterRole",  # the dashboard's
        "ClusterRoleBinding",
        "ClusterRoleBinding",  # the intake's
        "ClusterRoleBinding",  # the dashboard's
        "ConfigMap",
        "Deployment",  # the intake
        "Deployment",  # the dashboard
        "Pod",  # the `helm test` hook
        "Role",  # the operator's own Secrets
        "RoleBinding",
        "Secret",  # the dashboard's session key
        "Service",
        "Service",  # the intake's agents' API
        "Service",  # the intake's metrics
        "Service",  # the intake's replicas, to each other (headless)
        "Service",  # the dashboard
        "ServiceAccount",
        "ServiceAccount",  # the intake's
        "ServiceAccount",  # the dashboard's
        "StatefulSet",
        "ValidatingAdmissionPolicy",  # the operator's namespaces
        "ValidatingAdmissionPolicy",  # and where it writes
        "ValidatingAdmissionPolicy",  # the intake's status policy
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    for doc in docs:
        if doc["kind"] not in CLUSTER_KINDS:
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
    assert (
        pod["serviceAccountName"]
        == find(docs, "ServiceAccount", f"{RELEASE}-operator")["metadata"]["name"]
    )

    service = find(docs, "Service", f"{RELEASE}-operator-metrics")
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
    # The operator and the intake serve /metrics; the dashboard has none.
    assert len([d for d in docs if d["kind"] == "ServiceMonitor"]) == 2
    for component in ("operator", "intake"):
        monitor = find(docs, "ServiceMonitor", f"{RELEASE}-{component}")
        service = find(docs, "Service", f"{RELEASE}-{component}-metrics")
        assert monitor["metadata"]["namespace"] == NAMESPACE
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    without_intake = render(
        helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "intake.enabled=false"
    )
    assert [d["metadata"]["name"] for d in without_intake if d["kind"] == "ServiceMonitor"] == [
        f"{RELEASE}-operator"
    ]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.replicas=-1", "at '/operator/replicas': minimum: got -1, want 0"),
        ("operator.logFormat=xml", "at '/operator/logFormat': value must be one of"),
        ("operator.replicsa=3", "at '/operator': additional properties 'replicsa' not allowed"),
        ("operator.ports.metrics=70000", "at '/operator/ports/metrics': maximum"),
        ("plans.gold.title=Gold", "at '/plans/gold': missing properties 'price_monthly'"),
        ("metrics.serviceMonitor.interval=soon", "at '/metrics/serviceMonitor/interval'"),
        ("intake.replicas=-1", "at '/intake/replicas': minimum: got -1, want 0"),
        ("intake.enabeld=false", "at '/intake': additional properties 'enabeld' not allowed"),
        ("intake.enabled=maybe", "at '/intake/enabled': got string, want boolean"),
        ("intake.logLevel=TRACE", "at '/intake/logLevel': value must be one of"),
        ("intake.ports.http=0", "at '/intake/ports/http': minimum: got 0, want 1"),
        ("intake.publicUrl=intake.example.com", "at '/intake/publicUrl': 'intake.example.com'"),
        ("intake.service.nodePort=-1", "at '/intake/service/nodePort': minimum: got -1"),
        ("dashboard.replicas=two", "at '/dashboard/replicas': got string, want integer"),
        ("dashboard.service.type=Ingress", "at '/dashboard/service/type': value must be one of"),
        ("dashboard.sessionHours=0", "at '/dashboard/sessionHours'"),
        ("dashboard.sessionSecret=tooshort", "minLength: got 8, want 32"),
        ("dashboard.adminToken=staff-token", "at '/dashboard/adminToken'"),
        ("plans.pro.stripe_price_id=prod_123", "at '/plans/pro/stripe_price_id': 'prod_123'"),
        ("billing.enabled=yes", "at '/billing/enabled': got string, want boolean"),
        ("billing.enalbed=true", "at '/billing': additional properties 'enalbed' not allowed"),
        ("billing.existingSecret=Stripe_Keys", "at '/billing/existingSecret'"),
        ("billing.stripeEndpoint=api.stripe.com", "at '/billing/stripeEndpoint'"),
        ("billing.graceSeconds=-1", "at '/billing/graceSeconds': minimum: got -1, want 0"),
        ("networkPolicy.apiServer.cidrs[0]=10.0.0.1", "at '/networkPolicy/apiServer/cidrs/0'"),
        ("networkPolicy.operatorEgressPorts[0]=0", "at '/networkPolicy/operatorEgressPorts/0'"),
        ("networkPolicy.metricsFrom[0].podSelecter.x=y", "at '/networkPolicy/metricsFrom/0'"),
    ],
)
def test_schema_refuses_bad_values_naming_the_value(helm: Path, setting: str, message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_schema_does_not_echo_a_refused_session_secret(helm: Path) -> None:
    secret = "s3cr3t-but-too-short"
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--set", f"dashboard.sessionSecret={secret}"
    )
    assert result.returncode != 0
    assert "at '/dashboard/sessionSecret'" in result.stderr, result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["intake.drainSeconds=30"],
            "intake.drainSeconds must be less than intake.terminationGracePeriodSeconds",
        ),
        (
            ["intake.serviceAccount.create=false"],
            "intake.serviceAccount.name is required when intake.serviceAccount.create is false",
        ),
        (
            ["billing.enabled=true"],
            "billing.enabled needs billing.existingSecret, the name of a Secret holding the"
            " keys stripe-api-key (the Stripe secret key, sk_... or rk_...) and"
            " stripe-webhook-secret (the webhook endpoint's signing secret, whsec_...): create"
            " it with `kubectl -n default create secret generic smartserver-stripe",
        ),
        (
            ["billing.enabled=true", "billing.existingSecret=smartserver-stripe"],
            "billing.enabled but no plan has a stripe_price_id, so no Customer could be"
            " subscribed: set plans.<name>.stripe_price_id",
        ),
        (
            ["billing.enabled=true", "intake.enabled=false"],
            "billing.enabled needs billing.existingSecret",
        ),
        (
            ["intake.service.nodePort=30088"],
            "intake.service.nodePort needs intake.service.type NodePort or LoadBalancer",
        ),
        (
            ["dashboard.serviceAccount.create=false"],
            "dashboard.serviceAccount.name is required when dashboard.serviceAccount.create"
            " is false",
        ),
    ],
)
def test_inconsistent_values_are_refused_with_what_to_do(
    helm: Path, settings: list[str], message: str
) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    result = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
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
    staff = kustomize_objects(platform.MANIFESTS / "rbac" / "staff.yaml")
    for role in ("editor", "viewer"):
        assert (
            find(docs, "ClusterRole", f"{RELEASE}-{role}")["rules"]
            == (find(staff, "ClusterRole", f"smartserver-{role}")["rules"])
        )
    for component in ("operator", "intake", "dashboard"):
        base = kustomize_objects(platform.MANIFESTS / "rbac" / f"{component}.yaml")
        name = f"{RELEASE}-{component}"
        assert find(docs, "ClusterRole", name)["rules"] == find(base, "ClusterRole")["rules"]
        binding = find(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": find(docs, "ServiceAccount", name)["metadata"]["name"],
                "namespace": NAMESPACE,
            }
        ]


# -- the results intake and the dashboard -------------------------------------------

# component -> (command, its settings, their environment prefix, the app's routes)
COMPONENTS: dict[str, tuple[str, type[BaseSettings], str, Any]] = {
    "intake": ("smart-intake", IntakeSettings, "SMART_INTAKE_", intake_views.routes),
    "dashboard": (
        "smart-dashboard",
        DashboardSettings,
        "SMART_DASHBOARD_",
        dashboard_views.routes,
    ),
}


def pod_and_container(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def resolved_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would set it from the rendered
    objects: literal values, and keys of the rendered Secrets (an optional key that is
    missing is left out, as Kubernetes does)."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        secret = find(docs, "Secret", ref["name"])
        if ref["key"] in secret["data"]:
            env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            assert ref.get("optional") is True, f"{entry['name']}: no key {ref['key']}"
    return env


def settings_from(
    env: dict[str, str], component: str, monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """The process's settings, read from exactly this environment. Every variable must
    name a real setting (the settings ignore unknown ones, so a typo would pass)."""
    _, settings_class, prefix, _ = COMPONENTS[component]
    for name in env:
        assert name.startswith(prefix), name
        assert name.removeprefix(prefix).lower() in settings_class.model_fields, name
    for name in os.environ:
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_class()


def routes_of(component: str) -> set[tuple[str, str]]:
    return {(r.method, r.path) for r in COMPONENTS[component][3] if hasattr(r, "path")}


@pytest.mark.parametrize("component", ["intake", "dashboard"])
def test_the_component_runs_as_its_own_account_with_probes_on_its_health_endpoint(
    helm: Path, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm)
    name = f"{RELEASE}-{component}"
    deployment = find(docs, "Deployment", name)
    assert deployment["metadata"]["namespace"] == NAMESPACE
    pod, container = pod_and_container(deployment)
    command = COMPONENTS[component][0]
    assert container["command"] == [command]
    # The platform's one image, the operator's, which holds every process.
    _, operator = pod_and_container(find(docs, "StatefulSet"))
    assert container["image"] == operator["image"] == "smartserver/operator:0.1.0"
    assert container["imagePullPolicy"] == operator["imagePullPolicy"]

    # Its own account, bound to its own least-privilege ClusterRole (compared with
    # the kustomize base above, and checked on the API server below).
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount", name)["metadata"]["name"]
    assert find(docs, "ClusterRoleBinding", name)["subjects"][0]["name"] == name

    # The probes ask the app's real health endpoint, on the port the process listens on.
    settings = settings_from(resolved_env(docs, container), component, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port  # type: ignore[attr-defined]
    assert ("GET", "/healthz") in routes_of(component)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe

    # Hardened like the operator.
    assert pod["securityContext"] == operator_pod_security(docs)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]

    service = find(docs, "Service", name)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == component


def operator_pod_security(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod, _ = pod_and_container(find(docs, "StatefulSet"))
    return dict(pod["securityContext"])


def test_intake_defaults(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm)
    deployment = find(docs, "Deployment", f"{RELEASE}-intake")
    assert deployment["spec"]["replicas"] == 2
    _, container = pod_and_container(deployment)
    settings = settings_from(resolved_env(docs, container), "intake", monkeypatch)
    assert isinstance(settings, IntakeSettings)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["http"], ports["metrics"]) == (settings.port, settings.metrics_port)
    assert settings.admin_token is None  # no staff platform view unless asked
    metrics = find(docs, "Service", f"{RELEASE}-intake-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
    # The replicas find each other by a headless Service's name, on their metrics port.
    peers = find(docs, "Service", f"{RELEASE}-intake-peers")
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert peers["spec"]["ports"][0]["port"] == settings.metrics_port
    assert settings.peers == f"{RELEASE}-intake-peers.{peers['metadata']['namespace']}.svc"
    # The agents report from outside: nothing points the operator anywhere by default.
    _, operator = pod_and_container(find(docs, "StatefulSet"))
    assert "SMART_INTAKE_URL" not in {e["name"] for e in operator["env"]}
    assert not [d for d in docs if d["kind"] == "Secret" and "intake" in d["metadata"]["name"]]


def test_intake_service_type_and_node_port(helm: Path) -> None:
    """A NodePort Service with a fixed port: the agents' URL (intake.publicUrl) can name
    it before the install. By default the Service is ClusterIP, with no node port."""
    name = f"{RELEASE}-intake"
    (default,) = find(render(helm), "Service", name)["spec"]["ports"]
    assert "nodePort" not in default
    docs = render(
        helm, "--set", "intake.service.type=NodePort", "--set", "intake.service.nodePort=30088"
    )
    service = find(docs, "Service", name)
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["nodePort"], port["targetPort"]) == ("http", 30088, "http")
    # Only the agents' API: the metrics stay inside the cluster.
    assert find(docs, "Service", f"{name}-metrics")["spec"]["type"] == "ClusterIP"
    picked = find(render(helm, "--set", "intake.service.type=NodePort"), "Service", name)
    assert "nodePort" not in picked["spec"]["ports"][0]


def test_intake_public_url_and_admin_token(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "staff-" + "x" * 20
    docs = render(
        helm,
        "--set",
        "intake.publicUrl=https://intake.example.com",
        "--set",
        f"intake.adminToken={token}",
        "--set",
        "intake.logLevel=WARNING",
    )
    _, operator = pod_and_container(find(docs, "StatefulSet"))
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["SMART_INTAKE_URL"] == "https://intake.example.com"
    deployment = find(docs, "Deployment", f"{RELEASE}-intake")
    _, container = pod_and_container(deployment)
    settings = settings_from(resolved_env(docs, container), "intake", monkeypatch)
    assert isinstance(settings, IntakeSettings)
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == token
    assert settings.log_level == "WARNING"
    # The token is in the Secret only, never in the Deployment.
    assert token not in yaml.safe_dump(deployment)

    existing = render(helm, "--set", "intake.existingSecret=platform-tokens")
    _, container = pod_and_container(find(existing, "Deployment", f"{RELEASE}-intake"))
    (entry,) = [e for e in container["env"] if e["name"] == "SMART_INTAKE_ADMIN_TOKEN"]
    assert entry["valueFrom"]["secretKeyRef"] == {
        "name": "platform-tokens",
        "key": "admin-token",
        "optional": True,
    }
    assert not [d for d in existing if d["kind"] == "Secret" and "intake" in d["metadata"]["name"]]


def test_dashboard_session_key_and_admin_token_come_from_a_secret(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{RELEASE}-dashboard"
    docs = render(helm)
    deployment = find(docs, "Deployment", name)
    assert deployment["spec"]["replicas"] == 1
    _, container = pod_and_container(deployment)
    settings = settings_from(resolved_env(docs, container), "dashboard", monkeypatch)
    assert isinstance(settings, DashboardSettings)
    # A generated key, long enough, shared by every replica through the Secret.
    assert settings.session_secret is not None
    generated = settings.session_secret.get_secret_value()
    assert len(generated) >= 32
    assert settings.admin_token is None  # no staff sign-in unless asked
    assert settings.secure_cookies is True
    assert "admin-token" not in find(docs, "Secret", name)["data"]

    session, admin = "k" * 40, "staff-token-for-the-dashboard-0123456789"
    docs = render(
        helm,
        "--set",
        f"dashboard.sessionSecret={session}",
        "--set",
        f"dashboard.adminToken={admin}",
        "--set",
        "dashboard.secureCookies=false",
    )
    deployment = find(docs, "Deployment", name)
    _, container = pod_and_container(deployment)
    settings = settings_from(resolved_env(docs, container), "dashboard", monkeypatch)
    assert isinstance(settings, DashboardSettings)
    assert settings.session_secret is not None and settings.admin_token is not None
    assert settings.session_secret.get_secret_value() == session
    assert settings.admin_token.get_secret_value() == admin
    assert settings.secure_cookies is False
    text = yaml.safe_dump(deployment)
    assert session not in text and admin not in text

    existing = render(helm, "--set", "dashboard.existingSecret=dashboard-keys")
    assert not [d for d in existing if d["kind"] == "Secret"]
    _, container = pod_and_container(find(existing, "Deployment", name))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["SMART_DASHBOARD_SESSION_SECRET"] == {
        "name": "dashboard-keys",
        "key": "session-secret",
    }
    assert refs["SMART_DASHBOARD_ADMIN_TOKEN"]["name"] == "dashboard-keys"
    assert refs["SMART_DASHBOARD_ADMIN_TOKEN"]["optional"] is True


# -- billing with Stripe ----------------------------------------------------------------

STRIPE_SECRET = "smartserver-stripe"
BILLING = [
    "--set",
    "billing.enabled=true",
    "--set",
    f"billing.existingSecret={STRIPE_SECRET}",
    "--set",
    "plans.pro.stripe_price_id=price_pro_monthly",
]


def stripe_secret(api_key: str, webhook_secret: str) -> dict[str, Any]:
    """The Secret the operations guide has the user create (the chart never does)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STRIPE_SECRET, "namespace": NAMESPACE},
        "data": {
            "stripe-api-key": base64.b64encode(api_key.encode()).decode(),
            "stripe-webhook-secret": base64.b64encode(webhook_secret.encode()).decode(),
        },
    }


def operator_settings(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> OperatorSettings:
    """The operator's settings from the environment the chart renders for it (the
    fieldRef variables, the pod's own name and ordinal, are left out)."""
    _, container = pod_and_container(find(docs, "StatefulSet"))
    literal = [e for e in container["env"] if "fieldRef" not in e.get("valueFrom", {})]
    env = resolved_env(docs, {**container, "env": literal})
    for name in env:
        assert name.removeprefix("SMART_").lower() in OperatorSettings.model_fields, name
    for name in os.environ:
        if name.startswith("SMART_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return OperatorSettings()


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }


def test_billing_is_off_by_default(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm)
    settings = operator_settings(docs, monkeypatch)
    assert settings.stripe_api_key is None  # nobody is charged
    _, intake = pod_and_container(find(docs, "Deployment", f"{RELEASE}-intake"))
    intake_settings = settings_from(resolved_env(docs, intake), "intake", monkeypatch)
    assert isinstance(intake_settings, IntakeSettings)
    assert intake_settings.stripe_webhook_secret is None  # the webhook route answers 404
    assert "STRIPE" not in yaml.safe_dump_all(docs)


def test_billing_values_set_the_operator_and_intake_from_the_stripe_secret(
    helm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api_key, webhook_secret = "sk_test_" + "k" * 24, "whsec_" + "w" * 24
    docs = render(
        helm,
        *BILLING,
        "--set",
        "billing.stripeEndpoint=http://stripe-mock.billing:12111",
        "--set",
        "billing.graceSeconds=3600",
    )
    # The keys come from the user's Secret by reference: the chart makes no Secret of
    # them and never holds them.
    assert not [d for d in docs if d["kind"] == "Secret" and "stripe" in str(d["data"])]
    _, operator = pod_and_container(find(docs, "StatefulSet"))
    _, intake = pod_and_container(find(docs, "Deployment", f"{RELEASE}-intake"))
    assert secret_refs(operator)["SMART_STRIPE_API_KEY"] == {
        "name": STRIPE_SECRET,
        "key": "stripe-api-key",
    }
    assert secret_refs(intake)["SMART_INTAKE_STRIPE_WEBHOOK_SECRET"] == {
        "name": STRIPE_SECRET,
        "key": "stripe-webhook-secret",
    }

    # What each process reads, once the kubelet has filled in the Secret's keys.
    with_secret = [*docs, stripe_secret(api_key, webhook_secret)]
    settings = operator_settings(with_secret, monkeypatch)
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == api_key
    assert settings.stripe_endpoint == "http://stripe-mock.billing:12111"
    assert settings.billing_grace_seconds == 3600
    intake_settings = settings_from(resolved_env(with_secret, intake), "intake", monkeypatch)
    assert isinstance(intake_settings, IntakeSettings)
    assert intake_settings.stripe_webhook_secret is not None
    assert intake_settings.stripe_webhook_secret.get_secret_value() == webhook_secret

    # The plan's Stripe price reaches the operator's catalog.
    catalog = mounted_catalog(docs, tmp_path)
    pro = catalog.get("pro")
    assert pro is not None and pro.stripe_price_id == "price_pro_monthly"

    # Stripe's own API and a three-day grace by default.
    defaults = operator_settings([*render(helm, *BILLING), *with_secret[-1:]], monkeypatch)
    assert defaults.stripe_endpoint == "https://api.stripe.com"
    assert defaults.billing_grace_seconds == 3 * 24 * 3600

    # Without the intake, the operator still bills; the webhooks go elsewhere.
    alone = render(helm, *BILLING, "--set", "intake.enabled=false")
    _, operator = pod_and_container(find(alone, "StatefulSet"))
    assert secret_refs(operator)["SMART_STRIPE_API_KEY"]["name"] == STRIPE_SECRET
    assert not [d for d in alone if d["kind"] == "Deployment" and "intake" in d["metadata"]["name"]]


def test_billing_notes_name_the_webhook_url_and_its_events(helm: Path) -> None:
    result = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--dry-run=client",
        *BILLING,
        "--set",
        "intake.publicUrl=https://intake.example.com",
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "https://intake.example.com/v1/stripe/webhook" in notes
    for event in sorted(billing.EVENT_STATES):
        assert event in notes
    # The two plans without a price are named: their Customers cannot be subscribed.
    assert (
        "Plans without a stripe_price_id, whose Customers cannot be subscribed: scale, starter"
        in notes
    )


@pytest.mark.parametrize("component", ["intake", "dashboard"])
def test_a_disabled_component_is_not_installed(helm: Path, component: str) -> None:
    other = "dashboard" if component == "intake" else "intake"
    docs = render(helm, "--set", f"{component}.enabled=false")
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in docs}
    assert component not in components
    assert other in components
    assert find(docs, "Deployment", f"{RELEASE}-{other}")
    assert find(docs, "StatefulSet")
    # Both off: exactly what the chart installed before it had them.
    docs = render(helm, "--set", "intake.enabled=false", "--set", "dashboard.enabled=false")
    assert sorted(d["kind"] for d in docs) == OPERATOR_KINDS


def test_the_operators_role_and_admission_policies_are_the_kustomize_ones(helm: Path) -> None:
    """The operator's own-Secrets Role and its admission policies: the chart's are the
    base's, for the release's account, namespace and names (proven on the real API
    server in test_operator_runtime.py and test_operator_admission.py)."""
    release, namespace = "other", "elsewhere"
    docs = render(helm, namespace=namespace, release=release)
    base = kustomize_objects(platform.MANIFESTS / "rbac" / "operator.yaml")
    name = f"{release}-smartserver-operator"
    role = find(docs, "Role", name)
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == find(base, "Role")["rules"]
    binding = find(docs, "RoleBinding", name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": name,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]

    policies = kustomize_objects(platform.MANIFESTS / "rbac" / "operator-admission-policy.yaml")
    ours = f"system:serviceaccount:{platform.OPERATOR_NAMESPACE}:{platform.OPERATOR_ACCOUNT}"
    for policy in ("namespaces", "namespaced-writes"):
        wanted = json.dumps(
            find(policies, "ValidatingAdmissionPolicy", f"smart-operator-{policy}")["spec"]
        )
        wanted = wanted.replace(ours, f"system:serviceaccount:{namespace}:{name}").replace(
            f"request.namespace == '{platform.OPERATOR_NAMESPACE}'",
            f"request.namespace == '{namespace}'",
        )
        charted = find(docs, "ValidatingAdmissionPolicy", f"{name}-{policy}")
        assert charted["spec"] == json.loads(wanted)
        bound = find(docs, "ValidatingAdmissionPolicyBinding", f"{name}-{policy}")
        assert bound["spec"] == {"policyName": f"{name}-{policy}", "validationActions": ["Deny"]}


def pod_template(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    kind = "StatefulSet" if component == "operator" else "Deployment"
    return find(docs, kind, f"{RELEASE}-{component}")["spec"]["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_network_policies_are_off_by_default(helm: Path) -> None:
    assert not [d for d in render(helm) if d["kind"] == "NetworkPolicy"]


def test_network_policies_let_each_component_take_and_open_only_what_it_needs(
    helm: Path,
) -> None:
    """With networkPolicy.enabled, one policy per component selects exactly that
    component's pods, isolates them both ways, admits only their named ports (and
    /metrics only from the peers given), and lets them out only to DNS, the API server
    and, for the operator alone, the providers and SSH."""
    docs = render(
        helm,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServer.cidrs[0]=10.96.0.1/32",
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
    )
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    components = ("operator", "intake", "dashboard")
    assert set(policies) == {f"{RELEASE}-{c}" for c in components}
    pods = {c: pod_template(docs, c) for c in components}
    for component in components:
        spec = policies[f"{RELEASE}-{component}"]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        selected = {
            c for c in components if selects(spec["podSelector"], pods[c]["metadata"]["labels"])
        }
        assert selected == {component}
        # Every port it admits is one its container listens on, by name.
        (container,) = pods[component]["spec"]["containers"]
        named = {p["name"] for p in container.get("ports", [])}
        admitted = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        assert admitted <= named, (component, admitted, named)
        own = [{"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}]
        for rule in spec["ingress"]:
            if rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]:
                assert rule["from"] in (
                    [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
                    # the intake's replicas ask each other (SMART_INTAKE_PEERS)
                    *([own] if component == "intake" else []),
                )
            else:  # the public port: agents, browsers
                assert "from" not in rule
        egress = {
            (p["port"], p["protocol"], json.dumps(rule.get("to")))
            for rule in spec["egress"]
            for p in rule["ports"]
        }
        api = json.dumps([{"ipBlock": {"cidr": "10.96.0.1/32"}}])
        expected = {
            (53, "UDP", "null"),
            (53, "TCP", "null"),
            (443, "TCP", api),
            (6443, "TCP", api),
        }
        if component == "operator":
            expected |= {(22, "TCP", "null"), (80, "TCP", "null"), (443, "TCP", "null")}
        if component == "intake":
            expected.add((9090, "TCP", json.dumps(own)))
        assert egress == expected, component
    assert {
        p["port"] for r in policies[f"{RELEASE}-intake"]["spec"]["ingress"] for p in r["ports"]
    } == {"http", "metrics"}
    assert {
        p["port"] for r in policies[f"{RELEASE}-dashboard"]["spec"]["ingress"] for p in r["ports"]
    } == {"http"}
    assert {
        p["port"] for r in policies[f"{RELEASE}-operator"]["spec"]["ingress"] for p in r["ports"]
    } == {"metrics"}
    # Without metricsFrom, /metrics is open to pods in every namespace, not the world.
    docs = render(helm, "--set", "networkPolicy.enabled=true", "--set", "dashboard.enabled=false")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {f"{RELEASE}-operator", f"{RELEASE}-intake"}
    (metrics,) = policies[f"{RELEASE}-operator"]["spec"]["ingress"]
    assert metrics["from"] == [{"namespaceSelector": {}}]


@pytest.mark.parametrize("component", ["intake", "dashboard"])
def test_the_kustomize_base_runs_the_component_like_the_chart(
    helm: Path, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manifests/ deploys the same process, as the account manifests/rbac/ grants."""
    kustomization = yaml.safe_load((platform.MANIFESTS / "kustomization.yaml").read_text())
    assert component in kustomization["resources"]
    base = kustomize_objects(platform.MANIFESTS / component / "deployment.yaml")
    rbac = kustomize_objects(platform.MANIFESTS / "rbac" / f"{component}.yaml")
    deployment = find(base, "Deployment")
    pod, container = pod_and_container(deployment)
    account = find(rbac, "ServiceAccount")["metadata"]
    assert pod["serviceAccountName"] == account["name"]
    assert deployment["metadata"]["namespace"] == account["namespace"]
    assert find(rbac, "ClusterRoleBinding")["subjects"][0]["name"] == account["name"]

    docs = render(helm)
    _, charted = pod_and_container(find(docs, "Deployment", f"{RELEASE}-{component}"))
    assert container["command"] == charted["command"]
    assert container["image"] == charted["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {p["name"]: p["containerPort"] for p in charted["ports"]}
    settings = settings_from(
        {e["name"]: e["value"] for e in container["env"]}, component, monkeypatch
    )
    assert ports["http"] == settings.port  # type: ignore[attr-defined]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == charted[probe]["httpGet"], probe
    assert container["securityContext"] == charted["securityContext"]
    for service in (d for d in base if d["kind"] == "Service"):
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_the_kustomize_base_with_the_intake_and_dashboard_passes_a_server_side_dry_run(
    cluster: Cluster,
) -> None:
    rendered = cluster.kubectl("kustomize", str(platform.MANIFESTS))
    output = server_dry_run(cluster, rendered)
    for name in ("deployment.apps/smart-intake", "deployment.apps/smart-dashboard"):
        assert f"{name} serverside-applied (server dry run)" in output, output
    for name in ("smart-intake", "smart-intake-metrics", "smart-dashboard"):
        assert f"service/{name} serverside-applied (server dry run)" in output, output


def documented_billing_overlay() -> str:
    """The kustomize overlay docs/operations.md gives for billing: the YAML block after
    the line that introduces `kustomization.yaml`."""
    text = (platform.ROOT / "docs" / "operations.md").read_text()
    section = text.split("## 4. Billing with Stripe", 1)[1].split("\n## ", 1)[0]
    after = section.split("`kustomization.yaml`:", 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_billing_overlay_gives_the_operator_a_priced_catalog(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The overlay, beside a copy of manifests/, renders; the operator reads the plans
    file it mounts, prices included; and the API server accepts it all."""
    shutil.copytree(platform.MANIFESTS, tmp_path / "manifests")
    shutil.copytree(platform.ROOT / "crds", tmp_path / "crds")
    overlay = tmp_path / "billing"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(documented_billing_overlay())
    priced = {
        name: {**plan.model_dump(exclude_none=True), "stripe_price_id": f"price_{name}_monthly"}
        for name, plan in DEFAULT_CATALOG.root.items()
    }
    (overlay / "plans.yaml").write_text(yaml.safe_dump(priced))
    rendered = cluster.kubectl("kustomize", str(overlay))
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]

    pod, container = pod_and_container(find(docs, "StatefulSet", "smart-operator"))
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "plans")
    volume = next(v for v in pod["volumes"] if v["name"] == "plans")
    config = find(docs, "ConfigMap", volume["configMap"]["name"])
    assert env["SMART_PLANS_FILE"] == f"{mount['mountPath']}/plans.yaml"
    plans_file = tmp_path / "mounted-plans.yaml"
    plans_file.write_text(config["data"]["plans.yaml"])
    prices = {name: plan.stripe_price_id for name, plan in load_catalog(plans_file).root.items()}
    assert prices == {name: f"price_{name}_monthly" for name in DEFAULT_CATALOG.names}

    output = server_dry_run(cluster, rendered)
    assert "statefulset.apps/smart-operator serverside-applied (server dry run)" in output, output
    assert f"configmap/{config['metadata']['name']} serverside-applied" in output, output


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


# The part of the Prometheus Operator's PrometheusRule CRD the chart's rules rely on
# (monitoring.coreos.com_prometheusrules.yaml, operator v0.84: groups need a name,
# rules an expr, an int-or-string; `for` is a duration). promtool checks the rules
# themselves (tests/unit/test_chart.py).
PROMETHEUS_RULE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "PrometheusRule",
            "listKind": "PrometheusRuleList",
            "plural": "prometheusrules",
            "singular": "prometheusrule",
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
                                "properties": {
                                    "groups": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {
                                                "name": {"type": "string", "minLength": 1},
                                                "interval": {"type": "string", "pattern": DURATION},
                                                "rules": {
                                                    "type": "array",
                                                    "items": {
                                                        "type": "object",
                                                        "required": ["expr"],
                                                        "properties": {
                                                            "alert": {"type": "string"},
                                                            "record": {"type": "string"},
                                                            "expr": {
                                                                "x-kubernetes-int-or-string": True,
                                                            },
                                                            "for": {
                                                                "type": "string",
                                                                "pattern": DURATION,
                                                            },
                                                            "labels": {
                                                                "type": "object",
                                                                "additionalProperties": {
                                                                    "type": "string"
                                                                },
                                                            },
                                                            "annotations": {
                                                                "type": "object",
                                                                "additionalProperties": {
                                                                    "type": "string"
                                                                },
                                                            },
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
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def service_monitor_crd(cluster: Cluster) -> Iterator[None]:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule kinds."""
    names = ["servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"]
    crds = yaml.safe_dump_all([SERVICE_MONITOR_CRD, PROMETHEUS_RULE_CRD])
    cluster.kubectl("apply", "--server-side", "-f", "-", input=crds)
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
        )
        yield
    finally:
        cluster.kubectl("delete", "crd", *names, "--wait=false")


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
                "metrics.prometheusRule.enabled=true",
                "--set",
                "metrics.grafanaDashboard.enabled=true",
                "--set",
                "operator.extraEnv[0].name=SMART_HETZNER_ENDPOINT",
                "--set",
                "operator.extraEnv[0].value=http://hetzner.example/v1",
                "--set",
                "operator.envFrom[0].secretRef.name=smartserver-cloud",
                "--set",
                "imagePullSecrets[0].name=registry",
                "--set",
                "intake.publicUrl=https://intake.example.com",
                "--set",
                "intake.adminToken=staff-token",
                "--set",
                "intake.service.type=LoadBalancer",
                "--set",
                "intake.extraEnv[0].name=SMART_INTAKE_FLUSH_INTERVAL_SECONDS",
                "--set-string",
                "intake.extraEnv[0].value=2",
                "--set",
                "dashboard.adminToken=" + "staff-token-" + "s" * 32,
                "--set",
                "dashboard.sessionSecret=" + "k" * 32,
                "--set",
                "dashboard.replicas=2",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiServer.cidrs[0]=10.0.0.1/32",
                *BILLING,
            ],
            id="everything-on",
        ),
        pytest.param(
            ["--set", "dashboard.existingSecret=dashboard-keys", "--set", "intake.enabled=false"],
            id="existing-secret",
        ),
    ],
)
def test_rendered_chart_passes_a_server_side_dry_run(
    helm: Path, cluster: Cluster, release_namespace: str, values: list[str]
) -> None:
    rendered = render_text(helm, "--include-crds", *values, namespace=release_namespace)
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    output = server_dry_run(cluster, rendered)
    applied = [line for line in output.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(docs), output
    # The intake and the dashboard are among what the API server accepted.
    for doc in docs:
        if doc["kind"] == "Deployment":
            name = doc["metadata"]["name"]
            assert f"deployment.apps/{name} serverside-applied (server dry run)" in output
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    assert components == (
        {"dashboard"} if "intake.enabled=false" in values else {"intake", "dashboard"}
    )
    for doc in docs:
        if doc["kind"] not in CLUSTER_KINDS:
            assert doc["metadata"]["namespace"] == release_namespace


# -- the chart's accounts on the real API server --------------------------------------


def can(cluster: Cluster, who: str, *args: str) -> bool:
    answer = cluster.try_kubectl("auth", "can-i", f"--as={who}", *args).strip()
    return answer.splitlines()[0] == "yes"


@dataclass
class ChartAccounts:
    """The intake's and the dashboard's accounts and RBAC, installed from the chart
    into their own namespace under their own release name."""

    namespace: str
    release: str

    def name(self, component: str) -> str:
        return f"{self.release}-smartserver-{component}"

    def user(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name(component)}"


@pytest.fixture
def chart_accounts(
    helm: Path, cluster: Cluster, release_namespace: str, unique: str
) -> Iterator[ChartAccounts]:
    release = f"rbac-{unique}"
    templates = [
        f"templates/{component}/{kind}.yaml"
        for component in ("intake", "dashboard")
        for kind in ("serviceaccount", "clusterrole", "clusterrolebinding")
    ]
    templates.append("templates/intake/status-policy.yaml")
    rendered = render_text(
        helm,
        *(arg for template in templates for arg in ("--show-only", template)),
        namespace=release_namespace,
        release=release,
    )
    try:
        cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=smartserver-chart-test",
            "-f",
            "-",
            input=rendered,
        )
        accounts = ChartAccounts(release_namespace, release)
        # The authorizer sees new bindings shortly after they are written.
        checks = [
            (accounts.user("intake"), ["watch", "experiments.smartserver.ai", "-A"]),
            (accounts.user("dashboard"), ["create", "tokenreviews.authentication.k8s.io"]),
        ]
        eventually(
            lambda: all(can(cluster, who, *check) for who, check in checks),
            what="the chart's intake and dashboard bindings to take effect",
        )
        yield accounts
    finally:
        cluster.kubectl(
            "delete",
            "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "--wait=false",
        )


@pytest.mark.parametrize(
    ("component", "verb", "resource", "allowed"),
    [
        # The intake reads Domains and Experiments and writes only their status.
        ("intake", "watch", "domains.smartserver.ai", True),
        ("intake", "watch", "experiments.smartserver.ai", True),
        ("intake", "patch", "experiments.smartserver.ai --subresource=status", True),
        ("intake", "patch", "domains.smartserver.ai --subresource=status", True),
        ("intake", "patch", "experiments.smartserver.ai", False),
        ("intake", "patch", "domains.smartserver.ai", False),
        ("intake", "update", "experiments.smartserver.ai --subresource=status", False),
        ("intake", "create", "experiments.smartserver.ai", False),
        ("intake", "delete", "domains.smartserver.ai", False),
        # Stripe's webhooks: read the Customer an event names, merge-patch its
        # status.payment; never its spec, never a list or watch of every Customer.
        ("intake", "get", "customers.smartserver.ai", True),
        ("intake", "patch", "customers.smartserver.ai --subresource=status", True),
        ("intake", "patch", "customers.smartserver.ai", False),
        ("intake", "update", "customers.smartserver.ai", False),
        ("intake", "update", "customers.smartserver.ai --subresource=status", False),
        ("intake", "list", "customers.smartserver.ai", False),
        ("intake", "watch", "customers.smartserver.ai", False),
        ("intake", "create", "customers.smartserver.ai", False),
        ("intake", "delete", "customers.smartserver.ai", False),
        ("intake", "get", "secrets", False),
        ("intake", "create", "pods", False),
        # The dashboard reads the three kinds and reviews sign-in tokens, nothing more.
        ("dashboard", "watch", "customers.smartserver.ai", True),
        ("dashboard", "list", "domains.smartserver.ai", True),
        ("dashboard", "get", "experiments.smartserver.ai", True),
        ("dashboard", "create", "tokenreviews.authentication.k8s.io", True),
        ("dashboard", "patch", "customers.smartserver.ai", False),
        ("dashboard", "create", "domains.smartserver.ai", False),
        ("dashboard", "delete", "experiments.smartserver.ai", False),
        ("dashboard", "patch", "experiments.smartserver.ai --subresource=status", False),
        ("dashboard", "get", "secrets", False),
        ("dashboard", "list", "namespaces", False),
        ("dashboard", "create", "serviceaccounts/token", False),
    ],
)
def test_chart_accounts_can_do_what_they_need_and_no_more(
    cluster: Cluster,
    chart_accounts: ChartAccounts,
    component: str,
    verb: str,
    resource: str,
    allowed: bool,
) -> None:
    who = chart_accounts.user(component)
    assert can(cluster, who, verb, *resource.split(), "--all-namespaces") is allowed


def test_the_charts_policy_holds_the_chart_account_to_the_intakes_part_of_a_status(
    cluster: Cluster, chart_accounts: ChartAccounts, tmp_path: Path
) -> None:
    """As the chart's intake account, a change of a Domain's pinned host key is refused
    by the chart's admission policy, naming the field; status.agent is written."""
    namespace = chart_accounts.namespace
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": "policed", "namespace": namespace},
            "spec": {"domain": f"policed.{namespace}.example", "paused": True},
        }
    )
    kubeconfig = platform.account_kubeconfig(
        cluster.plane,
        tmp_path / "intake.kubeconfig",
        chart_accounts.name("intake"),
        namespace=namespace,
        hours=1,
    )
    wait_for_policy(kubeconfig, "Domain", "policed", namespace)
    forged = {"server": {"hostPublicKey": "ssh-ed25519 AAAAforged"}}
    answer = patch_status(kubeconfig, "Domain", "policed", namespace, forged)
    policy = f"{chart_accounts.name('intake')}-status"
    assert refused(answer, f"Domain {namespace}/policed", "status.agent", policy) == {"server"}
    mine = {"agent": {"version": "0.4.1"}}
    assert patch_status(kubeconfig, "Domain", "policed", namespace, mine) == (200, "")


def test_the_processes_become_ready_as_the_chart_accounts_with_the_rendered_settings(
    helm: Path, cluster: Cluster, chart_accounts: ChartAccounts, tmp_path: Path
) -> None:
    """Each process, run with the environment the chart renders and as the account the
    chart creates, fills its caches: its readiness probe's /healthz answers 200."""
    docs = render(
        helm,
        "--set",
        "dashboard.adminToken=" + "staff-token-" + "s" * 32,
        namespace=chart_accounts.namespace,
        release=chart_accounts.release,
    )
    # The address and ports are the processes' own free loopback ones here.
    local = {"HOST", "PORT", "METRICS_HOST", "METRICS_PORT"}

    def env_of(component: str) -> dict[str, str]:
        prefix = COMPONENTS[component][2]
        _, container = pod_and_container(find(docs, "Deployment", chart_accounts.name(component)))
        return {
            key: value
            for key, value in resolved_env(docs, container).items()
            if key.removeprefix(prefix) not in local
        }

    def kubeconfig(component: str) -> Path:
        return platform.account_kubeconfig(
            cluster.plane,
            tmp_path / f"{component}.kubeconfig",
            chart_accounts.name(component),
            namespace=chart_accounts.namespace,
            hours=1,
        )

    intake_env = env_of("intake")
    with IntakeProcess(
        kubeconfig("intake"), tmp_path / "logs", name="chart-intake", env=intake_env
    ) as intake:
        assert http_ok(f"{intake.url}/healthz")
    dashboard_env = env_of("dashboard")
    with DashboardProcess(
        kubeconfig("dashboard"),
        tmp_path / "logs",
        name="chart-dashboard",
        admin_token=dashboard_env["SMART_DASHBOARD_ADMIN_TOKEN"],
        session_secret=dashboard_env["SMART_DASHBOARD_SESSION_SECRET"],
        env=dashboard_env,
    ) as dashboard:
        assert http_ok(f"{dashboard.url}/healthz")


def test_the_intake_records_a_stripe_webhook_as_the_chart_account_with_billing_on(
    helm: Path, cluster: Cluster, chart_accounts: ChartAccounts, unique: str, tmp_path: Path
) -> None:
    """With the chart's billing values, the intake (as the chart's account, with the
    environment the chart renders and the signing secret from the Secret) verifies a
    Stripe event and records it on the Customer's status.payment."""
    webhook_secret = "whsec_" + unique
    docs = render(
        helm, *BILLING, namespace=chart_accounts.namespace, release=chart_accounts.release
    )
    _, container = pod_and_container(find(docs, "Deployment", chart_accounts.name("intake")))
    local = {"SMART_INTAKE_HOST", "SMART_INTAKE_PORT", "SMART_INTAKE_METRICS_HOST"}
    local.add("SMART_INTAKE_METRICS_PORT")
    with_secret = [*docs, stripe_secret("sk_test_unused", webhook_secret)]
    env = {k: v for k, v in resolved_env(with_secret, container).items() if k not in local}
    assert env["SMART_INTAKE_STRIPE_WEBHOOK_SECRET"] == webhook_secret

    name = f"billed-{unique}"
    customer = {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {"email": f"founder@{name}.example", "plan": "pro"},
    }
    cluster.apply(customer)
    try:
        uid = (cluster.get("customer", name) or {})["metadata"]["uid"]
        kubeconfig = platform.account_kubeconfig(
            cluster.plane,
            tmp_path / "intake.kubeconfig",
            chart_accounts.name("intake"),
            namespace=chart_accounts.namespace,
            hours=1,
        )
        with IntakeProcess(
            kubeconfig, tmp_path / "logs", name="chart-billing-intake", env=env
        ) as intake:
            event = stripemock.webhook_event("invoice.paid", customer=name, uid=uid)
            payload = json.dumps(event).encode()
            request = urllib.request.Request(  # noqa: S310 (loopback)
                f"{intake.url}/v1/stripe/webhook", data=payload, method="POST"
            )
            request.add_header("Content-Type", "application/json")
            request.add_header("Stripe-Signature", stripemock.signature(payload, webhook_secret))
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                answer = json.loads(response.read())
        assert answer["applied"] is True, answer
        payment = ((cluster.get("customer", name) or {}).get("status") or {})["payment"]
        assert (payment["state"], payment["eventId"]) == ("Paid", event["id"])
    finally:
        cluster.kubectl("delete", "customer", name, "--wait=false")
