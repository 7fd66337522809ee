"""The request handlers: ``POST /v1/results``, ``POST /v1/heartbeat``, ``GET /healthz``
and (when it has no port of its own) ``GET /metrics``.

A handler checks, in this order, and answers the first failure with a 4xx whose
JSON body says why (``Rejected``, turned into a response by the ``errors``
middleware in ``app``): the key (401), the body's size and type (413, 415), its JSON
and shape (400), the experiment's ownership (403; 429 when looking up an Experiment
the cache does not hold is over its budget, ``misses``), the variants (422), and then,
within the report's agent incarnation, its counts (409 when lower than before, 422
when they grew faster than a server can count: ``status.admit``). An accepted report
is queued for its writer and answered 202 at once; a replay is answered 200 with
``accepted: false``. Neither waits for the API server.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import HttpVersion11, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from smart_operator.analytics import platform_insights
from smart_operator.intake import metrics
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.misses import Throttled
from smart_operator.intake.schema import BodyError, Heartbeat, ResultsReport, parse
from smart_operator.intake.state import INTAKE, Intake
from smart_operator.intake.status import (
    PendingHeartbeat,
    PendingReport,
    Refusal,
    Stale,
    admit,
)
from smart_operator.models.common import ObjectMeta
from smart_operator.models.experiment import (
    LEGACY_INCARNATION,
    Experiment,
    ExperimentStatus,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


LATENCY_GOALS = ("p50_latency", "p95_latency")


class Rejected(Exception):
    """A request the intake refuses: HTTP ``status``, an ``error`` code for programs,
    a ``message`` for people, and optionally a structured ``detail``."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return web.json_response(body, status=self.status, headers=self.headers)


async def expectation(request: web.Request) -> web.StreamResponse | None:
    """The ``Expect`` header, as aiohttp's default handler does it but without echoing
    the header in the 417: a value that is not UTF-8 made that echo a 500. Pass it as
    ``expect_handler`` to every route (``app`` gives it to the routes it adds)."""
    if request.version != HttpVersion11:
        return None  # RFC 9110 §10.1.1: ignored in HTTP/1.0 requests, as aiohttp does
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started yet
        return None
    return Rejected(
        417, "expectation_failed", "the only expectation supported is 'Expect: 100-continue'"
    ).response()


BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,512}=*")
"""RFC 6750 §2.1's b64token (intake keys are ``ssk_`` and URL-safe base64). A header
with any other byte (aiohttp hands non-UTF-8 bytes on as lone surrogates, which no
encoder takes) is refused before the key is hashed."""
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="smartserver-intake"'}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="smartserver-intake", error="invalid_token"'}


