"""The Experiment reconciler, driven through fakes of its ports: validation, where it
is deployed, a busy Domain, a suspended Customer, an unreachable or re-keyed server,
and which part of the status it writes."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import pytest

from smart_operator import experiments
from smart_operator.errors import HostKeyMismatch, RevisionRefused, Unreachable
from smart_operator.keys import generate_ssh_key
from smart_operator.models.common import Writer
from smart_operator.models.experiment import Experiment, ExperimentStatus
from smart_operator.ports import ObjectRef
from smart_operator.reconcile.experiment import RETRY_SECONDS, ExperimentReconciler
from smart_operator.reconcile.status import StatusWriter
from smart_operator.settings import OperatorSettings
from tests.unit.fakes import FakeDeployer, FakeEvents, FakeResources

NS = "customer-acme"
SETTINGS = OperatorSettings(deploy_check_seconds=60)
OPERATOR_KEY = generate_ssh_key("smart-operator")
HOST_KEY = generate_ssh_key("root@server")


def experiment_body(name: str = "headline", created: str = "2026-12-01T00:00:00Z", **spec: Any):
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Experiment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"e-{name}",
            "generation": 1,
            "creationTimestamp": created,
        },
        "spec": {
            "domainRef": "shop",
            "type": "landing_page",
            "template": "saas_landing",
            "templateConfig": {"stripeLink": "https://buy.stripe.com/test_acme"},
            "variants": [{"name": "control"}, {"name": "bold", "values": {"headline": "Go"}}],
            **spec,
        },
    }


def domain_body(ready: bool = True, paused: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "smartserver.ai/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": "shop", "namespace": NS, "uid": "d-1", "generation": 1},
        "spec": {"domain": "shop.example", "paused": paused},
        "status": {
            "server": {"id": 7, "ipv4": "198.18.0.7", "hostPublicKey": HOST_KEY.public},
            "conditions": [
                {
                    "type": kind,
                    "status": "True" if ready else "False",
                    "reason": reason if ready else "Starting",
                    "message": "",
                    "lastTransitionTime": "2026-12-01T00:00:00Z",
                }
                for kind, reason in (("ServerReady", "Running"), ("AgentInstalled", "Installed"))
            ],
        },
    }


class World:
    def __init__(self) -> None:
        self.resources = FakeResources()
        self.deployer = FakeDeployer()
        self.events = FakeEvents()
        self.resources.put(ObjectRef("domains", "shop", NS), domain_body())
        self.resources.put(
            ObjectRef("customers", "acme"),
            {"metadata": {"name": "acme"}, "spec": {"email": "a@acme.example"}},
        )

    def add(self, name: str = "headline", **spec: Any) -> ObjectRef:
        ref = ObjectRef("experiments", name, NS)
        self.resources.put(ref, experiment_body(name, **spec))
        return ref

    async def run(self, ref: ObjectRef) -> float:
        experiment = Experiment.model_validate(self.resources.objects[ref])
        writer = StatusWriter(
            experiment.status or ExperimentStatus(),
            functools.partial(self.resources.patch_status, ref),
            self.events,
            experiments.summarize,
        )
        return await ExperimentReconciler(
            experiment,
            resources=self.resources,
            deployer=self.deployer,
            client_private_key=OPERATOR_KEY.private,
            settings=SETTINGS,
            writer=writer,
            events=self.events,
        ).run()

    def status(self, ref: ObjectRef) -> dict[str, Any]:
        return dict(self.resources.objects[ref].get("status") or {})

    def condition(self, ref: ObjectRef, type: str) -> dict[str, Any]:
        return next(c for c in self.status(ref)["conditions"] if c["type"] == type)


@pytest.fixture
def world() -> World:
    return World()


async def test_a_valid_experiment_is_deployed_once_and_then_left_alone(world: World) -> None:
    ref = world.add()
    assert await world.run(ref) == SETTINGS.deploy_check_seconds
    status = world.status(ref)
    assert status["phase"] == "Running" and status["deployedRevision"].startswith("r-")
    assert status["serving"] == ["control", "bold"]
    assert world.condition(ref, "Ready")["status"] == "True"
    assert world.deployer.uploads == 1
    world.resources.patches.clear()
    await world.run(ref)
    assert world.deployer.calls["deploy"] == 1
    assert world.resources.patches == []


async def test_an_invalid_template_config_fails_before_anything_is_uploaded(
    world: World,
) -> None:
    ref = world.add(variants=[{"name": "control"}, {"name": "b", "values": {"colour": "x"}}])
    await world.run(ref)
    assert world.status(ref)["phase"] == "Failed"
    condition = world.condition(ref, "ConfigValid")
    assert condition["reason"] == "InvalidTemplateConfig" and "colour" in condition["message"]
    assert world.deployer.calls == {}
    assert "InvalidTemplateConfig" in world.events.reasons("Warning")


async def test_it_waits_for_its_domain_and_for_a_running_server(world: World) -> None:
    ref = world.add(domainRef="nope")
    assert await world.run(ref) == RETRY_SECONDS
    assert world.condition(ref, "Deployed")["reason"] == "DomainNotFound"
    world.resources.put(ObjectRef("domains", "shop", NS), domain_body(ready=False))
    other = world.add("second")
    await world.run(other)
    assert world.condition(other, "Deployed")["reason"] == "WaitingForServer"
    assert world.status(other)["phase"] == "Pending"
    assert world.deployer.calls == {}


async def test_a_second_experiment_waits_while_the_first_has_the_domain(world: World) -> None:
    first = world.add("first", created="2026-12-01T00:00:00Z")
    await world.run(first)
    second = world.add("second", created="2026-12-02T00:00:00Z")
    await world.run(second)
    busy = world.condition(second, "Deployed")
    assert busy["reason"] == "DomainBusy" and "first" in busy["message"]
    assert world.status(second)["phase"] == "Pending"
    assert list(world.deployer.current) == [("198.18.0.7", "first")]


async def test_a_suspended_customer_serves_only_the_control(world: World) -> None:
    customer = world.resources.objects[ObjectRef("customers", "acme")]
    customer["spec"]["suspended"] = True
    ref = world.add()
    await world.run(ref)
    assert world.status(ref)["serving"] == ["control"]


async def test_a_server_with_another_host_key_gets_nothing(world: World) -> None:
    ref = world.add()
    world.deployer.fail("deploy", HostKeyMismatch("ssh", "198.18.0.7: host key not verifiable"))
    await world.run(ref)
    condition = world.condition(ref, "Deployed")
    assert condition["reason"] == "HostKeyMismatch" and HOST_KEY.fingerprint in condition["message"]
    assert "deployedRevision" not in world.status(ref)
    assert "HostKeyMismatch" in world.events.reasons("Warning")


async def test_an_unreachable_server_keeps_the_previous_revision_serving(world: World) -> None:
    ref = world.add()
    await world.run(ref)
    previous = world.status(ref)["deployedRevision"]
    world.resources.objects[ref]["spec"]["variants"][1]["values"]["headline"] = "Now"
    world.deployer.fail("deploy", Unreachable("ssh", "198.18.0.7: connection refused"))
    assert await world.run(ref) == RETRY_SECONDS
    condition = world.condition(ref, "Deployed")
    assert condition["reason"] == "Unreachable" and previous in condition["message"]
    assert world.status(ref)["deployedRevision"] == previous
    await world.run(ref)
    assert world.status(ref)["deployedRevision"] != previous


async def test_the_operator_writes_only_the_deployment_part_and_shows_a_decision(
    world: World,
) -> None:
    ref = world.add()
    await world.run(ref)
    world.resources.objects[ref]["status"].update(
        {"lastSequence": 3, "decision": {"outcome": "winner", "winner": "bold"}}
    )
    await world.run(ref)
    assert world.status(ref)["phase"] == "Concluded"
    operator_fields = ExperimentStatus.fields_of(Writer.OPERATOR)
    for _, patch in world.resources.patches:
        assert set(patch) <= operator_fields, set(patch) - operator_fields
    assert not operator_fields & ExperimentStatus.fields_of(Writer.INTAKE)


async def test_a_replaced_server_gets_the_experiment_again(world: World) -> None:
    ref = world.add()
    await world.run(ref)
    revision = world.status(ref)["deployedRevision"]
    domain = world.resources.objects[ObjectRef("domains", "shop", NS)]
    domain["status"]["server"].update({"id": 8, "ipv4": "198.18.0.8"})
    await world.run(ref)
    assert ("198.18.0.8", "headline") in world.deployer.current
    assert world.status(ref)["deployedRevision"] == revision
    assert world.status(ref)["deployedServer"] == 8


async def test_a_revision_the_agent_refuses_is_not_recorded_and_is_tried_again(
    world: World,
) -> None:
    ref = world.add()
    world.deployer.fail("deploy", RevisionRefused("ssh", "the agent refused revision r-1: bad"))
    assert await world.run(ref) == SETTINGS.deploy_check_seconds
    condition = world.condition(ref, "Deployed")
    assert condition["reason"] == "RevisionRefused" and "nothing is served" in condition["message"]
    assert "deployedRevision" not in world.status(ref)
    await world.run(ref)
    assert world.condition(ref, "Deployed")["status"] == "True"


async def test_a_server_that_says_it_serves_another_revision_gets_it_again(world: World) -> None:
    ref = world.add()
    await world.run(ref)
    status = world.status(ref)
    deployed_at = datetime.fromisoformat(status["deployedAt"])
    domain = world.resources.objects[ObjectRef("domains", "shop", NS)]

    def heartbeat(after_seconds: float, revision: str | None) -> None:
        domain["status"]["agent"] = {
            "version": "0.4.1",
            "lastSeen": (deployed_at + timedelta(seconds=after_seconds)).isoformat(),
            "serving": [{"name": "headline", "revision": revision}] if revision else [],
        }

    heartbeat(5, "r-older")  # may have been sent before the deploy: not a contradiction
    await world.run(ref)
    heartbeat(60, status["deployedRevision"])
    await world.run(ref)
    assert world.deployer.calls["deploy"] == 1

    heartbeat(60, None)  # the server lost it (its agent's state reset)
    await world.run(ref)
    assert world.deployer.calls["deploy"] == 2
    assert "ServedRevisionDiffers" in world.events.reasons("Warning")
    assert world.condition(ref, "Deployed")["status"] == "True"
    assert datetime.fromisoformat(world.status(ref)["deployedAt"]) > deployed_at
