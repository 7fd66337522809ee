"""The staff's platform page shows what the subscriptions themselves bring in (from the
Customers' ``status.billing``, in good standing only) beside the plan prices and the
cost, and each Customer's subscription; a Customer suspended by billing reads as
suspended."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from smart_dashboard.app import create_app
from smart_dashboard.cluster import Cache
from smart_dashboard.settings import DashboardSettings

ADMIN = "staff-token-0123456789abcdef0123456789"
SETTINGS = DashboardSettings(session_secret="s" * 40, admin_token=ADMIN, secure_cookies=False)


class NoTokens:
    async def review_token(self, token: str, audience: str) -> None:
        return None

    async def close(self) -> None:
        pass


def customer(name: str, plan_price: float, billing: dict[str, Any] | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "plan": "pro",
        "cost": {"planPrice": plan_price, "infrastructure": 4.0, "margin": 0.9},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Provisioned",
                "message": "",
                "lastTransitionTime": "2026-12-01T00:00:00Z",
            }
        ],
    }
    if billing is not None:
        status["billing"] = billing
    return {
        "kind": "Customer",
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"email": f"x@{name}.example", "plan": "pro"},
        "status": status,
    }


def subscription(state: str, monthly: float, currency: str = "usd", **more: Any) -> dict[str, Any]:
    return {
        "state": state,
        "subscriptionId": f"sub_{state}",
        "amount": monthly,
        "monthlyAmount": monthly,
        "currency": currency,
        "interval": "month",
        "currentPeriodEnd": "2027-01-04T09:00:00Z",
        **more,
    }


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    cache = Cache()
    cache.apply(
        "customers",
        "SYNC",
        [
            customer("acme", 99, subscription("Active", 29.0)),
            customer("globex", 99, subscription("Active", 99.0)),
            customer("initech", 99, subscription("Suspended", 99.0, suspended=True)),
            customer("umbrella", 99, subscription("Active", 10.0, currency="eur")),
            customer("hooli", 99, None),
        ],
    )
    for kind in ("domains", "experiments"):
        cache.apply(kind, "SYNC", [])
    app = create_app(SETTINGS, api=NoTokens(), cache=cache)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        response = await test_client.post("/signin", data={"token": ADMIN}, allow_redirects=False)
        assert response.status == 303
        yield test_client


def row(page: str, name: str) -> str:
    found = re.search(rf"<tr>\s*<th scope=\"row\"[^>]*>{name}<.*?</tr>", page, re.S)
    assert found is not None, name
    return found.group(0)


async def test_the_platform_page_shows_what_the_subscriptions_bring_in(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/platform")
    page = await response.text()
    assert response.status == 200
    # Plan prices (5 x $99) beside what is billed: the active USD subscriptions only.
    assert "$495.00" in page
    billed = re.search(
        r"Billed a month</span><span class=\"stat-value\">([^<]*)<small>and ([^<]*)<", page
    )
    assert billed is not None and billed.groups() == ("$128.00 ", "10.00 EUR")
    assert "29.00 USD a month" in row(page, "acme") and "period ends 2027-01-04" in row(
        page, "acme"
    )
    suspended = row(page, "initech")
    assert 'badge warn">Suspended' in suspended and 'badge bad">Suspended' in suspended
    assert 'data-label="Subscription">—<' in row(page, "hooli")