def authorize(request: web.Request, intake: Intake) -> DomainRef:
    """The Domain whose key the request carries."""
    if not intake.synced:
        raise Rejected(
            503,
            "starting",
            "the intake is still loading keys and experiments; retry in a few seconds",
            headers={"Retry-After": "5"},
        )
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Rejected(
            401,
            "missing_key",
            "send the server's intake key as 'Authorization: Bearer <key>'",
            headers=UNAUTHORIZED,
        )
    if not BEARER_TOKEN.fullmatch(key):
        # Never echoed nor logged: it may be a real key with a stray byte.
        raise Rejected(
            401,
            "malformed_key",
            "the key is not a bearer token (RFC 6750: letters, digits and -._~+/ only)",
            headers=INVALID_TOKEN,
        )
    domains = intake.keys.lookup(key)
    if not domains:
        raise Rejected(
            401,
            "unknown_key",
            "the key belongs to no Domain (mistyped, replaced by a new key, or its Domain "
            "was deleted)",
            headers=INVALID_TOKEN,
        )
    if len(domains) > 1:
        log.error("one intake key is set on several Domains: %s", ", ".join(map(str, domains)))
        raise Rejected(
            401,
            "ambiguous_key",
            "the key is set on more than one Domain; the platform's staff must issue new keys",
            headers=UNAUTHORIZED,
        )
    return domains[0]


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes, which must be JSON if a type is given."""
    if "Content-Type" in request.headers and not (
        request.content_type == "application/json" or request.content_type.endswith("+json")
    ):
        raise Rejected(
            415,
            "unsupported_media_type",
            f"the body must be JSON (Content-Type: application/json), not {request.content_type}",
        )
    too_large = Rejected(
        413, "too_large", f"the body is larger than {limit} bytes", detail={"limit": limit}
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(model: type[ResultsReport] | type[Heartbeat], body: bytes) -> Any:
    try:
        return parse(model, body)
    except BodyError as error:
        raise Rejected(400, error.code, error.message, error.detail or None) from None


def _now() -> datetime:
    return datetime.now(UTC)


@routes.post("/v1/results", expect_handler=expectation)
async def post_results(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    domain = authorize(request, intake)
    report: ResultsReport = parse_body(
        ResultsReport, await read_body(request, intake.settings.max_body_bytes)
    )
    received_at, received = _now(), time.monotonic()
    try:
        experiment = await intake.experiments.lookup(
            domain.namespace, report.experiment, intake.api.get_experiment, str(domain)
        )
    except Throttled as throttled:
        raise Rejected(
            429,
            "lookup_throttled",
            f"Experiment {report.experiment!r} is not known to the intake yet, and too many "
            f"unknown experiments were looked up ({throttled.scope} budget); retry in "
            f"{throttled.retry_after_seconds} s",
            headers={"Retry-After": str(throttled.retry_after_seconds)},
        ) from None
    if experiment is None:
        raise Rejected(
            403,
            "experiment_not_found",
            f"there is no Experiment {report.experiment!r} in namespace {domain.namespace!r}, "
            f"where the key's Domain {domain.name!r} lives",
        )
    if experiment.spec.domain_ref != domain.name:
        raise Rejected(
            403,
            "experiment_of_another_domain",
            f"Experiment {report.experiment!r} belongs to Domain "
            f"{experiment.spec.domain_ref!r}; this key may only report for Domain "
            f"{domain.name!r}",
        )
    names = [v.name for v in experiment.spec.variants]
    unknown = [v.name for v in report.variants if v.name not in names]
    if unknown:
        raise Rejected(
            422,
            "unknown_variant",
            f"Experiment {report.experiment!r} has no variant {', '.join(map(repr, unknown))}; "
            f"its variants are {', '.join(names)}",
            detail={"unknown": unknown, "variants": names},
        )
    if experiment.spec.goal.metric in LATENCY_GOALS:
        untimed = [v.name for v in report.variants if v.visitors and not v.latencies_ms]
        if untimed:
            raise Rejected(
                422,
                "missing_latencies",
                f"Experiment {report.experiment!r} is decided by "
                f"{experiment.spec.goal.metric}: send latenciesMs for every variant with "
                f"visitors (missing for {', '.join(untimed)})",
                detail={"variants": untimed},
            )

    incarnation = report.incarnation or LEGACY_INCARNATION
    admitted = admit(
        experiment,
        report,
        intake.results.pending(domain.namespace, report.experiment, incarnation),
        intake.results.accepted(experiment.uid, incarnation),
        received_at,
        intake.growth_limit,
    )
    if isinstance(admitted, Stale):
        metrics.REQUESTS.labels("results", "stale").inc()
        return web.json_response(
            {"accepted": False, "reason": "stale sequence", "lastSequence": admitted.last_sequence}
        )
    if isinstance(admitted, Refusal):
        raise Rejected(admitted.status, admitted.error, admitted.message, admitted.detail)
    intake.results.offer(
        PendingReport(report, domain, experiment.uid, received_at=received_at, received=received)
    )
    metrics.REQUESTS.labels("results", "accepted").inc()
    return web.json_response(
        {"accepted": True, "experiment": report.experiment, "sequence": report.sequence},
        status=202,
    )


@routes.post("/v1/heartbeat", expect_handler=expectation)
async def post_heartbeat(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    domain = authorize(request, intake)
    beat: Heartbeat = parse_body(
        Heartbeat, await read_body(request, intake.settings.max_body_bytes)
    )
    intake.heartbeats.offer(PendingHeartbeat(beat, domain, _now(), time.monotonic()))
    metrics.REQUESTS.labels("heartbeat", "accepted").inc()
    return web.json_response({"accepted": True, "domain": domain.name}, status=202)


@routes.get("/v1/admin/platform", expect_handler=expectation)
async def platform(request: web.Request) -> web.Response:
    """Platform insights for staff (the design note's cross-customer SQL): per
    experiment type, the mean improvement of concluded experiments with its interval,
    how many very likely lift more than 10%, and totals; from the watch-fed cache."""
    intake = request.app[INTAKE]
    token = intake.settings.admin_token
    given = request.headers.get("Authorization", "")
    if token is None:
        raise Rejected(404, "disabled", "the platform view is off: set SMART_INTAKE_ADMIN_TOKEN")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a 500),
    # and surrogatepass takes the lone surrogates aiohttp makes of non-UTF-8 bytes.
    expected = f"Bearer {token.get_secret_value()}".encode()
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected):
        raise Rejected(
            401,
            "unauthorized",
            "the platform view needs Authorization: Bearer <SMART_INTAKE_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    experiments = [
        Experiment(
            metadata=ObjectMeta(name=v.name, namespace=v.namespace, uid=v.uid),
            spec=v.spec,
            status=ExperimentStatus(variants=v.status.variants, decision=v.status.decision),
        )
        for v in intake.experiments.views()
    ]
    insights = platform_insights(experiments)
    for insight in insights:
        metrics.PLATFORM_EXPERIMENTS.labels(insight.type).set(insight.experiments)
        metrics.PLATFORM_CONCLUDED.labels(insight.type).set(insight.concluded)
    return web.json_response(
        {
            "experiments": len(experiments),
            "customers": len({e.metadata.namespace for e in experiments}),
            "visitors": sum(
                v.visitors for view in intake.experiments.views() for v in view.status.variants
            ),
            "byType": [dataclasses.asdict(i) for i in insights],
        }
    )


@routes.get("/healthz", expect_handler=expectation)
async def healthz(request: web.Request) -> web.Response:
    """200 once the caches are filled (the readiness a load balancer needs). It says
    nothing more: this port faces the internet; the numbers are on /metrics."""
    intake = request.app.get(INTAKE)
    if intake is None or not intake.synced:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok"})


async def serve_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
