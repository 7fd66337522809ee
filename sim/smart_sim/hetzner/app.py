"""The Hetzner Cloud simulator's HTTP application (aiohttp), answering the ``hcloud`` SDK.

The API lives under ``/v1`` (point ``hcloud.Client(api_endpoint=...)`` at it) and covers
servers (create, get, list, update, delete, power actions), actions (by id, several ids
at once, per resource), SSH keys, firewalls (create, apply, remove, rules, delete),
server types, locations, images and pricing. Every API response carries the
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` headers of a token
bucket (3600 requests, one more per second); errors use the documented
``{"error": {"code", "message", "details"}}`` envelope with the statuses of the current
specification (see :mod:`smart_sim.hetzner.state` for the rules and their sources); lists
carry ``meta.pagination`` and the ``Link`` header ("Responses contain a Link header with
pagination information", Pagination in the specification).

The control API under ``/_sim`` (no token, no rate limit, no faults) is the shared one
of :func:`smart_sim.faults.add_control_routes` (faults here also take Hetzner error codes,
``{"kind": "error", "code": "placement_error"}``, and ``{"kind": "action_error", "code":
"action_failed", "message": "Action failed"}`` for actions that end in ``error``) plus:

- ``GET /_sim/servers``: every server with its loopback address, status, SSH keys,
  ``user_data`` and, when the hooks are a
  :class:`~smart_sim.hetzner.hooks.HostStatusSource`, its simulated host's state.
- ``POST /_sim/server_types/{name}/stock`` ``{"available": bool, "location"?: name}``:
  a type runs out of stock (or is back) in one location or all of them; creating it
  there is then ``resource_unavailable`` and ``locations[].available`` is false.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from smart_sim.faults import (
    COMMON_KINDS,
    FAILING_ACTIONS,
    ErrorCode,
    Fault,
    FaultInjector,
    FaultKind,
    Handler,
    add_control_routes,
    fault_middleware,
    read_control_body,
)
from smart_sim.hetzner import schema
from smart_sim.hetzner.catalog import IMAGES, LOCATIONS, SERVER_TYPES
from smart_sim.hetzner.hooks import HostStatusSource, ServerHooks, ServerInfo
from smart_sim.hetzner.labels import LabelError, parse_selector
from smart_sim.hetzner.state import (
    ERROR_MESSAGES,
    ERROR_STATUS,
    Action,
    FirewallTarget,
    HcloudError,
    HetznerState,
    Ref,
    invalid_input,
    not_found,
    parse_rules,
)
from smart_sim.ratelimit import SimClock, TokenBucket

__all__ = [
    "CONTEXT",
    "HetznerConfig",
    "HetznerContext",
    "Project",
    "ProjectConfig",
    "create_app",
]

log = logging.getLogger(__name__)

JSON = dict[str, object]


@dataclass(frozen=True)
class HetznerConfig:
    """How a Hetzner simulator behaves; the defaults are the real API's."""

    time_scale: float = 1.0
    """Simulated seconds per real second (budget refill and action progress)."""
    rate_limit: int = 3600
    """Size of the request budget."""
    refill_per_second: float = 1.0
    """Requests added back to the budget per simulated second."""
    action_seconds: Mapping[str, float] = field(default_factory=dict)
    """Per-command overrides of how long actions run (simulated seconds)."""
    ipv4_network: str = "127.10.0.0/16"
    """Where servers' addresses come from: inside 127.0.0.0/8, or inside 198.18.0.0/16 for
    booted servers (the pool their provider network gives, ``smart_sim.boot``)."""
    token: str | None = None
    """The only accepted API token; None accepts any non-empty token."""
    server_quota: int | None = None
    """The most servers the project may hold (Hetzner's per-project limit); None: no
    limit but the address pool."""
    projects: tuple[ProjectConfig, ...] = ()
    """More projects, each reached with its own token, with its own servers, firewalls,
    keys, request budget and server quota (``--project``)."""
    fault_seed: int = 0
    """Seed for probabilistic faults."""


