"""The operator's Kubernetes calls, through kubernetes_asyncio: the ``Resources`` port
of the reconcilers, the operator's own SSH key Secret and kopf's peering object.

Objects are written with server-side apply under one field manager, so applying the
same desired state twice changes nothing and fields that others own (the token the
controller manager puts into a Secret, quota usage) are left alone. Every
``ApiException`` is mapped onto ``smart_operator.errors`` here (``api_error``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.errors import (
    Conflict,
    ExternalError,
    NotFound,
    PermanentFailure,
    RateLimited,
    TemporaryFailure,
)
from smart_operator.models.common import GROUP, VERSION
from smart_operator.ports import ObjectRef, QuotaView

SYSTEM = "kubernetes"
FIELD_MANAGER = "smart-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
MERGE_PATCH: dict[str, Any] = {"_content_type": MERGE}
APPLY_PATCH: dict[str, Any] = {"_content_type": APPLY, "force": True}


@dataclass(frozen=True)
class SecretView:
    name: str
    labels: dict[str, str]
    data: dict[str, str]


def api_error(error: ApiException, what: str) -> ExternalError:
    """The error of ``smart_operator.errors`` that an API server's answer means."""
    status = error.status or 0
    message = f"{what}: HTTP {status} {error.reason or ''}".strip()
    if status == 404:
        return NotFound(SYSTEM, message)
    if status == 409:
        return Conflict(SYSTEM, message)
    if status == 429:
        headers: dict[str, str] = dict(error.headers or {})
        retry = float(headers.get("Retry-After") or 1)
        return RateLimited(SYSTEM, message, max(retry, 1.0))
    if status in (400, 401, 403, 422):
        return PermanentFailure(SYSTEM, message)
    return TemporaryFailure(SYSTEM, message)


