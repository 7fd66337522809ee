"""The Kubernetes calls of the results intake, through kubernetes_asyncio.

Three kinds of call, each one request and nothing more:

- ``watch(plural)``: every object of a kind cluster-wide, then its changes
  (``clients.kubeapi.follow``), as ``WatchEvent``s the intake's caches apply.
- ``get_experiment`` / ``get_domain``: read one object (``None`` when it is gone).
- ``patch_experiment_status`` / ``patch_domain_status``: a JSON merge patch of the
  status subresource that carries ``metadata.resourceVersion``. The API server treats
  that field as a precondition, so a write based on a stale read fails with
  ``errors.Conflict`` instead of overwriting someone else's update; the caller re-reads
  and decides again. ``errors.NotFound`` means the object was deleted.

Nothing here decides anything; the intake's writers do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.clients.kube import MERGE_PATCH, api_error
from smart_operator.clients.kubeapi import WatchEvent, follow
from smart_operator.models.common import GROUP, VERSION

REQUEST_TIMEOUT = 15.0
"""Per-request deadline of reads and writes; a watch has its own."""


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
            raise api_error(error, f"get {plural} {namespace}/{name}") from error
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
            raise api_error(error, f"patch {plural} {namespace}/{name} status") from error
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

    def watch(self, plural: str) -> AsyncIterator[WatchEvent]:
        """Every object of ``plural`` cluster-wide, then its changes, forever."""
        return follow(self.custom, plural)
