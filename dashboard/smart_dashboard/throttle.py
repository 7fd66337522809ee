"""How many sign-in attempts the dashboard takes: per client, and from everyone at once.

Each attempt costs a TokenReview on the API server and is a guess at a token, so both
are bounded by token buckets: a client may try ``per_client`` times, regaining one try
every ``window / per_client`` seconds; all clients together ``overall`` times a minute,
with the same burst. A refused attempt is not reviewed and says how long to wait.

A client is its address (``client_address``: the peer, or what a trusted reverse proxy
says in ``X-Forwarded-For``). The buckets are bounded: a full bucket is the same as no
bucket and is dropped first; past ``max_clients`` the least recently seen client is
forgotten (the overall bucket still holds).

Pure: a clock is passed in, nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smart_operator.buckets import TokenBucket

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Refusal:
    """An attempt that was not allowed: whose limit, and seconds until the next try."""

    scope: str  # "client" or "overall"
    retry_after: float

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class SignInThrottle:
    def __init__(
        self,
        per_client: int,
        window_seconds: float,
        overall_per_minute: int,
        *,
        clock: Callable[[], float],
        max_clients: int = 10_000,
    ) -> None:
        self.per_client = per_client
        self.client_rate = per_client / window_seconds
        self.clock = clock
        self.max_clients = max_clients
        self.overall = TokenBucket(overall_per_minute, overall_per_minute / 60.0, clock())
        self.clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def attempt(self, client: str) -> Refusal | None:
        """Take one try for ``client``; None when allowed, else why not and how long
        to wait. A refused attempt takes nothing."""
        now = self.clock()
        bucket = self.clients.get(client)
        if bucket is None:
            bucket = TokenBucket(self.per_client, self.client_rate, now)
            self._make_room(now)
            self.clients[client] = bucket
        self.clients.move_to_end(client)
        if wait := bucket.wait(now):
            return Refusal("client", wait)
        if wait := self.overall.wait(now):
            return Refusal("overall", wait)
        bucket.take(now)
        self.overall.take(now)
        return None

    def _make_room(self, now: float) -> None:
        if len(self.clients) < self.max_clients:
            return
        for name in [n for n, b in self.clients.items() if b.full(now)]:
            del self.clients[name]
        while len(self.clients) >= self.max_clients:
            self.clients.popitem(last=False)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address a request comes from: its peer, unless the peer is a trusted proxy;
    then the nearest address in ``X-Forwarded-For`` that is not a trusted proxy (the
    entries further left are whatever the client chose to send)."""
    chain = [peer or "unknown"]
    if forwarded_for:
        chain = [*(a.strip() for a in forwarded_for.split(",") if a.strip()), *chain]
    for address in reversed(chain):
        if not _is_trusted(address, trusted):
            return address
    return chain[0]


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
