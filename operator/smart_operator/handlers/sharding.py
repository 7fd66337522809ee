"""What one replica handles (``shards``): kopf filters for its shard's objects, the
hand-over of finalizers when the shard count changes, and whether kopf's peering lets
this replica act, for the Domain scheduler (which is no kopf daemon, so kopf does not
stop it when it pauses the replica)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from smart_operator import customers, shards
from smart_operator.errors import ExternalError
from smart_operator.handlers.context import Context
from smart_operator.models.customer import customer_namespace
from smart_operator.ports import ObjectRef
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
PEERING_CHECK_SECONDS = 5.0
"""How often the Domain scheduler reads its peering object: at most this long after
kopf pauses this replica (a peer of higher priority came), its passes stop too; kopf
gives its own daemons a similar time to stop (their cancellation timeout)."""

Filter = Callable[..., bool]


def namespace_filter(settings: OperatorSettings) -> Filter | None:
    """kopf's ``when=`` for namespaced objects: those of this replica's shard. None
    (no filter) with one shard."""
    if settings.shards <= 1:
        return None

    def ours(namespace: str | None, **_: Any) -> bool:
        return shards.shard_of(namespace or "", settings.shards) == settings.shard

    return ours


def customer_filter(settings: OperatorSettings) -> Filter | None:
    """kopf's ``when=`` for Customers: those whose namespace is in this shard."""
    if settings.shards <= 1:
        return None

    def ours(name: str, **_: Any) -> bool:
        namespace = customer_namespace(name)
        return shards.shard_of(namespace, settings.shards) == settings.shard

    return ours


def owner_label_filter(settings: OperatorSettings) -> Filter | None:
    """kopf's ``when=`` for objects labelled with their Customer (its quota, its
    dashboard account): those of this shard's Customers."""
    if settings.shards <= 1:
        return None

    def ours(labels: kopf.Labels, **_: Any) -> bool:
        owner = labels.get(customers.CUSTOMER_LABEL) or ""
        namespace = customer_namespace(owner)
        return shards.shard_of(namespace, settings.shards) == settings.shard

    return ours


async def release_foreign_finalizers(ctx: Context, ref: ObjectRef, body: kopf.Body) -> None:
    """Take the platform's finalizers of other shards off an object of this shard when
    no running replica would (``shards.releasable``), so its deletion does not hang.
    Best effort: after a conflict, the object's next event tries again."""
    own = shards.finalizer(ctx.settings.shard, ctx.settings.shards)
    present = list(body.metadata.get("finalizers") or [])
    deleting = bool(body.metadata.get("deletionTimestamp"))
    foreign = shards.releasable(present, own, deleting)
    if not foreign:
        return
    kept = [name for name in present if name not in foreign]
    try:
        await ctx.kube.set_finalizers(ref, kept, str(body.metadata["resourceVersion"]))
    except ExternalError as error:
        log.info("%s: finalizers %s stay for now: %s", ref, foreign, error)
        return
    log.info("%s: removed the finalizers of other shards %s", ref, foreign)


async def follow_peering(ctx: Context, on_change: Callable[[bool], None]) -> None:
    """Call ``on_change(active)`` whenever kopf's peering starts or stops letting this
    replica act, as read from its peering object every ``PEERING_CHECK_SECONDS``; at
    once with True when there is no peering (standalone). Until cancelled."""
    settings = ctx.settings
    if settings.standalone:
        on_change(True)
        return
    name = shards.peering_name(settings.peering_name, settings.shard, settings.shards)
    identity = shards.identity()
    active: bool | None = None
    while True:
        try:
            status = await ctx.kube.peering_status(name)
        except ExternalError as error:
            log.warning("cannot read the peering object %s: %s", name, error)
        else:
            now = datetime.now(UTC)
            # A missing object: kopf pauses (peering is mandatory once named).
            verdict = status is not None and shards.peering_active(
                status, identity, settings.priority, now
            )
            if verdict != active:
                active = verdict
                log.info("Domain passes %s (peering %s)", "run" if active else "pause", name)
                on_change(active)
        await asyncio.sleep(PEERING_CHECK_SECONDS)
