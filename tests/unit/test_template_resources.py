"""Experiments render from template resources: the catalogue's
ClusterExperimentTemplates and a namespace's private ExperimentTemplates. Driven
through the Experiment reconciler and fakes of its ports: which template a namespace
sees, the version pinned at the first deployment, an edit in place, and errors that
name the field to fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from smart_operator.models.experiment import ExperimentSpec, Variant
from smart_operator.models.template import TemplateSpec
from smart_operator.ports import ObjectRef
from smart_operator.templates import InvalidTemplateConfig, render_variant
from smart_operator.templates.catalog import TemplateName, builtin, catalog_object
from tests.unit.test_reconcile_experiment import NS, World

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = yaml.safe_load((ROOT / "crds" / "samples" / "experimenttemplate.yaml").read_text())
OTHER_NS = "customer-globex"


@pytest.fixture
def world() -> World:
    return World()


def saas_version(version: int, headline: str) -> dict[str, Any]:
    """A new version of the built-in saas_landing whose default headline differs."""
    body = catalog_object(builtin(TemplateName.SAAS_LANDING))
    body["metadata"]["name"] = f"saas-landing-v{version}"
    body["spec"]["version"] = version
    body["spec"]["values"]["headline"]["default"] = headline
    return body


def private(namespace: str = NS, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(PRIVATE)
    body["metadata"]["namespace"] = namespace
    body["spec"].update(spec)
    return body


def put_private(world: World, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    world.resources.put(ObjectRef("experimenttemplates", meta["name"], meta["namespace"]), body)


def valid(world: World, ref: ObjectRef) -> dict[str, Any]:
    return world.condition(ref, "ConfigValid")


async def test_an_experiment_without_a_version_renders_the_latest_and_records_it(
    world: World,
) -> None:
    world.resources.put(
        ObjectRef("clusterexperimenttemplates", "saas-landing-v2"), saas_version(2, "New words")
    )
    ref = world.add()
    await world.run(ref)
    status = world.status(ref)
    assert status["template"]["object"] == "saas-landing-v2"
    assert status["template"]["version"] == 2
    assert status["template"]["kind"] == "ClusterExperimentTemplate"
    assert status["template"]["digest"].startswith("sha256:")
    assert "version 2" in valid(world, ref)["message"]


async def test_a_new_version_changes_nothing_until_the_experiment_asks_for_it(
    world: World,
) -> None:
    ref = world.add()
    await world.run(ref)
    first = world.status(ref)["deployedRevision"]
    assert world.status(ref)["template"]["version"] == 1
    world.resources.put(
        ObjectRef("clusterexperimenttemplates", "saas-landing-v2"), saas_version(2, "New words")
    )
    await world.run(ref)
    assert world.status(ref)["deployedRevision"] == first
    assert world.status(ref)["template"]["version"] == 1
    assert world.deployer.calls["deploy"] == 1

    world.resources.objects[ref]["spec"]["templateVersion"] = 2
    await world.run(ref)
    status = world.status(ref)
    assert status["template"]["version"] == 2 and status["deployedRevision"] != first
    assert world.deployer.calls["deploy"] == 2


async def test_a_version_that_does_not_exist_is_named(world: World) -> None:
    ref = world.add(templateVersion=9)
    await world.run(ref)
    condition = valid(world, ref)
    assert condition["status"] == "False" and condition["reason"] == "TemplateUnavailable"
    assert condition["message"].startswith("spec.templateVersion: saas_landing has no version 9")
    assert world.deployer.uploads == 0


async def test_a_version_edited_in_place_is_refused_and_the_old_revision_keeps_serving(
    world: World,
) -> None:
    ref = world.add()
    await world.run(ref)
    served = world.status(ref)["deployedRevision"]
    edited = world.resources.objects[ObjectRef("clusterexperimenttemplates", "saas-landing-v1")]
    edited["spec"]["values"]["headline"]["default"] = "Changed under a running experiment"
    await world.run(ref)
    condition = valid(world, ref)
    assert condition["status"] == "False" and condition["reason"] == "TemplateUnavailable"
    assert "saas-landing-v1 (version 1) was changed in place" in condition["message"]
    assert world.condition(ref, "Deployed")["message"].endswith(f"{served} keeps serving")
    assert world.deployer.calls["deploy"] == 1


async def test_a_private_template_serves_its_namespace_and_no_other(world: World) -> None:
    put_private(world, private())
    mine = world.add("launch", template="acme_launch", variants=[
        {"name": "control"}, {"name": "bold", "values": {"headline": "Ship it", "tone": "bold"}}
    ])  # fmt: skip
    await world.run(mine)
    status = world.status(mine)
    assert status["template"]["kind"] == "ExperimentTemplate", valid(world, mine)
    assert status["phase"] == "Running"
    page = next(v for p, v in world.deployer.files.items() if p.endswith("bold/index.html"))
    assert b"<h1>Ship it</h1>" in page and b'data-tone="bold"' in page

    # The same name in another customer's namespace: not there, and not in the catalogue.
    theirs = world.add("launch-2", template="acme_launch")
    world.resources.objects[theirs]["metadata"]["namespace"] = OTHER_NS
    world.resources.objects[ObjectRef("experiments", "launch-2", OTHER_NS)] = (
        world.resources.objects.pop(theirs)
    )
    other = ObjectRef("experiments", "launch-2", OTHER_NS)
    await world.run(other)
    condition = valid(world, other)
    assert condition["status"] == "False" and condition["reason"] == "TemplateUnavailable"
    assert condition["message"].startswith(
        f"spec.template: no template named 'acme_launch' in namespace {OTHER_NS}"
    )
    assert "acme_launch" not in condition["message"].split("available:")[1]


async def test_values_outside_the_templates_schema_are_refused_with_the_field_named(
    world: World,
) -> None:
    put_private(world, private())
    ref = world.add("launch", template="acme_launch", variants=[
        {"name": "control"}, {"name": "b", "values": {"tone": "loud", "colour": "red"}}
    ])  # fmt: skip
    await world.run(ref)
    condition = valid(world, ref)
    assert condition["status"] == "False" and condition["reason"] == "InvalidTemplateConfig"
    assert "spec.variants[1].values.tone: must be one of calm, bold" in condition["message"]
    assert (
        "spec.variants[1].values.colour: acme_launch has no value 'colour'"
        in (condition["message"])
    )
    assert world.deployer.uploads == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"values": {"tone": {"type": "enum", "allowed": ["calm"], "default": "loud",
                                 "description": "x"}}},
            "ExperimentTemplate acme-launch-v1: spec.values.tone",
        ),
        (
            {"files": {"index.html.j2": "<h1>{{ v.headline }</h1>"}},
            "ExperimentTemplate acme-launch-v1: spec.files[index.html.j2]: line 1",
        ),
        (
            {"files": {"index.html.j2": "{{ v.__class__.__mro__ }}"}},
            "ExperimentTemplate acme-launch-v1: spec.files[index.html.j2]: does not render",
        ),
    ],
    ids=["default-not-allowed", "jinja-syntax", "sandbox"],
)  # fmt: skip
async def test_an_invalid_private_template_is_refused_with_its_field_named(
    world: World, change: dict[str, Any], field: str
) -> None:
    put_private(world, private(**change))
    ref = world.add("launch", template="acme_launch")
    await world.run(ref)
    condition = valid(world, ref) if world.deployer.uploads == 0 else {}
    message = condition.get("message") or world.condition(ref, "Deployed")["message"]
    assert field in message, message
    assert world.deployer.uploads == 0


def test_the_sandbox_refuses_python_internals() -> None:
    spec = TemplateSpec.model_validate(
        {**PRIVATE["spec"], "files": {"index.html.j2": "{{ brand.__class__.__base__ }}"}}
    )
    experiment = ExperimentSpec.model_validate(
        {
            "domainRef": "d",
            "type": "landing_page",
            "template": "acme_launch",
            "templateConfig": {"stripeLink": "https://buy.stripe.com/test_1"},
            "variants": [{"name": "control"}, {"name": "b"}],
        }
    )
    with pytest.raises(InvalidTemplateConfig, match=r"spec\.files\[index\.html\.j2\]"):
        render_variant(experiment, spec, Variant(name="control"))
