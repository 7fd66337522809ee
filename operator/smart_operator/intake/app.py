"""The intake's aiohttp application: ``create_app()`` wires settings, the API client,
the watch-fed caches, the writers and the routes (the agents' in ``views``, Stripe's
webhook in ``webhooks``).

``cleanup_ctx`` owns everything with a lifetime: on start it connects to the API
server (unless a ``Store`` is passed in, as tests do), makes the small thread pool the
statistics run on (``analysis_threads``), and starts the two watches (Domains for keys,
Experiments for ownership and sequences) and the heartbeat writer's sweep for silent
agents; on stop it first stops the sweep and drains the writers, so
accepted reports reach the status before the process exits, then stops the watches and
the pool and closes the client. ``/metrics`` is served on its own port
(``metrics_port``) so it is not exposed where the agents connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from smart_operator.clients.customer_status import CustomerStatusApi
from smart_operator.clients.kubeapi import connect
from smart_operator.clients.results import ResultsApi
from smart_operator.intake import metrics
from smart_operator.intake.experiments import ExperimentCache
from smart_operator.intake.keys import KeyCache
from smart_operator.intake.payments import CustomerStore, PaymentWriter
from smart_operator.intake.peers import Peers
from smart_operator.intake.peers import route as heard_route
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.state import INTAKE, SETTINGS, Intake
from smart_operator.intake.views import Rejected, expectation, routes, serve_metrics
from smart_operator.intake.webhooks import ENDPOINT as STRIPE_ENDPOINT
from smart_operator.intake.webhooks import webhook_routes
from smart_operator.intake.writer import HeartbeatWriter, ResultsWriter, Store

log = logging.getLogger(__name__)

ENDPOINTS = {
    "/v1/results": "results",
    "/v1/heartbeat": "heartbeat",
    "/v1/stripe/webhook": STRIPE_ENDPOINT,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes a JSON body that says why, and is counted by reason."""
    endpoint = ENDPOINTS.get(request.path, "other")
    try:
        return await handler(request)
    except Rejected as rejected:
        refusal = rejected
    except web.HTTPException as error:
        if error.status < 400:
            raise
        refusal = Rejected(
            error.status,
            error.reason.lower().replace(" ", "_"),
            f"{request.method} {request.path}: {error.reason}",
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        refusal = Rejected(500, "internal", "the intake failed; the report was not accepted")
    if endpoint != "other":
        metrics.REQUESTS.labels(endpoint, "rejected").inc()
        metrics.REJECTED.labels(endpoint, refusal.error).inc()
    return refusal.response()


async def _follow(
    api: Store, plural: str, apply: Callable[[str, list[dict[str, Any]]], None]
) -> None:
    """Feed a cache from a watch, for as long as the process lives."""
    async for event in api.watch(plural):
        apply(event.type, event.objects)


def _intake(
    store: Store | None, customers: CustomerStore | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        api: Store
        if store is None:
            connection = await connect(settings.kubeconfig)
            api = ResultsApi(connection)
            customer_store: CustomerStore | None = customers or CustomerStatusApi(connection)
        else:
            api, customer_store = store, customers
        keys, experiments = KeyCache(), ExperimentCache(limits=settings.miss_limits)
        analysis = ThreadPoolExecutor(settings.analysis_threads, thread_name_prefix="analysis")
        peers = (
            Peers(settings.peers, settings.metrics_port)
            if settings.peers and settings.metrics_port
            else None
        )
        intake = Intake(
            settings=settings,
            api=api,
            keys=keys,
            experiments=experiments,
            results=ResultsWriter(api, experiments, settings, analysis),
            heartbeats=HeartbeatWriter(api, keys, settings, experiments, peers=peers),
            payments=PaymentWriter(customer_store) if customer_store is not None else None,
        )
        metrics.CACHED.labels("domains").set_function(lambda: len(keys))
        metrics.CACHED.labels("experiments").set_function(lambda: len(experiments))
        metrics.SYNCED.set_function(lambda: 1.0 if intake.synced else 0.0)
        app[INTAKE] = intake

        def domains(kind: str, objects: list[dict[str, Any]]) -> None:
            keys.apply(kind, objects)
            intake.heartbeats.observe(kind, objects)

        sweeps = asyncio.create_task(intake.heartbeats.run(), name="silent-agents")
        watches = [
            asyncio.create_task(_follow(api, "domains", domains), name="watch-domains"),
            asyncio.create_task(
                _follow(api, "experiments", experiments.apply), name="watch-experiments"
            ),
        ]
        try:
            yield
        finally:
            sweeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeps
            half = settings.drain_seconds / 2
            await asyncio.gather(intake.results.drain(half), intake.heartbeats.drain(half))
            for task in watches:
                task.cancel()
            for task in watches:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await experiments.close()
            analysis.shutdown(wait=False, cancel_futures=True)
            if peers is not None:
                await peers.close()
            await api.close()

    return lifetime


async def _metrics_server(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", serve_metrics)
    # Off the agents' port: the other replicas ask what this one heard (``peers``).
    metrics_app.router.add_routes([heard_route(lambda refs: app[INTAKE].heartbeats.heard(refs))])
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


class UnparsedRequests(logging.Filter):
    """aiohttp answers a request it cannot parse with a 400, and logs it at ERROR with the
    offending bytes, such as a header line that may carry a key with one bad byte.
    This filter keeps the record, as a warning without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "refused a request that is not valid HTTP (%s); its bytes are not logged"
            record.args = (type(error).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_UNPARSED = UnparsedRequests()


def create_app(
    settings: IntakeSettings | None = None,
    *,
    store: Store | None = None,
    customers: CustomerStore | None = None,
) -> web.Application:
    """The intake application. ``store`` and ``customers`` replace the Kubernetes
    client (tests); with a ``store`` and no ``customers``, Stripe's webhooks are off."""
    settings = settings or IntakeSettings()
    logging.getLogger("aiohttp.server").addFilter(_UNPARSED)  # once: filters are a set
    app = web.Application(middlewares=[errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_intake(store, customers))
    if settings.metrics_port is None:
        app.router.add_get("/metrics", serve_metrics, expect_handler=expectation)
    else:
        app.cleanup_ctx.append(_metrics_server)
    app.add_routes(routes)
    app.add_routes(webhook_routes)
    _answer_everything_else(app)
    return app


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    allowed = {
        route.method for route in request.match_info.route.resource or () if route.method != "*"
    }
    raise web.HTTPMethodNotAllowed(request.method, allowed)


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def _answer_everything_else(app: web.Application) -> None:
    """Routes of our own for the 405s and 404s aiohttp would answer itself, so that an
    ``Expect`` header on them goes through ``expectation`` too (aiohttp's own handler
    for it fails on a value that is not UTF-8). Added last: the routes above win."""
    for resource in list(app.router.resources()):
        if isinstance(resource, web.Resource):
            resource.add_route("*", _method_not_allowed, expect_handler=expectation)
    app.router.add_route("*", "/{anything:.*}", _not_found, expect_handler=expectation)
