"""The Cloudflare simulator's HTTP application (aiohttp), answering the ``cloudflare`` SDK.

The API lives under ``/client/v4`` (``AsyncCloudflare(base_url=...)``) and covers the
account list, token verification, zones (list with the name/status/account filters,
get, create, delete, activation check) and DNS records (list with the ``type``,
``name.*``, ``content.*``, ``comment.*``, ``tag.*``, ``proxied`` and ``search`` filters,
``match``/``tag_match``, ordering and pages; get, create, overwrite, patch, delete and
batch). Every response uses the ``{success, errors, messages, result, result_info}``
envelope and carries the ``Ratelimit`` and ``Ratelimit-Policy`` headers of a window of
1200 requests per five minutes; exceeding it locks every request out for five minutes
(429 with ``Retry-After``). Header times are real seconds. The contract rules (plans and
their limits, registrable zones, the activation lifecycle, error codes) and their sources
are listed in :mod:`smart_sim.cloudflare.state`. Authentication: no ``Authorization``
header is 9106 (400, cloudflare/cloudflare-python#2678); one that is not ``Bearer
<token>`` is 6003 with 6111 in its chain (400, jeessy2/ddns-go#916); a wrong token is
10000 "Authentication error" (403, hieunc229/mailflare#1).

The control API under ``/_sim`` (no token, no rate limit, no faults) is the shared one
of :func:`smart_sim.faults.add_control_routes` (faults here also take Cloudflare error
codes: ``{"kind": "error", "code": 81045}`` answers 400 "Record quota exceeded.") plus
zone controls:

- ``GET /_sim/zones``: every zone, with ``delegated``.
- ``POST /_sim/zones`` ``{"name", "status"?: "active", "delegated"?, "plan"?}``: a zone
  that already exists in the account (active by default; on the configured plan, Free
  unless ``--zone-plan`` says otherwise).
- ``POST /_sim/zones/{id or name}/delegate``: the owner pointed the domain at the
  assigned name servers; the zone activates at Cloudflare's next check (its own
  schedule, or one asked for through the API).
- ``POST /_sim/zones/{id or name}/activate``: active at once.
- ``POST /_sim/zones/{id or name}/move``: the domain no longer points at Cloudflare; an
  active zone becomes ``moved`` (a Free one is deleted 7 days later).
- ``PUT /_sim/zones/{id or name}/plan`` ``{"plan": "free"|"pro"|"business"|"enterprise"}``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web
from multidict import MultiMapping

from smart_sim.cloudflare.state import (
    ACTIVATION_CHECK_TOO_SOON,
    PROXIABLE_TYPES,
    CloudflareError,
    CloudflareState,
    DnsRecord,
    RecordFilter,
    Zone,
)
from smart_sim.faults import (
    ErrorCode,
    Fault,
    FaultInjector,
    Handler,
    add_control_routes,
    fault_middleware,
    read_control_body,
)
from smart_sim.ratelimit import SimClock, WindowLimiter

__all__ = [
    "CONTEXT",
    "Account",
    "AccountConfig",
    "CloudflareConfig",
    "CloudflareContext",
    "create_app",
]

JSON = dict[str, object]

BASE = "/client/v4"


@dataclass(frozen=True)
class CloudflareConfig:
    """How a Cloudflare simulator behaves; the defaults are the real API's."""

    time_scale: float = 1.0
    """Simulated seconds per real second (window, lock-out and timestamps)."""
    rate_limit: int = 1200
    """Requests allowed per window."""
    window_seconds: float = 300.0
    """Length of the rate-limit window (simulated seconds)."""
    lockout_seconds: float = 300.0
    """How long every request is refused after the limit was exceeded."""
    token: str | None = None
    """The only accepted API token; None accepts any non-empty token."""
    account_id: str = "5f3c1a9e0b7d4c2e8a6f1b3d5e7c9a0b"
    """The simulated account (zones are created in it)."""
    account_name: str = "Smart Server"
    delegate_new_zones: bool = False
    """Whether new zones count as delegated, so Cloudflare's first check activates them."""
    default_plan: str = "free"
    """The plan of new zones (API-created zones are on Free for real)."""
    accounts: tuple[AccountConfig, ...] = ()
    """More accounts, each reached with its own token (``--account``)."""
    fault_seed: int = 0
    """Seed for probabilistic faults."""


