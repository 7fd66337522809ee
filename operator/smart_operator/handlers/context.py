"""The wiring: what every handler shares (settings, the plan catalogue, the clients),
created once at start-up and kept in kopf's memo, and the reconcilers built from it
for one object. Also the loop of an Experiment's daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kopf

from smart_operator import domains, experiments
from smart_operator.analytics import DomainFacts
from smart_operator.background import backoff
from smart_operator.clients.kube import Kube
from smart_operator.coalesce import Coalescer
from smart_operator.errors import ExternalError, TemporaryFailure
from smart_operator.handlers.metrics import reconciling
from smart_operator.models.common import StatusModel
from smart_operator.models.customer import Customer, CustomerStatus, customer_of
from smart_operator.models.domain import Domain, DomainStatus
from smart_operator.models.experiment import Experiment, ExperimentStatus
from smart_operator.plans import Catalog as PlanCatalog
from smart_operator.ports import (
    AgentInstaller,
    Billing,
    CertificateAuthority,
    Cloud,
    Deployer,
    EventType,
    ObjectRef,
)
from smart_operator.reconcile.customer import CustomerReconciler
from smart_operator.reconcile.domain import DnsCheckSchedule, DomainReconciler
from smart_operator.reconcile.experiment import ExperimentReconciler
from smart_operator.reconcile.status import StatusWriter
from smart_operator.reconcile.uptime import UptimeChecker
from smart_operator.schedule import Scheduler
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
S = TypeVar("S", bound=StatusModel)


class KopfEvents:
    """The ``Events`` port: kopf posts them (batched, in the background)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def post(self, type: EventType, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, self._body), type=type, reason=reason, message=message)


@dataclass
class Context:
    settings: OperatorSettings
    plans: PlanCatalog
    kube: Kube
    deployer: Deployer
    dns_schedule: DnsCheckSchedule
    cloud: Cloud | None = None
    installer: AgentInstaller | None = None
    """Delivers the agent bundle (``SMART_AGENT_BUNDLE``) to servers; None without one."""
    billing: Billing | None = None
    """Stripe; None when billing is off (no key configured)."""
    authority: CertificateAuthority | None = None
    """The ACME CA of the sites' certificates; None with SMART_TLS=false."""
    uptime: UptimeChecker | None = None
    """Checks the set-up Domains' sites from outside; None with SMART_UPTIME_CHECKS=false."""
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    """One event per resource uid: set when its spec changes, to wake its daemon."""
    domain_scheduler: Scheduler | None = None
    """Runs every Domain's passes (``handlers.domain``); made at start-up."""
    domain_bodies: dict[str, bytes] = field(default_factory=dict)
    """Each Domain of this replica as the watch last delivered it, compact JSON."""
    domain_facts: dict[str, dict[str, DomainFacts]] = field(default_factory=dict)
    """What the Customers' statuses need of each Domain the watch delivered, by
    namespace and uid (also of Domains being deleted: their servers still cost)."""
    passes: dict[str, asyncio.Lock] = field(default_factory=dict)
    """One lock per resource uid, held during its pass: a deletion waits for the
    pass in progress, so nothing it is creating is left behind."""
    customer_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    """One lock per Customer: its passes (handlers of several events) never overlap."""
    customer_refreshes: Coalescer[str, str] = field(init=False)
    """Refreshes of a Customer's status asked for by changes of what it owns (its
    quota, its dashboard account, its Domains' facts), by name. Every Domain made or
    deleted changes the quota, and a refresh reads every Experiment of the namespace:
    so a burst of changes becomes a few refreshes, one at once and then at most one a
    second, taking at most a fifth of the time per Customer."""
    steady_at: dict[str, int | None] = field(default_factory=dict)
    """The generation at which each Domain's last pass left it steady (``domains.
    is_steady``): a watched object that is not steady at that generation is older than
    what this process wrote, and is read again before a pass acts on it."""

    def __post_init__(self) -> None:
        self.customer_refreshes = Coalescer(
            "customer-refresh", self._refresh_customer, interval=1.0, concurrency=4, duty=0.2
        )

    async def _refresh_customer(self, name: str, _: str) -> None:
        body = await self.kube.get(ObjectRef("customers", name))
        if body is not None:
            await self.customer(body).refresh()

    def see_domain(self, namespace: str, uid: str, facts: DomainFacts | None) -> None:
        """Keep a Domain's facts (None: it is gone); the owning Customer's status is
        refreshed when they change."""
        known = self.domain_facts.setdefault(namespace, {})
        if facts == known.get(uid):
            return
        if facts is None:
            known.pop(uid, None)
        else:
            known[uid] = facts
        owner = customer_of(namespace)
        if owner:
            self.customer_refreshes.offer(owner, owner)

    def facts_of(self, namespace: str) -> Collection[DomainFacts]:
        return self.domain_facts.get(namespace, {}).values()

    def writer(
        self,
        ref: ObjectRef,
        written: S,
        events: KopfEvents,
        summarize: Callable[[S], S] | None = None,
    ) -> StatusWriter[S]:
        return StatusWriter(
            written, functools.partial(self.kube.patch_status, ref), events, summarize
        )

    @contextlib.asynccontextmanager
    async def quiet(self, uid: str, within: float = 60.0) -> AsyncIterator[None]:
        """No pass of the resource ``uid`` runs inside: wait for the one in progress
        (its passes stop at once, but a pass finishes what it started)."""
        lock = self.passes.setdefault(uid, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout=within)
        except TimeoutError:
            raise kopf.TemporaryError("a reconcile pass is still running", delay=5) from None
        try:
            yield
        finally:
            lock.release()

    def domain(
        self, body: dict[str, Any], stopping: Callable[[], bool] | None = None
    ) -> DomainReconciler:
        domain = Domain.model_validate(body)
        meta = domain.metadata
        events = KopfEvents(body)
        return DomainReconciler(
            domain,
            cloud=self.cloud,
            settings=self.settings,
            writer=self.writer(
                ObjectRef("domains", meta.name, meta.namespace),
                domain.status or DomainStatus(),
                events,
                domains.summarize,
            ),
            events=events,
            dns_schedule=self.dns_schedule,
            resources=self.kube,
            installer=self.installer,
            authority=self.authority,
            stopping=stopping or (lambda: False),
        )

    def experiment(self, body: dict[str, Any]) -> ExperimentReconciler:
        experiment = Experiment.model_validate(body)
        meta = experiment.metadata
        events = KopfEvents(body)
        return ExperimentReconciler(
            experiment,
            resources=self.kube,
            deployer=self.deployer,
            client_private_key=self.cloud.identity.ssh_key.private if self.cloud else None,
            previous_client_private_key=(
                self.cloud.identity.previous_ssh_key.private
                if self.cloud and self.cloud.identity.previous_ssh_key
                else None
            ),
            settings=self.settings,
            writer=self.writer(
                ObjectRef("experiments", meta.name, meta.namespace),
                experiment.status or ExperimentStatus(),
                events,
                experiments.summarize,
            ),
            events=events,
        )

    def customer(self, body: dict[str, Any]) -> CustomerReconciler:
        customer = Customer.model_validate(body)
        events = KopfEvents(body)
        return CustomerReconciler(
            customer,
            resources=self.kube,
            plans=self.plans,
            servers=self.cloud.catalog if self.cloud else None,
            eur_to_usd=self.settings.eur_to_usd,
            writer=self.writer(
                ObjectRef("customers", customer.metadata.name),
                customer.status or CustomerStatus(),
                events,
            ),
            events=events,
            billing=self.billing,
            grace_seconds=self.settings.billing_grace_seconds,
            sync_seconds=self.settings.billing_sync_seconds,
            domains=self.facts_of,
            lock=self.customer_locks.setdefault(customer.metadata.name, asyncio.Lock()),
        )


