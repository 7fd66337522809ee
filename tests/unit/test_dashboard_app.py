"""The dashboard's aiohttp application with a stand-in for the API server: sign-in,
isolation by URL, friendly errors, security headers, the chart from the status history,
and the live stream."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from smart_dashboard.app import create_app
from smart_dashboard.cluster import Cache, Reviewed
from smart_dashboard.context import API, CACHE
from smart_dashboard.sessions import COOKIE, Session, Signer
from smart_dashboard.settings import DashboardSettings

SECRET = "s" * 40
ADMIN = "staff-token-0123456789abcdef0123456789"
AUDIENCE = "smartserver-dashboard"
TOKENS = {
    "token-a": Reviewed("system:serviceaccount:customer-acme:dashboard-viewer", "uid-acme", None),
    "token-b": Reviewed(
        "system:serviceaccount:customer-globex:dashboard-viewer", "uid-globex", None
    ),
    "token-other": Reviewed("system:serviceaccount:customer-acme:default", "uid-default", None),
    # A token of acme's previous dashboard account, deleted to revoke it (as far as the
    # API server goes it would be refused; here it shows the uid check on its own).
    "token-revoked": Reviewed(
        "system:serviceaccount:customer-acme:dashboard-viewer", "uid-acme-old", None
    ),
}


class FakeApi:
    """TokenReview for the dashboard's audience: the tokens above, and a token that
    ends in ``+<seconds>`` is ``token-a`` expiring that many seconds from now."""

    def __init__(self) -> None:
        self.reviews = 0

    async def review_token(self, token: str, audience: str) -> Reviewed | None:
        self.reviews += 1
        assert audience == AUDIENCE
        if token.startswith("token-a+"):
            return replace(TOKENS["token-a"], expires=time.time() + float(token.split("+")[1]))
        return TOKENS.get(token)

    async def close(self) -> None:
        pass


NOW = datetime.now(UTC).isoformat()


def cond(type: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }


def customer(name: str) -> dict[str, Any]:
    return {
        "kind": "Customer",
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"email": f"x@{name}.example", "plan": "pro"},
        "status": {
            "plan": "pro",
            "namespace": f"customer-{name}",
            "limits": {"domains": 5, "experiments": 20},
            "counts": {"domains": 1, "experiments": 1},
            "health": {"activeDomains": 1, "experiments": 1, "averageImprovement": 0.12},
            "cost": {"planPrice": 99, "infrastructure": 4.51, "margin": 94.49},
            "dashboardAccountUid": f"uid-{name}",
            "conditions": [cond("Ready", "True", "Provisioned")],
        },
    }


def domain(ns: str, name: str, fqdn: str, ready: bool) -> dict[str, Any]:
    conditions = (
        [cond("Ready", "True", "AgentConnected")]
        if ready
        else [
            cond("Verified", "False", "NameserversNotDelegated", "Point NS at x.ns.cloudflare.com"),
            cond("Ready", "False", "Verifying"),
        ]
    )
    return {
        "kind": "Domain",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": {"domain": fqdn},
        "status": {
            "phase": "Ready" if ready else "Verifying",
            "server": {"ipv4": "10.1.2.3", "ipv6": "2a01:4f8::1"},
            "agent": {"version": "1.0", "lastSeen": NOW, "startedAt": NOW},
            **({"availability": AVAILABILITY} if ready else {}),
            "conditions": conditions,
        },
    }


AVAILABILITY = {
    "up": True,
    "since": NOW,
    "checkedAt": NOW,
    "latencyMs": 84.4,
    "consecutiveFailures": 0,
    "lastResult": "HTTPS 200 (DNS 1 ms, TCP 1 ms, TLS 9 ms, first byte 70 ms, page 3 ms)",
    "resolvedBy": "name resolved by the system resolver",
    "percent24h": 99.93,
    "percent30d": 99.999,
    "hourly": [],
    "daily": [],
}


def experiment(
    ns: str, name: str, dom: str, visitors: int, needed: int, outcome: str = "pending"
) -> dict[str, Any]:
    return {
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(visitors)},
        "spec": {
            "domainRef": dom,
            "type": "landing_page",
            "template": "saas_landing",
            "variants": [{"name": "control"}, {"name": "bold"}],
        },
        "status": {
            "phase": "Running",
            "variants": [
                {"name": "control", "visitors": visitors, "conversions": visitors // 25},
                {
                    "name": "bold",
                    "visitors": visitors,
                    "conversions": visitors // 18,
                    "uplift": 0.38,
                    "upliftLow": 0.13,
                    "upliftHigh": 0.66,
                    "chanceToBeatControl": 0.99,
                },
            ],
            "statistics": {"visitorsNeeded": needed},
            "decision": {"outcome": outcome, "winner": "bold" if outcome == "winner" else None},
        },
    }


def filled_cache() -> Cache:
    cache = Cache()
    cache.apply("customers", "SYNC", [customer("acme"), customer("globex")])
    cache.apply(
        "domains",
        "SYNC",
        [
            domain("customer-acme", "shop", "shop.acme.example", True),
            domain("customer-acme", "blog", "blog.acme.example", False),
            domain("customer-globex", "store", "store.globex.example", True),
        ],
    )
    cache.apply(
        "experiments",
        "SYNC",
        [
            experiment("customer-acme", "hero", "shop", 4000, 0, "winner"),
            experiment("customer-acme", "pricing", "shop", 100, 1740),
            experiment("customer-globex", "secret", "store", 50, 900),
        ],
    )
    return cache


SETTINGS = DashboardSettings(
    session_secret=SECRET, admin_token=ADMIN, secure_cookies=False, heartbeat_seconds=0.2
)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, api=FakeApi(), cache=filled_cache())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def sign_in(client: TestClient[Any, Any], token: str) -> None:
    response = await client.post("/signin", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()


async def test_sign_in_sets_a_signed_httponly_cookie(client: TestClient[Any, Any]) -> None:
    response = await client.post("/signin", data={"token": "token-a"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    page = await client.get("/")
    text = await page.text()
    assert page.status == 200 and "shop.acme.example" in text and "store.globex" not in text


@pytest.mark.parametrize(
    "path", ["/experiments/secret", "/domains/store", "/platform", "/experiments/nope"]
)
async def test_another_customers_urls_are_not_found(
    client: TestClient[Any, Any], path: str
) -> None:
    await sign_in(client, "token-a")
    response = await client.get(path)
    assert response.status == 404
    assert "globex" not in await response.text()


async def test_every_page_renders(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "token-a")
    for path in (
        "/",
        "/experiments",
        "/domains/shop",
        "/domains/blog",
        "/experiments/hero",
        "/experiments/pricing",
    ):
        response = await client.get(path)
        text = await response.text()
        assert response.status == 200, (path, text[-2000:])
        assert "Content-Security-Policy" in response.headers
    # Availability measured from outside, on the domain card: never rounded up to 100%.
    home = await (await client.get("/")).text()
    assert '<span data-testid="availability-24h">99.93%</span>' in home
    assert '<span data-testid="availability-30d">99.99%</span>' in home
    assert "84 ms" in home and "Not checked yet" in home  # blog: no check yet
    assert "Agent uptime" not in home
    pricing = await (await client.get("/experiments/pricing")).text()
    assert "Not enough data yet: about 1,740 more visitors" in pricing
    assert "+38.0%" not in pricing  # no bare estimate before there is enough data


@pytest.mark.parametrize("token", ["wrong", "token-other", "token-revoked", ""])
async def test_bad_tokens_get_a_clear_message(client: TestClient[Any, Any], token: str) -> None:
    response = await client.post("/signin", data={"token": token}, allow_redirects=False)
    text = await response.text()
    assert response.status == 401 and 'role="alert"' in text and "Traceback" not in text
    assert COOKIE not in response.cookies


async def test_a_sign_in_link_fills_the_form_and_only_a_post_signs_in(
    client: TestClient[Any, Any],
) -> None:
    """A link (which any site can send a browser to) signs nobody in: it shows the
    form with the token filled in, and the visitor's own click posts it."""
    api = client.app[API]
    response = await client.get("/signin?token=token-b", allow_redirects=False)
    text = await response.text()
    assert response.status == 200 and COOKIE not in response.cookies
    assert 'value="token-b"' in text and ">Continue</button>" in text
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert api.reviews == 0  # nothing was checked, nobody signed in
    assert (await client.get("/", allow_redirects=False)).status == 303
    await sign_in(client, "token-b")
    assert "store.globex" in await (await client.get("/")).text()