@dataclass(frozen=True)
class AccountConfig:
    """Another Cloudflare account with its own user's token: its own zones, and its own
    request budget ("The global rate limit for the Cloudflare API is 1,200 requests per
    five minutes per user", the API's rate-limits page: a budget follows the user, so a
    further account of the pool comes with a user, and a token, of its own)."""

    token: str
    account_id: str
    rate_limit: int = 1200

    @classmethod
    def parse(cls, text: str) -> AccountConfig:
        """``TOKEN:ACCOUNT_ID[:RATE_LIMIT]`` (the command line's ``--account``)."""
        token, _, rest = text.partition(":")
        account_id, _, limit = rest.partition(":")
        if not token or not account_id:
            raise ValueError(f"--account {text!r}: expected TOKEN:ACCOUNT_ID[:RATE_LIMIT]")
        return cls(token, account_id, int(limit) if limit else 1200)


@dataclass
class CloudflareContext:
    """Everything a running Cloudflare simulator holds."""

    config: CloudflareConfig
    clock: SimClock
    state: CloudflareState
    limiter: WindowLimiter
    faults: FaultInjector
    accounts: dict[str, Account] = field(default_factory=dict)
    """The further accounts by token (``CloudflareConfig.accounts``)."""


@dataclass
class Account:
    """One further account: its zones and its user's request budget."""

    state: CloudflareState
    limiter: WindowLimiter


CONTEXT = web.AppKey("smart_sim.cloudflare", CloudflareContext)
_ACCOUNT = web.RequestKey("smart_sim.cloudflare.account", Account)
"""The request's account (set by ``_edge`` for a further account's token)."""


def _state(request: web.Request) -> CloudflareState:
    """The zones of the account the request's token belongs to."""
    account: Account | None = request.get(_ACCOUNT)
    return request.app[CONTEXT].state if account is None else account.state


routes = web.RouteTableDef()


# -- envelope, authentication, rate limit ----------------------------------------------


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ok(result: object, *, status: int = 200, result_info: JSON | None = None) -> web.Response:
    body: JSON = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return web.json_response(body, status=status)


def _fail(error: CloudflareError) -> web.Response:
    body = {"success": False, "errors": error.to_json(), "messages": [], "result": None}
    return web.json_response(body, status=error.status)


def _rate_limited() -> CloudflareError:
    return CloudflareError(
        971, "Please wait and consider throttling your request speed", status=429
    )


