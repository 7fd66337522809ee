"""The sweep: removes labelled cloud objects (servers, firewalls, DNS records) that no
Domain owns any more, for instance after a Domain was removed while the operator was
not running and its finalizer was forced off.

It runs in the background every ``sweep_seconds``. It deletes only what carries our
label or tag, whose uid belongs to no Domain in a fresh listing, and that is older than
``sweep_grace_seconds``: a Domain being created right now is never swept, so two
replicas sweeping at once are harmless too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from prometheus_client import Counter

from smart_operator import domains
from smart_operator.clients.errors import ProviderError
from smart_operator.handlers.context import Context, context
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
SWEPT = Counter(
    "smartserver_swept_total", "Cloud objects removed because no Domain owns them", ["kind"]
)


async def sweep_once(ctx: Context, records: bool = True) -> dict[str, int]:
    """One sweep; returns how many objects of each kind were removed. ``records``: also
    scan every zone's records (one call per zone, so less often)."""
    cloud = ctx.cloud
    removed = {"server": 0, "firewall": 0, "record": 0}
    if cloud is None:
        return removed
    owned = await ctx.kube.domain_uids()
    cutoff = datetime.now(UTC) - timedelta(seconds=ctx.settings.sweep_grace_seconds)

    def orphan(labels: dict[str, str], created: datetime | None) -> bool:
        uid = labels.get(domains.UID_LABEL)
        return bool(uid) and uid not in owned and created is not None and created <= cutoff

    for server in await cloud.hetzner.servers(domains.managed_labels()):
        if orphan(server.labels, server.created):
            log.warning("sweeping server %s (%s): no Domain owns it", server.name, server.id)
            await cloud.hetzner.delete_server(server.id)
            removed["server"] += 1
    for firewall in await cloud.hetzner.firewalls(domains.managed_labels()):
        if orphan(firewall.labels, firewall.created):
            try:
                await cloud.hetzner.delete_firewall(firewall.id)
            except ProviderError as error:  # still attached: next sweep
                log.info("firewall %s not swept yet: %s", firewall.name, error)
                continue
            removed["firewall"] += 1
    for zone in await cloud.cloudflare.zones() if records else []:
        for record in await cloud.cloudflare.records(zone.id, tag_present=domains.RECORD_TAG_NAME):
            uids = [
                t.split(":", 1)[1] for t in record.tags if t.startswith(domains.RECORD_TAG_NAME)
            ]
            if uids and all(uid not in owned for uid in uids):
                log.warning("sweeping %s record %s: no Domain owns it", record.type, record.name)
                await cloud.cloudflare.delete_record(zone.id, record.id)
                removed["record"] += 1
    for kind, count in removed.items():
        SWEPT.labels(kind).inc(count)
    return removed


async def sweep_forever(ctx: Context) -> None:
    records_swept = time.monotonic()
    while True:
        await asyncio.sleep(ctx.settings.sweep_seconds)
        records = time.monotonic() - records_swept >= ctx.settings.dns_sweep_seconds
        try:
            removed = await sweep_once(ctx, records=records)
            if records:
                records_swept = time.monotonic()
        except ProviderError as error:
            log.warning("sweep interrupted, trying again later: %s", error)
            continue
        if any(removed.values()):
            log.info("sweep removed %s", removed)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_sweep(memo: kopf.Memo, **_: Any) -> None:
        # Runs after the start-up handler that builds the context (registration order).
        tasks.append(asyncio.create_task(sweep_forever(context(memo)), name="cloud sweep"))

    @kopf.on.cleanup(registry=registry)
    async def stop_sweep(**_: Any) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
