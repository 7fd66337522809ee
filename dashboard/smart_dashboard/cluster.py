"""Everything the dashboard knows of the cluster, and the only module that talks to it.

- ``Cache``: every Customer, Domain, Experiment and template (the catalogue's
  ClusterExperimentTemplates, customers' ExperimentTemplates), kept by one watch per kind
  cluster-wide with the dashboard's own account. Pages read only this cache, so
  browsers never cause a request to the API server; an Experiment's chart is drawn
  from its ``status.history``, which the intake keeps, so every replica (and a freshly
  started one) draws the same chart.
- Fan-out: every change is offered to the live streams whose scope it is in (a
  customer's namespace, or everything for staff) through a bounded queue per stream.
- ``KubeApi``: the watches (``smart_operator.clients.kubeapi``: list, then follow) and
  the TokenReview that sign-in verifies a customer's token with, for the dashboard's
  audience only: a token the API server itself would accept is refused here, and a
  dashboard token is refused by the API server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes_asyncio import client

from smart_operator.clients.kubeapi import EventType, WatchEvent
from smart_operator.clients.kubeapi import follow as follow_kind
from smart_operator.models.customer import DASHBOARD_ACCOUNT, customer_namespace, customer_of

log = logging.getLogger(__name__)

Kind = Literal[
    "customers", "domains", "experiments", "clusterexperimenttemplates", "experimenttemplates"
]
KINDS: tuple[Kind, ...] = (
    "customers",
    "domains",
    "experiments",
    "clusterexperimenttemplates",
    "experimenttemplates",
)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


def customer_of_username(username: str) -> str | None:
    """The customer whose dashboard account this authenticated user is, if any:
    ``system:serviceaccount:customer-<name>:dashboard-viewer`` maps to ``<name>``."""
    parts = username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return None
    namespace, account = parts[2], parts[3]
    return customer_of(namespace) if account == DASHBOARD_ACCOUNT else None


@dataclass(frozen=True)
class Reviewed:
    """Who a token authenticated as, for the dashboard's audience."""

    username: str
    uid: str
    """The uid of the ServiceAccount the token belongs to."""
    expires: float | None
    """When the token expires (its ``exp`` claim), if it says."""


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without checking the signature: only for a
    token the API server has just authenticated, to end its session with it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return float(expires) if isinstance(expires, int | float) else None


@dataclass(frozen=True)
class Change:
    """What a live stream is told: a kind, an object and its customer namespace."""

    kind: Kind
    namespace: str
    name: str
    type: EventType


@dataclass(eq=False)
class Subscriber:
    """One live stream: its scope (``None`` = everything) and its queue."""

    namespace: str | None
    queue: asyncio.Queue[Change | None] = field(default_factory=lambda: asyncio.Queue(64))
    dropped: bool = False


class Cache:
    """The watched objects and the live subscribers."""

    def __init__(self, client_queue: int = 64) -> None:
        self.objects: dict[Kind, dict[Key, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.synced: set[Kind] = set()
        self.client_queue = client_queue
        self.subscribers: set[Subscriber] = set()

    @property
    def ready(self) -> bool:
        return len(self.synced) == len(KINDS)

    # -- reads ---------------------------------------------------------------------------

    def customer(self, name: str) -> dict[str, Any] | None:
        return self.objects["customers"].get(("", name))

    def customers(self) -> list[dict[str, Any]]:
        return sorted(self.objects["customers"].values(), key=lambda o: o["metadata"]["name"])

    def in_namespace(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of one kind in one namespace (``None``: all), sorted by name."""
        items = [
            obj
            for (ns, _), obj in self.objects[kind].items()
            if namespace is None or ns == namespace
        ]
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects[kind].get((namespace, name))

    # -- writes (from the watches) -------------------------------------------------------

    @staticmethod
    def _key(obj: dict[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "", meta.get("name") or "")

    def apply(self, kind: Kind, type: EventType, objects: list[dict[str, Any]]) -> None:
        """Apply one watch event: ``SYNC`` replaces everything of the kind."""
        store = self.objects[kind]
        changed: list[tuple[Key, EventType]] = []
        if type == "SYNC":
            fresh = {self._key(o): o for o in objects}
            changed += [(k, "DELETED") for k in store if k not in fresh]
            changed += [
                (k, "MODIFIED")
                for k, o in fresh.items()
                if store.get(k, {}).get("metadata", {}).get("resourceVersion")
                != o.get("metadata", {}).get("resourceVersion")
            ]
            store.clear()
            store.update(fresh)
            self.synced.add(kind)
        else:
            for obj in objects:
                key = self._key(obj)
                if type == "DELETED":
                    store.pop(key, None)
                else:
                    store[key] = obj
                changed.append((key, type))
        for (namespace, name), what in changed:
            if kind == "customers":
                namespace = customer_namespace(name)
            self.publish(Change(kind, namespace, name, what))

    # -- live fan-out --------------------------------------------------------------------

    def subscribe(self, namespace: str | None) -> Subscriber:
        subscriber = Subscriber(namespace, asyncio.Queue(self.client_queue))
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, change: Change) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.namespace is not None and subscriber.namespace != change.namespace:
                continue
            try:
                subscriber.queue.put_nowait(change)
            except asyncio.QueueFull:
                # Too far behind: end its stream; the browser reconnects and refreshes.
                subscriber.dropped = True
                self.subscribers.discard(subscriber)

    def close_all(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.dropped = True
            with _suppress_full():
                subscriber.queue.put_nowait(None)
        self.subscribers.clear()


class _suppress_full:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        return exc_type is asyncio.QueueFull


class KubeApi:
    """The dashboard's requests: one watch per kind and TokenReviews. Nothing else."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.auth = client.AuthenticationV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    async def review_token(self, token: str, audience: str) -> Reviewed | None:
        """Who the API server authenticates ``token`` as for ``audience``, or ``None``.
        The answer must name the audience (kubernetes/kubernetes#62692: a client that
        sets spec.audiences checks status.audiences); a legacy Secret-based token,
        valid only for the API server's own audiences, is refused
        (kubernetes/kubernetes#70157)."""
        body = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=[audience])
        )
        review = await self.auth.create_token_review(body, _request_timeout=10)
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if audience not in (status.audiences or []):
            return None
        username, uid = status.user.username, status.user.uid
        if not username or not uid:
            return None
        return Reviewed(str(username), str(uid), token_expiry(token))

    def watch(self, plural: Kind) -> AsyncIterator[WatchEvent]:
        """Every object of ``plural`` cluster-wide (one ``SYNC``), then its changes,
        forever (``smart_operator.clients.kubeapi.follow``)."""
        return follow_kind(self.custom, plural)


async def follow(api: KubeApi, cache: Cache, plural: Kind) -> None:
    """Feed the cache from one watch for as long as the process lives."""
    async for event in api.watch(plural):
        cache.apply(plural, event.type, event.objects)
