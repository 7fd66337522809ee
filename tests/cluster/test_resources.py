"""The CRDs on a real API server: samples apply, bad input is refused at apply time
with a message that names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from smart_operator.templates.catalog import TemplateName
from smart_sim import platform
from tests.conftest import Cluster


def domain(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": spec,
    }


def experiment(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "domainRef": "shop",
        "type": "landing_page",
        "template": "saas_landing",
        "variants": [{"name": "control", "weight": 50}, {"name": "b", "weight": 50}],
    }
    spec.update(changes)
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": spec,
    }


def template(**changes: Any) -> dict[str, Any]:
    """The sample private template with ``changes`` to its spec."""
    body: dict[str, Any] = yaml.safe_load(
        (platform.SAMPLES / "experimenttemplate.yaml").read_text()
    )
    body["metadata"] = {"name": "bad", "namespace": "default"}
    body["spec"].update(changes)
    return body


def customer(name: str = "bad", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {"email": "a@b.example", **spec},
    }


INVALID = {
    "bad domain name": (domain(domain="Not_A.Domain"), ["spec.domain", "should match"]),
    "missing required field": (domain(paused=True), ["spec.domain", "Required value"]),
    "unknown server location": (
        domain(domain="a.example", server={"location": "mars1"}),
        ["spec.server.location", "Unsupported value", "fsn1"],
    ),
    "unknown experiment type": (
        experiment(type="banner"),
        ["spec.type", "Unsupported value", "landing_page"],
    ),
    "negative weight": (
        experiment(variants=[{"name": "control", "weight": -1}, {"name": "b"}]),
        ["spec.variants[0].weight", "greater than or equal to 0"],
    ),
    "template name unfit": (
        experiment(template="Saas Landing"),
        ["spec.template", "should match"],
    ),
    "template version zero": (
        experiment(templateVersion=0),
        ["spec.templateVersion", "greater than or equal to 1"],
    ),
    "template enum default not allowed": (
        template(
            values={
                "tone": {"type": "enum", "allowed": ["calm"], "default": "loud", "description": "x"}
            }
        ),
        ["spec.values[tone]", "its default must be one of them"],
    ),
    "template page without its file": (
        template(files={"other.html.j2": "<h1>x</h1>"}),
        ["spec", "every page's source must be a file of spec.files"],
    ),
    "template latency goal without probe": (
        template(goal={"metrics": ["p95_latency"], "event": "latency", "description": "x"}),
        ["spec.goal", "a latency goal needs a probe"],
    ),
    "template of an unknown type": (
        template(type="banner"),
        ["spec.type", "Unsupported value"],
    ),
    "duplicate variant names": (
        experiment(variants=[{"name": "a"}, {"name": "a"}]),
        ["spec.variants[1]", "Duplicate value"],
    ),
    "a single variant": (
        experiment(variants=[{"name": "a"}]),
        ["spec.variants", "should have at least 2 items"],
    ),
    "http stripe link": (
        experiment(templateConfig={"stripeLink": "http://buy.stripe.com/x"}),
        ["spec.templateConfig.stripeLink", "should match"],
    ),
    "bad email": (customer(email="not-an-email"), ["spec.email", "should match"]),
    "customer name unfit for a namespace": (
        customer(name="a.b"),
        ["metadata.name must be a DNS label"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_objects_are_refused_naming_the_field(cluster: Cluster, case: str) -> None:
    obj, expected = INVALID[case]
    output = cluster.try_kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert "is invalid" in output, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"


def test_every_sample_applies(cluster: Cluster) -> None:
    """The samples are accepted by the API server as they are (server-side dry run,
    in a namespace standing in for the sample customer's)."""
    cluster.try_kubectl("create", "namespace", "customer-acme")
    for sample in sorted(platform.SAMPLES.glob("*.yaml")):
        output = cluster.kubectl("apply", "--dry-run=server", "-f", str(sample))
        assert "(server dry run)" in output, output


def test_the_catalogue_is_installed_and_a_published_version_keeps_its_name(
    cluster: Cluster,
) -> None:
    """The seven built-ins are ClusterExperimentTemplates; an object's spec.name and
    spec.version cannot change (a new version is a new object)."""
    listed = json.loads(cluster.kubectl("get", "clusterexperimenttemplates", "-o", "json"))
    names = {item["spec"]["name"] for item in listed["items"]}
    assert {t.value for t in TemplateName} <= names
    cluster.try_kubectl("create", "namespace", "templates")
    body = template()
    body["metadata"] = {"name": "versioned", "namespace": "templates"}
    cluster.apply(body)
    body["spec"]["version"] = 2
    output = cluster.try_kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    assert "spec.name and spec.version cannot change" in output, output


def test_defaults_are_filled_in_by_the_api_server(cluster: Cluster) -> None:
    cluster.try_kubectl("create", "namespace", "defaults")
    obj = experiment()
    obj["metadata"] = {"name": "defaults", "namespace": "defaults"}
    output = cluster.kubectl(
        "create", "--dry-run=server", "-o", "yaml", "-f", "-", input=yaml.safe_dump(obj)
    )
    spec = yaml.safe_load(output)["spec"]
    assert spec["goal"] == {"metric": "conversion_rate"}
    assert spec["stopping"]["minVisitorsPerVariant"] == 200
    assert spec["templateConfig"]["components"][0] == "hero"


def test_short_names_and_category(cluster: Cluster) -> None:
    resources = cluster.kubectl("api-resources", "--api-group=smartserver.ai", "-o", "wide")
    rows = {line.split()[0]: line for line in resources.splitlines()[1:]}
    for plural, short in (
        ("customers", "cust"),
        ("domains", "dom"),
        ("experiments", "exp"),
        ("clusterexperimenttemplates", "cxt"),
        ("experimenttemplates", "xt"),
    ):
        assert short in rows[plural].split()
        assert "smartserver" in rows[plural]


def test_the_kustomize_base_passes_a_server_side_dry_run(cluster: Cluster) -> None:
    rendered = cluster.kubectl("kustomize", str(platform.MANIFESTS))
    output = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered
    )
    assert "statefulset.apps/smart-operator serverside-applied (server dry run)" in output
