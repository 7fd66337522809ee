"""Fault injection, and the control API (``/_sim/...``) that both simulators share.

A test or a benchmark registers faults; each API request (never a ``/_sim`` one) takes
the first registered fault that matches its method and path, and the fault decides what
happens to it:

- ``error``: answer with one of the provider's errors, in the provider's own envelope,
  without touching the simulated state. ``code`` names the error (a string for Hetzner,
  such as ``resource_unavailable``; a number for Cloudflare, such as ``81045``) and the
  provider's catalogue of documented errors supplies its HTTP status and message;
  ``status`` and ``message`` override them, and ``details`` sets Hetzner's ``details``
  object. Any 4xx or 5xx status may be given; without ``code`` the status alone picks a
  generic server-side error (default 503), as before.
- ``action_error`` (Hetzner only): handle the request normally, but every asynchronous
  action it starts ends in ``error`` with ``code`` and ``message`` instead of succeeding,
  and its effect (a server becoming ``running``, a firewall being applied) never happens.
- ``latency``: wait ``seconds`` (real seconds, not scaled), then handle the request
  normally. A latency longer than the client's timeout is a timeout whose request still
  takes effect.
- ``rate_limit``: answer 429 as the provider does when its limit is exceeded (as if
  another client had spent the budget); like any answered request it counts against
  the real budget.
- ``lost_response``: handle the request (a create commits), then drop the connection
  before any response byte is sent; the client sees a connection error.

A simulator accepts only the kinds it can render: each passes its own to the injector.

A fault applies ``count`` times (``null``: until removed) to matching requests, each with
``probability`` (seeded, so runs repeat). ``method`` matches exactly (any when omitted) and
``path`` is a shell-style pattern matched against the full request path, for example
``/v1/servers`` or ``/client/v4/zones/*/dns_records*``.

Fault control API (JSON; :func:`add_control_routes` also adds health, clock and
rate-limit endpoints):

- ``GET /_sim/faults``: ``{"faults": [...]}`` with the remaining ``count`` and ``hits``.
- ``POST /_sim/faults`` with ``{"kind", "method"?, "path"?, "status"?, "code"?,
  "message"?, "details"?, "seconds"?, "count"?, "probability"?}``: 201 ``{"fault": {...}}``;
  400 with a reason for an unknown kind, a code the simulator does not know without a
  ``status``, or a status outside 400-599.
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
    "COMMON_KINDS",
    "FAILING_ACTIONS",
    "ErrorCode",
    "ErrorLookup",
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
    ACTION_ERROR = "action_error"


COMMON_KINDS = frozenset(
    {FaultKind.ERROR, FaultKind.LATENCY, FaultKind.RATE_LIMIT, FaultKind.LOST_RESPONSE}
)
"""The kinds every simulator supports; ``action_error`` needs asynchronous actions."""

ErrorCode = str | int
"""A provider's error code: Hetzner's are strings, Cloudflare's numbers."""

ErrorLookup = Callable[[ErrorCode], int | None]
"""The documented HTTP status of a provider error code, or None when it is unknown."""


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
    code: ErrorCode | None = None
    message: str | None = None
    details: Mapping[str, object] | None = None

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
            "code": self.code,
            "message": self.message,
            "details": dict(self.details) if self.details is not None else None,
            "seconds": self.seconds,
            "count": self.count,
            "probability": self.probability,
            "hits": self.hits,
        }


class FaultInjector:
    """The registered faults of one simulator."""

    def __init__(
        self,
        *,
        seed: int = 0,
        kinds: frozenset[FaultKind] = COMMON_KINDS,
        error_status: ErrorLookup | None = None,
    ) -> None:
        """``kinds``: what this simulator can render; ``error_status``: the documented
        status of each of the provider's error codes (None: codes are not accepted)."""
        self.kinds = kinds
        self._error_status = error_status
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
        status: int | None = None,
        code: ErrorCode | None = None,
        message: str | None = None,
        details: Mapping[str, object] | None = None,
        seconds: float = 0.0,
        count: int | None = 1,
        probability: float = 1.0,
    ) -> Fault:
        """Register a fault; raises ValueError with a readable reason on bad arguments."""
        allowed = ", ".join(k.value for k in FaultKind if k in self.kinds)
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            raise ValueError(f"unknown fault kind {kind!r}; allowed: {allowed}") from None
        if fault_kind not in self.kinds:
            raise ValueError(f"this simulator has no {kind!r} faults; allowed: {allowed}")
        if fault_kind is FaultKind.ACTION_ERROR and code is None:
            raise ValueError("an action_error fault needs the action's error code")
        if fault_kind is FaultKind.ERROR and code is not None:
            documented = self._error_status(code) if self._error_status else None
            if documented is None and status is None:
                raise ValueError(
                    f"error code {code!r} is not in this simulator's catalogue; "
                    "give its HTTP status too"
                )
            status = status if status is not None else documented
        status = 503 if status is None else status
        if fault_kind is FaultKind.ERROR and not 400 <= status <= 599:
            raise ValueError(f"an error fault needs a 4xx or 5xx status, not {status}")
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
            code=code,
            message=message,
            details=details,
            seconds=seconds,
            count=count,
            probability=probability,
        )
        self._faults.append(fault)
        return fault

    def add_from_json(self, body: Mapping[str, object]) -> Fault:
        """Register a fault from a control-API body; raises ValueError on bad input."""
        allowed = {
            "kind",
            "method",
            "path",
            "status",
            "code",
            "message",
            "details",
            "seconds",
            "count",
            "probability",
        }
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; allowed: {sorted(allowed)}")
        kind = body.get("kind")
        if not isinstance(kind, str):
            kinds = ", ".join(k.value for k in FaultKind if k in self.kinds)
            raise ValueError('"kind" is required: one of ' + kinds)
        code = body.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, str | int)):
            raise ValueError('"code" must be a string or an integer')
        details = body.get("details")
        if details is not None and not isinstance(details, dict):
            raise ValueError('"details" must be an object')
        return self.add(
            kind,
            method=_optional_str(body, "method"),
            path=_optional_str(body, "path"),
            status=_optional_int(body, "status", None),
            code=code,
            message=_optional_str(body, "message"),
            details=details,
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


def _optional_int(body: Mapping[str, object], key: str, default: int | None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{key}" must be an integer')
    return value


def _number(body: Mapping[str, object], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'"{key}" must be a number')
    return float(value)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler, as middlewares receive it."""


FAILING_ACTIONS = web.RequestKey("smart_sim.failing_actions", Fault)
"""Set on a request an ``action_error`` fault applies to: its actions must fail."""


def fault_middleware(
    injector: FaultInjector,
    *,
    error_response: Callable[[Fault], web.StreamResponse],
    rate_limited_response: Callable[[], web.StreamResponse],
) -> Middleware:
    """A middleware that applies the injector's faults to API requests.

    ``error_response(fault)`` and ``rate_limited_response()`` render the provider's own
    shapes. Place it inside the middleware that enforces authentication and the rate
    limit, so injected faults see only requests the provider would have accepted. An
    ``action_error`` fault is handed to the handler as ``request[FAILING_ACTIONS]``.
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
            return error_response(fault)
        if fault.kind is FaultKind.RATE_LIMIT:
            return rate_limited_response()
        if fault.kind is FaultKind.ACTION_ERROR:
            request[FAILING_ACTIONS] = fault
            return await handler(request)
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
