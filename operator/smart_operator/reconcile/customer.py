"""The Customer reconciler: the namespace, the plan's quota and the dashboard access
a Customer owns (``customers.desired_objects``), its status from what the cluster
reports (``customers.compute_status``), and deletion of everything it owns.
"""

from __future__ import annotations

import asyncio
import logging

from smart_operator import customers
from smart_operator.errors import ExternalError
from smart_operator.models.customer import Customer, CustomerStatus, customer_namespace
from smart_operator.models.domain import Domain
from smart_operator.models.experiment import Experiment
from smart_operator.plans import Catalog as PlanCatalog
from smart_operator.ports import Catalog, Resources
from smart_operator.reconcile.status import StatusWriter

log = logging.getLogger(__name__)
NAMESPACE_GONE_SECONDS = 30.0


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
    ) -> None:
        self.customer = customer
        self.resources = resources
        self.plans = plans
        self.servers = servers
        self.eur_to_usd = eur_to_usd
        self.writer = writer
        self.namespace = customer_namespace(customer.metadata.name)

    async def apply(self) -> None:
        """Apply what the Customer owns, then write its status."""
        resolution = customers.resolve_plan(self.customer, self.plans)
        if resolution.limits is not None:
            objects = customers.desired_objects(
                self.customer, self.customer.spec.plan, resolution.limits
            )
            for obj in objects:
                await self.resources.apply(obj)
        await self.refresh()

    async def refresh(self) -> None:
        """Write the status the Customer's objects call for, if it changed."""
        if self.customer.metadata.deletion_timestamp:
            return
        resolution = customers.resolve_plan(self.customer, self.plans)
        observed = await self.observe() if resolution.plan else customers.Observed()
        await self.writer.write(
            customers.compute_status(self.customer, self.plans, resolution, observed)
        )

    async def observe(self) -> customers.Observed:
        quota = await self.resources.read_quota(self.namespace, customers.QUOTA_NAME)
        prices: dict[tuple[str, str], float] = {}
        if self.servers is not None:
            try:
                for name, server_type in (await self.servers.types()).items():
                    prices.update({(name, loc): p for loc, p in server_type.monthly_price.items()})
            except ExternalError as error:  # the cost is shown again once pricing answers
                log.info("no server pricing yet: %s", error)
        domains = await self.resources.list_namespaced("domains", self.namespace)
        experiments = await self.resources.list_namespaced("experiments", self.namespace)
        return customers.Observed(
            quota_hard=quota.hard if quota else None,
            quota_used=quota.used if quota else None,
            token_ready=await self.resources.secret_has(
                self.namespace, customers.TOKEN_SECRET, "token"
            ),
            domains=tuple(Domain.model_validate(d) for d in domains),
            experiments=tuple(Experiment.model_validate(e) for e in experiments),
            server_prices=prices,
            eur_to_usd=self.eur_to_usd,
        )

    async def delete(self) -> bool:
        """Delete the namespace and wait (a while) until it and everything in it are
        gone; False if it is still being deleted."""
        await self.resources.delete_namespace(self.namespace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAMESPACE_GONE_SECONDS
        while await self.resources.namespace_exists(self.namespace):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True
