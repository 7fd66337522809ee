"""The dashboard's template gallery against the real API server, in headless Chromium:
the catalogue the platform installed, a customer's own private template and not
another's, each with its page rendered by the platform, and the results of the
experiments on each template across customers. The dashboard runs as its own
ServiceAccount, so its RBAC (reading both template kinds) is the real one. The
screenshot goes to test-artifacts/screenshots/templates-*.png."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from playwright.sync_api import BrowserContext, expect

from smart_sim import platform
from smart_sim.processes import DashboardProcess
from tests.cluster.test_dashboard import (
    ADMIN_TOKEN,
    SESSION_SECRET,
    browser,
    context,
    customer,
    experiment,
    patch_status,
    shoot,
    sign_in,
    token_of,
)
from tests.conftest import Cluster, Operator
from tests.waiting import eventually

pytestmark = pytest.mark.cluster
__all__ = ["browser", "context"]  # the fixtures, shared with test_dashboard

# Uplifts of the winners of six experiments on the run's own catalogue template (a copy
# of saas_landing) across the two customers:
# median 0.175, and with six the order-statistic interval is [min, max] at 96.9%.
UPLIFTS = [0.10, 0.30, 0.20, 0.05, 0.40, 0.15]


@dataclass
class Gallery:
    url: str
    token_a: str
    ns_a: str
    ns_b: str
    title: str
    """The title of this run's own catalogue template, which the results are on."""


def private_template(namespace: str, name: str, title: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(
        (platform.SAMPLES / "experimenttemplate.yaml").read_text()
    )
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["title"] = title
    return body


def catalogue_template(name: str, title: str) -> dict[str, Any]:
    """A catalogue template of this run's own, a copy of ``saas_landing``: the results
    on it are only this test's, whatever experiments other tests left on the cluster's
    built-ins."""
    body: dict[str, Any] = yaml.safe_load(
        (platform.MANIFESTS / "catalog" / "saas-landing-v1.yaml").read_text()
    )
    body["metadata"] = {"name": name.replace("_", "-") + "-v1"}
    body["spec"].update(name=name, title=title)
    return body


def pin(template: str) -> dict[str, Any]:
    """status.template as the operator records it at an experiment's first deployment."""
    return {
        "kind": "ClusterExperimentTemplate",
        "object": template.replace("_", "-") + "-v1",
        "name": template,
        "version": 1,
        "digest": "sha256:" + "0" * 64,
    }


@pytest.fixture(scope="module")
def gallery(
    cluster: Cluster, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gallery]:
    u = uuid.uuid4().hex[:5]
    a, b = f"tplacme-{u}", f"tplglobex-{u}"
    for name in (a, b):
        cluster.apply(customer(name, "pro"))
    for name in (a, b):
        eventually(
            lambda name=name: (
                (c := cluster.condition("customer", name, "Ready")) and c["status"] == "True"
            ),
            what=f"customer {name} Ready",
        )
    ns_a, ns_b = f"customer-{a}", f"customer-{b}"
    cluster.apply(private_template(ns_a, "launch-v1", "Acme launch page"))
    cluster.apply(private_template(ns_b, "secret-v1", "Globex secret page"))
    template, title = f"gallery_{u}", f"Gallery page {u}"
    cluster.apply(catalogue_template(template, title))
    # Results as the operator and the intake write them (no server needed here).
    for index, uplift in enumerate(UPLIFTS):
        namespace = ns_a if index % 2 else ns_b
        name = f"headline-{index}"
        cluster.apply(experiment(name, namespace, "shop", "landing_page", template))
        patch_status(
            cluster,
            "experiment",
            name,
            namespace,
            {
                "template": pin(template),
                "variants": [{"name": "control"}, {"name": "bold", "uplift": uplift}],
                "decision": {"outcome": "winner", "winner": "bold"},
            },
        )
    workdir = tmp_path_factory.mktemp("gallery")
    kubeconfig = platform.account_kubeconfig(
        cluster.plane, workdir / "dashboard.kubeconfig", "smart-dashboard"
    )
    process = DashboardProcess(
        kubeconfig, workdir, admin_token=ADMIN_TOKEN, session_secret=SESSION_SECRET
    ).start()
    try:
        yield Gallery(process.url, token_of(cluster, ns_a), ns_a, ns_b, title)
    finally:
        process.stop()
        cluster.try_kubectl(
            "delete", "clusterexperimenttemplate", template.replace("_", "-") + "-v1"
        )
        for name in (a, b):
            cluster.try_kubectl("delete", "customer", name, "--wait=false")


def test_the_gallery_shows_rendered_previews_results_and_only_own_private_templates(
    cluster: Cluster, gallery: Gallery, context: BrowserContext
) -> None:
    catalogue = json.loads(cluster.kubectl("get", "clusterexperimenttemplates", "-o", "json"))
    titles = sorted({item["spec"]["title"] for item in catalogue["items"]})
    assert len(titles) >= 7
    page = context.new_page()
    sign_in(page, gallery.url, gallery.token_a)

    def listed() -> bool:
        page.goto(f"{gallery.url}/templates")
        return "Acme launch page" in page.locator("main").inner_text()

    eventually(listed, 30, "A's private template in the gallery")
    main = page.locator("main").inner_text()
    assert all(title in main for title in titles), main
    assert "Globex secret page" not in main

    # Every card's preview is the template's page, rendered by the platform.
    frames = page.locator("iframe")
    assert frames.count() == len(titles) + 1
    for index in range(frames.count()):
        title = frames.nth(index).get_attribute("title")
        heading = page.frame_locator(f"iframe[title='{title}']").locator("h1")
        # A live update may replace the frames meanwhile: expect() waits for the new ones.
        expect(heading, title).to_have_count(1)
    acme = page.frame_locator("iframe[title='Preview of Acme launch page']")
    assert acme.locator("h1").inner_text() == "Know which page sells"
    saas = page.frame_locator("iframe[title='Preview of SaaS landing page']")
    # The preview's stylesheet loaded in the frame: the default accent is applied.
    accent = saas.locator("[data-accent]").first.evaluate(
        "e => getComputedStyle(e).getPropertyValue('--accent').trim()"
    )
    assert accent == "#4f46e5"

    # Results across both customers on the catalogue template.
    card = page.locator("article", has_text=gallery.title).inner_text()
    assert "6 of 6 decided" in card and "+17.5%" in card, card
    assert "+5.0% to +40.0% (97% interval)" in card, card
    shoot(page, "templates")

    response = page.goto(f"{gallery.url}/templates/private/secret-v1/preview/")
    assert response is not None and response.status == 404
