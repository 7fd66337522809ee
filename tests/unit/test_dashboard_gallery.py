"""The dashboard's template gallery: the catalogue and a customer's own private
templates (never another customer's), previews rendered from the template resource
and served so that they run no script, and the metrics of each template."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from smart_dashboard.app import create_app
from smart_dashboard.gallery import median_interval, metrics
from smart_operator.models.experiment import Experiment
from smart_operator.templates.catalog import all_builtins, catalog_object
from tests.unit.test_dashboard_app import SETTINGS, FakeApi, filled_cache, sign_in

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = yaml.safe_load((ROOT / "crds" / "samples" / "experimenttemplate.yaml").read_text())


def private(namespace: str, title: str, name: str = "acme-launch-v1") -> dict[str, Any]:
    body = copy.deepcopy(PRIVATE)
    body["metadata"].update(name=name, namespace=namespace, resourceVersion="1")
    body["spec"]["title"] = title
    return body


def pinned(ns: str, name: str, template: str, outcome: str, uplift: float) -> dict[str, Any]:
    """An Experiment deployed on catalogue template ``template`` with a decision."""
    return {
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": {
            "domainRef": "shop",
            "type": "landing_page",
            "template": template,
            "variants": [{"name": "control"}, {"name": "bold"}],
        },
        "status": {
            "template": {
                "kind": "ClusterExperimentTemplate",
                "object": template.replace("_", "-") + "-v1",
                "name": template,
                "version": 1,
                "digest": "sha256:x",
            },
            "variants": [{"name": "control"}, {"name": "bold", "uplift": uplift}],
            "decision": {
                "outcome": outcome,
                "winner": "bold" if outcome == "winner" else None,
            },
        },
    }


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    cache = filled_cache()
    catalogue = [catalog_object(t) for t in all_builtins()]
    for body in catalogue:
        body["metadata"]["resourceVersion"] = "1"
    cache.apply("clusterexperimenttemplates", "SYNC", catalogue)
    cache.apply(
        "experimenttemplates",
        "SYNC",
        [
            private("customer-acme", "Acme launch"),
            private("customer-globex", "Globex secret", "globex-secret-v1"),
        ],
    )
    app = create_app(SETTINGS, api=FakeApi(), cache=cache)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_the_gallery_lists_the_catalogue_and_only_the_customers_own_templates(
    client: TestClient[Any, Any],
) -> None:
    await sign_in(client, "token-a")
    response = await client.get("/templates")
    page = await response.text()
    assert response.status == 200, page[-2000:]
    for template in all_builtins():
        assert template.title in page
        assert f'src="/templates/catalogue/{template.name.replace("_", "-")}-v1/preview/"' in page
    assert "Acme launch" in page and "Globex secret" not in page
    assert 'src="/templates/private/acme-launch-v1/preview/"' in page


async def test_a_preview_is_the_rendered_page_and_runs_no_script(
    client: TestClient[Any, Any],
) -> None:
    await sign_in(client, "token-a")
    response = await client.get("/templates/catalogue/saas-landing-v1/preview/")
    page = await response.text()
    assert response.status == 200 and page.startswith("<!doctype html>")
    assert "Northstar" in page  # the template's default brand
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "form-action 'none'" in policy
    assert "script-src" not in policy  # falls back to default-src 'none'
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    css = await client.get("/templates/catalogue/saas-landing-v1/preview/assets/site.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    own = await client.get("/templates/private/acme-launch-v1/preview/")
    assert own.status == 200 and "<h1>Know which page sells</h1>" in await own.text()


@pytest.mark.parametrize(
    "path",
    [
        "/templates/private/globex-secret-v1/preview/",  # globex's private template
        "/templates/private/globex-secret-v1/preview/assets/site.css",
        "/templates/catalogue/no-such-v1/preview/",
        "/templates/elsewhere/saas-landing-v1/preview/",
        "/templates/catalogue/saas-landing-v1/preview/index.html.j2",
    ],
)
async def test_another_customers_preview_is_not_found(
    client: TestClient[Any, Any], path: str
) -> None:
    await sign_in(client, "token-a")
    response = await client.get(path)
    assert response.status == 404
    assert "Globex" not in await response.text()


def test_metrics_count_experiments_on_the_template_across_customers() -> None:
    experiments = [
        Experiment.model_validate(pinned(f"customer-{i}", f"e{i}", "saas_landing", o, u))
        for i, (o, u) in enumerate(
            [("winner", 0.10), ("winner", 0.30), ("winner", 0.20), ("no_difference", 0.0),
             ("pending", 0.5), ("winner", 0.05), ("winner", 0.40), ("winner", 0.15)]
        )
    ]  # fmt: skip
    experiments.append(
        Experiment.model_validate(pinned("customer-x", "other", "signup_flow", "winner", 1.0))
    )
    result = metrics(experiments, "ClusterExperimentTemplate", "saas_landing")
    assert (result.run, result.decided, result.winners) == (8, 7, 6)
    assert result.winner_share == pytest.approx(6 / 7)
    assert result.median_uplift == pytest.approx(0.175)
    assert result.interval is not None
    assert (result.interval.low, result.interval.high) == (0.05, 0.40)
    assert result.interval.confidence == pytest.approx(1 - 2 / 64)


def test_the_median_interval_needs_six_values_for_95_percent() -> None:
    assert median_interval([0.1, 0.2, 0.3, 0.4, 0.5], 0.95) is None
    nine = [float(i) for i in range(9)]
    interval = median_interval(nine, 0.95)
    assert interval is not None and (interval.low, interval.high) == (1.0, 7.0)
    assert interval.confidence == pytest.approx(1 - 2 * (1 + 9) / 512)
