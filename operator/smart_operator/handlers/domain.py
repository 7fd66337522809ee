"""kopf registrations for Domains: a daemon per Domain runs the reconciler
(``reconcile.domain``), a spec change wakes it, and deletion removes what it made."""

from __future__ import annotations

from typing import Any

import kopf

from smart_operator import domains
from smart_operator.conditions import is_true
from smart_operator.errors import ExternalError, TemporaryFailure
from smart_operator.handlers.context import Context, context, run_daemon, wake
from smart_operator.handlers.metrics import DOMAIN_CENSUS, STALE_READS, reconciling
from smart_operator.models.common import GROUP, VERSION
from smart_operator.models.conditions import ConditionType
from smart_operator.models.domain import Domain, DomainPhase, DomainStatus
from smart_operator.ports import ObjectRef, Site
from smart_operator.settings import OperatorSettings

DOMAINS = (GROUP, VERSION, "domains")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.daemon(*DOMAINS, registry=registry, cancellation_timeout=10)
    async def domain_daemon(
        stopped: kopf.DaemonStopped, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any
    ) -> None:
        ctx = context(memo)

        async def one_pass() -> float:
            current = dict(body)
            if ctx.uptime is not None:
                current = ctx.uptime.overlay(uid, current)
            if domains.watched_behind(Domain.model_validate(current), ctx.steady_at.get(uid)):
                STALE_READS.inc()
                meta = current["metadata"]
                current = (
                    await ctx.kube.get(ObjectRef("domains", meta["name"], meta["namespace"]))
                    or current
                )
            reconciler = ctx.domain(current, stopping=stopped.is_set)
            delay = await reconciler.run()
            DOMAIN_CENSUS.record(uid, reconciler.domain, reconciler.status)
            check_site(uid, reconciler.domain, reconciler.status, ctx)
            if domains.is_steady(reconciler.status, reconciler.generation):
                ctx.steady_at[uid] = reconciler.generation
            else:
                ctx.steady_at.pop(uid, None)
            return delay

        try:
            await run_daemon(ctx, uid, stopped, "Domain", one_pass)
        finally:  # deleted, or this replica stopped being the active one
            if ctx.uptime is not None:
                ctx.uptime.forget(uid)

    @kopf.on.update(*DOMAINS, field="spec", registry=registry)
    async def domain_changed(uid: str, memo: kopf.Memo, **_: Any) -> None:
        wake(context(memo), uid)

    @kopf.on.delete(*DOMAINS, registry=registry)
    async def domain_deleted(
        body: kopf.Body, uid: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        ctx = context(memo)
        DOMAIN_CENSUS.forget(uid)
        if ctx.uptime is not None:
            ctx.uptime.forget(uid)
        ctx.steady_at.pop(uid, None)
        with reconciling("Domain"):
            try:
                async with ctx.quiet(uid):
                    await ctx.domain(dict(body)).delete()
            except TemporaryFailure as error:
                raise kopf.TemporaryError(str(error), delay=error.delay) from error
            except ExternalError as error:
                raise kopf.TemporaryError(f"{error}; retrying", delay=30) from error
        logger.info("removed the server, firewall and DNS records of %s", body["spec"]["domain"])


def check_site(uid: str, domain: Domain, status: DomainStatus, ctx: Context) -> None:
    """A Domain's site is checked from outside once it is set up (its agent, which runs
    nginx, installed on a server its records point at), whatever the agent's heartbeat
    says: a site whose agent died is one to watch. Over HTTPS once it has its
    certificate."""
    checker = ctx.uptime
    if checker is None:
        return
    server = status.server
    if (
        status.phase is DomainPhase.DELETING
        or server is None
        or not server.ipv4
        or not is_true(status.conditions, ConditionType.AGENT_INSTALLED)
    ):
        checker.forget(uid)
        return
    meta = domain.metadata
    certificate = status.certificate
    site = Site(
        name=domain.spec.domain,
        address=server.ipv4,
        https=bool(certificate and certificate.not_after),
    )
    checker.watch(uid, ObjectRef("domains", meta.name, meta.namespace), site, status.availability)
