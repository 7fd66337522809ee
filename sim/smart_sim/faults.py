"""Fault injection, and the control API (``/_sim/...``) that both simulators share.

A test or a benchmark registers faults; each API request (never a ``/_sim`` one) takes
the first registered fault that matches its method and path, and the fault decides what
happens to it:

- ``error``: answer with an HTTP error (``status``, default 503) in the provider's own
  error shape, without touching the simulated state.
- ``latency``: wait ``seconds`` (real seconds, not scaled), then handle the request
  normally. A latency longer than the client's timeout is a timeout whose request still
  takes effect.
- ``rate_limit``: answer 429 as the provider does when its limit is exceeded (as if
  another client had spent the budget); like any answered request it counts against
  the real budget.
- ``lost_response``: handle the request (a create commits), then drop the connection
  before any response byte is sent; the client sees a connection error.

A fault applies ``count`` times (``null``: until removed) to matching requests, each with
``probability`` (seeded, so runs repeat). ``method`` matches exactly (any when omitted) and
``path`` is a shell-style pattern matched against the full request path, for example
``/v1/servers`` or ``/client/v4/zones/*/dns_records*``.

Fault control API (JSON; :func:`add_control_routes` also adds health, clock and
rate-limit endpoints):

- ``GET /_sim/faults``: ``{"faults": [...]}`` with the remaining ``count`` and ``hits``.
- ``POST /_sim/faults`` with ``{"kind", "method"?, "path"?, "status"?, "seconds"?,
  "count"?, "probability"?}``: 201 ``{"fault": {...}}``.
- ``DELETE /_sim/faults/{id}`` removes one fault; ``DELETE /_sim/faults`` removes all.
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from smart_sim.ratelimit import Limiter, LimitStatus, SimClock

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Handler",
    "add_control_routes",
    "fault_middleware",
    "read_control_body",
]


class FaultKind(enum.StrEnum):
    """What an injected fault does to a request."""

    ERROR = "error"
    LATENCY = "latency"
    RATE_LIMIT = "rate_limit"
    LOST_RESPONSE = "lost_response"


@dataclass
class Fault:
    """One registered fault; ``count`` is the number of applications left (None: no end)."""

    id: int
    kind: FaultKind
    method: str | None = None
    path: str | None = None
    status: int = 503
    seconds: float = 0.0
    count: int | None = 1
    probability: float = 1.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is subject to the fault."""
        if self.method is not None and self.method != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def to_json(self) -> dict[str, object]:
        """The fault as the control API shows it."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "seconds": self.seconds,
            "count": self.count,
            "probability": self.probability,
            "hits": self.hits,
        }


class FaultInjector:
    """The registered faults of one simulator."""

    def __init__(self, *, seed: int = 0) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        # Not for security: a seeded generator makes probabilistic faults repeatable.
        self._random = random.Random(seed)  # noqa: S311

    @property
    def faults(self) -> list[Fault]:
        """The active faults, in the order they are tried."""
        return list(self._faults)

    def add(
        self,
        kind: FaultKind | str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int = 503,
        seconds: float = 0.0,
        count: int | None = 1,
        probability: float = 1.0,
    ) -> Fault:
        """Register a fault; raises ValueError with a readable reason on bad arguments."""
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault kind {kind!r}; allowed: {allowed}") from None
        if fault_kind is FaultKind.ERROR and not 500 <= status <= 599:
            raise ValueError(f"an error fault needs a 5xx status, not {status}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a non-negative number, not {seconds!r}")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1 (or null for no end), not {count}")
        if not 0 < probability <= 1:
            raise ValueError(f"probability must be in (0, 1], not {probability}")
        fault = Fault(
            id=next(self._ids),
            kind=fault_kind,
            method=method.upper() if method else None,
            path=path or None,
            status=status,
            seconds=seconds,
            count=count,
            probability=probability,
        )
        self._faults.append(fault)
        return fault

    def add_from_json(self, body: Mapping[str, object]) -> Fault:
        """Register a fault from a control-API body; raises ValueError on bad input."""
        allowed = {"kind", "method", "path", "status", "seconds", "count", "probability"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; allowed: {sorted(allowed)}")
        kind = body.get("kind")
        if not isinstance(kind, str):
            raise ValueError('"kind" is required: one of ' + ", ".join(k.value for k in FaultKind))
        return self.add(
            kind,
            method=_optional_str(body, "method"),
            path=_optional_str(body, "path"),
            status=_int(body, "status", 503),
            seconds=_number(body, "seconds", 0.0),
            count=_optional_int(body, "count", 1),
            probability=_number(body, "probability", 1.0),
        )

    def remove(self, fault_id: int) -> bool:
        """Remove one fault; False when there is none with that id."""
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request, if any, counting the application."""
        for fault in self._faults:
            if not fault.matches(method, path):
                continue
            if fault.probability < 1 and self._random.random() >= fault.probability:
                continue
            fault.hits += 1
            if fault.count is not None:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
            return fault
        return None


