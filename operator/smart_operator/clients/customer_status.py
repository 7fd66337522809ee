"""The results intake's Kubernetes calls on Customers, through kubernetes_asyncio: read
one (``None`` when it is gone) and merge-patch its status conditionally, for the
payment record the intake keeps from Stripe's webhooks.

The patch carries ``metadata.resourceVersion``, which the API server treats as a
precondition: a write based on a stale read fails with ``errors.Conflict`` instead of
overwriting someone else's update, and the caller re-reads and decides again (the
same scheme as ``clients.results``, for the cluster-scoped kind). Nothing here decides
anything.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.clients.kube import MERGE_PATCH, api_error
from smart_operator.models.common import GROUP, VERSION

REQUEST_TIMEOUT = 15.0


class CustomerStatusApi:
    """Reads and conditional status writes of Customers, over a shared API client (the
    caller closes it)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    async def get_customer(self, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self.custom.get_cluster_custom_object(
                GROUP, VERSION, "customers", name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise api_error(error, f"get customer {name}") from error
        return body

    async def patch_customer_status(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status`` into the Customer's status if it is still at
        ``resource_version``; return the updated object."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            updated: dict[str, Any] = await self.custom.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                "customers",
                name,
                body,
                _request_timeout=REQUEST_TIMEOUT,
                **MERGE_PATCH,
            )
        except ApiException as error:
            raise api_error(error, f"patch customer {name} status") from error
        return updated
