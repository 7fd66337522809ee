"""Hetzner Cloud, through the official ``hcloud`` SDK.

The SDK is synchronous (requests): every call runs in a small thread pool, never on
the event loop. Its own retries, which sleep in the calling thread, are off: a
temporary failure is raised as ``errors.TemporaryFailure`` with the delay the API asked
for, and the caller decides (kopf retries the handler). Every call first takes one
request from the process's Hetzner budget, which the ``RateLimit-*`` headers keep true.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from hcloud import APIException, Client
from hcloud.firewalls import Firewall, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server
from hcloud.ssh_keys import SSHKey

from smart_operator.clients.budget import (
    ACCOUNT_CALLS,
    PROVIDER_CALLS,
    PriorityGate,
    RequestBudget,
)
from smart_operator.errors import (
    Conflict,
    ExternalError,
    NotFound,
    PermanentFailure,
    RateLimited,
    TemporaryFailure,
    jittered,
)
from smart_operator.ports import FirewallView, ServerTypeView, ServerView

PROVIDER = "hetzner"
CAPACITY_RETRY_SECONDS = 300.0
"""How soon a create refused for capacity (``resource_unavailable``, ``placement_error``)
is tried again."""
T = TypeVar("T")


def _firewall(firewall: Any) -> FirewallView:
    return FirewallView(
        _id(firewall.id), str(firewall.name), dict(firewall.labels or {}), firewall.created
    )


def _id(value: int | None) -> int:
    if value is None:
        raise TemporaryFailure(PROVIDER, "the API answered an object without an id")
    return int(value)


def _server(server: Any) -> ServerView:
    public = server.public_net
    ipv6 = None
    if public is not None and public.ipv6 is not None and public.ipv6.network:
        # The server owns a /64; its first address is ::1.
        ipv6 = public.ipv6.network.split("/")[0] + "1"
    return ServerView(
        id=int(server.id),
        name=str(server.name),
        status=str(server.status),
        ipv4=public.ipv4.ip if public is not None and public.ipv4 is not None else None,
        ipv6=ipv6,
        labels=dict(server.labels or {}),
        server_type=str(server.server_type.name) if server.server_type else "",
        created=server.created,
    )


def md5_fingerprint(public_key: str) -> str:
    """The fingerprint Hetzner shows for an SSH public key: MD5 of the key blob, as
    colon-separated hex (``GET /ssh_keys?fingerprint=`` filters by it)."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class Hetzner:
    """The Hetzner Cloud calls the operator makes."""

    def __init__(
        self,
        token: str,
        endpoint: str,
        budget: RequestBudget | None = None,
        threads: int = 8,
        timeout: float = 30.0,
        account: str = "default",
    ) -> None:
        """``account``: the provider account of the pool this project belongs to."""
        self.account = account
        self.budget = budget or RequestBudget(PROVIDER, limit=3600, per_second=1.0, account=account)
        self._client = Client(token=token, api_endpoint=endpoint, timeout=timeout)
        base = self._client._client
        # The SDK would retry 429s and timeouts with blocking sleeps in our threads;
        # retries are the operator's decision (kopf backoff), so turn them off.
        base._retry_max_retries = 0
        base._session.hooks["response"].append(self._observe)
        # Every HTTP request pays its way, also the pages the SDK fetches by itself:
        # the SDK's thread waits here until the budget allows one more.
        send = base._session.request

        def paced(*args: Any, **kwargs: Any) -> requests.Response:
            if self._loop is not None:
                asyncio.run_coroutine_threadsafe(self.budget.take(), self._loop).result()
            return send(*args, **kwargs)

        base._session.request = paced  # type: ignore[method-assign]
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="hcloud")
        # Calls wait for a thread here, older Domains' first (``budget.PRIORITY``), not
        # in the executor's queue, which is first come, first served.
        self._threads = PriorityGate(threads)
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client._client._session.close()

    # -- plumbing ------------------------------------------------------------------------

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        headers = response.headers
        try:
            limit = int(headers["RateLimit-Limit"])
            remaining = int(headers["RateLimit-Remaining"])
            reset_in = float(headers["RateLimit-Reset"]) - time.time()
        except (KeyError, ValueError):
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.budget.observe, remaining, reset_in, limit)

    async def _call(self, verb: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._loop = asyncio.get_running_loop()
        outcome = "error"
        try:
            async with self._threads.slot():
                result = await self._loop.run_in_executor(
                    self._executor, functools.partial(fn, *args, **kwargs)
                )
            outcome = "ok"
            return result
        except APIException as error:
            outcome = str(error.code)
            raise self._classify(error) from error
        except requests.RequestException as error:
            outcome = "connection"
            raise TemporaryFailure(
                PROVIDER, f"{verb}: {type(error).__name__}: {error}", jittered(5)
            ) from error
        finally:
            PROVIDER_CALLS.labels(PROVIDER, verb, outcome).inc()
            ACCOUNT_CALLS.labels(self.account, PROVIDER).inc()

    def _classify(self, error: APIException) -> ExternalError:
        """The error an API answer means (codes and statuses: the Hetzner Cloud API's
        error table, https://docs.hetzner.cloud/#errors)."""
        code, message = str(error.code), str(error.message)
        details = error.details if isinstance(error.details, dict) else {}
        if code == "rate_limit_exceeded":
            wait = max(1.0, self.budget.wait_time())
            self.budget.block(wait)
            return RateLimited(PROVIDER, f"rate limit reached: {message}", jittered(wait), code)
        if code == "not_found":
            return NotFound(PROVIDER, message, code)
        if code == "uniqueness_error":
            return Conflict(PROVIDER, message, code)
        if code == "invalid_input":
            fields = details.get("fields") or []
            detail = "; ".join(
                f"{f.get('name')}: {', '.join(f.get('messages', []))}" for f in fields
            )
            return PermanentFailure(PROVIDER, f"{message}{f' ({detail})' if detail else ''}", code)
        if code == "resource_limit_exceeded":
            limits = ", ".join(str(limit.get("name")) for limit in details.get("limits") or [])
            named = f" ({limits})" if limits else ""
            return PermanentFailure(PROVIDER, f"{message}{named}", code)
        if code in ("invalid_server_type", "protected", "maintenance_mode_not_allowed"):
            return PermanentFailure(PROVIDER, message, code)
        if code in ("forbidden", "unauthorized", "token_readonly"):
            return PermanentFailure(PROVIDER, f"{message} (check the Hetzner API token)", code)
        if code in ("resource_unavailable", "placement_error"):
            # No capacity for this type here now: it may come back, but not in seconds.
            return TemporaryFailure(PROVIDER, message, CAPACITY_RETRY_SECONDS, code)
        # locked, resource_in_use, conflict, server errors, timeouts: heal with time.
        return TemporaryFailure(PROVIDER, f"{code}: {message}", jittered(5), code)

    # -- servers -------------------------------------------------------------------------

    async def servers(self, labels: dict[str, str]) -> list[ServerView]:
        found = await self._call(
            "list_servers", self._client.servers.get_all, label_selector=selector(labels)
        )
        return [_server(s) for s in found]

    async def server(self, server_id: int) -> ServerView:
        return _server(await self._call("get_server", self._client.servers.get_by_id, server_id))

    async def server_by_name(self, name: str) -> ServerView | None:
        found = await self._call("get_server", self._client.servers.get_by_name, name)
        return _server(found) if found is not None else None

    async def create_server(
        self,
        *,
        name: str,
        server_type: str,
        image: str,
        location: str,
        user_data: str,
        labels: dict[str, str],
        ssh_key_ids: Iterable[int],
        firewall_ids: Iterable[int],
    ) -> tuple[ServerView, int | None]:
        """Create a server; return it and the id of the action that boots it."""
        response = await self._call(
            "create_server",
            self._client.servers.create,
            name=name,
            server_type=ServerType(name=server_type),
            image=Image(name=image),
            location=Location(name=location),
            user_data=user_data,
            labels=labels,
            ssh_keys=[SSHKey(id=i) for i in ssh_key_ids],
            firewalls=[Firewall(id=i) for i in firewall_ids],
        )
        action = response.action.id if response.action is not None else None
        return _server(response.server), action

    async def delete_server(self, server_id: int) -> None:
        """Delete a server; one that is already gone counts as deleted."""
        try:
            await self._call("delete_server", self._client.servers.delete, Server(id=server_id))
        except NotFound:
            return

    # -- actions -------------------------------------------------------------------------

    async def actions(self, ids: Iterable[int]) -> dict[int, str]:
        """The status (running, success, error) of several actions, in one request."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        reply = await self._call(
            "list_actions",
            self._client.request,
            "GET",
            "/actions",
            params={"id": wanted, "per_page": 50},
        )
        return {int(a["id"]): str(a["status"]) for a in reply.get("actions", [])}

    # -- firewalls -----------------------------------------------------------------------

    async def firewalls(self, labels: dict[str, str]) -> list[FirewallView]:
        found = await self._call(
            "list_firewalls", self._client.firewalls.get_all, label_selector=selector(labels)
        )
        return [_firewall(f) for f in found]

    async def firewall_by_name(self, name: str) -> FirewallView | None:
        found = await self._call("get_firewall", self._client.firewalls.get_by_name, name)
        return _firewall(found) if found is not None else None

    async def create_firewall(
        self, name: str, labels: dict[str, str], ssh_sources: list[str]
    ) -> FirewallView:
        """SSH only from the operator's addresses; HTTP and HTTPS from anywhere."""
        anywhere = ["0.0.0.0/0", "::/0"]
        rules = [
            FirewallRule(
                direction="in",
                protocol="tcp",
                port="22",
                source_ips=ssh_sources,
                description="SSH from the Smart Server operator",
            ),
            FirewallRule(
                direction="in", protocol="tcp", port="80", source_ips=anywhere, description="HTTP"
            ),
            FirewallRule(
                direction="in", protocol="tcp", port="443", source_ips=anywhere, description="HTTPS"
            ),
        ]
        response = await self._call(
            "create_firewall", self._client.firewalls.create, name=name, rules=rules, labels=labels
        )
        return _firewall(response.firewall)

    async def delete_firewall(self, firewall_id: int) -> None:
        try:
            await self._call(
                "delete_firewall", self._client.firewalls.delete, Firewall(id=firewall_id)
            )
        except NotFound:
            return

    # -- ssh keys and catalog ------------------------------------------------------------

    async def ensure_ssh_key(self, public_key: str, labels: dict[str, str]) -> int:
        """The id of this public key at Hetzner, registered if it is not there yet.

        Looked up by fingerprint, not by name: a rotated operator key is a new key (and
        Hetzner refuses a second key with the same fingerprint under another name)."""
        print_ = md5_fingerprint(public_key)

        async def lookup() -> int | None:
            found = await self._call(
                "get_ssh_key", self._client.ssh_keys.get_all, fingerprint=print_
            )
            return _id(found[0].id) if found else None

        known = await lookup()
        if known is not None:
            return known
        try:
            created = await self._call(
                "create_ssh_key",
                self._client.ssh_keys.create,
                name=f"smart-operator-{print_.replace(':', '')[:12]}",
                public_key=public_key,
                labels=labels,
            )
        except Conflict:  # registered meanwhile (another replica)
            known = await lookup()
            if known is None:
                raise
            return known
        return _id(created.id)

    async def delete_ssh_key(self, public_key: str, labels: dict[str, str]) -> bool:
        """Remove this public key from Hetzner if it is there with ``labels`` (only a key
        this installation registered); whether one was removed. Servers keep the keys
        they were made with: Hetzner uses a key object only to create a server."""
        found = await self._call(
            "get_ssh_key", self._client.ssh_keys.get_all, fingerprint=md5_fingerprint(public_key)
        )
        ours = [k for k in found if all((k.labels or {}).get(n) == v for n, v in labels.items())]
        for key in ours:
            try:
                await self._call("delete_ssh_key", self._client.ssh_keys.delete, SSHKey(id=key.id))
            except NotFound:
                continue
        return bool(ours)

    async def server_types(self) -> list[ServerTypeView]:
        """The catalogue: each type's prices, and where it can be ordered now (a type
        is deprecated per location, and stops being orderable there after its
        ``unavailable_after``; ``available`` is false while it is sold out)."""
        found = await self._call("list_server_types", self._client.server_types.get_all)
        now = datetime.now(UTC)
        views = []
        for server_type in found:
            prices = {
                str(p["location"]): float(p["price_monthly"]["gross"])
                for p in server_type.prices or []
            }
            places = server_type.locations
            if places is None:  # an API without per-location facts: priced means sold
                orderable = frozenset(prices)
            else:
                orderable = frozenset(
                    str(place.location.name)
                    for place in places
                    if place.available is not False
                    and (
                        place.deprecation is None
                        or place.deprecation.unavailable_after is None
                        or place.deprecation.unavailable_after > now
                    )
                )
            deprecated = server_type.deprecation is not None or any(
                place.deprecation is not None for place in places or []
            )
            views.append(ServerTypeView(str(server_type.name), prices, orderable, deprecated))
        return views
