"""The dashboard's aiohttp application.

``create_app()`` wires the settings, the session signer, the templates and the cache.
Its cleanup context connects to the API server with the dashboard's own account
(unless a ``KubeApi`` is passed in, as unit tests do), starts one watch per kind, and
on shutdown ends the live streams, stops the watches and closes the client.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import jinja2
from aiohttp import web

from smart_dashboard import present
from smart_dashboard.cluster import KINDS, Cache, KubeApi, follow
from smart_dashboard.context import API, CACHE, REVIEWS, SETTINGS, SIGNER, TEMPLATES, THROTTLE
from smart_dashboard.sessions import Signer
from smart_dashboard.settings import DashboardSettings
from smart_dashboard.throttle import SignInThrottle
from smart_dashboard.views import render, routes
from smart_operator.clients.kubeapi import connect

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        pct=present.pct,
        signed_pct=present.signed_pct,
        count=present.count,
        money=present.money,
        ago=present.ago,
    )
    return env


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Security headers on every answer; friendly pages for 404 and for errors, never a
    stack trace."""
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = render(
            request,
            "error.html",
            status=404,
            title="Not found",
            message="There is nothing here, or it is not yours to see.",
        )
    except web.HTTPException as error:
        if error.status >= 400 and error.status != 401:
            response = render(
                request,
                "error.html",
                status=error.status,
                title=error.reason,
                message=error.text or error.reason,
            )
        else:
            error.headers.update(SECURITY_HEADERS)
            raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("error answering %s %s", request.method, request.path)
        response = render(
            request,
            "error.html",
            status=500,
            title="Something went wrong",
            message="Something went wrong on our side. Please reload the page.",
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)  # a page may be stricter (sign-in links)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "public, max-age=300"
    elif "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def create_app(
    settings: DashboardSettings | None = None,
    *,
    api: KubeApi | None = None,
    cache: Cache | None = None,
) -> web.Application:
    settings = settings or DashboardSettings()
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[CACHE] = cache or Cache(settings.client_queue)
    secret = settings.session_secret
    if secret is None:
        log.warning("SMART_DASHBOARD_SESSION_SECRET is unset: sessions end when this process does")
        key = secrets.token_bytes(32)
    else:
        key = secret.get_secret_value().encode()
    app[SIGNER] = Signer(key)
    app[TEMPLATES] = templates()
    app[TEMPLATES].globals["session_hours"] = settings.session_hours
    app[REVIEWS] = asyncio.Semaphore(8)
    app[THROTTLE] = SignInThrottle(
        settings.signin_attempts_per_client,
        settings.signin_window_minutes * 60,
        settings.signin_attempts_per_minute,
        clock=time.monotonic,
    )
    app.add_routes(routes)
    app.router.add_static("/static/", HERE / "static", name="static")

    async def kube(app: web.Application) -> AsyncIterator[None]:
        own = api is None
        client = api or KubeApi(await connect(settings.kubeconfig))
        app[API] = client
        watches = []
        if own:
            watches = [
                asyncio.create_task(follow(client, app[CACHE], kind), name=f"watch-{kind}")
                for kind in KINDS
            ]
        try:
            yield
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            if own:
                await client.close()

    async def end_streams(app: web.Application) -> None:
        app[CACHE].close_all()

    app.cleanup_ctx.append(kube)
    app.on_shutdown.append(end_streams)
    return app
