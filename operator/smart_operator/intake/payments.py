"""The payment writer: records what Stripe's webhook events say on the Customer's
``status.payment`` (the intake's part of a Customer's status,
``CustomerStatus.WRITERS``); the operator turns the record into conditions, phase,
Events and suspension.

The write is conditional like the intake's other writes: read the Customer, decide
from the record as read (``billing.record_event``: duplicates and events older than
the recorded one change nothing), merge-patch with the read's ``resourceVersion``, and
on a conflict read again and decide again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from smart_operator import billing
from smart_operator.errors import Conflict, ExternalError, NotFound, TemporaryFailure
from smart_operator.intake import metrics
from smart_operator.models.customer import Customer, CustomerStatus

MAX_CONFLICTS = 20


class CustomerStore(Protocol):
    """The API calls the payment writer makes (``clients.customer_status``)."""

    async def get_customer(self, name: str) -> dict[str, Any] | None: ...

    async def patch_customer_status(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Outcome:
    applied: bool
    reason: str
    message: str


class PaymentWriter:
    """Records webhook events on the Customers' ``status.payment``."""

    def __init__(self, store: CustomerStore) -> None:
        self._store = store

    async def record(self, event: billing.PaymentEvent) -> Outcome:
        name = event.customer
        body = await self._store.get_customer(name)
        for _ in range(MAX_CONFLICTS):
            if body is None:
                metrics.SKIPPED.labels("customer", "deleted").inc()
                return Outcome(False, "no_customer", f"there is no Customer {name!r}")
            customer = Customer.model_validate(body)
            status = customer.status or CustomerStatus()
            recorded = status.billing.subscription_id if status.billing else None
            plan = billing.record_event(status.payment, event, customer.metadata.uid, recorded)
            if isinstance(plan, billing.Skip):
                metrics.SKIPPED.labels("customer", plan.reason).inc()
                return Outcome(False, plan.reason, plan.message)
            # Every key, nulls included: a merge patch keeps the keys it does not name.
            patch = {"payment": plan.model_dump(mode="json", by_alias=True)}
            version = str(body.get("metadata", {}).get("resourceVersion", ""))
            try:
                await self._store.patch_customer_status(name, version, patch)
            except Conflict:
                metrics.WRITES.labels("customer", "conflict").inc()
                body = await self._store.get_customer(name)
                continue
            except NotFound:
                metrics.WRITES.labels("customer", "gone").inc()
                return Outcome(False, "no_customer", f"Customer {name!r} was deleted")
            except ExternalError:
                metrics.WRITES.labels("customer", "error").inc()
                raise
            metrics.WRITES.labels("customer", "ok").inc()
            return Outcome(
                True, "recorded", f"{event.type} {event.id}: Customer {name} is {plan.state}"
            )
        raise TemporaryFailure("kubernetes", f"customer {name}: {MAX_CONFLICTS} conflicts in a row")
