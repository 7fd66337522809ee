"""kopf registrations for Domains: one scheduler (``schedule.Scheduler``) runs every
Domain's reconciler (``reconcile.domain``) when its pass falls due, from a compact copy
of the Domain as the watch last delivered it; a spec change wakes it, and deletion
removes what it made.

No kopf daemon per Domain: kopf keeps a task, a stopper, a logger and the whole body
per daemon. The scheduler keeps the body as compact JSON, without ``managedFields``,
and a Domain only has a task while its pass runs (BENCHMARKS.md, "Operator memory":
149 KiB per idle Domain with daemons, 102 KiB without, at 1,000)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any

import kopf

from smart_operator import domains
from smart_operator.analytics import domain_facts
from smart_operator.clients.budget import PRIORITY
from smart_operator.conditions import is_true
from smart_operator.errors import ExternalError, TemporaryFailure
from smart_operator.handlers import sharding
from smart_operator.handlers.context import Context, context, wake
from smart_operator.handlers.metrics import DOMAIN_CENSUS, STALE_READS, reconciling
from smart_operator.models.common import GROUP, VERSION
from smart_operator.models.conditions import ConditionType
from smart_operator.models.domain import Domain, DomainPhase, DomainStatus
from smart_operator.ports import ObjectRef, Site
from smart_operator.schedule import Scheduler
from smart_operator.settings import OperatorSettings

DOMAINS = (GROUP, VERSION, "domains")


def compact(body: kopf.Body) -> bytes:
    """The Domain as the scheduler keeps it: JSON, without the field managers' record
    (often larger than the rest, and never read)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return json.dumps(raw, separators=(",", ":")).encode()


async def domain_pass(ctx: Context, uid: str) -> float:
    """One pass of a Domain's reconciler; the seconds until its next one."""
    scheduler = ctx.domain_scheduler
    raw = ctx.domain_bodies.get(uid)
    if raw is None or scheduler is None:
        return 0.0
    current: dict[str, Any] = json.loads(raw)
    PRIORITY.set(created_at(current))  # this pass's task only: older Domains' calls first
    async with ctx.passes.setdefault(uid, asyncio.Lock()):
        if not scheduler.knows(uid):  # deleted while waiting for the lock
            return 0.0
        with reconciling("Domain"):
            if ctx.uptime is not None:
                current = ctx.uptime.overlay(uid, current)
            if domains.watched_behind(Domain.model_validate(current), ctx.steady_at.get(uid)):
                STALE_READS.inc()
                meta = current["metadata"]
                current = (
                    await ctx.kube.get(ObjectRef("domains", meta["name"], meta["namespace"]))
                    or current
                )
            reconciler = ctx.domain(current, stopping=lambda: not scheduler.knows(uid))
            delay = await reconciler.run()
            if not scheduler.knows(uid):  # deleted meanwhile: the deletion handler has it
                return delay
            DOMAIN_CENSUS.record(uid, reconciler.domain, reconciler.status)
            check_site(uid, reconciler.domain, reconciler.status, ctx)
            if domains.is_steady(reconciler.status, reconciler.generation):
                ctx.steady_at[uid] = reconciler.generation
            else:
                ctx.steady_at.pop(uid, None)
            return delay


def created_at(body: dict[str, Any]) -> float:
    """When the Domain was created, in seconds since the epoch (0 if it does not say)."""
    stamp = body.get("metadata", {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
    except ValueError:
        return 0.0


def stop_domain(ctx: Context, uid: str) -> None:
    """No more passes of a Domain in this replica (it is being deleted, or gone)."""
    if ctx.domain_scheduler is not None:
        ctx.domain_scheduler.forget(uid)
    ctx.domain_bodies.pop(uid, None)
    ctx.steady_at.pop(uid, None)
    DOMAIN_CENSUS.forget(uid)
    if ctx.uptime is not None:
        ctx.uptime.forget(uid)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    ours = sharding.namespace_filter(settings)
    tasks: list[asyncio.Task[None]] = []
    scheduling: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_domains(memo: kopf.Memo, **_: Any) -> None:
        # Runs after the start-up handler that builds the context (registration order).
        ctx = context(memo)
        scheduler = ctx.domain_scheduler = Scheduler("Domain", lambda uid: domain_pass(ctx, uid))

        def activity(active: bool) -> None:
            if not active:  # kopf stops watching too; it lists everything again on resume
                for uid in list(ctx.domain_bodies):
                    stop_domain(ctx, uid)
                ctx.domain_facts.clear()
                scheduler.clear()
            scheduler.set_active(active)

        tasks.append(
            asyncio.create_task(sharding.follow_peering(ctx, activity), name="Domain peering")
        )

    @kopf.on.cleanup(registry=registry)
    async def stop_domains(**_: Any) -> None:
        for task in tasks + scheduling:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @kopf.on.event(*DOMAINS, registry=registry, when=ours)
    async def domain_seen(
        type: str | None, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any
    ) -> None:
        ctx = context(memo)
        if ctx.domain_scheduler is not None and not scheduling:
            # Started from a handler, not at start-up: its passes post Events through
            # kopf, which needs the context kopf sets up for handlers (its queue).
            scheduling.append(
                asyncio.create_task(ctx.domain_scheduler.run(), name="Domain scheduler")
            )
        namespace = str(body.metadata.get("namespace") or "")
        if type == "DELETED":
            stop_domain(ctx, uid)
            ctx.see_domain(namespace, uid, None)
            return
        ctx.see_domain(namespace, uid, domain_facts(body))
        if body.metadata.get("deletionTimestamp"):
            stop_domain(ctx, uid)  # the deletion handler takes over
        else:
            ctx.domain_bodies[uid] = compact(body)
            if ctx.domain_scheduler is not None:
                ctx.domain_scheduler.add(uid)
        meta = body.metadata
        ref = ObjectRef("domains", str(meta["name"]), meta.get("namespace"))
        await sharding.release_foreign_finalizers(ctx, ref, body)

    @kopf.on.update(*DOMAINS, field="spec", registry=registry, when=ours)
    async def domain_changed(uid: str, memo: kopf.Memo, **_: Any) -> None:
        wake(context(memo), uid)

    @kopf.on.delete(*DOMAINS, registry=registry, when=ours)
    async def domain_deleted(
        body: kopf.Body, uid: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        ctx = context(memo)
        stop_domain(ctx, uid)
        with reconciling("Domain"):
            try:
                async with ctx.quiet(uid):
                    await ctx.domain(dict(body)).delete()
            except TemporaryFailure as error:
                raise kopf.TemporaryError(str(error), delay=error.delay) from error
            except ExternalError as error:
                raise kopf.TemporaryError(f"{error}; retrying", delay=30) from error
        ctx.passes.pop(uid, None)
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