async def test_sign_in_attempts_are_limited_per_client_and_overall() -> None:
    settings = SETTINGS.model_copy(
        update={
            "signin_attempts_per_client": 3,
            "signin_attempts_per_minute": 5,
            "trusted_proxies": [ipaddress.ip_network("127.0.0.0/8")],
        }
    )
    api = FakeApi()
    app = create_app(settings, api=api, cache=filled_cache())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:

        async def attempt(token: str) -> Any:
            response = await client.post("/signin", data={"token": token}, allow_redirects=False)
            return response.status, response.headers.get("Retry-After"), await response.text()

        assert [(await attempt("wrong"))[0] for _ in range(3)] == [401, 401, 401]
        status, retry_after, text = await attempt("token-a")  # even the right one waits
        assert status == 429 and retry_after is not None and int(retry_after) > 0
        assert "Too many sign-in attempts from your address" in text
        assert api.reviews == 3  # a refused attempt costs the API server nothing
        # The overall limit: two more clients (named by a trusted proxy) use it up.
        statuses = []
        for client_ip in ("198.51.100.1", "198.51.100.2", "198.51.100.2"):
            response = await client.post(
                "/signin",
                data={"token": "wrong"},
                headers={"X-Forwarded-For": client_ip},
                allow_redirects=False,
            )
            statuses.append(response.status)
        assert statuses == [401, 401, 429]
        assert "Too many sign-in attempts right now" in await response.text()


