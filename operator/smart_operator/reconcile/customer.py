"""The Customer reconciler: the namespace, the plan's quota and the dashboard access
a Customer owns (``customers.desired_objects``), its Stripe customer and subscription
(``billing``), its status from what the cluster and Stripe report
(``customers.compute_status``), and deletion of everything it owns.

Billing looks before it creates and records each id as soon as it has it: the Stripe
customer by the recorded id, else by a metadata search for the Customer's uid; the
subscription by the recorded id, else among the customer's subscriptions. Every create
carries an idempotency key derived from the Customer's uid and what it creates, so a
pass retried after a lost answer gets the same object back. A Stripe failure becomes
the ``Billing`` condition (the namespace and quota are applied regardless); whether
billing suspends the Customer is decided from the payment record the intake keeps
from Stripe's webhooks (``billing.standing``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime

from smart_operator import billing, customers
from smart_operator.analytics import DomainFacts
from smart_operator.conditions import Verdict, get_condition, now
from smart_operator.errors import ExternalError, NotFound, TemporaryFailure
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.customer import (
    DASHBOARD_ACCOUNT,
    BillingStatus,
    Customer,
    CustomerStatus,
    Limits,
    customer_namespace,
)
from smart_operator.models.experiment import Experiment
from smart_operator.plans import Catalog as PlanCatalog
from smart_operator.plans import Plan
from smart_operator.ports import (
    Billing,
    Catalog,
    Events,
    EventType,
    ObjectRef,
    QuotaView,
    Resources,
    SubscriptionView,
)
from smart_operator.reconcile.status import StatusWriter

log = logging.getLogger(__name__)
NAMESPACE_GONE_SECONDS = 30.0
# How long a quota the controller took in without counting is given before it is made
# anew: the controller watches newly installed resources within 30 s of their install.
QUOTA_RECOUNT_SECONDS = 30.0
DEFAULT_GRACE_SECONDS = 3 * 24 * 3600.0
NAMESPACE_RETRY_SECONDS = 60.0
QUOTA_RETRY_SECONDS = QUOTA_RECOUNT_SECONDS / 3


@dataclass(frozen=True)
class Retry:
    """Why a pass over a Customer must be made again, and in how many seconds."""

    why: str
    delay: float


class _Stopped(Exception):
    """A billing step could not finish; ``verdict`` says why (the Billing condition)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict[2])
        self.verdict = verdict


