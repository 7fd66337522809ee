"""Stripe, through the official ``stripe`` SDK: the ``Billing`` port of the Customer
reconciler (customers and subscriptions), and the verification of the webhooks Stripe
sends to the intake.

Every call is one request through the SDK's asynchronous methods over aiohttp (the
SDK's httpx client warns on every POST with httpx 0.28+), with the SDK's own retries
of connection errors, 409, 429 and 5xx answers (it honours Stripe's
``Stripe-Should-Retry``; a retried POST keeps its idempotency key). Every create takes
the caller's idempotency key. Every ``stripe.StripeError`` is mapped onto
``smart_operator.errors`` here (``stripe_error``); objects come back as the views of
``ports``. The API base URL is a setting, so the tests point it at stripe-mock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from smart_operator.billing import METADATA_UID
from smart_operator.errors import (
    Conflict,
    ExternalError,
    NotFound,
    PermanentFailure,
    RateLimited,
    TemporaryFailure,
)
from smart_operator.ports import BillingCustomerView, SubscriptionView

SYSTEM = "stripe"
TIMEOUT_SECONDS = 20.0
NETWORK_RETRIES = 2
T = TypeVar("T")


def stripe_error(error: stripe.StripeError, what: str) -> ExternalError:
    """The error of ``smart_operator.errors`` that a Stripe failure means
    (https://docs.stripe.com/error-handling, https://docs.stripe.com/error-codes)."""
    status = error.http_status or 0
    said = " ".join(str(error.user_message or error.__class__.__name__).split())
    message = f"{what}: {said}"
    if error.code:
        message += f" ({error.code})"
    if isinstance(error, stripe.RateLimitError) or status == 429:
        return RateLimited(SYSTEM, message, 2.0)
    if isinstance(error, stripe.APIConnectionError):
        return TemporaryFailure(SYSTEM, message)
    if status == 404:
        return NotFound(SYSTEM, message)
    if isinstance(error, stripe.IdempotencyError):
        # The key was used with other parameters: a bug of ours, never healed by waiting.
        return PermanentFailure(SYSTEM, message)
    if status == 409:
        # Another request with the same idempotency key is still running.
        return Conflict(SYSTEM, message)
    if status >= 500 or status == 0:
        return TemporaryFailure(SYSTEM, message)
    return PermanentFailure(SYSTEM, message)


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def customer_view(obj: Mapping[str, Any]) -> BillingCustomerView:
    return BillingCustomerView(
        id=str(obj["id"]),
        email=obj.get("email"),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
    )


def subscription_view(obj: Mapping[str, Any]) -> SubscriptionView:
    """A subscription and its first item. Since API version 2025-03-31 the billing
    period lives on the items; earlier versions have it on the subscription."""
    items = (obj.get("items") or {}).get("data") or []
    item: Mapping[str, Any] = items[0] if items else {}
    price: Mapping[str, Any] = item.get("price") or {}
    recurring: Mapping[str, Any] = price.get("recurring") or {}
    customer = obj.get("customer")
    return SubscriptionView(
        id=str(obj["id"]),
        customer=str(customer["id"] if isinstance(customer, Mapping) else customer),
        status=str(obj.get("status") or ""),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        item_id=item.get("id"),
        price_id=price.get("id"),
        unit_amount=price.get("unit_amount"),
        quantity=int(item.get("quantity") or 1),
        currency=price.get("currency") or obj.get("currency"),
        interval=recurring.get("interval"),
        interval_count=int(recurring.get("interval_count") or 1),
        current_period_end=_time(item.get("current_period_end"))
        or _time(obj.get("current_period_end")),
    )


class StripeBilling:
    """The ``Billing`` port over one ``stripe.StripeClient``."""

    def __init__(self, api_key: str, endpoint: str = "https://api.stripe.com") -> None:
        self._http = stripe.AIOHTTPClient(timeout=TIMEOUT_SECONDS)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": endpoint.rstrip("/")},
            http_client=self._http,
            max_network_retries=NETWORK_RETRIES,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except stripe.StripeError as error:
            raise stripe_error(error, what) from error

    async def _missing_as_none(self, what: str, call: Awaitable[T]) -> T | None:
        try:
            return await self._call(what, call)
        except NotFound:
            return None

    # -- customers -------------------------------------------------------------------------

    async def find_customer(self, uid: str) -> BillingCustomerView | None:
        found = await self._call(
            f"search customers for {uid}",
            self._client.v1.customers.search_async(
                {"query": f"metadata['{METADATA_UID}']:'{uid}'", "limit": 10}
            ),
        )
        for customer in found.data:
            view = customer_view(customer.to_dict())
            if view.metadata.get(METADATA_UID) == uid:
                return view
        return None

    async def get_customer(self, customer_id: str) -> BillingCustomerView | None:
        found = await self._missing_as_none(
            f"get customer {customer_id}", self._client.v1.customers.retrieve_async(customer_id)
        )
        if found is None:
            return None
        obj = found.to_dict()
        return None if obj.get("deleted") else customer_view(obj)

    async def create_customer(
        self, *, name: str, email: str, metadata: dict[str, str], idempotency_key: str
    ) -> BillingCustomerView:
        made = await self._call(
            f"create customer for {name}",
            self._client.v1.customers.create_async(
                {"name": name, "email": email, "metadata": metadata},
                {"idempotency_key": idempotency_key},
            ),
        )
        return customer_view(made.to_dict())

    async def update_customer(self, customer_id: str, *, email: str) -> None:
        await self._call(
            f"update customer {customer_id}",
            self._client.v1.customers.update_async(customer_id, {"email": email}),
        )

    # -- subscriptions ---------------------------------------------------------------------

    async def get_subscription(self, subscription_id: str) -> SubscriptionView | None:
        found = await self._missing_as_none(
            f"get subscription {subscription_id}",
            self._client.v1.subscriptions.retrieve_async(subscription_id),
        )
        return None if found is None else subscription_view(found.to_dict())

    async def subscriptions_of(self, customer_id: str) -> list[SubscriptionView]:
        listing = await self._call(
            f"list subscriptions of {customer_id}",
            self._client.v1.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": 100}
            ),
        )
        return [subscription_view(s.to_dict()) for s in listing.data]

    async def create_subscription(
        self,
        *,
        customer_id: str,
        price_id: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> SubscriptionView:
        made = await self._call(
            f"create subscription for {customer_id}",
            self._client.v1.subscriptions.create_async(
                {
                    "customer": customer_id,
                    "items": [{"price": price_id}],
                    "metadata": metadata,
                    # Made even if the first payment fails: the failure comes as
                    # invoice.payment_failed and the grace period runs from it.
                    "payment_behavior": "allow_incomplete",
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return subscription_view(made.to_dict())

    async def change_price(
        self, subscription_id: str, item_id: str, price_id: str
    ) -> SubscriptionView:
        changed = await self._call(
            f"change the price of subscription {subscription_id}",
            self._client.v1.subscriptions.update_async(
                subscription_id,
                {
                    "items": [{"id": item_id, "price": price_id}],
                    "proration_behavior": "create_prorations",
                },
            ),
        )
        return subscription_view(changed.to_dict())

    async def cancel_subscription(self, subscription_id: str) -> None:
        await self._missing_as_none(
            f"cancel subscription {subscription_id}",
            self._client.v1.subscriptions.cancel_async(subscription_id),
        )


# -- webhooks ---------------------------------------------------------------------------


class WebhookRejected(PermanentFailure):
    """A webhook request that is not a verified Stripe event; ``code`` says why
    (``bad_signature``, ``bad_payload``)."""

    code: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(SYSTEM, message, code)


def verify_webhook(
    payload: bytes, signature: str | None, secret: str, tolerance_seconds: int
) -> dict[str, Any]:
    """The event a webhook request carries, once its ``Stripe-Signature`` (HMAC-SHA256
    of ``<timestamp>.<payload>`` with the endpoint's signing secret, the timestamp no
    older than ``tolerance_seconds``) is verified by the SDK
    (https://docs.stripe.com/webhooks#verify-events)."""
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, secret, tolerance=tolerance_seconds
        )
    except stripe.SignatureVerificationError as error:
        raise WebhookRejected(
            "bad_signature",
            f"the Stripe-Signature header does not verify: {error.user_message}",
        ) from None
    except ValueError as error:
        raise WebhookRejected("bad_payload", f"the body is not a JSON event: {error}") from None
    body: dict[str, Any] = event.to_dict()
    return body
