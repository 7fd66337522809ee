"""An in-memory Stripe behind the ``Billing`` port (``smart_operator.ports``), with the
rules of Stripe the reconciler relies on: a create with an idempotency key it has seen
returns the first answer (and refuses other parameters under the same key,
https://docs.stripe.com/idempotency); customer search is eventually consistent (a new
customer is searchable only after ``search_lag`` further searches,
https://docs.stripe.com/search#data-freshness) while listing subscriptions is not.

Like ``tests.unit.fakes``, it can fail the next calls of a verb (``fail``), and lose
the answer of the next create (``lose_next``: the object is made, the caller gets an
error, as when the connection drops on the way back).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from smart_operator.errors import PermanentFailure, TemporaryFailure
from smart_operator.ports import BillingCustomerView, SubscriptionView
from tests.unit.fakes import Failing

PRICES = {"price_starter": 2900, "price_pro": 9900, "price_scale": 29900}


class FakeStripe(Failing):
    def __init__(self, search_lag: int = 0) -> None:
        super().__init__()
        self.customers: dict[str, BillingCustomerView] = {}
        self.subscriptions: dict[str, SubscriptionView] = {}
        self.keys: dict[str, tuple[str, Any]] = {}
        self.search_lag = search_lag
        self._searchable_after: dict[str, int] = {}
        self._searches = 0
        self.lose_next = False
        self._ids = itertools.count(1)

    # -- idempotency ------------------------------------------------------------------------

    def _idempotent(self, key: str, params: dict[str, Any], make: Any) -> Any:
        fingerprint = json.dumps(params, sort_keys=True)
        if key in self.keys:
            seen, answer = self.keys[key]
            if seen != fingerprint:
                raise PermanentFailure("stripe", "idempotency key reused with other parameters")
            return answer
        answer = make()
        self.keys[key] = (fingerprint, answer)
        if self.lose_next:
            self.lose_next = False
            raise TemporaryFailure("stripe", "the connection was reset")
        return answer

    # -- customers --------------------------------------------------------------------------

    async def find_customer(self, uid: str) -> BillingCustomerView | None:
        self._call("find_customer")
        self._searches += 1
        found = next(
            (
                customer
                for customer in self.customers.values()
                if customer.metadata.get("smartserver_uid") == uid
                and self._searches > self._searchable_after[customer.id]
            ),
            None,
        )
        await asyncio.sleep(0)  # the answer travels back: other passes run meanwhile
        return found

    async def get_customer(self, customer_id: str) -> BillingCustomerView | None:
        self._call("get_customer")
        return self.customers.get(customer_id)

    async def create_customer(
        self, *, name: str, email: str, metadata: dict[str, str], idempotency_key: str
    ) -> BillingCustomerView:
        self._call("create_customer")

        def make() -> BillingCustomerView:
            customer = BillingCustomerView(f"cus_{next(self._ids)}", email, dict(metadata))
            self.customers[customer.id] = customer
            self._searchable_after[customer.id] = self._searches + self.search_lag
            return customer

        params = {"name": name, "email": email, "metadata": metadata}
        made: BillingCustomerView = self._idempotent(idempotency_key, params, make)
        return made

    async def update_customer(self, customer_id: str, *, email: str) -> None:
        self._call("update_customer")
        self.customers[customer_id] = replace(self.customers[customer_id], email=email)

    # -- subscriptions ----------------------------------------------------------------------

    def _subscription(self, sub_id: str, customer: str, price: str, meta: dict[str, str]):
        return SubscriptionView(
            id=sub_id,
            customer=customer,
            status="active",
            metadata=dict(meta),
            item_id=f"si_{sub_id}",
            price_id=price,
            unit_amount=PRICES.get(price, 1000),
            currency="usd",
            interval="month",
            current_period_end=datetime(2026, 12, 31, tzinfo=UTC) + timedelta(days=30),
        )

    async def get_subscription(self, subscription_id: str) -> SubscriptionView | None:
        self._call("get_subscription")
        return self.subscriptions.get(subscription_id)

    async def subscriptions_of(self, customer_id: str) -> list[SubscriptionView]:
        self._call("subscriptions_of")
        found = [s for s in self.subscriptions.values() if s.customer == customer_id]
        await asyncio.sleep(0)
        return found

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> SubscriptionView:
        self._call("create_subscription")

        def make() -> SubscriptionView:
            made = self._subscription(f"sub_{next(self._ids)}", customer_id, price_id, metadata)
            self.subscriptions[made.id] = made
            return made

        params = {"customer": customer_id, "price": price_id, "metadata": metadata}
        made: SubscriptionView = self._idempotent(idempotency_key, params, make)
        return made

    async def change_price(
        self, subscription_id: str, item_id: str, price_id: str
    ) -> SubscriptionView:
        self._call("change_price")
        current = self.subscriptions[subscription_id]
        assert item_id == current.item_id
        changed = replace(current, price_id=price_id, unit_amount=PRICES.get(price_id, 1000))
        self.subscriptions[subscription_id] = changed
        return changed

    async def cancel_subscription(self, subscription_id: str) -> None:
        self._call("cancel_subscription")
        current = self.subscriptions.get(subscription_id)
        if current is not None:
            self.subscriptions[subscription_id] = replace(current, status="canceled")

    # -- what staff do in Stripe's dashboard -----------------------------------------------

    def set_status(self, subscription_id: str, status: str) -> None:
        self.subscriptions[subscription_id] = replace(
            self.subscriptions[subscription_id], status=status
        )

    def add_subscription(self, customer_id: str, price_id: str, uid: str) -> SubscriptionView:
        made = self._subscription(
            f"sub_{next(self._ids)}", customer_id, price_id, {"smartserver_uid": uid}
        )
        self.subscriptions[made.id] = made
        return made
