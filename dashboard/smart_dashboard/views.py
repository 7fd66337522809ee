"""The routes: sign-in and sign-out, the customer's pages, the staff's platform page,
and the live-update stream. Every customer page reads the cache through the signed-in
customer's namespace only, so another customer's object is simply not found (404)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from smart_dashboard import gallery
from smart_dashboard.charts import chart_points, rate_chart
from smart_dashboard.cluster import Cache, Change, customer_of_username
from smart_dashboard.context import (
    API,
    CACHE,
    REVIEWS,
    SESSION,
    SETTINGS,
    SIGNER,
    TEMPLATES,
    THROTTLE,
)
from smart_dashboard.present import (
    ExperimentSummary,
    domain_badge,
    domain_card,
    problems,
    summarize,
)
from smart_dashboard.sessions import COOKIE, Session
from smart_dashboard.throttle import client_address
from smart_operator import billing
from smart_operator.analytics import platform_insights
from smart_operator.models import Customer, Domain, Experiment
from smart_operator.models.customer import customer_namespace, customer_of

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_TOKEN = 8192
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- helpers --------------------------------------------------------------------------


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    env = request.app[TEMPLATES]
    session: Session | None = request.get(SESSION)
    defaults: dict[str, Any] = {"title": "Sign in", "error": None, "notice": None}
    text = env.get_template(template).render(
        session=session, path=request.path, now=datetime.now(UTC), **(defaults | context)
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def current_session(request: web.Request) -> Session | None:
    """The valid session of the request: signed, unexpired, and opened with the
    credential that is current: for staff the staff token the process has now, for a
    customer the dashboard account the Customer's status names now (staff delete the
    account to revoke its tokens; the operator makes a new one, with a new uid)."""
    signer = request.app[SIGNER]
    session = signer.load(request.cookies.get(COOKIE))
    if session is None:
        return None
    if session.is_admin:
        admin = request.app[SETTINGS].admin_token
        if admin is None:
            return None
        current = signer.fingerprint(admin.get_secret_value())
        return session if hmac.compare_digest(session.credential, current) else None
    name = session.customer
    if name is None or account_uid(request.app[CACHE].customer(name)) != session.credential:
        return None
    return session


def account_uid(customer: dict[str, Any] | None) -> str | None:
    """The uid of the customer's dashboard account, as its status says now."""
    if customer is None:
        return None
    uid = (customer.get("status") or {}).get("dashboardAccountUid")
    return uid if isinstance(uid, str) and uid else None


def to_signin(request: web.Request) -> web.HTTPException:
    response = web.HTTPSeeOther("/signin")
    if request.cookies.get(COOKIE) is not None:
        response.del_cookie(COOKIE, path="/")
    return response