def test_a_short_staff_token_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValueError, match=r"at least 32 characters.*openssl rand"):
        DashboardSettings(admin_token="staff-token")


async def test_staff_sign_in(client: TestClient[Any, Any]) -> None:
    await sign_in(client, ADMIN)
    platform = await client.get("/platform")
    text = await platform.text()
    assert platform.status == 200 and "acme" in text and "globex" in text
    assert "blog.acme.example" in text and "NameserversNotDelegated" in text


async def test_tampered_and_expired_cookies_go_to_sign_in(client: TestClient[Any, Any]) -> None:
    signer = Signer(SECRET.encode())
    good = signer.dump(Session.for_customer("acme", "uid-acme", 600))
    staff = signer.fingerprint(ADMIN)
    for value in (
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        signer.dump(Session.for_customer("acme", "uid-acme", -5)),
        Signer(b"x" * 40).dump(Session.for_admin(staff, 600)),
        # Well signed, but opened with a credential that is not the current one.
        signer.dump(Session.for_customer("acme", "uid-acme-old", 600)),
        signer.dump(Session.for_admin(signer.fingerprint(ADMIN + "-old"), 600)),
    ):
        client.session.cookie_jar.update_cookies({COOKIE: value})
        response = await client.get("/experiments/hero", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/signin"


async def test_cross_site_post_is_refused(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/signin",
        data={"token": "token-a"},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403


def counts_at(at: str, control: tuple[int, int], bold: tuple[int, int]) -> dict[str, Any]:
    return {
        "at": at,
        "counts": [
            {"variant": "control", "visitors": control[0], "conversions": control[1]},
            {"variant": "bold", "visitors": bold[0], "conversions": bold[1]},
        ],
    }


async def test_a_freshly_started_dashboard_charts_the_whole_status_history() -> None:
    """The history lives on the Experiment, so a dashboard that has just started (or
    another replica) draws the same chart, with every point of the experiment's life."""
    hero = experiment("customer-acme", "hero", "shop", 4000, 0, "winner")
    hero["status"]["lastReportAt"] = "2026-03-09T12:00:00Z"
    hero["status"]["history"] = [
        counts_at("2026-03-09T08:00:00Z", (300, 9), (310, 14)),
        counts_at("2026-03-09T09:00:00Z", (900, 31), (880, 45)),
        counts_at("2026-03-09T10:00:00Z", (1800, 68), (1790, 95)),
    ]
    charts = []
    for _replica in range(2):
        cache = Cache()  # what a dashboard knows right after it starts: one list
        cache.apply("customers", "SYNC", [customer("acme")])
        cache.apply("domains", "SYNC", [domain("customer-acme", "shop", "shop.acme", True)])
        cache.apply("experiments", "SYNC", [hero])
        app = create_app(SETTINGS, api=FakeApi(), cache=cache)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as fresh:
            await sign_in(fresh, "token-a")
            page = await (await fresh.get("/experiments/hero")).text()
        start = page.index('<svg viewBox="0 0 960 320"')
        chart = page[start : page.index("</svg>", start)]
        lines = re.findall(r'<polyline points="([^"]*)"', chart)
        # Three points of the history, then the current counts of 12:00.
        assert [len(line.split()) for line in lines] == [4, 4]
        assert "09 Mar 08:00" in chart and "09 Mar 12:00" in chart
        charts.append(chart)
    assert charts[0] == charts[1]


async def test_live_stream_carries_only_own_changes(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "token-a")
    assert client.app is not None
    cache = client.app[CACHE]
    response = await client.get("/events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert (await response.content.readline()).startswith(b"retry:")
    await response.content.readline()
    await response.content.readline()
    cache.apply(
        "experiments", "MODIFIED", [experiment("customer-globex", "secret", "store", 60, 800)]
    )
    cache.apply(
        "experiments", "MODIFIED", [experiment("customer-acme", "pricing", "shop", 200, 1500)]
    )
    lines = []
    while not lines or lines[-1] != b"\n":
        lines.append(await asyncio.wait_for(response.content.readline(), 5))
    event = b"".join(lines).decode()
    assert "event: change" in event and "pricing" in event and "secret" not in event
    response.close()


async def test_revoking_a_customers_account_ends_its_sessions_and_streams(
    client: TestClient[Any, Any],
) -> None:
    """Staff delete the dashboard account; the operator makes a new one and the
    Customer's status names its uid: pages and the live stream of the sessions the old
    account's tokens opened end at once."""
    await sign_in(client, "token-a")
    assert client.app is not None
    cache = client.app[CACHE]
    stream = await client.get("/events")
    assert (await stream.content.readline()).startswith(b"retry:")
    assert (await client.get("/", allow_redirects=False)).status == 200
    renewed = customer("acme")
    renewed["status"]["dashboardAccountUid"] = "uid-acme-new"
    cache.apply("customers", "MODIFIED", [renewed])
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/signin"
    text = b""
    while b"event: signout" not in text:  # the stream says so within a heartbeat
        line = await asyncio.wait_for(stream.content.readline(), 5)
        assert line, text
        text += line
    stream.close()
    # And the old account's token no longer signs in (the API server would refuse it;
    # the uid check refuses it even if a review still passed).
    response = await client.post("/signin", data={"token": "token-a"}, allow_redirects=False)
    assert response.status == 401 and "expired or been revoked" in await response.text()


async def test_a_new_staff_token_ends_the_old_ones_sessions() -> None:
    app = create_app(SETTINGS, api=FakeApi(), cache=filled_cache())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as old:
        await sign_in(old, ADMIN)
        cookie = old.session.cookie_jar.filter_cookies(old.make_url("/"))[COOKIE].value
        assert (await old.get("/platform", allow_redirects=False)).status == 200
    # The same session key, the staff token replaced (and the process restarted).
    rotated = SETTINGS.model_copy(update={"admin_token": SecretStr(ADMIN + "-rotated")})
    app = create_app(rotated, api=FakeApi(), cache=filled_cache())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as new:
        new.session.cookie_jar.update_cookies({COOKIE: cookie})
        response = await new.get("/platform", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/signin"


async def test_a_session_ends_when_its_token_expires(client: TestClient[Any, Any]) -> None:
    response = await client.post("/signin", data={"token": "token-a+120"}, allow_redirects=False)
    assert response.status == 303
    max_age = int(response.cookies[COOKIE]["max-age"])
    assert 100 <= max_age <= 120  # the token's two minutes, not the 12-hour session
    signer = Signer(SECRET.encode())
    session = signer.load(response.cookies[COOKIE].value)
    assert session is not None and session.expires <= time.time() + 120


def performance_experiment() -> dict[str, Any]:
    def percentiles(p50: float, p75: float, p95: float) -> dict[str, float]:
        return {"p50": p50, "p75": p75, "p75Low": p75 - 40, "p75High": p75 + 40, "p95": p95,
                "confidence": 0.95}  # fmt: skip

    raw = experiment("customer-acme", "speed", "shop", 600, 0)
    raw["spec"].update(type="performance", template="nginx_optimization")
    raw["spec"]["goal"] = {"metric": "p50_latency"}
    raw["status"]["variants"] = [
        {
            "name": name,
            "visitors": 600,
            "conversions": 0,
            "p50Ms": lcp[0],
            "p75Ms": lcp[1],
            "p95Ms": lcp[2],
            "realUser": {
                "views": 540,
                "lcpMs": percentiles(*lcp),
                "ttfbMs": percentiles(90, 120, 300),
                "transferBytes": percentiles(size, size, size),
            },
            "synthetic": {"requests": 900, "p50Ms": probe, "p95Ms": probe * 2},
        }
        for name, lcp, size, probe in (
            ("control", (1380.0, 1500.0, 2100.0), 48_600, 16.8),
            ("bold", (630.0, 700.0, 990.0), 11_800, 25.1),
        )
    ]
    return raw


async def test_a_performance_experiment_shows_real_user_page_loads_and_the_probe_as_synthetic() -> (
    None
):
    cache = filled_cache()
    cache.apply("experiments", "ADDED", [performance_experiment()])
    app = create_app(SETTINGS, api=FakeApi(), cache=cache)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        await sign_in(client, "token-a")
        page = await (await client.get("/experiments/speed")).text()
        hero = await (await client.get("/experiments/hero")).text()
    assert "Page load p75 (real users)" in page
    assert 'data-testid="lcp-p75"><span class="value">1,500 ms</span>' in page
    assert "95% interval 1,460 ms to 1,540 ms" in page
    assert "48.6 kB" in page and "11.8 kB" in page
    assert '17 ms / 34 ms <span class="sub">synthetic</span>' in page
    assert "Page load" not in hero  # a landing page experiment has no such table
