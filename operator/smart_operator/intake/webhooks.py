"""Stripe's webhooks: ``POST /v1/stripe/webhook``. It answers, in this order:

- 404 ``billing_off`` when no signing secret is configured;
- 413/415 for a body too large or not JSON (``views.read_body``);
- 400 ``bad_signature`` / ``bad_payload`` unless the SDK verifies the
  ``Stripe-Signature`` header against the signing secret (nothing is read or written);
- 200 with ``applied: false`` and the reason for an event that changes nothing (a type
  that does not change a Customer's standing, a subscription the operator did not
  make, a Customer that is gone, a redelivery, an event older than the recorded one):
  Stripe must not retry it;
- 200 with ``applied: true`` once ``payments.PaymentWriter`` has written the record;
- 503 when the API server cannot be reached: Stripe delivers the event again later.

The answer waits for the write, so Stripe's retries cover a write that failed.
"""

from __future__ import annotations

import logging

from aiohttp import web

from smart_operator import billing
from smart_operator.clients.stripe import WebhookRejected, verify_webhook
from smart_operator.errors import ExternalError
from smart_operator.intake import metrics
from smart_operator.intake.state import INTAKE
from smart_operator.intake.views import Rejected, expectation, read_body

log = logging.getLogger(__name__)

ENDPOINT = "stripe_webhook"
webhook_routes = web.RouteTableDef()


@webhook_routes.post("/v1/stripe/webhook", expect_handler=expectation)
async def stripe_webhook(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    settings = intake.settings
    secret = settings.stripe_webhook_secret
    if secret is None or intake.payments is None:
        raise Rejected(
            404,
            "billing_off",
            "Stripe webhooks are off: set SMART_INTAKE_STRIPE_WEBHOOK_SECRET to the endpoint's "
            "signing secret",
        )
    payload = await read_body(request, settings.stripe_max_body_bytes)
    try:
        event = verify_webhook(
            payload,
            request.headers.get("Stripe-Signature"),
            secret.get_secret_value(),
            settings.stripe_tolerance_seconds,
        )
    except WebhookRejected as rejected:
        raise Rejected(400, rejected.code, rejected.detail) from None
    meaning = billing.read_event(event)
    if isinstance(meaning, billing.Ignored):
        metrics.REQUESTS.labels(ENDPOINT, "ignored").inc()
        return web.json_response(
            {"received": True, "applied": False, "reason": "ignored", "message": meaning.reason}
        )
    try:
        outcome = await intake.payments.record(meaning)
    except ExternalError as error:
        log.warning("Stripe event %s not recorded: %s", meaning.id, error)
        raise Rejected(
            503,
            "unavailable",
            f"event {meaning.id} could not be recorded ({error.detail}); Stripe delivers it again",
            headers={"Retry-After": "30"},
        ) from None
    metrics.REQUESTS.labels(ENDPOINT, "accepted" if outcome.applied else "ignored").inc()
    log.info("Stripe event %s (%s): %s", meaning.id, meaning.type, outcome.message)
    return web.json_response(
        {
            "received": True,
            "applied": outcome.applied,
            "reason": outcome.reason,
            "message": outcome.message,
        }
    )
