"""Simulated visitors for a server's nginx, with exact knowledge of what was sent.

``send_traffic(base_url, plan)`` plays ``plan.visitors`` distinct visitors against one
host (on loopback or a simulated server's network): each loads the entry page, learns
its variant from the page's conversion form (``/_smart/convert?v=<variant>``), sometimes
loads the stylesheet, converts (posts the form) with the variant's true rate, and
sometimes comes back later the same day
(and must see the same variant). Bots, ``HEAD`` requests and prefetches are mixed in;
none of them is a visitor. The returned ``Truth`` holds unique visitors and converting
visitors per variant per day: what an exact counter must report.

A visitor is an (address, user agent) pair. The generator names the visitor's address in
``X-Forwarded-For``, which the server's nginx trusts only from where the generator sends
(``SMART_AGENT_REAL_IP_FROM``: loopback by default; the provider network's gateway for a
booted server), as it would trust a proxy; addresses come from the benchmarking range
198.18.0.0/15, so they never belong to anyone. Failed requests are retried (the
same visitor on the same day counts once however often it asks); a request that still
fails is *uncertain* (nginx may or may not have logged it), and the truth says so.

This module only sends requests; it never reads the agent's state.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp

CONVERT_LINK = re.compile(rb"/_smart/convert\?v=([a-z0-9-]+)")
VISITOR_NETWORK = ipaddress.IPv4Network("198.18.0.0/16")  # visitors
OTHER_NETWORK = ipaddress.IPv4Network("198.19.0.0/16")  # bots, HEAD, prefetch
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
)
BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "Python/3.11 aiohttp/3.14",
    "facebookexternalhit/1.1",
    "",
)
ATTEMPTS = 3


@dataclass(frozen=True)
class TrafficPlan:
    """Who visits, and how they behave."""

    visitors: int
    conversion_rates: Mapping[str, float]  # true rate per variant (missing: 0)
    return_rate: float = 0.2  # share of visitors who come back the same day
    asset_rate: float = 0.3  # share of page views that also load the stylesheet
    bots: int = 0  # page loads by crawlers and scripts
    head_requests: int = 0  # HEAD requests with a browser's user agent
    prefetches: int = 0  # speculative loads (Sec-Purpose: prefetch)
    concurrency: int = 64
    seed: int = 1
    first_visitor: int = 0  # offset into the address range: runs with disjoint visitors
    host: str | None = None  # Host header (the customer domain)
    goal_url: str | None = None  # when set, every conversion must redirect there
    address_header: str = "X-Forwarded-For"  # CF-Connecting-IP: as Cloudflare's edge sends
    ca_file: str | None = None  # HTTPS: the root that signs the site's certificate
    server_name: str | None = None  # HTTPS: the name the certificate is checked for (SNI)


@dataclass
class Truth:
    """What was sent, exactly."""

    visitors: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    converted: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    returns: int = 0
    return_mismatches: list[str] = field(default_factory=list)
    bad_redirects: list[str] = field(default_factory=list)
    unknown_variant: int = 0  # pages that named no variant
    uncertain: int = 0  # requests that failed every attempt
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, tuple[int, int]]:
        """(visitors, conversions) per variant: unique per visitor and day."""
        names = set(self.visitors) | set(self.converted)
        return {
            name: (len(self.visitors.get(name, ())), len(self.converted.get(name, ())))
            for name in sorted(names)
        }

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def merge(self, other: Truth) -> Truth:
        """The truth of two runs together (sets union: a visitor counts once a day)."""
        merged = Truth()
        for mine, theirs, target in (
            (self.visitors, other.visitors, merged.visitors),
            (self.converted, other.converted, merged.converted),
        ):
            for name in set(mine) | set(theirs):
                target[name] = mine.get(name, set()) | theirs.get(name, set())
        merged.requests = self.requests + other.requests
        merged.returns = self.returns + other.returns
        merged.return_mismatches = self.return_mismatches + other.return_mismatches
        merged.bad_redirects = self.bad_redirects + other.bad_redirects
        merged.unknown_variant = self.unknown_variant + other.unknown_variant
        merged.uncertain = self.uncertain + other.uncertain
        merged.errors = self.errors + other.errors
        merged.seconds = self.seconds + other.seconds
        return merged


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


LOCAL_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("198.18.0.0/15"))
"""Where generated traffic may go: loopback, and the provider networks the simulated
servers boot on (198.18.0.0/15 is reserved for benchmarking, never routed outside)."""


def _check_local(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not any(address in network for network in LOCAL_NETWORKS):
        raise ValueError(
            f"traffic goes to loopback and the simulated servers' networks only, not {host!r}"
        )


class _Sender:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, plan: TrafficPlan):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.plan = plan
        self.truth = Truth()
        self.first_variant: dict[tuple[str, str], str] = {}
        self.pending_returns: list[tuple[str, str, bool]] = []

    async def request(
        self, kind: str, method: str, path: str, address: str, agent: str, **headers: str
    ) -> tuple[int, bytes, str | None] | None:
        """One request, retried on connection errors; None when every attempt failed."""
        sent = {self.plan.address_header: address, "User-Agent": agent, **headers}
        if self.plan.host:
            sent["Host"] = self.plan.host
        error = ""
        for _ in range(ATTEMPTS):
            try:
                async with self.session.request(
                    method,
                    self.base_url + path,
                    headers=sent,
                    allow_redirects=False,
                    server_hostname=self.plan.server_name,
                ) as response:
                    body = await response.read()
                    self.truth.requests[kind] += 1
                    return response.status, body, response.headers.get("Location")
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{kind} {path}: {type(exc).__name__}: {exc}"
        self.truth.requests[kind] += 1
        self.truth.uncertain += 1
        self.truth.errors.append(error)
        return None

    async def page(self, address: str, agent: str) -> str | None:
        """Load the entry page as a visitor; the variant it showed, if it named one."""
        reply = await self.request("page", "GET", "/", address, agent)
        if reply is None:
            return None
        status, body, _ = reply
        if status != 200:
            self.truth.errors.append(f"page answered {status}")
            return None
        match = CONVERT_LINK.search(body)
        if match is None:
            self.truth.unknown_variant += 1
            return None
        variant = match.group(1).decode()
        self.truth.visitors.setdefault(variant, set()).add((_today(), address, agent))
        return variant

    async def convert(self, address: str, agent: str, variant: str) -> None:
        # The page's button posts its form, from the page's own origin (what a browser
        # says in ``Sec-Fetch-Site``).
        reply = await self.request(
            "convert",
            "POST",
            f"/_smart/convert?v={variant}&via=cta",
            address,
            agent,
            **{"Sec-Fetch-Site": "same-origin"},
        )
        if reply is None:
            return
        status, _, location = reply
        if status != 303 or (self.plan.goal_url and location != self.plan.goal_url):
            self.truth.bad_redirects.append(f"{status} {location}")
            return
        self.truth.converted.setdefault(variant, set()).add((_today(), address, agent))

    async def visitor(self, index: int, rng: random.Random) -> None:
        address = str(VISITOR_NETWORK[self.plan.first_visitor + index + 1])
        agent = BROWSERS[index % len(BROWSERS)]
        variant = await self.page(address, agent)
        if variant is None:
            return
        if rng.random() < self.plan.asset_rate:
            await self.request("asset", "GET", "/assets/site.css", address, agent)
        returning = rng.random() < self.plan.return_rate
        converts = rng.random() < self.plan.conversion_rates.get(variant, 0.0)
        convert_later = returning and rng.random() < 0.5
        if converts and not convert_later:
            await self.convert(address, agent, variant)
        if returning:
            self.first_variant[(address, agent)] = variant
            self.pending_returns.append((address, agent, converts and convert_later))

    async def comeback(self, address: str, agent: str, converts: bool) -> None:
        variant = await self.page(address, agent)
        self.truth.returns += 1
        first = self.first_variant[(address, agent)]
        if variant != first:
            self.truth.return_mismatches.append(f"{address}: {first} then {variant}")
        if converts and variant is not None:
            await self.convert(address, agent, variant)

    async def noise(self, index: int) -> None:
        """Requests that must never count: bots, HEAD, prefetch."""
        plan = self.plan
        address = str(OTHER_NETWORK[index + 1])
        browser = BROWSERS[index % len(BROWSERS)]
        if index < plan.bots:
            bot = BOTS[index % len(BOTS)]
            await self.request("bot", "GET", "/", address, bot)
            if index % 3 == 0:  # a crawler following the call to action
                await self.request("bot", "GET", "/_smart/convert?v=x&via=cta", address, bot)
        elif index < plan.bots + plan.head_requests:
            await self.request("head", "HEAD", "/", address, browser)
        else:
            prefetch = {"Sec-Purpose": "prefetch"}
            await self.request("prefetch", "GET", "/", address, browser, **prefetch)


async def _run_bounded(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Run ``job(i)`` for i in range(count) with at most ``concurrency`` at once."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await job(index)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))


async def send_traffic(base_url: str, plan: TrafficPlan) -> Truth:
    """Play ``plan`` against ``base_url`` (a loopback address); the exact truth of it."""
    _check_local(base_url)
    if plan.first_visitor + plan.visitors >= VISITOR_NETWORK.num_addresses - 1:
        raise ValueError("not that many visitor addresses")
    rng = random.Random(plan.seed)  # noqa: S311 (simulation, not secrets)
    seeds = [rng.getrandbits(64) for _ in range(plan.visitors)]
    started = time.monotonic()
    tls = ssl.create_default_context(cafile=plan.ca_file) if plan.ca_file else None
    connector = aiohttp.TCPConnector(limit=plan.concurrency, ssl=tls if tls else True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sender = _Sender(session, base_url, plan)

        async def visit(index: int) -> None:
            await sender.visitor(index, random.Random(seeds[index]))  # noqa: S311

        await _run_bounded(plan.visitors, plan.concurrency, visit)
        noise = plan.bots + plan.head_requests + plan.prefetches
        await _run_bounded(noise, plan.concurrency, sender.noise)
        returns = list(sender.pending_returns)

        async def comeback(index: int) -> None:
            await sender.comeback(*returns[index])

        await _run_bounded(len(returns), plan.concurrency, comeback)
    sender.truth.seconds = time.monotonic() - started
    return sender.truth