class Kube:
    """The calls the operator makes, each one request."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, what: str, call: Awaitable[Any], missing: Any = ...) -> Any:
        """Await ``call``; a 404 gives ``missing`` when one is given."""
        try:
            return await call
        except ApiException as error:
            if error.status == 404 and missing is not ...:
                return missing
            raise api_error(error, what) from error
        except (OSError, TimeoutError) as error:
            raise TemporaryFailure(SYSTEM, f"{what}: {error!r}") from error

    # -- the platform's resources --------------------------------------------------------

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        if ref.namespace is None:
            call = self.custom.get_cluster_custom_object(GROUP, VERSION, ref.plural, ref.name)
        else:
            call = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name
            )
        body: dict[str, Any] | None = await self._call(f"get {ref}", call, missing=None)
        return body

    async def list_namespaced(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        listing = await self._call(
            f"list {plural} in {namespace}",
            self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural),
        )
        return list(listing.get("items", []))

    async def list_cluster(self, plural: str) -> list[dict[str, Any]]:
        listing = await self._call(
            f"list {plural}", self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        )
        return list(listing.get("items", []))

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource (lists such as conditions are replaced);
        an object deleted meanwhile has nothing to report on."""
        await self._merge_patch(ref, {"status": patch}, f"patch {ref} status", status=True)

    async def label(self, ref: ObjectRef, labels: dict[str, str]) -> None:
        """Merge labels into an object's metadata; an object deleted meanwhile is left
        alone."""
        await self._merge_patch(ref, {"metadata": {"labels": labels}}, f"label {ref}")

    async def _merge_patch(
        self, ref: ObjectRef, body: dict[str, Any], what: str, status: bool = False
    ) -> None:
        """Merge-patch a custom object (or its status subresource), cluster-scoped or
        namespaced as ``ref`` says; an object gone meanwhile is left alone."""
        custom = self.custom
        if ref.namespace is None:
            cluster = (
                custom.patch_cluster_custom_object_status
                if status
                else custom.patch_cluster_custom_object
            )
            call = cluster(GROUP, VERSION, ref.plural, ref.name, body, **MERGE_PATCH)
        else:
            namespaced = (
                custom.patch_namespaced_custom_object_status
                if status
                else custom.patch_namespaced_custom_object
            )
            call = namespaced(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name, body, **MERGE_PATCH
            )
        await self._call(what, call, missing=None)

    async def domain_uids(self) -> set[str]:
        """The uids of every Domain in the cluster (one list call per 500)."""
        uids: set[str] = set()
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": 500}
            if token:
                paging["_continue"] = token
            page = await self._call(
                "list domains",
                self.custom.list_cluster_custom_object(GROUP, VERSION, "domains", **paging),
            )
            uids.update(item["metadata"]["uid"] for item in page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                return uids

    # -- what a Customer owns ------------------------------------------------------------

    async def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply one object of a kind the operator owns."""
        kind = obj["kind"]
        name = obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        common: dict[str, Any] = {"field_manager": FIELD_MANAGER, **APPLY_PATCH}
        if kind == "Namespace":
            await self._call(f"apply {kind} {name}", self.core.patch_namespace(name, obj, **common))
            return
        method: Callable[..., Awaitable[Any]] = {
            "ResourceQuota": self.core.patch_namespaced_resource_quota,
            "ServiceAccount": self.core.patch_namespaced_service_account,
            "Secret": self.core.patch_namespaced_secret,
            "Role": self.rbac.patch_namespaced_role,
            "RoleBinding": self.rbac.patch_namespaced_role_binding,
        }[kind]
        await self._call(f"apply {kind} {namespace}/{name}", method(name, namespace, obj, **common))

    async def read_quota(self, namespace: str, name: str) -> QuotaView | None:
        quota = await self._call(
            f"get resourcequota {namespace}/{name}",
            self.core.read_namespaced_resource_quota(name, namespace),
            missing=None,
        )
        if quota is None or quota.status is None:
            return None
        return QuotaView(
            hard=dict(quota.status.hard or {}),
            used=dict(quota.status.used or {}),
            created=quota.metadata.creation_timestamp,
        )

    async def delete_quota(self, namespace: str, name: str) -> None:
        await self._call(
            f"delete resourcequota {namespace}/{name}",
            self.core.delete_namespaced_resource_quota(name, namespace),
            missing=None,
        )

    async def account_uid(self, namespace: str, name: str) -> str | None:
        account = await self._call(
            f"get serviceaccount {namespace}/{name}",
            self.core.read_namespaced_service_account(name, namespace),
            missing=None,
        )
        return str(account.metadata.uid) if account is not None else None

    async def namespace_exists(self, name: str) -> bool:
        found = await self._call(
            f"get namespace {name}", self.core.read_namespace(name), missing=None
        )
        return found is not None

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        found = await self._call(
            f"get namespace {name}", self.core.read_namespace(name), missing=None
        )
        if found is None:
            return None
        return dict(found.metadata.labels or {})

    async def delete_namespace(self, name: str) -> None:
        try:
            await self.core.delete_namespace(name, propagation_policy="Foreground")
        except ApiException as error:
            if error.status not in (404, 409):  # gone, or already being deleted
                raise api_error(error, f"delete namespace {name}") from error

    # -- the operator's own objects ------------------------------------------------------

    async def ensure_peering(self, name: str) -> None:
        """Create the ClusterKopfPeering object replicas coordinate through; kopf
        silently skips coordination when it is missing."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        await self._call(
            f"apply clusterkopfpeering {name}",
            self.custom.patch_cluster_custom_object(
                "kopf.dev",
                "v1",
                "clusterkopfpeerings",
                name,
                body,
                field_manager=FIELD_MANAGER,
                **APPLY_PATCH,
            ),
        )

    async def peering_status(self, name: str) -> dict[str, Any] | None:
        """The replicas a ClusterKopfPeering lists (its status); None when missing."""
        body = await self._call(
            f"get clusterkopfpeering {name}",
            self.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name),
            missing=None,
        )
        return None if body is None else dict(body.get("status") or {})

    async def set_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> None:
        """Replace an object's finalizers, if it is still at ``resource_version``
        (``Conflict`` otherwise); an object gone meanwhile needs none."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        await self._merge_patch(ref, body, f"patch {ref} finalizers")

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when it does not exist."""
        secret = await self._call(
            f"get secret {namespace}/{name}",
            self.core.read_namespaced_secret(name, namespace),
            missing=None,
        )
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    async def secret(self, namespace: str, name: str) -> SecretView | None:
        """A Secret's labels and data (decoded); None when it does not exist."""
        secret = await self._call(
            f"get secret {namespace}/{name}",
            self.core.read_namespaced_secret(name, namespace),
            missing=None,
        )
        if secret is None:
            return None
        return SecretView(
            name=name,
            labels=dict(secret.metadata.labels or {}),
            data={k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()},
        )

    async def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        """Create a Secret; False when one of that name already exists (left as it is)."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            type="Opaque",
            string_data=data,
        )
        try:
            await self._call(
                f"create secret {namespace}/{name}",
                self.core.create_namespaced_secret(namespace, body),
            )
        except Conflict:
            return False
        return True
