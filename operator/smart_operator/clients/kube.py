"""The Kubernetes API, through kubernetes_asyncio.

Objects are written with server-side apply under one field manager, so applying the
same desired state twice changes nothing and fields that others own (the token the
controller manager puts into a Secret, quota usage) are left alone.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.models.common import GROUP, VERSION

FIELD_MANAGER = "smart-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
MERGE_PATCH: dict[str, Any] = {"_content_type": MERGE}
APPLY_PATCH: dict[str, Any] = {"_content_type": APPLY, "force": True}
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


async def connect(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client from a kubeconfig file, ``$KUBECONFIG``, or the pod's account."""
    if (
        kubeconfig is None and "KUBECONFIG" not in os.environ and IN_CLUSTER_TOKEN.exists()  # noqa: ASYNC240 (one stat at start-up)
    ):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig else None,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


class Kube:
    """The calls the operator makes, each one request."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def apply(self, obj: dict[str, Any]) -> Any:
        """Server-side apply one object of a kind the operator owns."""
        kind = obj["kind"]
        name = obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        common: dict[str, Any] = {"field_manager": FIELD_MANAGER, **APPLY_PATCH}
        method: Callable[..., Awaitable[Any]]
        if kind == "Namespace":
            return await self.core.patch_namespace(name, obj, **common)
        method = {
            "ResourceQuota": self.core.patch_namespaced_resource_quota,
            "ServiceAccount": self.core.patch_namespaced_service_account,
            "Secret": self.core.patch_namespaced_secret,
            "Role": self.rbac.patch_namespaced_role,
            "RoleBinding": self.rbac.patch_namespaced_role_binding,
        }[kind]
        return await method(name, namespace, obj, **common)

    async def read_quota(self, namespace: str, name: str) -> Any | None:
        try:
            return await self.core.read_namespaced_resource_quota(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def secret_has(self, namespace: str, name: str, key: str) -> bool:
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return bool(secret.data and secret.data.get(key))

    async def namespace_exists(self, name: str) -> bool:
        try:
            await self.core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def delete_namespace(self, name: str) -> None:
        try:
            await self.core.delete_namespace(name, propagation_policy="Foreground")
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    async def get_customer(self, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self.custom.get_cluster_custom_object(
                GROUP, VERSION, "customers", name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def patch_customer_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (lists such as conditions are replaced)."""
        try:
            await self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "customers", name, {"status": status}, **MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing to report on
                raise

    async def ensure_peering(self, name: str) -> None:
        """Create the ClusterKopfPeering object replicas coordinate through; kopf
        silently skips coordination when it is missing."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        await self.custom.patch_cluster_custom_object(
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            name,
            body,
            field_manager=FIELD_MANAGER,
            **APPLY_PATCH,
        )

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch the status subresource of one of our namespaced resources."""
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}, **MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when it does not exist."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    async def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Create a Secret; False when one of that name already exists (left as it is)."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            type="Opaque",
            string_data=data,
        )
        try:
            await self.core.create_namespaced_secret(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def domain_uids(self) -> set[str]:
        """The uids of every Domain in the cluster (one list call per 500)."""
        uids: set[str] = set()
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": 500}
            if token:
                paging["_continue"] = token
            page = await self.custom.list_cluster_custom_object(GROUP, VERSION, "domains", **paging)
            uids.update(item["metadata"]["uid"] for item in page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                return uids

    async def get_namespaced(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def list_namespaced(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        listing = await self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return list(listing.get("items", []))
