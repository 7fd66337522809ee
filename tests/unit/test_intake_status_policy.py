"""The admission policy that holds the results intake to its part of each status
(``manifests/rbac/intake-status-policy.yaml``, the chart's ``intake/status-policy.yaml``)
names exactly the fields the models give the intake (``StatusModel.WRITERS``), each a
field of the CRD's status, and the intake's writers write no other. Every other status
field, including any added later, is the operator's, which the policy protects without
naming it. Whether the API server enforces it is tested in tests/cluster/test_intake.py
and tests/cluster/test_chart.py."""

from __future__ import annotations

import ast
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_operator.billing import PaymentEvent, PaymentState
from smart_operator.intake.experiments import ResultsStatus
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.payments import PaymentWriter
from smart_operator.intake.schema import Heartbeat
from smart_operator.intake.status import PendingHeartbeat, Write, plan_agent
from smart_operator.models import Customer, Domain, Experiment
from smart_operator.models.common import Resource, StatusModel, Writer
from smart_operator.models.customer import CustomerStatus
from smart_operator.models.domain import DomainStatus
from smart_operator.models.experiment import ExperimentStatus
from smart_sim.controlplane.binaries import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "manifests" / "rbac" / "intake-status-policy.yaml"
CHART = ROOT / "charts" / "smartserver"

# The policy's variable naming the intake's fields of each kind.
KINDS: dict[str, tuple[type[Resource], type[StatusModel]]] = {
    "customerFields": (Customer, CustomerStatus),
    "domainFields": (Domain, DomainStatus),
    "experimentFields": (Experiment, ExperimentStatus),
}


def load(text: str) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def variables(policy: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def listed(policy: dict[str, Any], name: str) -> list[str]:
    """A variable that is a CEL list of string literals (also a Python literal)."""
    value = ast.literal_eval(variables(policy)[name])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return load(POLICY.read_text())


@pytest.mark.parametrize("variable", sorted(KINDS))
def test_the_policy_names_exactly_the_intakes_fields_of_the_models(
    base: dict[str, dict[str, Any]], variable: str
) -> None:
    _, status = KINDS[variable]
    fields = listed(base["ValidatingAdmissionPolicy"], variable)
    assert fields == sorted(status.fields_of(Writer.INTAKE)), (
        f"{variable} in {POLICY.name} and the chart's intake/status-policy.yaml must be "
        f"{status.__name__}.WRITERS' intake fields"
    )


@pytest.mark.parametrize("variable", sorted(KINDS))
def test_each_named_field_is_a_field_of_the_crds_status(
    base: dict[str, dict[str, Any]], variable: str
) -> None:
    kind, status = KINDS[variable]
    crd = yaml.safe_load((ROOT / "crds" / f"{kind.KIND.plural}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    properties = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(listed(base["ValidatingAdmissionPolicy"], variable)) < set(properties)
    # What the policy does not name is the operator's, so the operator owns something.
    assert status.fields_of(Writer.OPERATOR) == set(properties) - status.fields_of(Writer.INTAKE)


def test_the_policy_matches_the_intakes_account_and_binds_to_deny(
    base: dict[str, dict[str, Any]],
) -> None:
    rbac = load((ROOT / "manifests" / "rbac" / "intake.yaml").read_text())
    account = rbac["ServiceAccount"]["metadata"]
    username = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    policy, binding = base["ValidatingAdmissionPolicy"], base["ValidatingAdmissionPolicyBinding"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{username}'"
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    plurals = {kind.KIND.plural for kind, _ in KINDS.values()}
    assert set(rule["resources"]) == plurals | {f"{p}/*" for p in plurals}
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    kustomization = yaml.safe_load((POLICY.parent / "kustomization.yaml").read_text())
    assert POLICY.name in kustomization["resources"]


def render(*values: str) -> dict[str, dict[str, Any]]:
    """The chart's policy, released as ``rel`` into the namespace ``platform``."""
    rendered = subprocess.run(
        [
            *(str(ensure_helm()), "template", "rel", str(CHART), "-n", "platform", *values),
            *("--show-only", "templates/intake/status-policy.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return load(rendered.stdout)


def test_the_chart_ships_the_same_policy_for_its_own_account(
    base: dict[str, dict[str, Any]],
) -> None:
    chart = render()
    policy, binding = chart["ValidatingAdmissionPolicy"], chart["ValidatingAdmissionPolicyBinding"]
    name = "rel-smartserver-intake-status"
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == name
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:platform:rel-smartserver-intake'"
    )
    ours = dict(policy["spec"], matchConditions=None)
    theirs = dict(base["ValidatingAdmissionPolicy"]["spec"], matchConditions=None)
    assert ours == theirs


def test_the_chart_names_a_given_account() -> None:
    chart = render(
        "--set", "intake.serviceAccount.create=false", "--set", "intake.serviceAccount.name=own"
    )
    (condition,) = chart["ValidatingAdmissionPolicy"]["spec"]["matchConditions"]
    assert condition["expression"].endswith("'system:serviceaccount:platform:own'")


class Customers:
    """One Customer; records the status patches of the payment writer."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def get_customer(self, name: str) -> dict[str, Any] | None:
        return {
            "metadata": {"name": name, "uid": "uid-acme", "resourceVersion": "1"},
            "spec": {"email": "founder@acme.example", "plan": "pro"},
        }

    async def patch_customer_status(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(status)
        return {}


async def test_the_intake_reads_and_writes_only_its_fields() -> None:
    """The intake's writers: reports (``plan_results`` writes ``ResultsStatus``),
    heartbeats (``plan_agent``) and Stripe's webhooks (``PaymentWriter``)."""
    results = {info.alias or name for name, info in ResultsStatus.model_fields.items()}
    assert results == ExperimentStatus.fields_of(Writer.INTAKE)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    beat = Heartbeat.model_validate_json(
        b'{"version": "0.4.1", "startedAt": "2026-03-02T08:00:00Z"}'
    )
    plan = plan_agent(None, PendingHeartbeat(beat, DomainRef("ns", "d"), now, 0.0), 60)
    assert isinstance(plan, Write) and set(plan.status) == DomainStatus.fields_of(Writer.INTAKE)
    customers = Customers()
    event = PaymentEvent("evt_1", "invoice.paid", now, PaymentState.PAID, "acme", "uid-acme")
    assert (await PaymentWriter(customers).record(event)).applied
    (patch,) = customers.patches
    assert set(patch) == CustomerStatus.fields_of(Writer.INTAKE)