class CustomerReconciler:
    def __init__(
        self,
        customer: Customer,
        *,
        resources: Resources,
        plans: PlanCatalog,
        servers: Catalog | None,
        eur_to_usd: float,
        writer: StatusWriter[CustomerStatus],
        events: Events | None = None,
        billing: Billing | None = None,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        sync_seconds: float = 6 * 3600.0,
        domains: Callable[[str], Collection[DomainFacts]],
        clock: Callable[[], datetime] = now,
        lock: asyncio.Lock | None = None,
    ) -> None:
        """``domains``: the facts of a namespace's Domains, from the watch (the process
        keeps them for every Domain it sees; a refresh lists no Domains).
        ``billing``: Stripe, or None when billing is off (no key configured).
        ``lock``: held by every pass over this Customer in the process, so two passes
        (a spec change and a quota change, say) never both find no subscription and
        both create one."""
        self.customer = customer
        self.resources = resources
        self.plans = plans
        self.servers = servers
        self.eur_to_usd = eur_to_usd
        self.writer = writer
        self.events = events
        self.billing = billing
        self.grace_seconds = grace_seconds
        self.sync_seconds = sync_seconds
        self.domains = domains
        self.clock = clock
        self.lock = lock or asyncio.Lock()
        self.namespace = customer_namespace(customer.metadata.name)
        self.uid = customer.metadata.uid or ""

    async def apply(self) -> Retry | None:
        """Apply what the Customer owns, bring its subscription in step, then write its
        status. A ``Retry`` when the pass must be made again: the quota controller has
        not counted the quota yet (soon), or the namespace is someone else's (nothing is
        applied; tried again slowly, in case staff mend it)."""
        if await self.namespace_taken():
            await self.refuse()
            return Retry(
                f"namespace {self.namespace} is not the platform's", NAMESPACE_RETRY_SECONDS
            )
        resolution = customers.resolve_plan(self.customer, self.plans)
        if resolution.limits is not None:
            await self.apply_objects(resolution.limits)
        status = await self.refresh(sync=True)
        quota = get_condition(status.conditions, ConditionType.QUOTA_APPLIED) if status else None
        if quota is not None and quota.reason == Reason.QUOTA_PENDING:
            # The quota controller's updates refresh the status too; but a quota it
            # took in without counting is made anew only by a pass that finds it so
            # after QUOTA_RECOUNT_SECONDS, which must not wait for the timer.
            return Retry(
                "waiting for the quota controller to count the plan's quota",
                QUOTA_RETRY_SECONDS,
            )
        return None

    async def apply_objects(self, limits: Limits) -> None:
        for obj in customers.desired_objects(self.customer, self.customer.spec.plan, limits):
            await self.resources.apply(obj)

    async def namespace_taken(self) -> bool:
        """Whether ``customer-<name>`` exists without the platform's labels for this
        Customer: made by someone else, so never adopted, changed or deleted."""
        labels = await self.resources.namespace_labels(self.namespace)
        return labels is not None and not customers.namespace_is_ours(
            labels, self.customer.metadata.name
        )

    async def refuse(self) -> None:
        log.warning("namespace %s exists and is not the platform's: left alone", self.namespace)
        await self.writer.write(customers.namespace_taken_status(self.customer))

    async def refresh(self, sync: bool = False) -> CustomerStatus | None:
        """Write the status the Customer's objects call for, if it changed, and return
        it. ``sync`` reads (and mends) the subscription in Stripe even when nothing
        calls for it."""
        if self.customer.metadata.deletion_timestamp:
            return None
        async with self.lock:
            if self.billing is not None and not await self.read_again():
                return None
            if await self.namespace_taken():
                await self.refuse()
                return None
            resolution = customers.resolve_plan(self.customer, self.plans)
            observed = (
                await self.observe(resolution.limits)
                if resolution.plan and resolution.limits
                else customers.Observed()
            )
            if resolution.plan is not None:
                observed = replace(observed, billing=await self.bill(resolution.plan, sync))
            return await self.writer.write(
                customers.compute_status(self.customer, self.plans, resolution, observed)
            )

    async def read_again(self) -> bool:
        """Take the Customer as it is now: a pass that held the lock before may have
        recorded a Stripe id since this one was read. False if it is gone."""
        body = await self.resources.get(ObjectRef("customers", self.customer.metadata.name))
        if body is None:
            return False
        self.customer = Customer.model_validate(body)
        return not self.customer.metadata.deletion_timestamp

    async def observe(self, limits: Limits) -> customers.Observed:
        quota = await self.resources.read_quota(self.namespace, customers.QUOTA_NAME)
        if quota is not None and await self.recount(quota, limits):
            quota = await self.resources.read_quota(self.namespace, customers.QUOTA_NAME)
        prices: dict[tuple[str, str], float] = {}
        if self.servers is not None:
            try:
                for name, server_type in (await self.servers.types()).items():
                    prices.update({(name, loc): p for loc, p in server_type.monthly_price.items()})
            except ExternalError as error:  # the cost is shown again once pricing answers
                log.info("no server pricing yet: %s", error)
        experiments = await self.resources.list_namespaced("experiments", self.namespace)
        return customers.Observed(
            quota_hard=quota.hard if quota else None,
            quota_used=quota.used if quota else None,
            account_uid=await self.account_uid(limits),
            domains=tuple(self.domains(self.namespace)),
            experiments=tuple(Experiment.model_validate(e) for e in experiments),
            server_prices=prices,
            eur_to_usd=self.eur_to_usd,
        )

    async def account_uid(self, limits: Limits) -> str | None:
        """The dashboard account's uid. An account staff deleted to revoke the customer's
        dashboard tokens is made anew (with a new uid, which ends the sessions the old
        one opened)."""
        uid = await self.resources.account_uid(self.namespace, DASHBOARD_ACCOUNT)
        if uid is None and await self.resources.namespace_exists(self.namespace):
            await self.apply_objects(limits)
            uid = await self.resources.account_uid(self.namespace, DASHBOARD_ACCOUNT)
            if uid is not None and self.events is not None:
                self.events.post(
                    "Normal",
                    "DashboardAccountCreated",
                    f"dashboard ServiceAccount {self.namespace}/{DASHBOARD_ACCOUNT} made "
                    "anew: tokens and dashboard sessions of the previous one no longer work",
                )
        return uid

    async def recount(self, quota: QuotaView, limits: Limits) -> bool:
        """Make the plan's quota anew when the quota controller took it in without
        counting the platform's resources (``customers.quota_uncounted``) and has not
        for ``QUOTA_RECOUNT_SECONDS``: until it counts, the API server refuses every
        Domain and Experiment of the Customer ("status unknown for quota"), so nothing is
        left unenforced while it is made anew."""
        if not customers.quota_uncounted(customers.quota_hard(limits), quota.hard, quota.used):
            return False
        if quota.created is None or (
            (self.clock() - quota.created).total_seconds() < QUOTA_RECOUNT_SECONDS
        ):
            return False
        (wanted,) = [
            obj
            for obj in customers.desired_objects(self.customer, self.customer.spec.plan, limits)
            if obj["kind"] == "ResourceQuota"
        ]
        log.info("quota %s/%s was never counted: made anew", self.namespace, customers.QUOTA_NAME)
        await self.resources.delete_quota(self.namespace, customers.QUOTA_NAME)
        await self.resources.apply(wanted)
        if self.events is not None:
            self.events.post(
                "Normal",
                "QuotaRecreated",
                f"the quota controller had not counted quota {customers.QUOTA_NAME} for "
                f"{QUOTA_RECOUNT_SECONDS:.0f} s (it was made before the controller watched "
                "the platform's resources): made anew so it is counted now",
            )
        return True

    # -- billing ---------------------------------------------------------------------------

    async def bill(self, plan: Plan, sync: bool) -> tuple[BillingStatus, Verdict]:
        """The billing status and the Billing condition, after bringing the Stripe side
        in step when that is due."""
        status = self.customer.status or CustomerStatus()
        previous, payment = status.billing, status.payment
        if self.billing is None:
            return billing.billing_off(previous)
        moment = self.clock()
        price = plan.stripe_price_id
        if price is None:
            missing: Verdict = (
                "False",
                Reason.PRICE_MISSING,
                f"plan {self.customer.spec.plan!r} has no stripe_price_id in the plan catalogue "
                "(SMART_PLANS_FILE): the Customer cannot be subscribed; add the plan's "
                "recurring Stripe price",
            )
            return billing.billing_status(
                previous or BillingStatus(), payment, missing, self.grace_seconds, moment
            )
        last = get_condition(status.conditions, ConditionType.BILLING)
        due = sync or billing.sync_due(
            previous, payment, price, last.reason if last else None, moment, self.sync_seconds
        )
        if not due:
            recorded = previous or BillingStatus()
            return billing.billing_status(recorded, payment, None, self.grace_seconds, moment)
        account = await self.sync(price, previous, sync)
        observed = billing.observed_status(previous, account, moment)
        return billing.billing_status(
            observed, payment, account.problem, self.grace_seconds, moment
        )

    async def sync(
        self, price_id: str, previous: BillingStatus | None, spec_changed: bool
    ) -> billing.Account:
        """The Stripe customer and subscription, made or mended; a failure is the
        problem of the returned account, with whatever was reached before it."""
        assert self.billing is not None
        customer_id: str | None = None
        try:
            customer_id = await self.ensure_customer(self.billing, previous, spec_changed)
            recorded = (
                previous.subscription_id
                if previous is not None and previous.customer_id == customer_id
                else None
            )
            subscription = await self.ensure_subscription(
                self.billing, customer_id, price_id, recorded
            )
        except _Stopped as stopped:
            return billing.Account(customer_id, None, stopped.verdict)
        except TemporaryFailure as error:
            return billing.Account(
                customer_id,
                None,
                (
                    "False",
                    Reason.PROVIDER_UNAVAILABLE,
                    f"Stripe did not answer ({error.detail}); trying again at the next refresh",
                ),
            )
        except ExternalError as error:
            return billing.Account(
                customer_id,
                None,
                ("False", Reason.PROVIDER_REJECTED, f"Stripe refused: {error.detail}"),
            )
        return billing.Account(customer_id, subscription)

    async def ensure_customer(
        self, stripe: Billing, previous: BillingStatus | None, spec_changed: bool
    ) -> str:
        """The Stripe customer's id: the recorded one (read, and its email updated, only
        when the spec changed), one found by the Customer's uid, or a new one."""
        replaced = previous.customer_id if previous else None
        if replaced is not None and not spec_changed:
            return replaced
        if replaced is not None:
            found = await stripe.get_customer(replaced)
            if found is not None:
                if found.email != self.customer.spec.email:
                    await stripe.update_customer(found.id, email=self.customer.spec.email)
                return found.id
            log.warning("Stripe customer %s of %s is gone; making a new one", replaced, self.uid)
        else:
            found = await stripe.find_customer(self.uid)
            if found is not None and billing.is_ours(found.metadata, self.uid):
                return found.id
        params = billing.customer_params(self.customer)
        made = await stripe.create_customer(
            name=params["name"],
            email=params["email"],
            metadata=params["metadata"],
            # A customer made to replace a deleted one must not get the deleted one's
            # answer back from Stripe's idempotency layer.
            idempotency_key=billing.idempotency_key(
                self.uid, "customer", {**params, "replaces": replaced}
            ),
        )
        self._post("Normal", "BillingCustomerCreated", f"Stripe customer {made.id}")
        return made.id

    async def ensure_subscription(
        self, stripe: Billing, customer_id: str, price_id: str, recorded: str | None
    ) -> SubscriptionView:
        """The Customer's live subscription to ``price_id``: the recorded one (moved to
        the plan's price if it is on another), an adoptable one, or a new one. A
        recorded subscription that was canceled is not replaced by a new one: only
        staff re-subscribe a Customer (the operator then adopts it)."""
        current = await stripe.get_subscription(recorded) if recorded else None
        if recorded is not None and current is None:
            raise _Stopped(
                (
                    "False",
                    Reason.PROVIDER_REJECTED,
                    f"subscription {recorded} does not exist in Stripe (deleted with its "
                    "data?): subscribe the Customer's Stripe customer again with metadata "
                    f"{billing.METADATA_UID}={self.uid}",
                )
            )
        if current is None or not billing.is_live(current):
            found = billing.adoptable(
                await stripe.subscriptions_of(customer_id), self.uid, price_id
            )
            if found is not None:
                if current is not None:
                    self._post("Normal", "SubscriptionAdopted", f"subscription {found.id}")
                current = found
            elif current is not None:
                return current  # canceled: billing.standing suspends the Customer
            else:
                params = billing.subscription_params(self.customer, customer_id, price_id)
                made = await stripe.create_subscription(
                    customer_id=customer_id,
                    price_id=price_id,
                    metadata=params["metadata"],
                    idempotency_key=billing.idempotency_key(self.uid, "subscription", params),
                )
                self._post(
                    "Normal",
                    "SubscriptionCreated",
                    f"subscription {made.id} to {price_id} for Stripe customer {customer_id}",
                )
                return made
        if current.price_id != price_id and current.item_id is not None:
            changed = await stripe.change_price(current.id, current.item_id, price_id)
            self._post(
                "Normal",
                "SubscriptionChanged",
                f"subscription {current.id} moved from {current.price_id} to {price_id}",
            )
            return changed
        return current

    def _post(self, type: EventType, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.post(type, reason, message)

    # -- deletion --------------------------------------------------------------------------

    async def cancel_subscription(self) -> None:
        """Stop charging a Customer that is deleted; one already gone counts as
        canceled."""
        recorded = self.customer.status.billing if self.customer.status else None
        if self.billing is None or recorded is None or recorded.subscription_id is None:
            return
        current = await self.billing.get_subscription(recorded.subscription_id)
        if current is None or not billing.is_live(current):
            return
        try:
            await self.billing.cancel_subscription(current.id)
        except NotFound:
            return
        self._post("Normal", "SubscriptionCanceled", f"subscription {current.id}")

    async def delete(self) -> bool:
        """Cancel the subscription, delete the namespace and wait (a while) until it
        and everything in it are gone; False if it is still being deleted. A namespace
        of that name that is not the platform's is left as it is."""
        await self.cancel_subscription()
        if await self.namespace_taken():
            log.info("namespace %s is not the platform's: not deleted", self.namespace)
            return True
        await self.resources.delete_namespace(self.namespace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAMESPACE_GONE_SECONDS
        while await self.resources.namespace_exists(self.namespace):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True
