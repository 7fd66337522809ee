"""kopf registrations for Customers: apply what a Customer owns on create, update and
resume (made again shortly while its quota is not counted yet); refresh its status on a
timer and whenever its quota or dashboard account changes (watched through their
labels), so counts, readiness and the account's uid follow the cluster; delete its
namespace on deletion (``reconcile.customer``).

No Secret is watched, nor read: the dashboard signs customers in with tokens of their
account for its own audience, which the operator never holds. kopf filters ``labels=``
in the process, over a watch of every object of the kind, so the ServiceAccount and
ResourceQuota handlers stream those kinds cluster-wide; neither holds a secret."""

from __future__ import annotations

from typing import Any

import kopf

from smart_operator import customers
from smart_operator.errors import ExternalError
from smart_operator.handlers import sharding
from smart_operator.handlers.context import context
from smart_operator.handlers.metrics import reconciling
from smart_operator.models.common import GROUP, VERSION
from smart_operator.ports import ObjectRef
from smart_operator.settings import OperatorSettings

CUSTOMERS = (GROUP, VERSION, "customers")


def _retry(error: ExternalError) -> kopf.TemporaryError:
    return kopf.TemporaryError(str(error), delay=getattr(error, "delay", 10))


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    ours = sharding.customer_filter(settings)
    owned = sharding.owner_label_filter(settings)

    @kopf.on.event(*CUSTOMERS, registry=registry, when=ours)
    async def customer_seen(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type != "DELETED":
            ref = ObjectRef("customers", str(body.metadata["name"]))
            await sharding.release_foreign_finalizers(context(memo), ref, body)

    @kopf.on.resume(*CUSTOMERS, registry=registry, when=ours)
    @kopf.on.create(*CUSTOMERS, registry=registry, when=ours)
    @kopf.on.update(*CUSTOMERS, field="spec", registry=registry, when=ours)
    async def reconcile_customer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciling("Customer"):
            try:
                retry = await context(memo).customer(dict(body)).apply()
            except ExternalError as error:
                raise _retry(error) from error
            if retry is not None:
                raise kopf.TemporaryError(retry.why, delay=retry.delay)

    @kopf.timer(*CUSTOMERS, interval=settings.resync_seconds, registry=registry, when=ours)
    async def resync_customer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciling("Customer"):
            try:
                await context(memo).customer(dict(body)).refresh()
            except ExternalError as error:
                raise _retry(error) from error

    def refresh_owner(labels: kopf.Labels, memo: kopf.Memo) -> None:
        """Ask for a refresh of the owning Customer's status (``Context.
        customer_refreshes``): kopf hands a handler every event of an object in turn,
        so refreshing here would read the whole namespace once per Domain made."""
        owner = labels.get(customers.CUSTOMER_LABEL)
        if owner:
            context(memo).customer_refreshes.offer(owner, owner)

    managed: dict[str, Any] = {**customers.MANAGED_BY, customers.CUSTOMER_LABEL: kopf.PRESENT}

    @kopf.on.event("v1", "resourcequotas", labels=managed, registry=registry, when=owned)
    async def quota_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        refresh_owner(labels, memo)

    @kopf.on.event("v1", "serviceaccounts", labels=managed, registry=registry, when=owned)
    async def account_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
        """A dashboard account deleted to revoke access is made anew by the Customer's
        next refresh (at once, or within a second when one just ran), and its new uid
        on the status ends the sessions of the old one."""
        refresh_owner(labels, memo)

    @kopf.on.delete(*CUSTOMERS, registry=registry, when=ours)
    async def delete_customer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """The Customer disappears only when nothing it owned is left."""
        with reconciling("Customer"):
            reconciler = context(memo).customer(dict(body))
            try:
                gone = await reconciler.delete()
            except ExternalError as error:
                raise _retry(error) from error
            if not gone:
                raise kopf.TemporaryError(
                    f"namespace {reconciler.namespace} is still being deleted", delay=5
                )
