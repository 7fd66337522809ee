"""Customer onboarding: namespace, plan quota, dashboard access, status.

The create/update/resume handler applies the desired objects; the status is
refreshed from what the cluster reports, also when the quota controller or the token
controller changes something (watched through their labelled objects), so counts and
readiness follow the cluster without polling.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from smart_operator import customers
from smart_operator.clients.errors import ProviderError
from smart_operator.conditions import get_condition
from smart_operator.handlers.context import Context, context
from smart_operator.metrics import reconciling
from smart_operator.models.common import GROUP, VERSION
from smart_operator.models.customer import Customer
from smart_operator.models.domain import Domain
from smart_operator.models.experiment import Experiment
from smart_operator.settings import OperatorSettings

CUSTOMERS = (GROUP, VERSION, "customers")
NAMESPACE_GONE_SECONDS = 30.0


async def observe(ctx: Context, customer: Customer) -> customers.Observed:
    namespace = customers.namespace_name(customer.metadata.name)
    quota = await ctx.kube.read_quota(namespace, customers.QUOTA_NAME)
    prices: dict[tuple[str, str], float] = {}
    if ctx.cloud is not None:
        try:
            for name, server_type in (await ctx.cloud.catalog.types()).items():
                prices.update({(name, loc): p for loc, p in server_type.monthly_price.items()})
        except ProviderError as error:  # cost is shown again once pricing answers
            logging.getLogger(__name__).info("no server pricing yet: %s", error)
    return customers.Observed(
        quota_hard=(quota.status.hard if quota and quota.status else None),
        quota_used=(quota.status.used if quota and quota.status else None),
        token_ready=await ctx.kube.secret_has(namespace, customers.TOKEN_SECRET, "token"),
        domains=tuple(
            Domain.model_validate(d) for d in await ctx.kube.list_namespaced("domains", namespace)
        ),
        experiments=tuple(
            Experiment.model_validate(e)
            for e in await ctx.kube.list_namespaced("experiments", namespace)
        ),
        server_prices=prices,
        eur_to_usd=ctx.settings.eur_to_usd,
    )


async def refresh_status(ctx: Context, body: dict[str, Any]) -> None:
    """Write the status the customer's objects call for, if it changed."""
    customer = Customer.model_validate(body)
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    resolution = customers.resolve_plan(customer, ctx.catalog)
    observed = await observe(ctx, customer) if resolution.plan else customers.Observed()
    status = customers.compute_status(customer, ctx.catalog, resolution, observed)
    patch = customers.status_patch(customer, status)
    if patch is None:
        return
    await ctx.kube.patch_customer_status(customer.metadata.name, patch)
    before = get_condition(customer.status.conditions if customer.status else [], "Ready")
    after = get_condition(status.conditions, "Ready")
    if after and after.status == "True" and (before is None or before.status != "True"):
        kopf.info(cast(kopf.Body, body), reason=after.reason, message=after.message)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.on.resume(*CUSTOMERS, registry=registry)
    @kopf.on.create(*CUSTOMERS, registry=registry)
    @kopf.on.update(*CUSTOMERS, field="spec", registry=registry)
    async def reconcile_customer(
        body: kopf.Body, name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        ctx = context(memo)
        with reconciling("Customer"):
            customer = Customer.model_validate(dict(body))
            resolution = customers.resolve_plan(customer, ctx.catalog)
            if resolution.problem or resolution.limits is None:
                kopf.warn(body, reason="UnknownPlan", message=resolution.problem or "")
            else:
                for obj in customers.desired_objects(
                    customer, customer.spec.plan, resolution.limits
                ):
                    await ctx.kube.apply(obj)
                logger.info("applied namespace, quota and dashboard access for %s", name)
            await refresh_status(ctx, dict(body))

    @kopf.timer(*CUSTOMERS, interval=settings.resync_seconds, registry=registry)
    async def resync_customer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciling("Customer"):
            await refresh_status(context(memo), dict(body))

    async def refresh_owner(labels: kopf.Labels, memo: kopf.Memo) -> None:
        ctx = context(memo)
        owner = labels.get(customers.CUSTOMER_LABEL)
        if owner:
            body = await ctx.kube.get_customer(owner)
            if body is not None:
                await refresh_status(ctx, body)

    managed: dict[str, Any] = {
        **customers.MANAGED_BY,
        customers.CUSTOMER_LABEL: kopf.PRESENT,
    }

    @kopf.on.event("v1", "resourcequotas", labels=managed, registry=registry)
    async def quota_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        await refresh_owner(labels, memo)

    @kopf.on.event("v1", "secrets", labels=managed, registry=registry)
    async def token_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        await refresh_owner(labels, memo)

    @kopf.on.delete(*CUSTOMERS, registry=registry)
    async def delete_customer(name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        """Delete the namespace and wait until it and everything in it are gone, so
        the Customer disappears only when nothing it owned is left."""
        ctx = context(memo)
        with reconciling("Customer"):
            namespace = customers.namespace_name(name)
            await ctx.kube.delete_namespace(namespace)
            deadline = asyncio.get_running_loop().time() + NAMESPACE_GONE_SECONDS
            while await ctx.kube.namespace_exists(namespace):
                if asyncio.get_running_loop().time() > deadline:
                    raise kopf.TemporaryError(
                        f"namespace {namespace} is still being deleted", delay=5
                    )
                await asyncio.sleep(0.5)
            logger.info("namespace %s and its contents are deleted", namespace)
