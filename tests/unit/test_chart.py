"""The Helm chart's files, without helm: its CRDs are the generated ones, every value is
documented and typed, its plans are in the operator's format, and the settings it sets
are the operator's, the intake's and the dashboard's own. Rendering and the real API
server are in tests/cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from smart_dashboard.settings import DashboardSettings
from smart_operator.intake.settings import IntakeSettings
from smart_operator.plans import DEFAULT_CATALOG, Catalog
from smart_operator.settings import OperatorSettings

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
