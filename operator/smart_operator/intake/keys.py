"""Which Domain a server's key belongs to: a cache of every Domain's
``status.intakeKeyHash``, fed by a watch of Domains cluster-wide.

A key is never stored, only its SHA-256; a request's key is hashed and looked up.
The cache also keeps each Domain's resourceVersion and ``status.agent``, which the
heartbeat writer starts from. No I/O here: the watch loop in ``app`` feeds ``apply``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from smart_operator.keys import hash_intake_key
from smart_operator.models.domain import AgentStatus

log = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, order=True)
class DomainRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DomainView:
    """What the intake knows of one Domain."""

    ref: DomainRef
    resource_version: str
    key_hash: str | None
    agent: AgentStatus | None


def domain_view(obj: dict[str, Any]) -> DomainView | None:
    """The intake's view of a Domain object; ``None`` if it lacks a name."""
    meta = obj.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace"):
        return None
    status = obj.get("status") or {}
    key_hash = status.get("intakeKeyHash")
    if not isinstance(key_hash, str) or not _HASH.match(key_hash):
        key_hash = None
    agent = None
    if isinstance(status.get("agent"), dict):
        try:
            agent = AgentStatus.model_validate(status["agent"])
        except ValidationError:
            log.warning("ignoring an unreadable status.agent on Domain %s", meta["name"])
    return DomainView(
        DomainRef(meta["namespace"], meta["name"]),
        str(meta.get("resourceVersion", "")),
        key_hash,
        agent,
    )


class KeyCache:
    """Key hash → Domain, and each Domain's latest view."""

    def __init__(self) -> None:
        self.synced = False
        self._domains: dict[DomainRef, DomainView] = {}
        self._by_hash: dict[str, set[DomainRef]] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, key: str) -> list[DomainRef]:
        """The Domains whose key is ``key``: one, or none for an unknown key (more than
        one would be a misconfiguration, which the caller refuses)."""
        return sorted(self._by_hash.get(hash_intake_key(key), ()))

    def domain(self, ref: DomainRef) -> DomainView | None:
        return self._domains.get(ref)

    def domains(self) -> list[DomainView]:
        """Every cached Domain."""
        return list(self._domains.values())

    def put(self, obj: dict[str, Any]) -> None:
        """Add or replace one Domain (from a watch event or a write's response)."""
        view = domain_view(obj)
        if view is None:
            return
        self._forget(view.ref)
        self._domains[view.ref] = view
        if view.key_hash:
            self._by_hash.setdefault(view.key_hash, set()).add(view.ref)

    def _forget(self, ref: DomainRef) -> None:
        old = self._domains.pop(ref, None)
        if old is not None and old.key_hash:
            refs = self._by_hash.get(old.key_hash, set())
            refs.discard(ref)
            if not refs:
                self._by_hash.pop(old.key_hash, None)

    def apply(self, kind: str, objects: list[dict[str, Any]]) -> None:
        """Apply one watch event: ``SYNC`` (everything, replacing what was held),
        ``ADDED``, ``MODIFIED`` or ``DELETED``."""
        if kind == "SYNC":
            self._domains.clear()
            self._by_hash.clear()
            for obj in objects:
                self.put(obj)
            self.synced = True
        elif kind == "DELETED":
            for obj in objects:
                view = domain_view(obj)
                if view is not None:
                    self._forget(view.ref)
        else:
            for obj in objects:
                self.put(obj)
