"""Cloudflare DNS, through the official ``cloudflare`` SDK (its async client).

The SDK's own retries are off (``max_retries=0``): temporary failures are raised as
``errors.TemporaryFailure`` with the delay the API asked for. Every HTTP request (each
page of a listing too) first takes one request from the process's Cloudflare budget,
which the ``Ratelimit`` header (remaining requests and seconds to the window's reset)
keeps true.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import cloudflare
import httpx
from cloudflare import AsyncCloudflare

from smart_operator.clients.budget import (
    ACCOUNT_CALLS,
    PROVIDER_CALLS,
    PriorityGate,
    RequestBudget,
)
from smart_operator.domains import zone_candidates
from smart_operator.errors import (
    Conflict,
    NotFound,
    PermanentFailure,
    RateLimited,
    TemporaryFailure,
    jittered,
)
from smart_operator.ports import RecordView, ZoneView

PROVIDER = "cloudflare"
IN_FLIGHT = 8
"""Most calls of one account at once, and its kept-alive connections. More wait their
turn here, older Domains' first (``budget.PRIORITY``). Queued inside httpcore's pool
instead (up to 1.0.9), every request finished rescans every queued one against every
connection (encode/httpcore#1035), and beyond httpx's 20 kept-alive connections each
one is closed and made again; together about 40 % of the operator's event loop in a
burst of 10,000 Domains (BENCHMARKS.md). Even below that, the pool asks every
connection whether its socket is readable each time a request comes or goes: 1.87 ms
of CPU per call at 16 in flight, 1.17 ms at 8 and at 4 (``python -m smart_sim.bench
calls``, BENCHMARKS.md). 8 at once is about 50 requests a second at a real round trip
of 150 ms, far above the 4 a second of the account's budget."""
T = TypeVar("T")
_RATELIMIT = re.compile(r"r=(\d+);\s*t=(\d+)")
_POLICY = re.compile(r"q=(\d+)")
INVALID_ZONE_ID = "7003"
"""Cloudflare's code for a zone id it does not know (sent with HTTP 400)."""
ZONE_EXISTS = "1061"
"""Cloudflare's code for adding a zone that already exists."""


def _record(record: Any) -> RecordView:
    return RecordView(
        id=str(record.id),
        type=str(record.type),
        name=str(record.name),
        content=str(record.content),
        comment=record.comment,
        tags=list(record.tags or []),
    )


def _zone(zone: Any) -> ZoneView:
    plan = zone.plan.legacy_id if zone.plan is not None and zone.plan.legacy_id else "free"
    return ZoneView(
        str(zone.id), str(zone.name), str(zone.status), list(zone.name_servers or []), plan
    )


def _codes(error: cloudflare.APIStatusError) -> list[str]:
    """The API's error codes (and their chains), as strings, from the error envelope."""
    body = error.body if isinstance(error.body, dict) else {}
    codes: list[str] = []
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            codes.append(str(item.get("code")))
            codes.extend(str(c.get("code")) for c in item.get("error_chain") or [])
    return codes


async def _every_item(first: Awaitable[Any]) -> list[Any]:
    """Every item of a paged listing, one request a page. The SDK's pages always say
    there is a next one (``V4PagePaginationArray.next_page_info``; cloudflare/
    cloudflare-python#2584), so iterating them costs one more request of the account's
    budget per listing, for an empty page. A page with fewer items than the page size
    the API reports (``result_info.per_page``) is the last; without that report the
    listing ends at an empty page, as the SDK's."""
    page = await first
    items = list(page.result)
    while page.result:
        info = page.result_info
        if info is not None and info.per_page is not None and len(page.result) < info.per_page:
            break
        page = await page.get_next_page()
        items += page.result
    return items


class Cloudflare:
    """The Cloudflare calls the operator makes."""

    def __init__(
        self,
        token: str,
        endpoint: str,
        account_id: str,
        budget: RequestBudget | None = None,
        timeout: float = 30.0,
        account: str = "default",
    ) -> None:
        """``account``: the provider account of the pool this Cloudflare account is in."""
        self.account_id = account_id
        self.account = account
        self.budget = budget or RequestBudget(
            PROVIDER, limit=1200, per_second=4.0, shape="window", account=account
        )
        # Every HTTP request pays its way, also the pages the SDK fetches by itself.
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT),
            event_hooks={"request": [self._spend], "response": [self._observe]},
        )
        self._in_flight = PriorityGate(IN_FLIGHT)
        self._client = AsyncCloudflare(
            api_token=token, base_url=endpoint, max_retries=0, http_client=self._http
        )

    async def close(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def _spend(self, request: httpx.Request) -> None:
        await self.budget.take()

    async def _observe(self, response: httpx.Response) -> None:
        found = _RATELIMIT.search(response.headers.get("Ratelimit", ""))
        if found is None:
            return
        policy = _POLICY.search(response.headers.get("Ratelimit-Policy", ""))
        self.budget.observe(
            int(found.group(1)), float(found.group(2)), int(policy.group(1)) if policy else None
        )

    async def _call(
        self, verb: str, call: Callable[[], Awaitable[T]], account_limit: bool = True
    ) -> T:
        """Make one call, mapping the SDK's errors onto ``smart_operator.errors``.
        ``account_limit``: a 429 is the account's rate limit (every request waits for
        its reset); False for calls with a pacing of their own (activation checks)."""
        outcome = "error"
        try:
            async with self._in_flight.slot():  # one call's pages come one after another
                result = await call()
            outcome = "ok"
            return result
        except cloudflare.RateLimitError as error:
            outcome = "429"
            retry = float(error.response.headers.get("Retry-After", "60"))
            if account_limit:
                self.budget.block(retry)
            codes = _codes(error)
            raise RateLimited(
                PROVIDER,
                f"{verb}: {error.message}",
                jittered(retry),
                codes[0] if codes else None,
            ) from error
        except cloudflare.NotFoundError as error:
            outcome = "404"
            raise NotFound(PROVIDER, f"{verb}: {error.message}") from error
        except cloudflare.ConflictError as error:
            outcome = "409"
            raise Conflict(PROVIDER, f"{verb}: {error.message}") from error
        except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as error:
            outcome = str(error.status_code)
            codes = _codes(error)
            raise PermanentFailure(
                PROVIDER,
                f"{verb}: {error.message} (check the Cloudflare API token)",
                codes[0] if codes else None,
            ) from error
        except cloudflare.BadRequestError as error:
            outcome = "400"
            codes = _codes(error)
            if INVALID_ZONE_ID in codes:  # the API answers an unknown zone id with 400
                raise NotFound(PROVIDER, f"{verb}: {error.message}", INVALID_ZONE_ID) from error
            raise PermanentFailure(
                PROVIDER, f"{verb}: {error.message}", ",".join(codes) or None
            ) from error
        except cloudflare.APIStatusError as error:
            outcome = str(error.status_code)
            raise TemporaryFailure(
                PROVIDER, f"{verb}: {error.status_code} {error.message}", jittered(5)
            ) from error
        except cloudflare.APIConnectionError as error:
            outcome = "connection"
            raise TemporaryFailure(PROVIDER, f"{verb}: {error}", jittered(5)) from error
        finally:
            PROVIDER_CALLS.labels(PROVIDER, verb, outcome).inc()
            ACCOUNT_CALLS.labels(self.account, PROVIDER).inc()

    # -- zones ---------------------------------------------------------------------------

    async def zone(self, name: str) -> ZoneView | None:
        async def call() -> list[Any]:
            page = await self._client.zones.list(name=name)
            return list(page.result)

        found = await self._call("list_zones", call)
        return _zone(found[0]) if found else None

    async def zones(self) -> list[ZoneView]:
        async def call() -> list[Any]:
            return await _every_item(self._client.zones.list(per_page=50))

        return [_zone(z) for z in await self._call("list_zones", call)]

    async def zone_for(self, domain: str) -> ZoneView | None:
        """The zone that holds ``domain``: the domain itself (an Enterprise subdomain
        zone) or its closest parent, up to its registrable domain (a zone above that, a
        public suffix, cannot exist)."""
        for candidate in zone_candidates(domain):
            zone = await self.zone(candidate)
            if zone is not None:
                return zone
        return None

    async def create_zone(self, name: str) -> ZoneView:
        """Add ``name`` (a registrable domain) to the account; one that exists is
        returned as it is."""

        async def call() -> Any:
            return await self._client.zones.create(account={"id": self.account_id}, name=name)

        try:
            return _zone(await self._call("create_zone", call))
        except (Conflict, PermanentFailure) as error:
            if isinstance(error, PermanentFailure) and ZONE_EXISTS not in (error.code or ""):
                raise
            existing = await self.zone(name)
            if existing is None:
                raise
            return existing

    async def check_activation(self, zone_id: str) -> None:
        """Ask Cloudflare to check the zone's nameservers soon (it answers at once; the
        zone turns active later). Allowed once an hour on Free zones, every 5 minutes on
        paid ones: a refusal is ``RateLimited`` with the wait, and does not hold back
        the account's other calls."""

        async def call() -> Any:
            return await self._client.zones.activation_check.trigger(zone_id=zone_id)

        await self._call("activation_check", call, account_limit=False)

    async def get_zone(self, zone_id: str) -> ZoneView:
        async def call() -> Any:
            return await self._client.zones.get(zone_id=zone_id)

        return _zone(await self._call("get_zone", call))

    # -- records -------------------------------------------------------------------------

    async def records(
        self,
        zone_id: str,
        *,
        name: str | None = None,
        tag: str | None = None,
        tag_present: str | None = None,
        comment_prefix: str | None = None,
    ) -> list[RecordView]:
        """Records of a zone, by exact name, exact tag (``name:value``), tag name, or the
        start of the comment."""
        filters: dict[str, Any] = {}
        if name is not None:
            filters["name"] = {"exact": name}
        if comment_prefix is not None:
            filters["comment"] = {"startswith": comment_prefix}
        if tag is not None:
            filters["tag"] = {"exact": tag}
        elif tag_present is not None:
            filters["tag"] = {"present": tag_present}

        async def call() -> list[Any]:
            return await _every_item(
                self._client.dns.records.list(zone_id=zone_id, per_page=100, **filters)
            )

        return [_record(r) for r in await self._call("list_records", call)]

    async def delete_record(self, zone_id: str, record_id: str) -> None:
        """Delete a record; one already gone counts as deleted."""

        async def call() -> Any:
            return await self._client.dns.records.delete(dns_record_id=record_id, zone_id=zone_id)

        try:
            await self._call("delete_record", call)
        except NotFound:
            return

    async def delete_zone(self, zone_id: str) -> None:
        """Delete a zone Smart Server created; one already gone counts as deleted."""

        async def call() -> Any:
            return await self._client.zones.delete(zone_id=zone_id)

        try:
            await self._call("delete_zone", call)
        except NotFound:
            return

    async def batch(
        self,
        zone_id: str,
        *,
        posts: list[dict[str, Any]],
        patches: list[dict[str, Any]],
        deletes: list[str],
    ) -> list[RecordView]:
        """Create, change and delete records in one request (all or nothing); returns
        the created and changed records."""

        async def call() -> Any:
            return await self._client.dns.records.batch(
                zone_id=zone_id,
                posts=posts,  # type: ignore[arg-type]
                patches=patches,  # type: ignore[arg-type]
                deletes=[{"id": record_id} for record_id in deletes],
            )

        result = await self._call("batch_records", call)
        return [_record(r) for r in [*(result.posts or []), *(result.patches or [])]]
