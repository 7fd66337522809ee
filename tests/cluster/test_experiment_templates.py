"""Experiments rendered from template resources, end to end: a customer's private
ExperimentTemplate is served on its Domain's simulated server, a newer version changes
nothing until the Experiment asks for it, and another namespace cannot use it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from smart_sim import platform
from tests.cluster.conftest import experiment, wait_exp
from tests.conftest import Cluster
from tests.waiting import eventually

SAMPLE: dict[str, Any] = yaml.safe_load((platform.SAMPLES / "experimenttemplate.yaml").read_text())


def private_template(namespace: str, version: int, heading_prefix: str) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"] = {"name": f"launch-v{version}", "namespace": namespace}
    body["spec"]["version"] = version
    body["spec"]["files"]["index.html.j2"] = body["spec"]["files"]["index.html.j2"].replace(
        "<h1>{{ v.headline }}</h1>", f"<h1>{heading_prefix}{{{{ v.headline }}}}</h1>"
    )
    return body


def launch(namespace: str, **changes: Any) -> dict[str, Any]:
    return experiment(
        "launch",
        namespace,
        "site",
        template="acme_launch",
        variants=[{"name": "control"}, {"name": "bold", "values": {"headline": "Ship it"}}],
        **changes,
    )


def status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return dict((cluster.get("experiment", "launch", "-n", namespace) or {}).get("status") or {})


def test_a_private_template_is_served_and_keeps_its_version_until_asked(
    cluster: Cluster, site: tuple[str, Path]
) -> None:
    namespace, root = site
    cluster.apply(private_template(namespace, 1, ""))
    cluster.apply(launch(namespace))
    wait_exp(cluster, namespace, "launch", "Deployed")
    first = status(cluster, namespace)
    assert first["template"]["kind"] == "ExperimentTemplate"
    assert (first["template"]["object"], first["template"]["version"]) == ("launch-v1", 1)
    page = root / "opt/smart/experiments/launch/current/variants/bold/index.html"
    assert "<h1>Ship it</h1>" in page.read_text()

    # Version 2 is published; a spec change that leaves the pages alone is reconciled
    # and still serves version 1.
    cluster.apply(private_template(namespace, 2, "New: "))
    cluster.apply(launch(namespace, stopping={"maxDurationDays": 14}))
    generation = (cluster.get("experiment", "launch", "-n", namespace) or {})["metadata"][
        "generation"
    ]
    eventually(
        lambda: status(cluster, namespace).get("observedGeneration") == generation,
        60,
        "the spec change reconciled",
    )
    again = status(cluster, namespace)
    assert again["deployedRevision"] == first["deployedRevision"]
    assert again["template"]["version"] == 1
    assert "<h1>Ship it</h1>" in page.read_text()

    # The Experiment asks for version 2: a new revision with its pages.
    cluster.apply(launch(namespace, stopping={"maxDurationDays": 14}, templateVersion=2))
    eventually(
        lambda: (
            status(cluster, namespace).get("template", {}).get("version") == 2
            and status(cluster, namespace).get("deployedRevision") != first["deployedRevision"]
        ),
        60,
        "version 2 deployed",
    )
    eventually(lambda: "<h1>New: Ship it</h1>" in page.read_text(), 30, "version 2 served")


def test_another_customer_cannot_use_a_private_template(
    cluster: Cluster, namespace: str, unique: str
) -> None:
    """No server needed: the template is looked up before anything else."""
    cluster.apply(private_template(namespace, 1, ""))
    other = f"other-{unique}"
    cluster.apply(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Customer",
            "metadata": {"name": other},
            "spec": {"email": f"x@{other}.example", "plan": "scale"},
        }
    )
    try:
        eventually(
            lambda: (c := cluster.condition("customer", other, "Ready")) and c["status"] == "True",
            what="the other customer Ready",
        )
        theirs = f"customer-{other}"
        cluster.apply(launch(theirs))
        refused = wait_exp(cluster, theirs, "launch", "ConfigValid", "False", "TemplateUnavailable")
        assert refused["message"].startswith(
            f"spec.template: no template named 'acme_launch' in namespace {theirs}"
        )
        # The owner's namespace resolves it (it waits only for its Domain).
        cluster.apply(launch(namespace))
        wait_exp(cluster, namespace, "launch", "ConfigValid", "True")
    finally:
        cluster.try_kubectl("delete", "customer", other, "--wait=false")