def context(memo: Any) -> Context:
    return cast(Context, memo.context)


async def _sleep(seconds: float, wakeup: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    """Sleep ``seconds``, or until the resource changes or kopf stops the daemon."""
    woken = asyncio.ensure_future(wakeup.wait())
    halted = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({woken, halted}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, halted):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_daemon(
    ctx: Context,
    uid: str,
    stopped: kopf.DaemonStopped,
    kind: str,
    one_pass: Callable[[], Awaitable[float]],
) -> None:
    """The loop of a resource's daemon: one pass, then sleep for the seconds it asked
    for, until its spec changes (``wake``), or until kopf stops the daemon. A pass that
    fails on an outside system (the API server, say) is logged and tried again later."""
    wakeup = ctx.wakeups.setdefault(uid, asyncio.Event())
    lock = ctx.passes.setdefault(uid, asyncio.Lock())
    failures = 0
    try:
        while not stopped:
            wakeup.clear()
            try:
                async with lock:
                    if stopped:  # deleted while waiting for the lock
                        return
                    with reconciling(kind):
                        delay = await one_pass()
                failures = 0
            except ExternalError as error:
                failures += 1
                floor = error.delay if isinstance(error, TemporaryFailure) else 5.0
                delay = backoff(failures, floor, 300.0)
                log.warning("%s %s: %s; trying again in %.0f s", kind, uid, error, delay)
            await _sleep(delay, wakeup, stopped)
    finally:
        ctx.wakeups.pop(uid, None)


def wake(ctx: Context, uid: str) -> None:
    """Run a resource's next pass now: its spec (or its site's availability) changed."""
    event = ctx.wakeups.get(uid)
    if event is not None:
        event.set()
    if ctx.domain_scheduler is not None:
        ctx.domain_scheduler.wake(uid)