ERRORS: dict[int, tuple[int, str]] = {
    971: (429, "Please wait and consider throttling your request speed"),
    1004: (400, "DNS Validation Error"),
    1049: (400, "example.com is not a registered domain"),
    1061: (400, "example.com already exists"),
    1099: (400, "We were unable to identify example.com as a registered domain."),
    1116: (400, "Please ensure you are providing the root domain and not any subdomains"),
    6003: (400, "Invalid request headers"),
    7000: (404, "No route for that URI"),
    7003: (400, "Could not route to /zones, perhaps your object identifier is invalid?"),
    9106: (400, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"),
    9109: (403, "Unauthorized to access requested resource"),
    10000: (403, "Authentication error"),
    10001: (500, "Service error"),
    81044: (404, "Record does not exist."),
    81045: (400, "Record quota exceeded."),
    81053: (400, "An A, AAAA, or CNAME record with that host already exists."),
    81054: (400, "A CNAME record with that host already exists."),
    81058: (400, "An identical record already exists."),
    ACTIVATION_CHECK_TOO_SOON: (429, "An activation check was requested too recently."),
}
"""Errors a fault may inject by code alone: their status and a message like the API's."""


def _error_status(code: ErrorCode) -> int | None:
    known = ERRORS.get(code) if isinstance(code, int) else None
    return known[0] if known else None


def _injected_error(fault: Fault) -> web.StreamResponse:
    if isinstance(fault.code, int):
        _, message = ERRORS.get(fault.code, (fault.status, f"Error {fault.code}"))
        return _fail(CloudflareError(fault.code, fault.message or message, status=fault.status))
    message = fault.message or f"Service error (injected fault: HTTP {fault.status})"
    return _fail(CloudflareError(10001, message, status=fault.status))


_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _authenticate(request: web.Request, token: str | None) -> None:
    header = request.headers.get("Authorization")
    if not header:
        raise CloudflareError(
            9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers", status=400
        )
    scheme, _, given = header.partition(" ")
    if scheme != "Bearer" or not _TOKEN.match(given):
        raise CloudflareError(
            6003,
            "Invalid request headers",
            status=400,
            chain=[(6111, "Invalid format for Authorization header")],
        )
    if token is not None and given != token:
        raise CloudflareError(10000, "Authentication error", status=403)


@web.middleware
async def _edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, count the request, and put every failure in the envelope."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    response: web.StreamResponse
    retry_after = None
    _, _, given = request.headers.get("Authorization", "").partition(" ")
    account = ctx.accounts.get(given)
    limiter = ctx.limiter if account is None else account.limiter
    try:
        if account is None:
            _authenticate(request, ctx.config.token)
        else:
            request[_ACCOUNT] = account
        if not limiter.try_acquire():
            raise _rate_limited()
        response = await handler(request)
    except CloudflareError as exc:
        response = _fail(exc)
        retry_after = exc.retry_after
    except web.HTTPException as exc:
        if exc.status == 404:
            response = _fail(CloudflareError(7000, "No route for that URI", status=404))
        else:
            message = f"Method {request.method} not available for that URI."
            response = _fail(CloudflareError(7001, message, status=exc.status))
    status = limiter.status()
    scale = ctx.clock.time_scale
    reset = math.ceil(status.reset_in / scale)
    response.headers["Ratelimit"] = f'"default";r={status.remaining};t={reset}'
    window = math.ceil(limiter.window / scale)
    response.headers["Ratelimit-Policy"] = f'"default";q={status.limit};w={window}'
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after / scale)))
    elif response.status == 429:
        response.headers["Retry-After"] = str(max(1, math.ceil(status.blocked_for / scale)))
    response.headers["CF-Ray"] = f"{uuid.uuid4().hex[:16]}-SIM"
    return response


# -- request parsing -------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        raise CloudflareError(6007, "Malformed JSON in request body") from None
    if not isinstance(body, dict):
        raise CloudflareError(6007, "The request body must be a JSON object")
    return body


