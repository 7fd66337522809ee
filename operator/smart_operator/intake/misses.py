"""How many API calls reports for Experiments the intake does not know may cost.

The watch keeps every Experiment in the intake's cache, so a report that names one the
cache does not hold names an Experiment that does not exist, or one created a moment
ago whose watch event has not arrived yet (or the watch is reconnecting). The second is
rare but real, and must not be refused for good (an agent stops reporting a revision
the intake answered 403), so such a name is looked up with one GET. Without bounds, a
holder of any server's key could make the intake GET once per random name it sends.
The bounds:

- A name found missing is remembered for ``missing_seconds`` and answered 403 with no
  call; at most ``max_missing`` names are remembered (the oldest are forgotten first).
  A watch event that brings the Experiment forgets its name at once
  (``ExperimentCache.put``), so one created meanwhile is found without waiting.
- GETs are budgeted by token buckets, per Domain (the key's holder: ``per_domain_burst``
  at once, then ``per_domain_per_second``) and overall (``overall_burst``, then
  ``overall_per_second``). A miss beyond either budget costs no call: it is answered
  429 with ``Retry-After`` (``Throttled``), which an agent retries, so a real report is
  delayed, never lost.
- Concurrent lookups of one name share one GET (``ExperimentCache.lookup``).

So N distinct unknown names sent within T seconds cost at most
``per_domain_burst + per_domain_per_second * T`` GETs for one Domain's key, and at most
``overall_burst + overall_per_second * T`` whatever every key sends.

Pure: a clock is passed in, nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from smart_operator.buckets import TokenBucket


@dataclass(frozen=True)
class MissLimits:
    """The bounds on looking up names the cache does not hold (see the module)."""

    missing_seconds: float = 5.0
    max_missing: int = 10_000
    per_domain_burst: int = 5
    per_domain_per_second: float = 0.5
    overall_burst: int = 20
    overall_per_second: float = 10.0
    max_domains: int = 10_000


class Throttled(Exception):
    """A lookup refused by a budget: whose (``domain`` or ``overall``) and how long
    until one would be allowed."""

    def __init__(self, scope: str, retry_after: float) -> None:
        super().__init__(f"{scope} budget of lookups spent; retry in {retry_after:.1f} s")
        self.scope = scope
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(min(self.retry_after, 3600.0)))


Key = tuple[str, str]
"""Namespace and name of an Experiment."""


class MissBudget:
    """The names known to be missing, and the buckets that bound lookups."""

    def __init__(self, limits: MissLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._missing: OrderedDict[Key, float] = OrderedDict()
        self._domains: OrderedDict[str, TokenBucket] = OrderedDict()
        self._overall = TokenBucket(limits.overall_burst, limits.overall_per_second, clock())

    def __len__(self) -> int:
        return len(self._missing)

    def known_missing(self, key: Key) -> bool:
        """Whether ``key`` was found missing less than ``missing_seconds`` ago."""
        at = self._missing.get(key)
        if at is None:
            return False
        if at + self.limits.missing_seconds > self._clock():
            return True
        del self._missing[key]
        return False

    def missing(self, key: Key) -> None:
        """Remember that ``key`` does not exist (as of now)."""
        self._missing.pop(key, None)
        self._missing[key] = self._clock()
        while len(self._missing) > self.limits.max_missing:
            self._missing.popitem(last=False)

    def forget(self, key: Key) -> None:
        """``key`` exists after all (the watch brought it)."""
        self._missing.pop(key, None)

    def clear(self) -> None:
        self._missing.clear()

    def take(self, domain: str) -> None:
        """Spend one lookup for ``domain``, or raise ``Throttled`` (spending nothing)."""
        now = self._clock()
        bucket = self._domains.get(domain)
        if bucket is None:
            limits = self.limits
            bucket = TokenBucket(limits.per_domain_burst, limits.per_domain_per_second, now)
            self._make_room(now)
            self._domains[domain] = bucket
        self._domains.move_to_end(domain)
        if wait := bucket.wait(now):
            raise Throttled("domain", wait)
        if wait := self._overall.wait(now):
            raise Throttled("overall", wait)
        bucket.take(now)
        self._overall.take(now)

    def _make_room(self, now: float) -> None:
        """At most ``max_domains`` buckets: a full one is the same as none and goes
        first, then the least recently used."""
        if len(self._domains) < self.limits.max_domains:
            return
        for name in [n for n, b in self._domains.items() if b.full(now)]:
            del self._domains[name]
        while len(self._domains) >= self.limits.max_domains:
            self._domains.popitem(last=False)
