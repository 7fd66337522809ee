"""Experiment deployment: validate the template config, render every variant into an
immutable revision named by its content, upload it over SFTP to the Domain's server
(pinned host key only), switch atomically, and have the agent reload.

Each Experiment has a daemon like a Domain's: it deploys when the desired revision
differs from ``status.deployedRevision`` (a spec change, a paused Domain, a suspended
Customer, a promoted winner) and checks again every ``deploy_check_seconds``. The same
revision twice uploads nothing. A failed deploy leaves the previous revision serving
and says why in the ``Deployed`` condition. Results (counts, statistics, decision)
are the intake's to write; this handler never touches them.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from smart_operator import revisions
from smart_operator.clients import ssh
from smart_operator.conditions import get_condition, set_condition
from smart_operator.customers import NAMESPACE_PREFIX
from smart_operator.handlers.context import (
    Context,
    context,
    reconcile_until_stopped,
    wake,
)
from smart_operator.keys import fingerprint
from smart_operator.metrics import reconciling
from smart_operator.models.common import GROUP, VERSION, ConditionStatus
from smart_operator.models.domain import Domain
from smart_operator.models.experiment import Experiment, ExperimentPhase, ExperimentStatus
from smart_operator.settings import OperatorSettings
from smart_operator.templates import validate_config

EXPERIMENTS = (GROUP, VERSION, "experiments")
RETRY_SECONDS = 5.0


class ExperimentReconciler:
    def __init__(self, ctx: Context, body: dict[str, Any]) -> None:
        self.ctx = ctx
        self.body = body
        self.experiment = Experiment.model_validate(body)
        self.generation = self.experiment.metadata.generation
        previous = self.experiment.status or ExperimentStatus()
        self.conditions = list(previous.conditions)
        self.fields: dict[str, Any] = {}
        self.before = previous.model_dump(mode="json", by_alias=True, exclude_none=True)

    def condition(self, type: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions, type, status, reason, message, self.generation
        )

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        post = kopf.warn if warning else kopf.info
        post(cast(kopf.Body, self.body), reason=reason, message=message)

    async def write(self, phase: ExperimentPhase) -> None:
        deployed = get_condition(self.conditions, "Deployed")
        ready: tuple[ConditionStatus, str, str] = (
            ("True", "Serving", deployed.message)
            if deployed is not None and deployed.status == "True"
            else (
                "False",
                deployed.reason if deployed else "Pending",
                deployed.message if deployed else "",
            )
        )
        self.condition("Ready", *ready)
        decision = self.experiment.status.decision if self.experiment.status else None
        if phase is ExperimentPhase.RUNNING and decision and decision.outcome != "pending":
            phase = ExperimentPhase.CONCLUDED
        patch: dict[str, Any] = {
            "observedGeneration": self.generation,
            "phase": phase.value,
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in self.conditions
            ],
            **self.fields,
        }
        if all(self.before.get(key) == value for key, value in patch.items()):
            return
        meta = self.experiment.metadata
        await self.ctx.kube.patch_status("experiments", meta.namespace or "", meta.name, patch)

    async def target(self) -> tuple[ssh.Target, Domain] | None:
        meta, spec = self.experiment.metadata, self.experiment.spec
        body = await self.ctx.kube.get_namespaced("domains", meta.namespace or "", spec.domain_ref)
        if body is None:
            self.condition(
                "Deployed",
                "False",
                "DomainNotFound",
                f"spec.domainRef: no Domain {spec.domain_ref!r} in namespace {meta.namespace}",
            )
            return None
        domain = Domain.model_validate(body)
        server = domain.status.server if domain.status else None
        ready = get_condition(domain.status.conditions if domain.status else [], "ServerReady")
        if (
            server is None
            or not server.ipv4
            or not server.host_public_key
            or ready is None
            or ready.status != "True"
            or self.ctx.cloud is None
        ):
            self.condition(
                "Deployed",
                "False",
                "WaitingForServer",
                f"Domain {spec.domain_ref} has no running server yet",
            )
            return None
        target = ssh.Target(
            address=server.ipv4,
            port=self.ctx.settings.ssh_port,
            host_public_key=server.host_public_key,
            client_private_key=self.ctx.cloud.operator_key.private,
        )
        return target, domain

    async def domain_holder(self) -> str | None:
        """The other Experiment that this one's Domain serves, if another has it."""
        meta, spec = self.experiment.metadata, self.experiment.spec
        bodies = await self.ctx.kube.list_namespaced("experiments", meta.namespace or "")
        holder = revisions.domain_holder(
            (Experiment.model_validate(body) for body in bodies), spec.domain_ref
        )
        if holder is None or holder.metadata.name == meta.name:
            return None
        return holder.metadata.name

    async def wait_for_domain(self, target: ssh.Target, holder: str) -> None:
        """Wait (Pending) while another Experiment has the Domain; take this one off the
        server if it was there, so that the server serves only the holder."""
        status = self.experiment.status or ExperimentStatus()
        if status.deployed_revision:
            try:
                await ssh.remove(target, self.experiment.metadata.name)
            except (ssh.HostKeyMismatch, ssh.Unreachable) as error:
                message = f"Experiment {holder} has the Domain, but taking this one off failed"
                self.condition("Deployed", "True", "DomainBusy", f"{message}: {error}; retrying")
                await self.write(ExperimentPhase.RUNNING)
                return
            self.fields = {"deployedRevision": None, "serving": None}
        domain = self.experiment.spec.domain_ref
        message = (
            f"Domain {domain} serves Experiment {holder}, and a server serves one experiment "
            f"at a time: this one starts when {holder} is deleted, or put it on another Domain"
        )
        known = get_condition(self.conditions, "Deployed")
        self.condition("Deployed", "False", "DomainBusy", message)
        if known is None or known.reason != "DomainBusy":
            self.event("DomainBusy", message, warning=True)
        await self.write(ExperimentPhase.PENDING)

    async def customer_suspended(self) -> bool:
        namespace = self.experiment.metadata.namespace or ""
        if not namespace.startswith(NAMESPACE_PREFIX):
            return False
        body = await self.ctx.kube.get_customer(namespace.removeprefix(NAMESPACE_PREFIX))
        return bool(body and body.get("spec", {}).get("suspended"))

    async def run(self) -> float:
        settings = self.ctx.settings
        errors = validate_config(self.experiment.spec)
        if errors:
            message = "; ".join(f"{e.path}: {e.message}" for e in errors)
            known = get_condition(self.conditions, "ConfigValid")
            self.condition("ConfigValid", "False", "InvalidTemplateConfig", message)
            self.condition("Deployed", "False", "InvalidTemplateConfig", "nothing was uploaded")
            if known is None or known.status != "False" or known.message != message:
                self.event("InvalidTemplateConfig", message, warning=True)
            await self.write(ExperimentPhase.FAILED)
            return settings.deploy_check_seconds
        self.condition("ConfigValid", "True", "Valid", "the template config is valid")
        found = await self.target()
        if found is None:
            await self.write(ExperimentPhase.PENDING)
            return RETRY_SECONDS
        target, domain = found
        holder = await self.domain_holder()
        if holder is not None:
            await self.wait_for_domain(target, holder)
            return RETRY_SECONDS
        serving, why = revisions.decide_serving(
            self.experiment,
            domain_paused=domain.spec.paused,
            customer_suspended=await self.customer_suspended(),
        )
        revision = revisions.build_revision(self.experiment, serving)
        names = [v.name for v in self.experiment.spec.variants]
        status = self.experiment.status or ExperimentStatus()
        if status.deployed_revision == revision.id:
            self.condition("Deployed", "True", "Deployed", f"revision {revision.id}: {why}")
            await self.write(ExperimentPhase.RUNNING)
            return settings.deploy_check_seconds
        try:
            result = await ssh.deploy(
                target, self.experiment.metadata.name, revision.id, revision.files
            )
        except ssh.HostKeyMismatch:
            pinned = fingerprint(target.host_public_key)
            message = (
                f"the server at {target.address} did not present the pinned host key "
                f"({pinned}); "
                "nothing was uploaded. If the server was rebuilt, delete and re-create the Domain"
            )
            known = get_condition(self.conditions, "Deployed")
            self.condition("Deployed", "False", "HostKeyMismatch", message)
            if known is None or known.reason != "HostKeyMismatch":
                self.event("HostKeyMismatch", message, warning=True)
            await self.write(
                ExperimentPhase.DEPLOYING
                if not status.deployed_revision
                else ExperimentPhase.RUNNING
            )
            return settings.deploy_check_seconds
        except ssh.Unreachable as error:
            previous = status.deployed_revision
            self.condition(
                "Deployed",
                "False",
                "Unreachable",
                f"{error}; "
                + (f"revision {previous} keeps serving" if previous else "nothing is served yet")
                + f"; retrying in {RETRY_SECONDS:.0f} s",
            )
            await self.write(ExperimentPhase.RUNNING if previous else ExperimentPhase.DEPLOYING)
            return RETRY_SECONDS
        self.fields = {"deployedRevision": revision.id, "serving": serving.served(names)}
        self.condition("Deployed", "True", "Deployed", f"revision {revision.id}: {why}")
        self.event(
            "Deployed",
            f"revision {revision.id} on {target.address}"
            + ("" if result.uploaded else " (already uploaded)"),
        )
        await self.write(ExperimentPhase.RUNNING)
        return settings.deploy_check_seconds


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.daemon(*EXPERIMENTS, registry=registry, cancellation_timeout=10)
    async def experiment_daemon(
        stopped: kopf.DaemonStopped, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any
    ) -> None:
        ctx = context(memo)
        await reconcile_until_stopped(
            ctx, uid, stopped, "Experiment", lambda: ExperimentReconciler(ctx, dict(body)).run()
        )

    @kopf.on.update(*EXPERIMENTS, field="spec", registry=registry)
    async def experiment_changed(uid: str, memo: kopf.Memo, **_: Any) -> None:
        wake(context(memo), uid)

    @kopf.on.delete(*EXPERIMENTS, registry=registry)
    async def experiment_deleted(
        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        """Take the experiment off its server; a server that is gone has nothing to remove."""
        ctx = context(memo)
        with reconciling("Experiment"):
            reconciler = ExperimentReconciler(ctx, dict(body))
            found = await reconciler.target()
            if found is None:
                return
            try:
                await ssh.remove(found[0], reconciler.experiment.metadata.name)
            except ssh.HostKeyMismatch:
                logger.warning("not removing from a server with another host key")
            except ssh.Unreachable as error:
                raise kopf.TemporaryError(f"cannot reach the server: {error}", delay=10) from error
