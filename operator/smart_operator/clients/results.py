"""The Kubernetes calls of the results intake, through kubernetes_asyncio.

Three kinds of call, each one request and nothing more:

- ``watch(plural)``: list every object of a kind cluster-wide, then follow changes,
  relisting when the API server has forgotten our resourceVersion (410 Gone) and
  reconnecting after errors. It yields ``WatchEvent``s the intake's caches apply.
- ``get_experiment`` / ``get_domain``: read one object (``None`` when it is gone).
- ``patch_experiment_status`` / ``patch_domain_status``: a JSON merge patch of the
  status subresource that carries ``metadata.resourceVersion``. The API server treats
  that field as a precondition, so a write based on a stale read fails with
  ``Conflict`` instead of overwriting someone else's update; the caller re-reads and
  decides again. ``Gone`` means the object was deleted.

Nothing here decides anything; the intake's writers do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.clients.kube import MERGE_PATCH, connect
from smart_operator.models.common import GROUP, VERSION

__all__ = [
    "Conflict",
    "Gone",
    "ResultsApi",
    "WatchEvent",
    "connect",
]

log = logging.getLogger(__name__)

EventType = Literal["SYNC", "ADDED", "MODIFIED", "DELETED"]

# Per-request deadline of reads and writes; a watch has its own (below).
REQUEST_TIMEOUT = 15.0
# The API server ends each watch after this long; we then resume from the last
# resourceVersion seen, which also notices a silently dead connection.
WATCH_SECONDS = 290
LIST_PAGE = 500


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and try again."""


class Gone(Exception):
    """The object no longer exists (HTTP 404)."""


@dataclass(frozen=True)
class WatchEvent:
    """``SYNC`` carries every object after a (re)list and replaces what a cache
    held; the others carry one object each."""

    type: EventType
    objects: list[dict[str, Any]]


def _raise_for(error: ApiException) -> None:
    if error.status == 409:
        raise Conflict(error.reason) from error
    if error.status == 404:
        raise Gone(error.reason) from error
    raise error


class ResultsApi:
    """The intake's reads and writes of Domains and Experiments."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)

    async def close(self) -> None:
        await self.api.close()

    # -- reads ---------------------------------------------------------------------------

    async def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("experiments", namespace, name)

    async def get_domain(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("domains", namespace, name)

    # -- conditional status writes -------------------------------------------------------

    async def _patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        resource_version: str,
        status: dict[str, Any],
    ) -> dict[str, Any]:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            updated: dict[str, Any] = await self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
                _request_timeout=REQUEST_TIMEOUT,
                **MERGE_PATCH,
            )
        except ApiException as error:
            _raise_for(error)
            raise  # unreachable; for the type checker
        return updated

    async def patch_experiment_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status`` into the Experiment's status if it is still at
        ``resource_version``; return the updated object."""
        return await self._patch_status("experiments", namespace, name, resource_version, status)

    async def patch_domain_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status`` into the Domain's status if it is still at
        ``resource_version``; return the updated object."""
        return await self._patch_status("domains", namespace, name, resource_version, status)

    # -- list and watch ------------------------------------------------------------------

    async def _list(self, plural: str) -> tuple[list[dict[str, Any]], str]:
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

    async def watch(self, plural: str) -> AsyncIterator[WatchEvent]:
        """Every object of ``plural`` cluster-wide, then its changes, forever.

        Errors never end the iteration: they are logged and the watch resumes after a
        short, growing pause (at most 30 s), relisting when it must.
        """
        failures = 0
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    items, resource_version = await self._list(plural)
                    failures = 0
                    yield WatchEvent("SYNC", items)
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
                        obj = event["raw_object"]
                        resource_version = stream.resource_version or resource_version
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            yield WatchEvent(kind, [obj])
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
