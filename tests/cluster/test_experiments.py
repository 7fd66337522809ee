"""Experiment deployment end to end: render, upload over SFTP to the Domain's simulated
server with the pinned host key, switch atomically; errors stop before any upload."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from smart_operator.keys import generate_ssh_key
from tests.cluster.conftest import World, experiment, wait_exp
from tests.conftest import Cluster
from tests.waiting import eventually


def test_an_experiment_is_served_from_an_atomically_switched_revision(
    cluster: Cluster, site: tuple[str, Path]
) -> None:
    namespace, root = site
    cluster.apply(experiment("headline", namespace, "site"))
    deployed = wait_exp(cluster, namespace, "headline", "Deployed")
    status = (cluster.get("experiment", "headline", "-n", namespace) or {})["status"]
    revision = status["deployedRevision"]
    assert revision in deployed["message"]
    assert status["serving"] == ["control", "bold"]
    base = root / "opt/smart/experiments/headline"
    assert (base / "current").readlink() == Path("revisions") / revision
    manifest = json.loads((base / "current/experiment.json").read_text())
    assert manifest["revision"] == revision
    assert manifest["goalUrl"] == "https://buy.stripe.com/test_1"
    assert "Ship pages that sell" in (base / "current/variants/bold/index.html").read_text()

    # The same spec again uploads nothing: still one revision, untouched.
    stamp = (base / "revisions" / revision).stat().st_mtime_ns
    cluster.apply(experiment("headline", namespace, "site"))
    cluster.kubectl(
        "annotate", "experiment", "headline", "-n", namespace, "touched=1", "--overwrite"
    )
    assert [p.name for p in (base / "revisions").iterdir()] == [revision]
    assert (base / "revisions" / revision).stat().st_mtime_ns == stamp

    # A change is a new revision, switched atomically; the old one stays beside it.
    cluster.kubectl(
        "patch",
        "experiment",
        "headline",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/variants/1/weight", "value": 30}]',
    )
    eventually(
        lambda: (base / "current").readlink() != Path("revisions") / revision,
        60,
        "the switch to the new revision",
    )
    assert len(list((base / "revisions").iterdir())) == 2

    cluster.kubectl("delete", "experiment", "headline", "-n", namespace, "--timeout=60s")
    assert not base.exists()


def test_a_template_config_error_is_reported_before_anything_is_uploaded(
    cluster: Cluster, site: tuple[str, Path]
) -> None:
    namespace, root = site
    bad = experiment(
        "typo",
        namespace,
        "site",
        variants=[{"name": "control"}, {"name": "b", "values": {"headlin": "Oops"}}],
    )
    cluster.apply(bad)
    invalid = wait_exp(cluster, namespace, "typo", "ConfigValid", "False")
    assert "spec.variants[1].values.headlin" in invalid["message"]
    assert not (root / "opt/smart/experiments/typo").exists()
    assert (cluster.get("experiment", "typo", "-n", namespace) or {})["status"]["phase"] == "Failed"


def test_an_experiment_cannot_move_to_another_domain(
    cluster: Cluster, site: tuple[str, Path]
) -> None:
    namespace, _ = site
    cluster.apply(experiment("moving", namespace, "site"))
    refused = cluster.try_kubectl(
        "patch",
        "experiment",
        "moving",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"domainRef": "elsewhere"}}',
    )
    assert "spec.domainRef cannot change" in refused
    moved = cluster.get("experiment", "moving", "-n", namespace) or {}
    assert moved["spec"]["domainRef"] == "site"
    cluster.kubectl("delete", "experiment", "moving", "-n", namespace, "--timeout=60s")


def test_a_paused_domain_serves_only_the_control(cluster: Cluster, site: tuple[str, Path]) -> None:
    namespace, root = site
    cluster.apply(experiment("pausing", namespace, "site"))
    wait_exp(cluster, namespace, "pausing", "Deployed")
    cluster.kubectl(
        "patch", "domain", "site", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    eventually(
        lambda: (
            (cluster.get("experiment", "pausing", "-n", namespace) or {})["status"].get("serving")
            == ["control"]
        ),
        60,
        "only the control is served",
    )
    manifest = json.loads(
        (root / "opt/smart/experiments/pausing/current/experiment.json").read_text()
    )
    assert manifest["serving"]["mode"] == "control"


def test_a_host_key_mismatch_refuses_the_deploy(cluster: Cluster, site: tuple[str, Path]) -> None:
    namespace, root = site
    impostor = generate_ssh_key("impostor").public
    cluster.kubectl(
        "patch",
        "domain",
        "site",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"server": {"hostPublicKey": impostor}}}),
    )
    cluster.apply(experiment("pinned", namespace, "site"))
    refused = wait_exp(cluster, namespace, "pinned", "Deployed", "False", "HostKeyMismatch")
    assert "pinned host key" in refused["message"]
    assert not (root / "opt/smart/experiments/pinned").exists()


def test_the_agent_serves_the_experiment_on_the_host_within_seconds(
    cluster: Cluster, world: World, site: tuple[str, Path]
) -> None:
    namespace, root = site
    server = (cluster.get("domain", "site", "-n", namespace) or {})["status"]["server"]
    cluster.apply(experiment("served", namespace, "site"))
    wait_exp(cluster, namespace, "served", "Deployed")
    url = f"http://{server['ipv4']}/"

    def page() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    body = eventually(page, 30, "the host's agent serves the page")
    assert "Acme" in body
    assert "/_smart/convert?v=" in body

    # The agent's heartbeat says what it serves, and the operator holds it to that: a
    # server that lost the experiment (its files gone, as on a server restored from an
    # old snapshot) gets it deployed again.
    status = (cluster.get("experiment", "served", "-n", namespace) or {})["status"]
    wanted = [{"name": "served", "revision": status["deployedRevision"]}]

    def agent_serves() -> Any:
        domain = cluster.get("domain", "site", "-n", namespace) or {}
        return domain.get("status", {}).get("agent", {}).get("serving")

    eventually(lambda: agent_serves() == wanted, 60, f"the Domain's agent status names {wanted}")
    shutil.rmtree(root / "opt/smart/experiments/served")
    eventually(lambda: agent_serves() == [], 60, "the agent says it serves nothing")
    eventually(
        lambda: agent_serves() == wanted and page() is not None,
        120,
        "the operator deploys the experiment again",
    )
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=ServedRevisionDiffers"
    )
    assert "deploying it again" in events


def test_a_second_experiment_on_a_domain_waits_until_the_first_is_deleted(
    cluster: Cluster, site: tuple[str, Path]
) -> None:
    namespace, root = site
    experiments = root / "opt/smart/experiments"
    cluster.apply(experiment("first", namespace, "site"))
    wait_exp(cluster, namespace, "first", "Deployed")
    cluster.apply(experiment("second", namespace, "site"))
    busy = wait_exp(cluster, namespace, "second", "Deployed", "False", "DomainBusy")
    assert "serves Experiment first" in busy["message"]
    assert "another Domain" in busy["message"]
    assert (cluster.get("experiment", "second", "-n", namespace) or {})["status"][
        "phase"
    ] == "Pending"
    assert not (experiments / "second").exists()
    # The first keeps its server: a change to it still deploys.
    assert (cluster.get("experiment", "first", "-n", namespace) or {})["status"][
        "phase"
    ] == "Running"

    cluster.kubectl("delete", "experiment", "first", "-n", namespace, "--timeout=60s")
    wait_exp(cluster, namespace, "second", "Deployed")
    assert (experiments / "second/current/experiment.json").exists()
    assert not (experiments / "first").exists()
