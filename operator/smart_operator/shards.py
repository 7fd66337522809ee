"""Which operator replica handles what: Customers, and everything in their namespaces,
are spread over ``shards`` groups of replicas by a hash of the namespace's name, and
each group agrees through a peering object of its own which of its replicas acts.

A Customer ``c`` and everything in ``customer-c`` fall in the same shard, so the passes
that read each other's objects (a Domain's and its Customer's) run in one process. The
assignment is a pure function of the name and the count: every replica computes the
same answer without asking anyone, and a changed count moves some Customers to another
shard (docs/operations.md, "Sharding").

Also, what kopf's peering status says about this replica: ``peering_active`` mirrors
kopf's own rule (``kopf._core.engines.peering.process_peering_event``) so the Domain
scheduler stops when kopf pauses this replica in favour of another.

Pure: no kopf, no SDK.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from smart_operator.models.common import GROUP

FINALIZER = f"{GROUP}/finalizer"


def shard_of(namespace: str, shards: int) -> int:
    """The shard of a namespace (a customer's: ``customer-<name>``), in ``[0, shards)``.
    SHA-256 rather than ``hash()``: the same in every process and every release."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(namespace.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def peering_name(base: str, shard: int, shards: int) -> str:
    """The peering object of one shard's replicas; a single shard keeps ``base``."""
    return base if shards <= 1 else f"{base}-shard-{shard}"


def finalizer(shard: int, shards: int) -> str:
    """The finalizer this shard's replicas put on what they handle. One per shard:
    kopf removes its finalizer from every object no handler of its process matches, so
    replicas of two shards sharing one would take it off each other's objects. When
    the count changes, a shard's replicas take theirs off the objects that left it."""
    return FINALIZER if shards <= 1 else f"{FINALIZER}-shard-{shard}"


def releasable(finalizers: list[str], own: str, deleting: bool) -> list[str]:
    """The platform's finalizers on an object of this shard that no running replica
    would remove: those of a shard that handled it under another count (or before
    sharding). Taken off once this shard's own is on the object (it now blocks the
    deletion until this shard has cleaned up), or, on an object being deleted, once
    this shard's own is off (its clean-up is done, or it never got to put its own on:
    then the sweep removes what the object left in the clouds)."""
    foreign = [name for name in finalizers if name.startswith(FINALIZER) and name != own]
    if not foreign or (own in finalizers) == deleting:
        return []
    return foreign


def identity() -> str:
    """This process's name in its peering object: the pod's (``POD_ID``, as kopf takes
    it), or one made of the host and the process id."""
    return os.environ.get("POD_ID") or f"smart-operator@{socket.gethostname()}/{os.getpid()}"


def peering_active(
    status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime
) -> bool:
    """Whether kopf lets this replica act, from its peering object's ``status`` (one
    entry per replica: priority, lifetime in seconds, lastseen). It pauses while a live
    peer has a higher priority, or the same one."""
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.fromisoformat(str(info["lastseen"]))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            theirs = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if seen + lifetime > now and theirs >= priority:
            return False
    return True