def _optional_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f'"{key}" must be a string')


def _int(body: Mapping[str, object], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{key}" must be an integer')
    return value


def _optional_int(body: Mapping[str, object], key: str, default: int) -> int | None:
    if key in body and body[key] is None:
        return None
    return _int(body, key, default)


def _number(body: Mapping[str, object], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'"{key}" must be a number')
    return float(value)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler, as middlewares receive it."""


def fault_middleware(
    injector: FaultInjector,
    *,
    error_response: Callable[[int], web.StreamResponse],
    rate_limited_response: Callable[[], web.StreamResponse],
) -> Middleware:
    """A middleware that applies the injector's faults to API requests.

    ``error_response(status)`` and ``rate_limited_response()`` render the provider's own
    shapes. Place it inside the middleware that enforces authentication and the rate
    limit, so injected faults see only requests the provider would have accepted.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        fault = injector.take(request.method, request.path)
        if fault is None:
            return await handler(request)
        if fault.kind is FaultKind.LATENCY:
            # The request has arrived whole; a client that gives up meanwhile must not
            # stop it from taking effect.
            await request.read()
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        if fault.kind is FaultKind.ERROR:
            return error_response(fault.status)
        if fault.kind is FaultKind.RATE_LIMIT:
            return rate_limited_response()
        try:
            return await handler(request)
        finally:
            # The work is done; the client never hears about it.
            if request.transport is not None:
                request.transport.abort()

    return middleware


async def read_control_body(request: web.Request) -> dict[str, object]:
    """The JSON object body of a control request, or a plain-text 400."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _limit_json(status: LimitStatus) -> dict[str, object]:
    return {
        "limit": status.limit,
        "remaining": status.remaining,
        "reset_in": status.reset_in,
        "blocked_for": status.blocked_for,
    }


def add_control_routes(
    app: web.Application, *, injector: FaultInjector, clock: SimClock, limiter: Limiter
) -> None:
    """Add the control API that both simulators share.

    - ``GET /_sim/health``: ``{"status": "ok"}``.
    - ``/_sim/faults``: see the module docstring.
    - ``GET /_sim/clock``: ``{"time_scale", "now"}`` (simulated seconds since start);
      ``POST /_sim/clock`` with ``{"advance": seconds}`` jumps the clock forward.
    - ``GET /_sim/ratelimit``: ``{"limit", "remaining", "reset_in", "blocked_for"}``
      (simulated seconds); ``PUT /_sim/ratelimit`` with ``{"remaining": n}`` forces the
      remaining budget and ends a lock-out.
    """

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list_faults(_: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_json() for f in injector.faults]})

    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = injector.add_from_json(await read_control_body(request))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"fault": fault.to_json()}, status=201)

    async def clear_faults(_: web.Request) -> web.Response:
        injector.clear()
        return web.Response(status=204)

    async def remove_fault(request: web.Request) -> web.Response:
        if not injector.remove(int(request.match_info["fault_id"])):
            return web.json_response({"error": "no such fault"}, status=404)
        return web.Response(status=204)

    async def get_clock(_: web.Request) -> web.Response:
        return web.json_response({"time_scale": clock.time_scale, "now": clock.now()})

    async def post_clock(request: web.Request) -> web.Response:
        seconds = (await read_control_body(request)).get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return web.json_response({"error": 'expected {"advance": <seconds>}'}, status=400)
        try:
            clock.advance(float(seconds))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"time_scale": clock.time_scale, "now": clock.now()})

    async def get_limit(_: web.Request) -> web.Response:
        return web.json_response(_limit_json(limiter.status()))

    async def put_limit(request: web.Request) -> web.Response:
        remaining = (await read_control_body(request)).get("remaining")
        if isinstance(remaining, bool) or not isinstance(remaining, int):
            return web.json_response({"error": 'expected {"remaining": <integer>}'}, status=400)
        limiter.set_remaining(remaining)
        return web.json_response(_limit_json(limiter.status()))

    app.router.add_get("/_sim/health", health)
    app.router.add_get("/_sim/faults", list_faults)
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_delete(r"/_sim/faults/{fault_id:\d+}", remove_fault)
    app.router.add_get("/_sim/clock", get_clock)
    app.router.add_post("/_sim/clock", post_clock)
    app.router.add_get("/_sim/ratelimit", get_limit)
    app.router.add_put("/_sim/ratelimit", put_limit)
