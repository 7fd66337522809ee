"""Everything the dashboard knows of the cluster, and the only module that talks to it.

- ``Cache``: every Customer, Domain and Experiment, kept by one watch per kind
  cluster-wide with the dashboard's own account. Pages read only this cache, so
  browsers never cause a request to the API server; an Experiment's chart is drawn
  from its ``status.history``, which the intake keeps, so every replica (and a freshly
  started one) draws the same chart.
- Fan-out: every change is offered to the live streams whose scope it is in (a
  customer's namespace, or everything for staff) through a bounded queue per stream.
- ``KubeApi``: the watches (list, then follow; relist on 410 Gone; back off on errors)
  and the TokenReview that sign-in verifies a customer's token with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.models import GROUP, VERSION

log = logging.getLogger(__name__)

Kind = Literal["customers", "domains", "experiments"]
KINDS: tuple[Kind, ...] = ("customers", "domains", "experiments")
EventType = Literal["SYNC", "ADDED", "MODIFIED", "DELETED"]
NAMESPACE_PREFIX = "customer-"
VIEWER_ACCOUNT = "dashboard-viewer"
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
WATCH_SECONDS = 290
LIST_PAGE = 500

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


def customer_namespace(customer: str) -> str:
    return f"{NAMESPACE_PREFIX}{customer}"


def customer_of_username(username: str) -> str | None:
    """The customer whose dashboard account this authenticated user is, if any:
    ``system:serviceaccount:customer-<name>:dashboard-viewer`` maps to ``<name>``."""
    parts = username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        return None
    namespace, account = parts[2], parts[3]
    if account != VIEWER_ACCOUNT or not namespace.startswith(NAMESPACE_PREFIX):
        return None
    return namespace[len(NAMESPACE_PREFIX) :] or None


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


async def connect(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client from a kubeconfig file, ``$KUBECONFIG``, or the pod's account."""
    if kubeconfig is None and "KUBECONFIG" not in os.environ and IN_CLUSTER_TOKEN.exists():  # noqa: ASYNC240 (one stat at start-up)
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig else None,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


class KubeApi:
    """The dashboard's requests: three watches and TokenReviews. Nothing else."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.auth = client.AuthenticationV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    async def review_token(self, token: str) -> str | None:
        """The username the API server authenticates ``token`` as, or ``None``."""
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        review = await self.auth.create_token_review(body, _request_timeout=10)
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        username = status.user.username
        return str(username) if username else None

    async def _list(self, plural: Kind) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            page = await self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    async def watch(self, plural: Kind) -> AsyncIterator[tuple[EventType, list[dict[str, Any]]]]:
        """Every object of ``plural`` cluster-wide (one ``SYNC``), then its changes,
        forever; errors are logged and followed by a growing pause (at most 30 s)."""
        failures = 0
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    items, resource_version = await self._list(plural)
                    failures = 0
                    yield "SYNC", items
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        self.custom.list_cluster_custom_object,
                        GROUP,
                        VERSION,
                        plural,
                        resource_version=resource_version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=WATCH_SECONDS,
                        _request_timeout=(10, WATCH_SECONDS + 30),
                    ):
                        failures = 0
                        kind = event["type"]
                        resource_version = stream.resource_version or resource_version
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            yield kind, [event["raw_object"]]
            except asyncio.CancelledError:
                raise
            except ApiException as error:
                if error.status == 410:
                    log.info("watch of %s expired; listing again", plural)
                    resource_version = None
                    continue
                failures += 1
                log.warning("watch of %s failed (HTTP %s): %s", plural, error.status, error.reason)
            except Exception as error:
                failures += 1
                log.warning("watch of %s failed: %r", plural, error)
            if failures:
                jitter = random.uniform(0.8, 1.2)  # noqa: S311 (not security related)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)) * jitter)


async def follow(api: KubeApi, cache: Cache, plural: Kind) -> None:
    """Feed the cache from one watch for as long as the process lives."""
    async for type, objects in api.watch(plural):
        cache.apply(plural, type, objects)