def customer_page(handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]]) -> Handler:
    """A page of one customer's data: signed-in customers only; staff go to theirs."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None:
            raise to_signin(request)
        if session.customer is None:
            raise web.HTTPSeeOther("/platform")
        request[SESSION] = session
        return await handler(request, session.customer)

    return wrapped


def staff_page(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None:
            raise to_signin(request)
        if not session.is_admin:
            raise web.HTTPNotFound()  # a customer learns nothing of staff pages
        request[SESSION] = session
        return await handler(request)

    return wrapped


T = TypeVar("T", Customer, Domain, Experiment)


def _parse(model: type[T], obj: dict[str, Any]) -> T | None:
    try:
        return model.model_validate(obj)
    except ValidationError:
        log.warning("skipping malformed %s %s", model.__name__, obj.get("metadata", {}).get("name"))
        return None


def _all(model: type[T], objs: list[dict[str, Any]]) -> list[T]:
    return [parsed for obj in objs if (parsed := _parse(model, obj)) is not None]


def _customer_data(
    cache: Cache, customer: str
) -> tuple[Customer | None, list[Domain], list[ExperimentSummary]]:
    namespace = customer_namespace(customer)
    raw = cache.customer(customer)
    parsed = _parse(Customer, raw) if raw else None
    domains = _all(Domain, cache.in_namespace("domains", namespace))
    experiments = _all(Experiment, cache.in_namespace("experiments", namespace))
    return parsed, domains, [summarize(e) for e in experiments]


# -- health ---------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    if request.app[CACHE].ready:
        return web.Response(text="ok")
    return web.Response(text="starting: caches not filled yet", status=503)


# -- sign-in and sign-out -------------------------------------------------------------


def _same_origin(request: web.Request) -> bool:
    """Whether a form post comes from our own pages (a cross-site post could sign a
    browser in or out behind its user's back)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or a very old one; SameSite=Lax still holds
    return urlsplit(origin).netloc == request.host


async def _authenticate(request: web.Request, token: str) -> tuple[Session | None, str | None]:
    """The session a token opens, or the message to show instead."""
    settings = request.app[SETTINGS]
    token = token.strip()
    if not token:
        return None, "Paste your access token to sign in."
    if len(token) > MAX_TOKEN:
        return None, "That is not an access token: it is far too long."
    lifetime = settings.session_hours * 3600
    admin = settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        fingerprint = request.app[SIGNER].fingerprint(admin.get_secret_value())
        return Session.for_admin(fingerprint, lifetime), None
    try:
        async with request.app[REVIEWS]:
            reviewed = await request.app[API].review_token(token, settings.token_audience)
    except Exception:
        log.exception("token review failed")
        return None, "Sign-in is unavailable right now. Please try again in a minute."
    customer = customer_of_username(reviewed.username) if reviewed else None
    if (
        reviewed is None
        or customer is None
        or account_uid(request.app[CACHE].customer(customer)) != reviewed.uid
    ):
        log.info(
            "sign-in refused: %s",
            "token not authenticated for the dashboard's audience"
            if reviewed is None
            else f"{reviewed.username} ({reviewed.uid}) is no customer's current account",
        )
        return None, (
            "That access token was not recognised: it may have expired or been revoked. "
            "Ask us for a new one."
        )
    now = time.time()
    if reviewed.expires is not None:  # the session ends with the token
        lifetime = min(lifetime, reviewed.expires - now)
    return Session.for_customer(customer, reviewed.uid, lifetime, now), None


def _signed_in(request: web.Request, session: Session) -> web.Response:
    settings = request.app[SETTINGS]
    response = web.Response(
        status=303, headers={"Location": "/platform" if session.is_admin else "/"}
    )
    response.set_cookie(
        COOKIE,
        request.app[SIGNER].dump(session),
        max_age=int(session.expires - time.time()),
        path="/",
        httponly=True,
        secure=settings.secure_cookies,
        samesite="Lax",
    )
    log.info("signed in: %s", session.subject)
    return response


@routes.get("/signin")
async def signin_form(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token")
    if token is not None:
        # A sign-in link only fills the form: signing in takes the visitor's own click
        # (a POST from this site), so another site cannot sign a browser into an
        # account of its choosing by sending it to a link. The address holding the
        # token is neither sent on as a referrer nor kept in a cache.
        response = render(request, "signin.html", token=token[:MAX_TOKEN], from_link=True)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
    if current_session(request) is not None:
        raise web.HTTPSeeOther("/")
    notice = "You have been signed out." if "signed_out" in request.query else None
    return render(request, "signin.html", notice=notice)


@routes.post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site sign-in refused")
    settings = request.app[SETTINGS]
    client = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )
    refused = request.app[THROTTLE].attempt(client)
    if refused is not None:
        wait = refused.retry_after_seconds
        log.warning("sign-in throttled (%s limit): %s, retry in %d s", refused.scope, client, wait)
        whose = "from your address" if refused.scope == "client" else "right now"
        message = f"Too many sign-in attempts {whose}. Try again in {_wait(wait)}."
        response = render(request, "signin.html", status=429, error=message)
        response.headers["Retry-After"] = str(wait)
        return response
    form = await request.post()
    token = form.get("token")
    session, error = await _authenticate(request, token if isinstance(token, str) else "")
    if session is None:
        return render(request, "signin.html", status=401, error=error)
    return _signed_in(request, session)


def _wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{round(seconds / 60)} minutes"


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site sign-out refused")
    response = web.Response(status=303, headers={"Location": "/signin?signed_out=1"})
    response.del_cookie(COOKIE, path="/")
    return response


# -- customer pages -------------------------------------------------------------------


@routes.get("/")
@customer_page
async def overview(request: web.Request, customer: str) -> web.StreamResponse:
    now = datetime.now(UTC)
    account, domains, summaries = _customer_data(request.app[CACHE], customer)
    cards = [domain_card(d, summaries, now) for d in domains]
    return render(
        request,
        "overview.html",
        customer=customer,
        account=account,
        cards=cards,
        summaries=summaries,
        title="Overview",
    )


@routes.get("/experiments")
@customer_page
async def experiments(request: web.Request, customer: str) -> web.StreamResponse:
    account, domains, summaries = _customer_data(request.app[CACHE], customer)
    return render(
        request,
        "experiments.html",
        customer=customer,
        account=account,
        summaries=summaries,
        domains={d.metadata.name: d for d in domains},
        title="Experiments",
    )


@routes.get("/domains/{name}")
@customer_page
async def domain_page(request: web.Request, customer: str) -> web.StreamResponse:
    cache = request.app[CACHE]
    namespace = customer_namespace(customer)
    raw = cache.get("domains", namespace, request.match_info["name"])
    domain = _parse(Domain, raw) if raw else None
    if domain is None:
        raise web.HTTPNotFound()
    summaries = [
        summarize(e)
        for e in _all(Experiment, cache.in_namespace("experiments", namespace))
        if e.spec.domain_ref == domain.metadata.name
    ]
    card = domain_card(domain, summaries, datetime.now(UTC))
    return render(
        request,
        "domain.html",
        customer=customer,
        card=card,
        summaries=summaries,
        title=domain.spec.domain,
    )


@routes.get("/experiments/{name}")
@customer_page
async def experiment_page(request: web.Request, customer: str) -> web.StreamResponse:
    cache = request.app[CACHE]
    namespace = customer_namespace(customer)
    name = request.match_info["name"]
    raw = cache.get("experiments", namespace, name)
    experiment = _parse(Experiment, raw) if raw else None
    if experiment is None:
        raise web.HTTPNotFound()
    summary = summarize(experiment)
    raw_domain = cache.get("domains", namespace, experiment.spec.domain_ref)
    domain = _parse(Domain, raw_domain) if raw_domain else None
    chart = rate_chart(
        chart_points(experiment, datetime.now(UTC)),
        [v.name for v in experiment.spec.variants],
        f"Cumulative conversion rate of each variant of {name} over time",
    )
    return render(
        request,
        "experiment.html",
        customer=customer,
        s=summary,
        domain=domain,
        chart=chart,
        title=name,
    )


@routes.get("/templates")
@customer_page
async def templates_page(request: web.Request, customer: str) -> web.StreamResponse:
    cache = request.app[CACHE]
    namespace = customer_namespace(customer)
    cards = gallery.cards(
        cache.in_namespace("clusterexperimenttemplates", None),
        cache.in_namespace("experimenttemplates", namespace),
        _all(Experiment, cache.in_namespace("experiments", None)),
        _all(Experiment, cache.in_namespace("experiments", namespace)),
    )
    return render(request, "templates.html", customer=customer, cards=cards, title="Templates")


PREVIEW_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The preview runs no script and submits no form, even when opened on its own; the
# gallery frames it (same origin, so its stylesheet is fetched with the session).
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


@routes.get("/templates/{scope}/{object}/preview/{path:.*}")
@customer_page
async def template_preview(request: web.Request, customer: str) -> web.StreamResponse:
    """A file of a template's preview: only the catalogue's and the customer's own."""
    cache = request.app[CACHE]
    scope, name = request.match_info["scope"], request.match_info["object"]
    if scope == "catalogue":
        raw = cache.get("clusterexperimenttemplates", "", name)
    elif scope == "private":
        raw = cache.get("experimenttemplates", customer_namespace(customer), name)
    else:
        raw = None
    found = gallery.latest([raw]) if raw else {}
    if not found:
        raise web.HTTPNotFound()
    ((_, spec),) = found.values()
    files = gallery.preview_files(spec)
    path = request.match_info["path"] or "index.html"
    data = files.get(path) if files else None
    kind = next((t for ext, t in PREVIEW_TYPES.items() if path.endswith(ext)), None)
    if data is None or kind is None:
        raise web.HTTPNotFound()
    response = web.Response(body=data, headers={"Content-Type": kind})
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


# -- staff page -----------------------------------------------------------------------


@routes.get("/platform")
@staff_page
async def platform(request: web.Request) -> web.StreamResponse:
    cache = request.app[CACHE]
    customers = _all(Customer, cache.customers())
    domains = _all(Domain, cache.in_namespace("domains", None))
    summaries = [summarize(e) for e in _all(Experiment, cache.in_namespace("experiments", None))]
    not_ready = []
    for domain in domains:
        conditions = domain.status.conditions if domain.status else []
        ready = next((c for c in conditions if c.type == "Ready"), None)
        if ready is None or ready.status != "True":
            owner = customer_of(domain.metadata.namespace or "") or ""
            not_ready.append((owner, domain, domain_badge(domain), problems(conditions)))
    insights = platform_insights(s.experiment for s in summaries)
    revenue = sum(c.status.cost.plan_price for c in customers if c.status and c.status.cost)
    infrastructure = sum(
        c.status.cost.infrastructure for c in customers if c.status and c.status.cost
    )
    # What the subscriptions themselves bring in (Stripe's amounts, in good standing),
    # beside the plan prices the cost model assumes.
    billed = billing.monthly_revenue(c.status.billing for c in customers if c.status)
    subscriptions = {c.metadata.name: _subscription(c) for c in customers}
    return render(
        request,
        "platform.html",
        customers=customers,
        not_ready=not_ready,
        insights=insights,
        revenue=revenue,
        infrastructure=infrastructure,
        billed_usd=billed.pop("usd", 0.0),
        billed_other=[billing.money(v, k) for k, v in sorted(billed.items())],
        subscriptions=subscriptions,
        domain_count=len(domains),
        experiment_count=len(summaries),
        title="Platform",
    )


def _subscription(customer: Customer) -> dict[str, str]:
    """A Customer's subscription for the platform table: its billing state, badge tone,
    amount a month and period end."""
    status = customer.status.billing if customer.status else None
    if status is None:
        return {"state": "", "tone": "muted", "amount": "—", "note": ""}
    tone = {"Active": "good", "PastDue": "warn", "Suspended": "bad", "Canceled": "bad"}
    amount = (
        f"{billing.money(status.monthly_amount, status.currency)} a month"
        if status.monthly_amount is not None
        else "—"
    )
    end = status.current_period_end
    return {
        "state": status.state,
        "tone": tone.get(status.state, "muted"),
        "amount": amount,
        "note": f"period ends {end:%Y-%m-%d}" if end else "",
    }


# -- live updates ---------------------------------------------------------------------


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one ``change`` event per burst of changes in the session's
    scope. The page then fetches itself again from this process (never the API
    server). A ``signout`` event ends a session that expired meanwhile."""
    session = current_session(request)
    if session is None:
        raise web.HTTPUnauthorized(text="sign in first")
    cache = request.app[CACHE]
    settings = request.app[SETTINGS]
    scope = None if session.is_admin else customer_namespace(session.customer or "")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    subscriber = cache.subscribe(scope)
    try:
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            try:
                change = await asyncio.wait_for(subscriber.queue.get(), settings.heartbeat_seconds)
            except TimeoutError:
                if session.expires <= time.time() or current_session(request) is None:
                    await response.write(b"event: signout\ndata: {}\n\n")
                    break
                await response.write(b": keep-alive\n\n")
                continue
            if change is None:
                break
            batch: list[Change] = [change]
            while not subscriber.queue.empty():
                more = subscriber.queue.get_nowait()
                if more is None:
                    break
                batch.append(more)
            data = json.dumps(
                [{"kind": c.kind, "name": c.name, "type": c.type} for c in batch],
                separators=(",", ":"),
            )
            await response.write(f"event: change\ndata: {data}\n\n".encode())
            if subscriber.dropped:
                break
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        cache.unsubscribe(subscriber)
    return response
