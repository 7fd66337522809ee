"""The Experiment reconciler: find the template version it names (``ExperimentTemplate``
of its namespace, else ``ClusterExperimentTemplate``; pinned in ``status.template``),
validate the template config against it, render every variant into
an immutable revision named by its content, deploy it to the Domain's server (pinned
host key only), switch atomically; and take it off the server on deletion.

A pass deploys when the desired revision differs from ``status.deployedRevision`` (a
spec change, a paused Domain, a suspended Customer, a promoted winner); the same
revision twice uploads nothing. A failed deploy leaves the previous revision serving
and says why in the ``Deployed`` condition. Results (counts, statistics, decision) are
the intake's to write; this reconciler never touches them (``ExperimentStatus.WRITERS``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from smart_operator import experiments, revisions
from smart_operator.conditions import set_condition
from smart_operator.errors import HostKeyMismatch, RevisionRefused, TemporaryFailure
from smart_operator.keys import fingerprint
from smart_operator.models.common import ConditionStatus
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.customer import Customer, customer_of
from smart_operator.models.domain import Domain
from smart_operator.models.experiment import Experiment, ExperimentPhase, ExperimentStatus
from smart_operator.ports import Deployer, Events, ObjectRef, Resources, Target
from smart_operator.reconcile.status import StatusWriter
from smart_operator.settings import OperatorSettings
from smart_operator.templates import (
    ConfigError,
    InvalidTemplateConfig,
    Template,
    resolve,
    validate_config,
)

RETRY_SECONDS = 5.0


class ExperimentReconciler:
    """One pass over one Experiment: ``run()`` returns the seconds until the next."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        resources: Resources,
        deployer: Deployer,
        client_private_key: str | None,
        previous_client_private_key: str | None = None,
        settings: OperatorSettings,
        writer: StatusWriter[ExperimentStatus],
        events: Events,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.experiment = experiment
        self.clock = clock
        self.resources = resources
        self.deployer = deployer
        self.client_private_key = client_private_key
        self.previous_client_private_key = previous_client_private_key
        self.settings = settings
        self.writer = writer
        self.events = events
        self.namespace = experiment.metadata.namespace or ""
        self.generation = experiment.metadata.generation
        self.read = experiment.status or ExperimentStatus()
        self.status = self.read.model_copy(deep=True)
        self.status.observed_generation = self.generation

    def condition(
        self, type: ConditionType, status: ConditionStatus, reason: Reason, message: str
    ) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type, status, reason, message, self.generation
        )

    async def run(self) -> float:
        delay = await self._pass()
        self.status = await self.writer.write(self.status)
        return delay

    async def _pass(self) -> float:
        spec = self.experiment.spec
        template = await self.template()
        if not isinstance(template, Template):
            return self.invalid(template, Reason.TEMPLATE_UNAVAILABLE)
        errors = validate_config(spec, template.spec)
        if errors:
            return self.invalid(errors, Reason.INVALID_TEMPLATE_CONFIG)
        self.condition(
            ConditionType.CONFIG_VALID,
            "True",
            Reason.VALID,
            f"the template config is valid for {template.kind} {template.object} "
            f"(version {template.spec.version})",
        )
        domain = await self.domain()
        target = experiments.deploy_target(
            domain,
            spec.domain_ref,
            self.namespace,
            self.settings.ssh_port,
            self.client_private_key,
            self.previous_client_private_key,
        )
        if not isinstance(target, Target):
            self.condition(ConditionType.DEPLOYED, *target)
            self.status.phase = ExperimentPhase.PENDING
            return RETRY_SECONDS
        holder = await self.domain_holder()
        if holder is not None:
            await self.wait_for_domain(target, holder)
            return RETRY_SECONDS
        return await self.deploy(target, domain, template)

    def invalid(self, errors: list[ConfigError], reason: Reason) -> float:
        """Say what to fix, field by field; upload nothing (what was deployed stays)."""
        message = "; ".join(f"{e.path}: {e.message}" for e in errors)
        self.condition(ConditionType.CONFIG_VALID, "False", reason, message)
        serving = self.read.deployed_revision
        self.condition(
            ConditionType.DEPLOYED,
            "False",
            reason,
            "nothing was uploaded" + (f"; revision {serving} keeps serving" if serving else ""),
        )
        self.status.phase = ExperimentPhase.FAILED
        return self.settings.deploy_check_seconds

    async def template(self) -> Template | list[ConfigError]:
        """The template version to render from. A pinned version is read by its object
        name (one get); a first render, or a spec that asks for another template or
        version, lists this namespace's private templates and the catalogue."""
        spec = self.experiment.spec
        pin = self.read.template
        private: list[dict[str, Any]] = []
        catalogue: list[dict[str, Any]] = []
        if (
            pin is not None
            and pin.name == spec.template
            and spec.template_version
            in (
                None,
                pin.version,
            )
        ):
            namespaced = pin.kind == "ExperimentTemplate"
            ref = ObjectRef(
                "experimenttemplates" if namespaced else "clusterexperimenttemplates",
                pin.object,
                self.namespace if namespaced else None,
            )
            body = await self.resources.get(ref)
            if body is not None:
                (private if namespaced else catalogue).append(body)
        if not private and not catalogue:
            private = await self.resources.list_namespaced("experimenttemplates", self.namespace)
            catalogue = await self.resources.list_cluster("clusterexperimenttemplates")
        return resolve(spec, pin, private, catalogue, self.namespace)

    async def domain(self) -> Domain | None:
        ref = ObjectRef("domains", self.experiment.spec.domain_ref, self.namespace)
        body = await self.resources.get(ref)
        return Domain.model_validate(body) if body is not None else None

    async def domain_holder(self) -> str | None:
        """The other Experiment that this one's Domain serves, if another has it."""
        bodies = await self.resources.list_namespaced("experiments", self.namespace)
        holder = revisions.domain_holder(
            (Experiment.model_validate(body) for body in bodies), self.experiment.spec.domain_ref
        )
        if holder is None or holder.metadata.name == self.experiment.metadata.name:
            return None
        return holder.metadata.name

    async def wait_for_domain(self, target: Target, holder: str) -> None:
        """Wait (Pending) while another Experiment has the Domain; take this one off the
        server if it was there, so that the server serves only the holder."""
        if self.status.deployed_revision:
            try:
                await self.deployer.remove(target, self.experiment.metadata.name)
            except (HostKeyMismatch, TemporaryFailure) as error:
                self.condition(
                    ConditionType.DEPLOYED,
                    "True",
                    Reason.DOMAIN_BUSY,
                    f"Experiment {holder} has the Domain, but taking this one off failed: "
                    f"{error}; retrying",
                )
                self.status.phase = ExperimentPhase.RUNNING
                return
            self.status.deployed_revision = None
            self.status.deployed_server = None
            self.status.deployed_at = None
            self.status.serving = []
        domain = self.experiment.spec.domain_ref
        self.condition(
            ConditionType.DEPLOYED,
            "False",
            Reason.DOMAIN_BUSY,
            f"Domain {domain} serves Experiment {holder}, and a server serves one experiment "
            f"at a time: this one starts when {holder} is deleted, or put it on another Domain",
        )
        self.status.phase = ExperimentPhase.PENDING

    async def customer_suspended(self) -> bool:
        customer = customer_of(self.namespace)
        if customer is None:
            return False
        body = await self.resources.get(ObjectRef("customers", customer))
        # Staff's spec.suspended, or billing's status.billing.suspended.
        return body is not None and Customer.model_validate(body).is_suspended()

    async def deploy(self, target: Target, domain: Domain | None, template: Template) -> float:
        serving, why = revisions.decide_serving(
            self.experiment,
            domain_paused=domain is not None and domain.spec.paused,
            customer_suspended=await self.customer_suspended(),
        )
        try:
            revision = revisions.build_revision(self.experiment, serving, template.spec)
        except InvalidTemplateConfig as error:
            return self.invalid(
                [
                    ConfigError(f"{template.kind} {template.object}: {e.path}", e.message)
                    for e in error.errors
                ],
                Reason.TEMPLATE_UNAVAILABLE,
            )
        # Pinned from the first deployment on: a newer version changes nothing here.
        self.status.template = template.pin()
        names = [v.name for v in self.experiment.spec.variants]
        previous = self.read.deployed_revision
        if self.read.deployed_server != target.server_id:
            previous = None  # a new server (a replaced one): it has nothing of ours yet
        instead = None
        if previous == revision.id:
            # Deployed before this field existed: heartbeats are compared from now on.
            self.status.deployed_at = self.status.deployed_at or self.clock()
            instead = experiments.served_instead(
                domain,
                self.experiment.metadata.name,
                revision.id,
                self.status.deployed_at,
                experiments.SERVED_GRACE_SECONDS,
            )
        if instead is not None:
            # The server lost it (restored from a snapshot, its files changed by hand,
            # its agent's state reset): deploy it again.
            self.events.post(
                "Warning",
                "ServedRevisionDiffers",
                f"the agent on {target.address} serves {instead}, not revision "
                f"{revision.id}: deploying it again",
            )
        elif previous == revision.id:
            self.condition(
                ConditionType.DEPLOYED, "True", Reason.DEPLOYED, f"revision {revision.id}: {why}"
            )
            self.status.phase = ExperimentPhase.RUNNING
            return self.settings.deploy_check_seconds
        try:
            result = await self.deployer.deploy(
                target, self.experiment.metadata.name, revision.id, revision.files
            )
        except HostKeyMismatch:
            self.condition(
                ConditionType.DEPLOYED,
                "False",
                Reason.HOST_KEY_MISMATCH,
                f"the server at {target.address} did not present the pinned host key "
                f"({fingerprint(target.host_public_key)}); nothing was uploaded. If the "
                "server was rebuilt, delete and re-create the Domain",
            )
            self.status.phase = ExperimentPhase.RUNNING if previous else ExperimentPhase.DEPLOYING
            return self.settings.deploy_check_seconds
        except RevisionRefused as error:
            self.condition(
                ConditionType.DEPLOYED,
                "False",
                Reason.REVISION_REFUSED,
                f"{error}; "
                + (f"revision {previous} keeps serving" if previous else "nothing is served")
                + f"; tried again in {self.settings.deploy_check_seconds:.0f} s",
            )
            self.status.phase = ExperimentPhase.RUNNING if previous else ExperimentPhase.DEPLOYING
            return self.settings.deploy_check_seconds
        except TemporaryFailure as error:
            self.condition(
                ConditionType.DEPLOYED,
                "False",
                Reason.UNREACHABLE,
                f"{error}; "
                + (f"revision {previous} keeps serving" if previous else "nothing is served yet")
                + f"; retrying in {RETRY_SECONDS:.0f} s",
            )
            self.status.phase = ExperimentPhase.RUNNING if previous else ExperimentPhase.DEPLOYING
            return RETRY_SECONDS
        self.status.deployed_revision = result.serving
        self.status.deployed_server = target.server_id
        self.status.deployed_at = self.clock()
        self.status.serving = serving.served(names)
        self.condition(
            ConditionType.DEPLOYED, "True", Reason.DEPLOYED, f"revision {revision.id}: {why}"
        )
        if previous is not None:  # a first deploy is reported by its condition
            self.events.post(
                "Normal",
                "RevisionDeployed",
                f"revision {revision.id} on {target.address}"
                + ("" if result.uploaded else " (already uploaded)"),
            )
        self.status.phase = ExperimentPhase.RUNNING
        return self.settings.deploy_check_seconds

    async def delete(self) -> None:
        """Take the experiment off its server; a server that is gone has nothing to
        remove, and one with another host key is left alone."""
        target = experiments.deploy_target(
            await self.domain(),
            self.experiment.spec.domain_ref,
            self.namespace,
            self.settings.ssh_port,
            self.client_private_key,
            self.previous_client_private_key,
        )
        if not isinstance(target, Target):
            return
        try:
            await self.deployer.remove(target, self.experiment.metadata.name)
        except HostKeyMismatch:
            return
