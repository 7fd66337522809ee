"""The Helm chart's files, with no cluster: its CRDs are the generated ones, every value
is documented and typed, its plans are in the operator's format, and the settings it
sets are the operator's, the intake's and the dashboard's own. Its alerts each fire when
they should and stay quiet otherwise (`promtool test rules` on what helm renders), and
they and the Grafana dashboard use only metrics the code exports. The real API server
is in tests/cluster; the chart installed on a node is in tests/node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from smart_dashboard.settings import DashboardSettings
from smart_operator import shards
from smart_operator.intake.settings import IntakeSettings
from smart_operator.plans import DEFAULT_CATALOG, Catalog
from smart_operator.settings import OperatorSettings
from smart_sim.controlplane.binaries import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "smartserver"
CRDS = ROOT / "crds"


def generated_crds() -> list[str]:
    kustomization = yaml.safe_load((CRDS / "kustomization.yaml").read_text())
    return sorted(kustomization["resources"])


def test_chart_installs_exactly_the_crds_of_the_kustomize_base() -> None:
    in_chart = sorted(path.name for path in (CHART / "crds").iterdir())
    assert in_chart == generated_crds(), "charts/smartserver/crds is stale: run `make chart`"


@pytest.mark.parametrize("name", generated_crds())
def test_chart_crd_is_byte_for_byte_the_generated_one(name: str) -> None:
    chart_copy = CHART / "crds" / name
    assert chart_copy.exists(), f"{chart_copy} is missing: run `make chart`"
    assert chart_copy.read_bytes() == (CRDS / name).read_bytes(), (
        f"charts/smartserver/crds/{name} differs from crds/{name}: run `make chart`"
    )


def test_plans_in_values_are_the_builtin_catalog_in_the_operators_format() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert Catalog.model_validate(values["plans"]) == DEFAULT_CATALOG


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def undocumented(node: yaml.Node, where: dict[str, Any], path: str, lines: list[str]) -> list[str]:
    """Keys under ``node`` without a schema description or a comment in values.yaml.

    Keys that the schema types as free-form data (plans, labels, resources) are the
    user's own and need no comment; their parent has one.
    """
    if not isinstance(node, yaml.MappingNode):
        return []
    missing = []
    for key_node, value_node in node.value:
        key = key_node.value
        declared = where.get("properties", {}).get(key)
        if declared is None:
            continue  # a free-form map: described once, on its parent
        line = key_node.start_mark.line
        above = lines[line - 1].strip() if line > 0 else ""
        if not declared.get("description"):
            missing.append(f"{path}{key}: no description in values.schema.json")
        if not above.startswith("#"):
            missing.append(f"{path}{key}: no comment above it in values.yaml (line {line + 1})")
        missing += undocumented(value_node, declared, f"{path}{key}.", lines)
    return missing


def test_every_value_is_documented_in_values_yaml_and_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    root = yaml.compose(text)
    assert root is not None
    assert undocumented(root, schema(), "", text.splitlines()) == []


def test_schema_declares_every_value_in_values_yaml() -> None:
    """The schema forbids unknown keys, so a value it lacks could never be set."""

    def undeclared(value: Any, where: dict[str, Any], path: str) -> list[str]:
        if not isinstance(value, dict) or where.get("additionalProperties") is not False:
            return []
        found = []
        for key, child in value.items():
            declared = where.get("properties", {}).get(key)
            if declared is None:
                found.append(f"{path}{key}")
            else:
                found += undeclared(child, declared, f"{path}{key}.")
        return found

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert undeclared(values, schema(), "") == []


def test_chart_sets_only_settings_the_operator_reads() -> None:
    template = (CHART / "templates" / "operator" / "statefulset.yaml").read_text()
    names = set(re.findall(r"name: (SMART_[A-Z_]+)", template))
    known = {f"SMART_{field.upper()}" for field in OperatorSettings.model_fields}
    assert names, "the operator template sets no SMART_* variable"
    assert names <= known, f"not operator settings: {sorted(names - known)}"


@pytest.mark.parametrize(
    ("component", "prefix", "settings"),
    [
        ("intake", "SMART_INTAKE_", IntakeSettings),
        ("dashboard", "SMART_DASHBOARD_", DashboardSettings),
    ],
)
def test_chart_sets_only_settings_the_intake_and_dashboard_read(
    component: str, prefix: str, settings: type[BaseSettings]
) -> None:
    template = (CHART / "templates" / component / "deployment.yaml").read_text()
    names = set(re.findall(r"name: (SMART_[A-Z_]+)", template))
    known = {f"{prefix}{field.upper()}" for field in settings.model_fields}
    assert names, f"the {component} template sets no SMART_* variable"
    assert names <= known, f"not {component} settings: {sorted(names - known)}"


# -- alerts and the dashboard -----------------------------------------------------------

NS = {"namespace": "smartserver-system"}


def helm_template(*args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(ensure_helm()), "template", "smartserver", str(CHART), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make system` installs it (Debian package prometheus)"
    return found


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's PrometheusRule as a plain Prometheus rule file."""
    docs = helm_template("--set", "metrics.prometheusRule.enabled=true")
    (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def alert_names(rules_file: Path) -> set[str]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    rendered = ",".join(f'{key}="{value}"' for key, value in {**NS, **labels}.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


@dataclass(frozen=True)
class AlertCase:
    """One `promtool test rules` case: these series, then at ``at`` exactly these
    alerts of ``alert`` fire (none, when ``fires`` is empty)."""

    alert: str
    inputs: list[dict[str, str]]
    at: str
    fires: list[dict[str, dict[str, str]]]


def fired(labels: dict[str, str], summary: str, description: str) -> dict[str, dict[str, str]]:
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": description},
    }


RECONCILE = "smartserver_reconcile_total"
EXPIRY = "smartserver_certificate_expiry_timestamp_seconds"
BUDGET = "smartserver_provider_budget_remaining"
CALLS = "smartserver_provider_calls_total"
REQUESTS = "smartserver_intake_requests_total"
CACHED = "smartserver_intake_cached_objects"
WRITES = "smartserver_intake_writes_total"
DELAY = "smartserver_intake_report_delay_seconds_bucket"
SYNCED = "smartserver_intake_synced"
SITE_UP = "smartserver_site_up"

ALERT_CASES = {
    "reconcile errors fire": AlertCase(
        "SmartServerReconcileErrors",
        [series(RECONCILE, "0+6x40", kind="Domain", outcome="error", pod="op-1")],
        "30m",
        [
            fired(
                {"severity": "warning", **NS, "kind": "Domain"},
                "Domain reconciles end in errors",
                "The operator's Domain handlers failed 0.10 times a second over the last 10 "
                "minutes. kubectl get smartserver -A shows which resources are not Ready; "
                "kubectl describe shows their conditions and events.",
            )
        ],
    ),
    "successful reconciles are quiet": AlertCase(
        "SmartServerReconcileErrors",
        [
            series(RECONCILE, "0+60x40", kind="Domain", outcome="ok", pod="op-1"),
            series(RECONCILE, "0x40", kind="Domain", outcome="error", pod="op-1"),
        ],
        "30m",
        [],
    ),
    "domains that keep retrying fire": AlertCase(
        "SmartServerDomainsNotConverging",
        [series(RECONCILE, "0+3x60", kind="Domain", outcome="retry", pod="op-1")],
        "50m",
        [
            fired(
                {"severity": "warning", **NS},
                "Domains have not converged for 30 minutes",
                "Domain reconciles have kept ending in a retry (0.05 a second) for 30 "
                "minutes: a provider refuses or fails, or a server cannot be reached. kubectl "
                "get domains -A shows which are not Ready; their conditions name the reason.",
            )
        ],
    ),
    "a few retries while provisioning are quiet": AlertCase(
        "SmartServerDomainsNotConverging",
        [series(RECONCILE, "0 3 6 6x57", kind="Domain", outcome="retry", pod="op-1")],
        "50m",
        [],
    ),
    "an empty budget fires": AlertCase(
        "SmartServerProviderBudgetExhausted",
        [
            series(BUDGET, "3600 0x20", provider="hetzner", pod="op-1"),
            # The standby has made no call: its budget is full.
            series(BUDGET, "3600x20", provider="hetzner", pod="op-0"),
        ],
        "10m",
        [
            fired(
                {"severity": "warning", **NS, "provider": "hetzner"},
                "The hetzner API budget is used up",
                "hetzner has allowed no more requests for 5 minutes: the operator waits for "
                "the budget to refill, so new Domains and repairs are delayed. Look for a "
                "burst of Domains or something else using the same API token.",
            )
        ],
    ),
    "a budget that refills is quiet": AlertCase(
        "SmartServerProviderBudgetExhausted",
        [series(BUDGET, "3600 0 0 3600x17", provider="hetzner", pod="op-1")],
        "10m",
        [],
    ),
    "repeated 429s fire": AlertCase(
        "SmartServerProviderRateLimited",
        [series(CALLS, "0+2x30", provider="cloudflare", verb="list_zones", outcome="429")],
        "25m",
        [
            fired(
                {"severity": "warning", **NS, "provider": "cloudflare"},
                "cloudflare keeps answering 429",
                "cloudflare refused 20 calls with a rate-limit error in the last 10 minutes, "
                "for 10 minutes. The operator paces itself by the provider's headers, so "
                "another client probably shares the token.",
            )
        ],
    ),
    "hetzner's rate-limit code counts too": AlertCase(
        "SmartServerProviderRateLimited",
        [
            series(
                CALLS,
                "0+1x30",
                provider="hetzner",
                verb="get_server",
                outcome="rate_limit_exceeded",
            )
        ],
        "25m",
        [
            fired(
                {"severity": "warning", **NS, "provider": "hetzner"},
                "hetzner keeps answering 429",
                "hetzner refused 10 calls with a rate-limit error in the last 10 minutes, "
                "for 10 minutes. The operator paces itself by the provider's headers, so "
                "another client probably shares the token.",
            )
        ],
    ),
    "one 429 long ago is quiet": AlertCase(
        "SmartServerProviderRateLimited",
        [series(CALLS, "0 1 1x28", provider="cloudflare", verb="list_zones", outcome="429")],
        "25m",
        [],
    ),
    "a certificate close to expiry fires": AlertCase(
        "SmartServerCertificateExpiring",
        # Expiry at 1,000,000 s (11.6 days after the test's time 0).
        [
            series(
                EXPIRY, "1000000x120", domain_namespace="customer-acme", domain="shop", pod="op-1"
            )
        ],
        "90m",
        [
            fired(
                {"severity": "warning", "domain_namespace": "customer-acme", "domain": "shop"},
                "The certificate of customer-acme/shop expires soon",
                "It expires in 11d 12h 16m 40s and renewal has not succeeded. kubectl describe "
                "domain shop -n customer-acme: CertificateReady quotes the CA's or the server's "
                "error.",
            )
        ],
    ),
    "a certificate with weeks left is quiet": AlertCase(
        "SmartServerCertificateExpiring",
        [
            series(
                EXPIRY, "5000000x120", domain_namespace="customer-acme", domain="shop", pod="op-1"
            )
        ],
        "90m",
        [],
    ),
    "agents beating too rarely fire": AlertCase(
        "SmartServerAgentsSilent",
        [
            series(CACHED, "100x40", kind="domains", pod="in-1"),
            series(CACHED, "100x40", kind="domains", pod="in-2"),
            # 100 servers beating every 30 s send 3.3 a second; 1 a second arrives.
            series(REQUESTS, "0+60x40", endpoint="heartbeat", outcome="accepted", pod="in-1"),
        ],
        "30m",
        [
            fired(
                {"severity": "critical"},
                "The servers' agents have gone quiet",
                "The intake received 1.00 heartbeats a second, less than half of what the "
                "servers with an intake key should send. Check that the intake's public URL "
                "(intake.publicUrl) reaches it from the internet, then kubectl get domains -A: "
                "AgentConnected says since when each agent has been silent.",
            )
        ],
    ),
    "agents that never beat fire": AlertCase(
        "SmartServerAgentsSilent",
        [series(CACHED, "100x40", kind="domains", pod="in-1")],
        "30m",
        [
            fired(
                {"severity": "critical"},
                "The servers' agents have gone quiet",
                "The intake received 0.00 heartbeats a second, less than half of what the "
                "servers with an intake key should send. Check that the intake's public URL "
                "(intake.publicUrl) reaches it from the internet, then kubectl get domains -A: "
                "AgentConnected says since when each agent has been silent.",
            )
        ],
    ),
    "agents beating on time, over two replicas, are quiet": AlertCase(
        "SmartServerAgentsSilent",
        [
            series(CACHED, "100x40", kind="domains", pod="in-1"),
            series(CACHED, "100x40", kind="domains", pod="in-2"),
            series(REQUESTS, "0+100x40", endpoint="heartbeat", outcome="accepted", pod="in-1"),
            series(REQUESTS, "0+100x40", endpoint="heartbeat", outcome="accepted", pod="in-2"),
        ],
        "30m",
        [],
    ),
    "no servers, no heartbeats, is quiet": AlertCase(
        "SmartServerAgentsSilent", [series(CACHED, "0x40", kind="domains", pod="in-1")], "30m", []
    ),
    "failing status writes fire": AlertCase(
        "SmartServerIntakeWriteFailures",
        [series(WRITES, "0+6x30", kind="experiment", outcome="error", pod="in-1")],
        "20m",
        [
            fired(
                {"severity": "warning", **NS, "kind": "experiment"},
                "The intake cannot write experiment status",
                "The intake's status writes of experiment resources have failed for 10 "
                "minutes (0.10 a second): results stop reaching the resources. Its log names "
                "the error; check its RBAC and the API server.",
            )
        ],
    ),
    "writes that succeed are quiet": AlertCase(
        "SmartServerIntakeWriteFailures",
        [
            series(WRITES, "0+60x30", kind="experiment", outcome="ok", pod="in-1"),
            series(WRITES, "0+6x30", kind="experiment", outcome="conflict", pod="in-1"),
        ],
        "20m",
        [],
    ),
    "slow reports fire": AlertCase(
        "SmartServerIntakeLagging",
        [
            series(DELAY, "0x30", le="30", pod="in-1"),
            series(DELAY, "0x30", le="60", pod="in-1"),
            series(DELAY, "0+10x30", le="120", pod="in-1"),
            series(DELAY, "0+10x30", le="+Inf", pod="in-1"),
        ],
        "25m",
        [
            fired(
                {"severity": "warning", **NS},
                "Results reach the resources late",
                "1% of the agents' reports took more than 1m 59s to reach their resource's "
                "status. The intake falls behind: give it more replicas or CPU, or look at the "
                "API server's latency.",
            )
        ],
    ),
    "prompt reports are quiet": AlertCase(
        "SmartServerIntakeLagging",
        [
            series(DELAY, "0+10x30", le="1", pod="in-1"),
            series(DELAY, "0+10x30", le="60", pod="in-1"),
            series(DELAY, "0+10x30", le="+Inf", pod="in-1"),
        ],
        "25m",
        [],
    ),
    "an intake that never syncs fires": AlertCase(
        "SmartServerIntakeNotSynced",
        [series(SYNCED, "0x15", pod="in-1"), series(SYNCED, "1x15", pod="in-2")],
        "12m",
        [
            fired(
                {"severity": "critical", **NS, "pod": "in-1"},
                "Intake in-1 has not filled its caches",
                "Intake replica in-1 has not listed the Domains and Experiments for 10 "
                "minutes, so it refuses the agents' reports. Its log says why (usually RBAC or "
                "the API server).",
            )
        ],
    ),
    "a site down for visitors fires": AlertCase(
        "SmartServerSiteDown",
        [
            series(
                SITE_UP, "1 1 0x10", domain_namespace="customer-acme", domain="shop", pod="op-1"
            ),
            series(SITE_UP, "1x12", domain_namespace="customer-acme", domain="blog", pod="op-1"),
        ],
        "6m",
        [
            fired(
                {"severity": "critical", "domain_namespace": "customer-acme", "domain": "shop"},
                "customer-acme/shop is down for visitors",
                "The platform's outside checks of the site have failed several times in a row "
                "for more than 2 minutes. kubectl describe domain shop -n customer-acme: the "
                "Available condition names the stage that fails (DNS, TCP, TLS or HTTP) and "
                "what it saw.",
            )
        ],
    ),
    "a site that comes back within two minutes is quiet": AlertCase(
        "SmartServerSiteDown",
        [series(SITE_UP, "1 0 0 1x10", domain_namespace="customer-acme", domain="shop")],
        "3m",
        [],
    ),
    "an intake that syncs after a restart is quiet": AlertCase(
        "SmartServerIntakeNotSynced", [series(SYNCED, "0 0 1x13", pod="in-1")], "12m", []
    ),
}


def test_the_alert_rules_are_valid_for_prometheus(promtool: str, rules_file: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not(rules_file: Path) -> None:
    firing = {case.alert for case in ALERT_CASES.values() if case.fires}
    quiet = {case.alert for case in ALERT_CASES.values() if not case.fires}
    assert firing == quiet == alert_names(rules_file)


@pytest.mark.parametrize("case", ALERT_CASES.values(), ids=list(ALERT_CASES))
def test_alert(promtool: str, rules_file: Path, tmp_path: Path, case: AlertCase) -> None:
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": case.inputs,
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": case.fires}
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    """Every sample name the operator and the intake export, read from their
    prometheus_client definitions."""
    names: set[str] = set()
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*\"(smartserver_\w+)\"")
    for source in (ROOT / "operator").rglob("*.py"):
        for kind, name in pattern.findall(source.read_text()):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "Histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "dashboards" / "smartserver.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    return [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]


def test_alerts_and_the_dashboard_use_only_metrics_the_code_exports(rules_file: Path) -> None:
    exported = exported_metrics()
    assert "smartserver_reconcile_total" in exported  # the reader works
    used = set(re.findall(r"smartserver_\w+", rules_file.read_text()))
    for query in dashboard_queries():
        used.update(re.findall(r"smartserver_\w+", query))
    assert used - exported == set()


def test_the_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's own variables, as a Prometheus rule cannot hold them.
    queries = [
        query.replace("$__rate_interval", "5m").replace("$__range", "1h")
        for query in dashboard_queries()
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_and_the_dashboard_only_when_enabled() -> None:
    kinds = [doc["kind"] for doc in helm_template()]
    assert "PrometheusRule" not in kinds
    assert not [d for d in helm_template() if d["metadata"]["name"].endswith("grafana-dashboard")]
    docs = helm_template(
        "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "metrics.grafanaDashboard.annotations.grafana_folder=Smart Server",
    )  # fmt: skip
    (board,) = [d for d in docs if d["metadata"]["name"].endswith("grafana-dashboard")]
    assert board["kind"] == "ConfigMap"
    # Grafana's dashboard sidecar loads ConfigMaps with this label.
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Smart Server"}
    assert json.loads(board["data"]["smartserver.json"]) == dashboard()


# -- shards ----------------------------------------------------------------------------


def test_each_shard_is_a_statefulset_of_its_own_with_its_own_peering() -> None:
    docs = helm_template("--set", "operator.shards=3")
    sets = [doc for doc in docs if doc["kind"] == "StatefulSet"]
    assert [s["metadata"]["name"] for s in sets] == [
        f"smartserver-operator-shard-{n}" for n in range(3)
    ]
    for n, statefulset in enumerate(sets):
        spec = statefulset["spec"]
        # Each StatefulSet selects only its own pods.
        assert spec["selector"]["matchLabels"]["smartserver.ai/shard"] == str(n)
        assert spec["template"]["metadata"]["labels"]["smartserver.ai/shard"] == str(n)
        env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert (env["SMART_SHARDS"], env["SMART_SHARD"]) == ("3", str(n))
        settings = OperatorSettings(shards=3, shard=n, peering_name=env["SMART_PEERING_NAME"])
        peering = shards.peering_name(settings.peering_name, n, 3)
        assert {"kind": "ClusterKopfPeering", "name": peering} in [
            {"kind": d["kind"], "name": d["metadata"]["name"]} for d in docs
        ]


def test_one_shard_keeps_the_statefulset_and_peering_it_had() -> None:
    docs = helm_template()
    (statefulset,) = [doc for doc in docs if doc["kind"] == "StatefulSet"]
    assert statefulset["metadata"]["name"] == "smartserver-operator"
    assert "smartserver.ai/shard" not in statefulset["spec"]["selector"]["matchLabels"]
    (peering,) = [doc for doc in docs if doc["kind"] == "ClusterKopfPeering"]
    assert peering["metadata"]["name"] == "smart-operator"


def test_shards_without_peering_are_refused() -> None:
    result = subprocess.run(
        [
            str(ensure_helm()),
            *("template", "smartserver", str(CHART)),
            *("--set", "operator.standalone=true,operator.replicas=1,operator.shards=2"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "set operator.shards to 1, or operator.standalone to false" in result.stderr
