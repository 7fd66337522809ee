"""The Kubernetes connection, and the list-then-watch loop, shared by every process
that follows the platform's resources (the operator's clients, the intake, the
dashboard).

- ``connect``: an API client from a kubeconfig file, ``$KUBECONFIG``, or the pod's
  account.
- ``watch``: every object of a kind cluster-wide (one ``SYNC`` event), then its
  changes, forever: it relists when the API server has forgotten the resourceVersion
  (410 Gone), and after any other error it logs and resumes after a growing pause
  (at most 30 s), so a restarting API server never ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.models.common import GROUP, VERSION

log = logging.getLogger(__name__)

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
WATCH_SECONDS = 290
"""The API server ends each watch after this long; it resumes from the last
resourceVersion seen, which also notices a silently dead connection."""
LIST_PAGE = 500

EventType = Literal["SYNC", "ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class WatchEvent:
    """``SYNC`` carries every object after a (re)list and replaces what a cache held;
    the others carry one object each."""

    type: EventType
    objects: list[dict[str, Any]]


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


async def list_all(
    custom: client.CustomObjectsApi, plural: str
) -> tuple[list[dict[str, Any]], str]:
    """Every object of ``plural`` cluster-wide, a page at a time, and the list's
    resourceVersion."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_request_timeout": 60}
        if token:
            kwargs["_continue"] = token
        page = await custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            return items, str(meta.get("resourceVersion", ""))


async def follow(custom: client.CustomObjectsApi, plural: str) -> AsyncIterator[WatchEvent]:
    """Every object of ``plural`` cluster-wide, then its changes, forever (see the
    module docstring)."""
    failures = 0
    resource_version: str | None = None
    while True:
        try:
            if resource_version is None:
                items, resource_version = await list_all(custom, plural)
                failures = 0
                yield WatchEvent("SYNC", items)
            async with watch.Watch() as stream:
                async for event in stream.stream(
                    custom.list_cluster_custom_object,
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
                        yield WatchEvent(kind, [event["raw_object"]])
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