@dataclass(frozen=True)
class ProjectConfig:
    """Another Hetzner Cloud project in the same simulator: everything in a project is
    its own (the API acts inside one project, the token's), and so is its request budget
    ("The default limit is 3600 requests per hour and per Project", Rate Limiting in the
    specification) and its server limit."""

    token: str
    rate_limit: int = 3600
    refill_per_second: float = 1.0
    server_quota: int | None = None

    @classmethod
    def parse(cls, text: str) -> ProjectConfig:
        """``TOKEN[:QUOTA[:RATE_LIMIT]]`` (the command line's ``--project``)."""
        token, *rest = text.split(":")
        if not token:
            raise ValueError(f"--project {text!r}: the token is empty")
        quota = int(rest[0]) if rest and rest[0] else None
        limit = int(rest[1]) if len(rest) > 1 and rest[1] else 3600
        return cls(token, rate_limit=limit, refill_per_second=limit / 3600, server_quota=quota)


@dataclass
class HetznerContext:
    """Everything a running Hetzner simulator holds."""

    config: HetznerConfig
    clock: SimClock
    state: HetznerState
    limiter: TokenBucket
    faults: FaultInjector
    hooks: ServerHooks | None
    projects: dict[str, Project] = field(default_factory=dict)
    """The further projects by token (``HetznerConfig.projects``)."""


@dataclass
class Project:
    """One further project: its objects and its request budget."""

    state: HetznerState
    limiter: TokenBucket


CONTEXT = web.AppKey("smart_sim.hetzner", HetznerContext)
_PROJECT = web.RequestKey("smart_sim.hetzner.project", Project)
"""The request's project (set by ``_edge`` for a further project's token)."""


def _state(request: web.Request) -> HetznerState:
    """The objects of the project the request's token belongs to."""
    project: Project | None = request.get(_PROJECT)
    return request.app[CONTEXT].state if project is None else project.state


routes = web.RouteTableDef()


# -- envelope, authentication, rate limit ----------------------------------------------


def _error_response(error: HcloudError) -> web.Response:
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return web.json_response(body, status=error.status)


def _error_status(code: ErrorCode) -> int | None:
    return ERROR_STATUS.get(code) if isinstance(code, str) else None


def _injected_error(fault: Fault) -> web.StreamResponse:
    status = fault.status
    code = fault.code if isinstance(fault.code, str) else None
    if code is None and status == 502:
        # The real 502 comes from the load balancer in front of the API, as HTML.
        return web.Response(
            status=502, text="<html>502 Bad Gateway</html>", content_type="text/html"
        )
    if code is None:
        by_status = {500: "server_error", 503: "unavailable", 504: "timeout"}
        code = by_status.get(status) or next(
            (c for c, s in ERROR_STATUS.items() if s == status), "server_error"
        )
    message, details = ERROR_MESSAGES.get(code, (code.replace("_", " "), None))
    error = HcloudError(
        code,
        fault.message or message,
        fault.details if fault.details is not None else details,
        status=status,
    )
    return _error_response(error)


def _rate_limited(limit: int) -> HcloudError:
    return HcloudError("rate_limit_exceeded", f"limit of {limit} requests per hour reached")


def _authenticate(request: web.Request, token: str | None) -> None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not given or (token is not None and given != token):
        raise HcloudError("unauthorized", "unable to authenticate")