def _objects(body: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CloudflareError(1004, f"{key} must be a list of objects")
    return value


def _record_id(entry: Mapping[str, object], key: str) -> str:
    record_id = entry.get("id")
    if not isinstance(record_id, str):
        raise CloudflareError(1004, f"every entry of {key} needs the record id")
    return record_id


def _page(
    request: web.Request, items: list[JSON], *, default_per_page: int, max_per_page: int
) -> web.Response:
    try:
        page = max(1, int(request.query.get("page", "1")))
        per_page = int(request.query.get("per_page", str(default_per_page)))
    except ValueError:
        raise CloudflareError(1004, "page and per_page must be integers") from None
    per_page = max(5, min(per_page, max_per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    return _ok(
        chunk,
        result_info={
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": max(1, math.ceil(len(items) / per_page)),
        },
    )


def _combine(filters: Sequence[Callable[[DnsRecord], bool]], mode: str) -> RecordFilter:
    if mode not in ("all", "any"):
        raise CloudflareError(1004, f"match must be 'all' or 'any', not {mode!r}")
    if not filters:
        return lambda _: True
    if mode == "any":
        return lambda record: any(f(record) for f in filters)
    return lambda record: all(f(record) for f in filters)


# -- serialisation ---------------------------------------------------------------------


def zone_json(zone: Zone) -> JSON:
    """A zone object."""
    return {
        "id": zone.id,
        "name": zone.name,
        "status": zone.status,
        "paused": False,
        "type": zone.type,
        "development_mode": 0,
        "name_servers": list(zone.name_servers),
        "original_name_servers": None,
        "original_registrar": None,
        "original_dnshost": None,
        "vanity_name_servers": [],
        "created_on": _time(zone.created_on),
        "modified_on": _time(zone.modified_on),
        "activated_on": _time(zone.activated_on) if zone.activated_on else None,
        "meta": {
            "step": 2,
            "custom_certificate_quota": 0,
            "page_rule_quota": zone.plan.page_rule_quota,
            "phishing_detected": False,
            "cdn_only": False,
            "dns_only": False,
            "foundation_dns": False,
        },
        "owner": {"id": None, "name": None, "type": "user"},
        "account": {"id": zone.account_id, "name": zone.account_name},
        "tenant": {"id": None, "name": None},
        "tenant_unit": {"id": None},
        "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:edit", "#zone:read"],
        "plan": zone.plan.to_json(),
    }


def record_json(record: DnsRecord) -> JSON:
    """A DNS record object."""
    body: JSON = {
        "id": record.id,
        "name": record.name,
        "type": record.type,
        "content": record.content,
        "proxiable": record.type in PROXIABLE_TYPES,
        "proxied": record.proxied,
        "ttl": record.ttl,
        "settings": {},
        "meta": {},
        "comment": record.comment,
        "tags": list(record.tags),
        "created_on": _time(record.created_on),
        "modified_on": _time(record.modified_on),
    }
    if record.priority is not None:
        body["priority"] = record.priority
    if record.comment_modified_on is not None:
        body["comment_modified_on"] = _time(record.comment_modified_on)
    if record.tags_modified_on is not None:
        body["tags_modified_on"] = _time(record.tags_modified_on)
    return body


def _account_json(state: CloudflareState) -> JSON:
    return {
        "id": state.account_id,
        "name": state.account_name,
        "type": "standard",
        "settings": {"enforce_twofactor": False, "abuse_contact_email": None},
        "created_on": "2024-01-01T00:00:00.000000Z",
    }


# -- accounts and token ----------------------------------------------------------------


@routes.get(f"{BASE}/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    return _page(request, [_account_json(_state(request))], default_per_page=20, max_per_page=50)


@routes.get(BASE + "/accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    state = _state(request)
    if request.match_info["account_id"] != state.account_id:
        raise CloudflareError(9109, "Unauthorized to access requested resource", status=403)
    return _ok(_account_json(state))


@routes.get(f"{BASE}/user/tokens/verify")
async def verify_token(_: web.Request) -> web.Response:
    return _ok({"id": "ed17574386854bf78a67040be0a770b0", "status": "active"})


# -- zones -----------------------------------------------------------------------------


def _name_matcher(spec: str) -> Callable[[str], bool]:
    """Cloudflare's ``name`` filter: an optional ``operator:`` prefix, then the value."""
    operator, _, value = spec.partition(":")
    operations: dict[str, Callable[[str, str], bool]] = {
        "equal": lambda a, b: a.lower() == b.lower(),
        "not_equal": lambda a, b: a.lower() != b.lower(),
        "starts_with": lambda a, b: a.lower().startswith(b.lower()),
        "ends_with": lambda a, b: a.lower().endswith(b.lower()),
        "contains": lambda a, b: b.lower() in a.lower(),
        "starts_with_case_sensitive": str.startswith,
        "ends_with_case_sensitive": str.endswith,
        "contains_case_sensitive": lambda a, b: b in a,
    }
    operation = operations.get(operator)
    if operation is None or not value:
        return lambda name: name.lower() == spec.lower()
    return lambda name: operation(name, value)


def _zone_filters(query: MultiMapping[str]) -> list[Callable[[Zone], bool]]:
    filters: list[Callable[[Zone], bool]] = []
    if "name" in query:
        matches_name = _name_matcher(query["name"])
        filters.append(lambda zone: matches_name(zone.name))
    if "account.name" in query:
        matches_account = _name_matcher(query["account.name"])
        filters.append(lambda zone: matches_account(zone.account_name))
    if "account.id" in query:
        account_id = query["account.id"]
        filters.append(lambda zone: zone.account_id == account_id)
    if "status" in query:
        status = query["status"]
        filters.append(lambda zone: zone.status == status)
    return filters


@routes.get(f"{BASE}/zones")
async def list_zones(request: web.Request) -> web.Response:
    state = _state(request)
    state.settle()
    filters = _zone_filters(request.query)
    mode = request.query.get("match", "all")
    if mode not in ("all", "any"):
        raise CloudflareError(1004, f"match must be 'all' or 'any', not {mode!r}")
    combine = any if mode == "any" and filters else all
    types = [t for value in request.query.getall("type", []) for t in value.split(",")]
    zones = [
        z
        for z in state.zones.values()
        if combine(f(z) for f in filters) and (not types or z.type in types)
    ]
    order = request.query.get("order")
    if order is not None:
        keys: dict[str, Callable[[Zone], str]] = {
            "name": lambda z: z.name,
            "status": lambda z: z.status,
            "account.id": lambda z: z.account_id,
            "account.name": lambda z: z.account_name,
            "plan.id": lambda z: "pro",
        }
        if order not in keys:
            raise CloudflareError(1004, f"order must be one of {', '.join(keys)}")
        zones.sort(key=keys[order], reverse=request.query.get("direction") == "desc")
    return _page(request, [zone_json(z) for z in zones], default_per_page=20, max_per_page=50)


@routes.post(f"{BASE}/zones")
async def create_zone(request: web.Request) -> web.Response:
    body = await _body(request)
    account = body.get("account")
    account_id = account.get("id") if isinstance(account, dict) else None
    if not isinstance(account_id, str):
        raise CloudflareError(1002, "account.id is required")
    if account_id != _state(request).account_id:
        raise CloudflareError(9109, "Unauthorized to access requested resource", status=403)
    if body.get("type", "full") != "full":
        raise CloudflareError(1004, "the simulator has full zones only")
    return _ok(zone_json(_state(request).add_zone(body.get("name"))))


@routes.get(BASE + "/zones/{zone_id}")
async def get_zone(request: web.Request) -> web.Response:
    zone = _state(request).get_zone(request.match_info["zone_id"])
    return _ok(zone_json(zone))


@routes.delete(BASE + "/zones/{zone_id}")
async def delete_zone(request: web.Request) -> web.Response:
    zone = _state(request).delete_zone(request.match_info["zone_id"])
    return _ok({"id": zone.id})


@routes.put(BASE + "/zones/{zone_id}/activation_check")
async def activation_check(request: web.Request) -> web.Response:
    zone = _state(request).activation_check(request.match_info["zone_id"])
    return _ok({"id": zone.id})


# -- DNS records -----------------------------------------------------------------------


def _text_filter(attribute: str, operation: str, value: str) -> RecordFilter:
    def text(record: DnsRecord) -> str | None:
        found = getattr(record, attribute)
        return found if isinstance(found, str) else None

    wanted = value.lower()
    operations: dict[str, Callable[[str | None], bool]] = {
        "exact": lambda t: t is not None and t.lower() == wanted,
        "contains": lambda t: t is not None and wanted in t.lower(),
        "startswith": lambda t: t is not None and t.lower().startswith(wanted),
        "endswith": lambda t: t is not None and t.lower().endswith(wanted),
    }
    if attribute == "comment":
        operations["present"] = lambda t: t is not None
        operations["absent"] = lambda t: t is None
    check = operations.get(operation)
    if check is None:
        raise CloudflareError(
            1004, f"unknown filter {attribute}.{operation}; use one of {', '.join(operations)}"
        )
    return lambda record: check(text(record))


def _tag_filter(operation: str, value: str) -> RecordFilter:
    name, has_value, wanted = (part.lower() for part in value.partition(":"))
    if not operation:
        operation = "exact" if has_value else "present"
    operations: dict[str, Callable[[str | None], bool]] = {
        "present": lambda v: v is not None,
        "absent": lambda v: v is None,
        "exact": lambda v: v is not None and v.lower() == wanted,
        "contains": lambda v: v is not None and wanted in v.lower(),
        "startswith": lambda v: v is not None and v.lower().startswith(wanted),
        "endswith": lambda v: v is not None and v.lower().endswith(wanted),
    }
    check = operations.get(operation)
    if check is None:
        raise CloudflareError(
            1004, f"unknown filter tag.{operation}; use one of {', '.join(operations)}"
        )
    return lambda record: check(record.tag_values().get(name))


def _search_filter(value: str) -> RecordFilter:
    wanted = value.lower()
    return lambda record: (
        any(wanted in text.lower() for text in (record.name, record.content, record.comment or ""))
        or any(wanted in tag.lower() for tag in record.tags)
    )


def _equals(attribute: str, wanted: object) -> RecordFilter:
    return lambda record: bool(getattr(record, attribute) == wanted)


def _record_filter(query: MultiMapping[str]) -> RecordFilter:
    general: list[RecordFilter] = []
    tags: list[RecordFilter] = []
    for key, value in query.items():
        attribute, _, operation = key.partition(".")
        if attribute == "type":
            general.append(_equals("type", value.upper()))
        elif attribute in ("name", "content", "comment"):
            general.append(_text_filter(attribute, operation or "exact", value))
        elif attribute == "tag":
            tags.append(_tag_filter(operation, value))
        elif attribute == "proxied":
            general.append(_equals("proxied", value.lower() == "true"))
        elif attribute == "search":
            general.append(_search_filter(value))
    if tags:
        general.append(_combine(tags, query.get("tag_match", "all")))
    return _combine(general, query.get("match", "all"))


def _order_key(value: object) -> tuple[int, float, str]:
    if isinstance(value, int | float):
        return (0, value, "")
    return (1, 0, str(value))


@routes.get(BASE + "/zones/{zone_id}/dns_records")
async def list_records(request: web.Request) -> web.Response:
    state = _state(request)
    records = state.find_records(request.match_info["zone_id"], _record_filter(request.query))
    order = request.query.get("order")
    if order is not None:
        if order not in ("type", "name", "content", "ttl", "proxied"):
            raise CloudflareError(1004, "order must be one of type, name, content, ttl, proxied")
        records.sort(
            key=lambda r: _order_key(getattr(r, order)),
            reverse=request.query.get("direction") == "desc",
        )
    return _page(
        request, [record_json(r) for r in records], default_per_page=100, max_per_page=5_000_000
    )


@routes.post(BASE + "/zones/{zone_id}/dns_records/batch")
async def batch_records(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    done = state.batch(
        request.match_info["zone_id"],
        deletes=[_record_id(d, "deletes") for d in _objects(body, "deletes")],
        patches=[(_record_id(p, "patches"), p) for p in _objects(body, "patches")],
        puts=[(_record_id(p, "puts"), p) for p in _objects(body, "puts")],
        posts=_objects(body, "posts"),
    )
    return _ok({key: [record_json(r) for r in records] for key, records in done.items()})


@routes.post(BASE + "/zones/{zone_id}/dns_records")
async def create_record(request: web.Request) -> web.Response:
    state = _state(request)
    record = state.create_record(request.match_info["zone_id"], await _body(request))
    return _ok(record_json(record))


@routes.get(BASE + "/zones/{zone_id}/dns_records/{record_id}")
async def get_record(request: web.Request) -> web.Response:
    record = _state(request).get_record(
        request.match_info["zone_id"], request.match_info["record_id"]
    )
    return _ok(record_json(record))


@routes.put(BASE + "/zones/{zone_id}/dns_records/{record_id}")
async def replace_record(request: web.Request) -> web.Response:
    record = _state(request).replace_record(
        request.match_info["zone_id"], request.match_info["record_id"], await _body(request)
    )
    return _ok(record_json(record))


@routes.patch(BASE + "/zones/{zone_id}/dns_records/{record_id}")
async def patch_record(request: web.Request) -> web.Response:
    record = _state(request).patch_record(
        request.match_info["zone_id"], request.match_info["record_id"], await _body(request)
    )
    return _ok(record_json(record))


@routes.delete(BASE + "/zones/{zone_id}/dns_records/{record_id}")
async def delete_record(request: web.Request) -> web.Response:
    record = _state(request).delete_record(
        request.match_info["zone_id"], request.match_info["record_id"]
    )
    return _ok({"id": record.id})


# -- control ---------------------------------------------------------------------------


def _control_error(error: CloudflareError) -> web.Response:
    return web.json_response({"error": error.message}, status=error.status)


@routes.get("/_sim/zones")
async def sim_zones(request: web.Request) -> web.Response:
    state = _state(request)
    state.settle()
    zones = state.zones.values()
    return web.json_response({"zones": [{**zone_json(z), "delegated": z.delegated} for z in zones]})


@routes.post("/_sim/zones")
async def sim_add_zone(request: web.Request) -> web.Response:
    body = await read_control_body(request)
    status = body.get("status", "active")
    delegated = body.get("delegated")
    if not isinstance(status, str) or not (delegated is None or isinstance(delegated, bool)):
        return web.json_response(
            {"error": 'expected {"name": str, "status"?: str, "delegated"?: bool, "plan"?: str}'},
            status=400,
        )
    state = _state(request)
    try:
        plan = state.plan(body["plan"]) if "plan" in body else None
        zone = state.add_zone(body.get("name"), status=status, delegated=delegated, plan=plan)
    except CloudflareError as exc:
        return _control_error(exc)
    return web.json_response({"zone": zone_json(zone)}, status=201)


@routes.post("/_sim/zones/{reference}/{change:activate|delegate|move}")
async def sim_change_zone(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        zone = state.zone_by_reference(request.match_info["reference"])
    except CloudflareError as exc:
        return _control_error(exc)
    change = request.match_info["change"]
    if change == "activate":
        state.activate(zone)
    elif change == "delegate":
        state.delegate(zone)
    else:
        state.move(zone)
    return web.json_response({"zone": {**zone_json(zone), "delegated": zone.delegated}})


@routes.put("/_sim/zones/{reference}/plan")
async def sim_zone_plan(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_control_body(request)
    try:
        zone = state.zone_by_reference(request.match_info["reference"])
        state.set_plan(zone, state.plan(body.get("plan")))
    except CloudflareError as exc:
        return _control_error(exc)
    return web.json_response({"zone": {**zone_json(zone), "delegated": zone.delegated}})


def create_app(config: CloudflareConfig | None = None) -> web.Application:
    """A Cloudflare simulator application; its parts are at ``app[CONTEXT]``."""
    config = config or CloudflareConfig()
    clock = SimClock(config.time_scale)
    limiter = WindowLimiter(
        clock,
        limit=config.rate_limit,
        window=config.window_seconds,
        lockout=config.lockout_seconds,
    )
    faults = FaultInjector(seed=config.fault_seed, error_status=_error_status)
    context = CloudflareContext(
        config=config,
        clock=clock,
        state=CloudflareState(
            clock,
            account_id=config.account_id,
            account_name=config.account_name,
            delegate_new_zones=config.delegate_new_zones,
            default_plan=config.default_plan,
        ),
        limiter=limiter,
        faults=faults,
        accounts={
            account.token: Account(
                CloudflareState(
                    clock,
                    account_id=account.account_id,
                    account_name=f"Smart Server {account.account_id[:8]}",
                    delegate_new_zones=config.delegate_new_zones,
                    default_plan=config.default_plan,
                ),
                WindowLimiter(
                    clock,
                    limit=account.rate_limit,
                    window=config.window_seconds,
                    lockout=config.lockout_seconds,
                ),
            )
            for account in config.accounts
        },
    )
    injected = fault_middleware(
        faults,
        error_response=_injected_error,
        rate_limited_response=lambda: _fail(_rate_limited()),
    )
    app = web.Application(middlewares=[_edge, injected])
    app[CONTEXT] = context
    app.router.add_routes(routes)
    add_control_routes(app, injector=faults, clock=clock, limiter=limiter)
    return app