@web.middleware
async def _failing_actions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Make the actions of a request an ``action_error`` fault chose end in ``error``."""
    fault = request.get(FAILING_ACTIONS)
    if fault is None:
        return await handler(request)
    state = _state(request)
    # The specification's example of a failed action.
    state.fail_actions = (str(fault.code), fault.message or "Action failed")
    try:
        return await handler(request)
    finally:
        state.fail_actions = None


@web.middleware
async def _edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, spend the budget, and put every failure in the error envelope."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    response: web.StreamResponse
    _, _, given = request.headers.get("Authorization", "").partition(" ")
    project = ctx.projects.get(given)
    limiter = ctx.limiter if project is None else project.limiter
    try:
        if project is None:
            _authenticate(request, ctx.config.token)
        else:
            request[_PROJECT] = project
        if not limiter.try_acquire():
            raise _rate_limited(limiter.limit)
        response = await handler(request)
    except HcloudError as exc:
        response = _error_response(exc)
    except web.HTTPException as exc:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status, "invalid_input")
        error = HcloudError(
            code, f"{request.method} {request.path}: {exc.reason}", status=exc.status
        )
        response = _error_response(error)
    status = limiter.status()
    response.headers["RateLimit-Limit"] = str(status.limit)
    response.headers["RateLimit-Remaining"] = str(status.remaining)
    reset = ctx.clock.wall_seconds(ctx.clock.now() + status.reset_in)
    response.headers["RateLimit-Reset"] = str(math.ceil(reset))
    response.headers["X-Correlation-Id"] = uuid.uuid4().hex[:16]
    return response


# -- request parsing -------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        raise HcloudError("json_error", "invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise HcloudError("json_error", "the request body must be a JSON object")
    return body


def _str(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise invalid_input(key, "is required and must be a string")
    return value


def _optional_str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_input(key, "must be a string")
    return value


def _ref(value: object, key: str) -> Ref:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid_input(key, "must be an ID or a name")
    return value


def _bool(body: Mapping[str, object], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_input(key, "must be a boolean")
    return value


def _list(body: Mapping[str, object], key: str) -> list[object]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_input(key, "must be a list")
    return value


def _path_id(request: web.Request, key: str = "id") -> int:
    return int(request.match_info[key])


def _query_int(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_input(key, "must be an integer") from None
    if value < 1:
        raise invalid_input(key, "must be at least 1")
    return value


def _query_ids(request: web.Request) -> list[int]:
    try:
        return [int(v) for v in request.query.getall("id", [])]
    except ValueError:
        raise invalid_input("id", "must be integers") from None


def _targets(values: Sequence[object], key: str) -> list[FirewallTarget]:
    targets = []
    for raw in values:
        if not isinstance(raw, dict):
            raise invalid_input(key, "each resource must be an object")
        kind = raw.get("type")
        server = raw.get("server")
        selector = raw.get("label_selector")
        if kind == "server" and isinstance(server, dict) and isinstance(server.get("id"), int):
            targets.append(FirewallTarget(server_id=server["id"]))
        elif (
            kind == "label_selector"
            and isinstance(selector, dict)
            and isinstance(selector.get("selector"), str)
        ):
            targets.append(FirewallTarget(selector=selector["selector"]))
        else:
            raise invalid_input(
                key,
                'resources are {"type": "server", "server": {"id": N}} or '
                '{"type": "label_selector", "label_selector": {"selector": "..."}}',
            )
    return targets


# -- listing ---------------------------------------------------------------------------


def _sort_key(value: object) -> tuple[int, float, str]:
    if isinstance(value, int | float):
        return (0, value, "")
    return (1, 0, str(value))


def _sorted(request: web.Request, items: list[JSON], allowed: Sequence[str]) -> list[JSON]:
    """Apply the ``sort`` query (``field``, ``field:asc``, ``field:desc``; repeatable)."""
    result = list(items)
    for spec in reversed(request.query.getall("sort", [])):
        key, _, direction = spec.partition(":")
        if key not in allowed or direction not in ("", "asc", "desc"):
            options = ", ".join(f"{k}[:asc|:desc]" for k in allowed)
            raise invalid_input("sort", f"unknown sort {spec!r}; allowed: {options}")
        present = [i for i in result if i.get(key) is not None]
        absent = [i for i in result if i.get(key) is None]
        present.sort(key=lambda i: _sort_key(i[key]), reverse=direction == "desc")
        result = present + absent
    return result


SERVER = "_server"
"""The server a sort key stands for (``list_servers``)."""


def _page(
    request: web.Request,
    plural: str,
    items: Sequence[Any],
    render: Callable[[Any], JSON] | None = None,
) -> web.Response:
    """A list response with ``meta.pagination`` (25 per page by default, at most 50);
    ``render`` makes the JSON of each item on the page."""
    page = _query_int(request, "page", 1)
    per_page = min(_query_int(request, "per_page", 25), 50)
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    if render is not None:
        chunk = [render(item) for item in chunk]
    links = [(page - 1, "prev")] if page > 1 else []
    links += [(page + 1, "next")] if page < last else []
    links += [(last, "last")] if last > 1 else []
    header = ", ".join(
        f'<{request.url.update_query(page=str(number), per_page=str(per_page))}>; rel="{rel}"'
        for number, rel in links
    )
    pagination = {
        "page": page,
        "per_page": per_page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < last else None,
        "last_page": last,
        "total_entries": total,
    }
    response = web.json_response({plural: chunk, "meta": {"pagination": pagination}})
    if header:
        response.headers["Link"] = header
    return response


def _actions_page(request: web.Request, actions: list[Action]) -> web.Response:
    ctx = request.app[CONTEXT]
    statuses = request.query.getall("status", [])
    rendered = [schema.action_json(ctx.clock, a) for a in actions]
    rendered = [a for a in rendered if not statuses or a["status"] in statuses]
    allowed = ("id", "command", "status", "started", "finished")
    return _page(request, "actions", _sorted(request, rendered, allowed))


def _action(request: web.Request, action: Action) -> web.Response:
    return web.json_response({"action": schema.action_json(request.app[CONTEXT].clock, action)})


def _actions(request: web.Request, actions: list[Action], status: int = 201) -> web.Response:
    clock = request.app[CONTEXT].clock
    return web.json_response(
        {"actions": [schema.action_json(clock, a) for a in actions]}, status=status
    )


# -- hooks -----------------------------------------------------------------------------


async def _notify(
    ctx: HetznerContext, event: Literal["created", "deleted"], server: ServerInfo
) -> None:
    if ctx.hooks is None:
        return
    hook = ctx.hooks.on_server_created if event == "created" else ctx.hooks.on_server_deleted
    try:
        await hook(server)
    except Exception:
        log.exception("the server-%s hook failed for server %s (%s)", event, server.id, server.name)


# -- servers ---------------------------------------------------------------------------


@routes.get("/v1/servers")
async def list_servers(request: web.Request) -> web.Response:
    servers = _state(request).find_servers(
        name=request.query.get("name"),
        label_selector=request.query.get("label_selector"),
        statuses=request.query.getall("status", []),
    )
    state = _state(request)
    # Sorted by the fields the API sorts on, then only the page asked for is rendered:
    # rendering every server (with its firewalls) for each page of a listing made a
    # project of 2,000 servers cost the simulator a second a page.
    keyed = [
        {"id": s.id, "name": s.name, "created": schema.time_json(s.created), SERVER: s}
        for s in servers
    ]
    ordered = [k[SERVER] for k in _sorted(request, keyed, ("id", "name", "created"))]
    return _page(request, "servers", ordered, lambda s: schema.server_json(state, s))


@routes.post("/v1/servers")
async def create_server(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await _body(request)
    if "datacenter" in body:
        raise invalid_input("datacenter", "the datacenter property was removed; use location")
    for unsupported in ("volumes", "networks"):
        if _list(body, unsupported):
            raise invalid_input(unsupported, f"the simulator has no {unsupported}")
    if body.get("placement_group") is not None:
        raise invalid_input("placement_group", "the simulator has no placement groups")
    firewall_ids = []
    for entry in _list(body, "firewalls"):
        firewall_id = entry.get("firewall") if isinstance(entry, dict) else None
        if isinstance(firewall_id, bool) or not isinstance(firewall_id, int):
            raise invalid_input("firewalls", 'entries must be {"firewall": <ID>}')
        firewall_ids.append(firewall_id)
    public_net = body.get("public_net") or {}
    if not isinstance(public_net, dict):
        raise invalid_input("public_net", "must be an object")
    if public_net.get("ipv4") is not None or public_net.get("ipv6") is not None:
        raise invalid_input("public_net", "the simulator assigns primary IPs itself")
    location = body.get("location")
    server, action, next_actions, password = _state(request).create_server(
        name=_str(body, "name"),
        server_type=_ref(body.get("server_type"), "server_type"),
        image=_ref(body.get("image"), "image"),
        location=None if location is None else _ref(location, "location"),
        ssh_keys=[_ref(k, "ssh_keys") for k in _list(body, "ssh_keys")],
        firewall_ids=firewall_ids,
        user_data=_optional_str(body, "user_data"),
        labels=body.get("labels"),
        start_after_create=_bool(body, "start_after_create", True),
        enable_ipv4=_bool(public_net, "enable_ipv4", True),
        enable_ipv6=_bool(public_net, "enable_ipv6", True),
    )
    if _state(request) is ctx.state:  # only the main project's servers boot
        await _notify(ctx, "created", server.info())
    return web.json_response(
        {
            "server": schema.server_json(_state(request), server),
            "action": schema.action_json(ctx.clock, action),
            "next_actions": [schema.action_json(ctx.clock, a) for a in next_actions],
            "root_password": password,
        },
        status=201,
    )


@routes.get(r"/v1/servers/{id:\d+}")
async def get_server(request: web.Request) -> web.Response:
    server = _state(request).get_server(_path_id(request))
    return web.json_response({"server": schema.server_json(_state(request), server)})


@routes.put(r"/v1/servers/{id:\d+}")
async def update_server(request: web.Request) -> web.Response:
    body = await _body(request)
    server = _state(request).update_server(
        _path_id(request), name=_optional_str(body, "name"), labels=body.get("labels")
    )
    return web.json_response({"server": schema.server_json(_state(request), server)})


@routes.delete(r"/v1/servers/{id:\d+}")
async def delete_server(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    server, action = _state(request).delete_server(_path_id(request))
    if _state(request) is ctx.state:
        await _notify(ctx, "deleted", server.info())
    return _action(request, action)


@routes.post(r"/v1/servers/{id:\d+}/actions/{op:poweron|poweroff|shutdown|reboot|reset}")
async def power_server(request: web.Request) -> web.Response:
    action = _state(request).power(_path_id(request), request.match_info["op"])
    response = _action(request, action)
    response.set_status(201)
    return response


@routes.get(r"/v1/servers/{id:\d+}/actions")
async def list_server_actions(request: web.Request) -> web.Response:
    state = _state(request)
    server_id = _path_id(request)
    state.get_server(server_id)
    return _actions_page(request, state.find_actions(resource_type="server", resource_id=server_id))


@routes.get(r"/v1/servers/{id:\d+}/actions/{action_id:\d+}")
async def get_server_action(request: web.Request) -> web.Response:
    state = _state(request)
    action = state.get_action(_path_id(request, "action_id"))
    if not action.involves("server", _path_id(request)):
        raise not_found("action", action.id)
    return _action(request, action)


# -- actions ---------------------------------------------------------------------------


@routes.get("/v1/actions")
async def list_actions(request: web.Request) -> web.Response:
    ids = _query_ids(request)
    if not ids:
        raise invalid_input("id", "list actions by ID, e.g. /actions?id=1&id=2")
    return _actions_page(request, _state(request).find_actions(ids=ids))


@routes.get(r"/v1/actions/{id:\d+}")
async def get_action(request: web.Request) -> web.Response:
    return _action(request, _state(request).get_action(_path_id(request)))


def _resource_action_routes(resource: str, resource_type: str) -> None:
    async def list_resource_actions(request: web.Request) -> web.Response:
        ids = _query_ids(request) or None
        found = _state(request).find_actions(ids=ids, resource_type=resource_type)
        return _actions_page(request, found)

    async def get_resource_action(request: web.Request) -> web.Response:
        state = _state(request)
        return _action(request, state.get_action(_path_id(request), resource_type))

    routes.get(f"/v1/{resource}/actions")(list_resource_actions)
    routes.get(rf"/v1/{resource}/actions/{{id:\d+}}")(get_resource_action)


_resource_action_routes("servers", "server")
_resource_action_routes("firewalls", "firewall")


# -- SSH keys --------------------------------------------------------------------------


@routes.get("/v1/ssh_keys")
async def list_ssh_keys(request: web.Request) -> web.Response:
    keys = _state(request).find_ssh_keys(
        name=request.query.get("name"),
        fingerprint=request.query.get("fingerprint"),
        label_selector=request.query.get("label_selector"),
    )
    rendered = [schema.ssh_key_json(k) for k in keys]
    return _page(request, "ssh_keys", _sorted(request, rendered, ("id", "name")))


@routes.post("/v1/ssh_keys")
async def create_ssh_key(request: web.Request) -> web.Response:
    body = await _body(request)
    key = _state(request).create_ssh_key(
        name=_str(body, "name"), public_key=_str(body, "public_key"), labels=body.get("labels")
    )
    return web.json_response({"ssh_key": schema.ssh_key_json(key)}, status=201)


@routes.get(r"/v1/ssh_keys/{id:\d+}")
async def get_ssh_key(request: web.Request) -> web.Response:
    key = _state(request).get_ssh_key(_path_id(request))
    return web.json_response({"ssh_key": schema.ssh_key_json(key)})


@routes.put(r"/v1/ssh_keys/{id:\d+}")
async def update_ssh_key(request: web.Request) -> web.Response:
    body = await _body(request)
    key = _state(request).update_ssh_key(
        _path_id(request), name=_optional_str(body, "name"), labels=body.get("labels")
    )
    return web.json_response({"ssh_key": schema.ssh_key_json(key)})


@routes.delete(r"/v1/ssh_keys/{id:\d+}")
async def delete_ssh_key(request: web.Request) -> web.Response:
    _state(request).delete_ssh_key(_path_id(request))
    return web.Response(status=204)


# -- firewalls -------------------------------------------------------------------------


@routes.get("/v1/firewalls")
async def list_firewalls(request: web.Request) -> web.Response:
    state = _state(request)
    firewalls = state.find_firewalls(
        name=request.query.get("name"), label_selector=request.query.get("label_selector")
    )
    rendered = [schema.firewall_json(state, f) for f in firewalls]
    return _page(request, "firewalls", _sorted(request, rendered, ("id", "name", "created")))


@routes.post("/v1/firewalls")
async def create_firewall(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await _body(request)
    firewall, actions = _state(request).create_firewall(
        name=_str(body, "name"),
        labels=body.get("labels"),
        rules=parse_rules(_list(body, "rules")),
        apply_to=_targets(_list(body, "apply_to"), "apply_to"),
    )
    return web.json_response(
        {
            "firewall": schema.firewall_json(_state(request), firewall),
            "actions": [schema.action_json(ctx.clock, a) for a in actions],
        },
        status=201,
    )


@routes.get(r"/v1/firewalls/{id:\d+}")
async def get_firewall(request: web.Request) -> web.Response:
    state = _state(request)
    firewall = state.get_firewall(_path_id(request))
    return web.json_response({"firewall": schema.firewall_json(state, firewall)})


@routes.put(r"/v1/firewalls/{id:\d+}")
async def update_firewall(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    firewall = state.update_firewall(
        _path_id(request), name=_optional_str(body, "name"), labels=body.get("labels")
    )
    return web.json_response({"firewall": schema.firewall_json(state, firewall)})


@routes.delete(r"/v1/firewalls/{id:\d+}")
async def delete_firewall(request: web.Request) -> web.Response:
    _state(request).delete_firewall(_path_id(request))
    return web.Response(status=204)


@routes.post(r"/v1/firewalls/{id:\d+}/actions/apply_to_resources")
async def apply_firewall(request: web.Request) -> web.Response:
    body = await _body(request)
    targets = _targets(_list(body, "apply_to"), "apply_to")
    return _actions(request, _state(request).apply_firewall(_path_id(request), targets))


@routes.post(r"/v1/firewalls/{id:\d+}/actions/remove_from_resources")
async def remove_firewall(request: web.Request) -> web.Response:
    body = await _body(request)
    targets = _targets(_list(body, "remove_from"), "remove_from")
    state = _state(request)
    return _actions(request, state.remove_firewall(_path_id(request), targets))


@routes.post(r"/v1/firewalls/{id:\d+}/actions/set_rules")
async def set_firewall_rules(request: web.Request) -> web.Response:
    rules = parse_rules(_list(await _body(request), "rules"))
    state = _state(request)
    return _actions(request, state.set_firewall_rules(_path_id(request), rules))


@routes.get(r"/v1/firewalls/{id:\d+}/actions")
async def list_firewall_actions(request: web.Request) -> web.Response:
    state = _state(request)
    firewall_id = _path_id(request)
    state.get_firewall(firewall_id)
    found = state.find_actions(resource_type="firewall", resource_id=firewall_id)
    return _actions_page(request, found)


# -- catalog ---------------------------------------------------------------------------


@routes.get("/v1/server_types")
async def list_server_types(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.query.get("name")
    found = [
        schema.server_type_json(state, t)
        for t in state.listed_server_types()
        if name in (None, t.name)
    ]
    return _page(request, "server_types", found)


@routes.get(r"/v1/server_types/{id:\d+}")
async def get_server_type(request: web.Request) -> web.Response:
    server_type_id = _path_id(request)
    found = next((t for t in SERVER_TYPES if t.id == server_type_id), None)
    if found is None:
        raise not_found("server_type", server_type_id)
    state = _state(request)
    return web.json_response({"server_type": schema.server_type_json(state, found)})


@routes.get("/v1/locations")
async def list_locations(request: web.Request) -> web.Response:
    name = request.query.get("name")
    found = [schema.location_json(loc) for loc in LOCATIONS if name in (None, loc.name)]
    return _page(request, "locations", found)


@routes.get(r"/v1/locations/{id:\d+}")
async def get_location(request: web.Request) -> web.Response:
    location_id = _path_id(request)
    found = next((loc for loc in LOCATIONS if loc.id == location_id), None)
    if found is None:
        raise not_found("location", location_id)
    return web.json_response({"location": schema.location_json(found)})


@routes.get("/v1/images")
async def list_images(request: web.Request) -> web.Response:
    name = request.query.get("name")
    architectures = request.query.getall("architecture", [])
    types = request.query.getall("type", [])
    selector = request.query.get("label_selector")
    try:
        matcher = parse_selector(selector) if selector else None
    except LabelError as exc:
        raise invalid_input("label_selector", str(exc)) from None
    found = [
        schema.image_json(i)
        for i in IMAGES
        if name in (None, i.name)
        and (not architectures or i.architecture in architectures)
        and (not types or "system" in types)
        and (matcher is None or matcher({}))
    ]
    return _page(request, "images", _sorted(request, found, ("id", "name", "created")))


@routes.get(r"/v1/images/{id:\d+}")
async def get_image(request: web.Request) -> web.Response:
    image_id = _path_id(request)
    found = next((i for i in IMAGES if i.id == image_id), None)
    if found is None:
        raise not_found("image", image_id)
    return web.json_response({"image": schema.image_json(found)})


@routes.get("/v1/pricing")
async def get_pricing(request: web.Request) -> web.Response:
    return web.json_response({"pricing": schema.pricing_json(_state(request))})


# -- control ---------------------------------------------------------------------------


@routes.get("/_sim/servers")
async def sim_servers(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    servers = _state(request).find_servers()
    hosts = ctx.hooks if isinstance(ctx.hooks, HostStatusSource) else None
    return web.json_response(
        {
            "servers": [
                {
                    "id": s.id,
                    "name": s.name,
                    "status": s.status,
                    "ipv4": s.ipv4,
                    "ipv6_network": s.ipv6_network,
                    "user_data": s.user_data,
                    "ssh_public_keys": [k.public_key for k in s.ssh_keys],
                    "labels": s.labels,
                    "server_type": s.server_type.name,
                    "image": s.image.name,
                    "location": s.location.name,
                    "host": None if hosts is None else hosts.host_status(s.id),
                }
                for s in servers
            ]
        }
    )


@routes.post("/_sim/server_types/{name}/stock")
async def sim_stock(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_control_body(request)
    available = body.get("available")
    location = body.get("location")
    found = next((t for t in SERVER_TYPES if t.name == request.match_info["name"]), None)
    if found is None or not isinstance(available, bool):
        return web.json_response(
            {"error": 'expected a known type and {"available": bool, "location"?: str}'},
            status=400,
        )
    if location is not None and location not in found.location_names:
        return web.json_response(
            {"error": f"{found.name} is offered in {', '.join(found.location_names)}"},
            status=400,
        )
    for name in [location] if isinstance(location, str) else found.location_names:
        if available:
            state.sold_out.discard((found.name, name))
        else:
            state.sold_out.add((found.name, name))
    return web.json_response({"server_type": schema.server_type_json(state, found)})


def create_app(
    config: HetznerConfig | None = None, *, hooks: ServerHooks | None = None
) -> web.Application:
    """A Hetzner Cloud simulator application; its parts are at ``app[CONTEXT]``."""
    config = config or HetznerConfig()
    clock = SimClock(config.time_scale)
    limiter = TokenBucket(
        clock, limit=config.rate_limit, refill_per_second=config.refill_per_second
    )
    faults = FaultInjector(
        seed=config.fault_seed,
        kinds=COMMON_KINDS | {FaultKind.ACTION_ERROR},
        error_status=_error_status,
    )
    state = HetznerState(
        clock,
        action_seconds=config.action_seconds,
        ipv4_network=config.ipv4_network,
        server_quota=config.server_quota,
    )
    context = HetznerContext(
        config=config,
        clock=clock,
        state=state,
        limiter=limiter,
        faults=faults,
        hooks=hooks,
        projects={
            project.token: Project(
                HetznerState(
                    clock,
                    action_seconds=config.action_seconds,
                    # Addresses unique across projects, as Hetzner's are.
                    ipv4_network=f"127.{11 + number}.0.0/16",
                    server_quota=project.server_quota,
                    ids_of=state,
                ),
                TokenBucket(
                    clock, limit=project.rate_limit, refill_per_second=project.refill_per_second
                ),
            )
            for number, project in enumerate(config.projects)
        },
    )
    injected = fault_middleware(
        faults,
        error_response=_injected_error,
        rate_limited_response=lambda: _error_response(_rate_limited(limiter.limit)),
    )
    app = web.Application(middlewares=[_edge, injected, _failing_actions])
    app[CONTEXT] = context
    app.router.add_routes(routes)
    add_control_routes(app, injector=faults, clock=clock, limiter=limiter)
    return app
